"""The CS236 homework's own settings, run with ppdgm and compared with the homework's numbers.

``two-moons``: a MAF of 5 MADE layers (one hidden layer of 100 units each, the order reversed
from layer to layer) on two moons: 30,000 points of ``sklearn.datasets.make_moons`` with noise
0.05, standardized with the training part's mean and standard deviation, split 20,000 /
5,000 / 5,000 (train / validation / test). Adam, minibatches of 100, the epoch of best
validation NLL kept; the test NLL in nats per point beside the homework's reference (about
1.25 nats).

Usage: ``python benchmarks/bench_homework.py [--epochs N] [--threads T] [--seed S]``. The
result is written to ``benchmarks/results/homework.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
from sklearn.datasets import make_moons

from ppdgm.models import MAF
from ppdgm.train import evaluate, fit

RESULTS = Path(__file__).with_name("results") / "homework.json"
REFERENCE_NLL = 1.25  # the homework's reference test NLL, nats per point


def two_moons(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Train, validation and test points, standardized with the training part's statistics."""
    x, _ = make_moons(30_000, noise=0.05, random_state=seed)
    x = torch.as_tensor(x, dtype=torch.float32)
    train, valid, test = x[:20_000], x[20_000:25_000], x[25_000:]
    mean, std = train.mean(0), train.std(0)
    return tuple((part - mean) / std for part in (train, valid, test))


def run_two_moons(epochs: int, seed: int) -> dict:
    train, valid, test = two_moons(seed)
    torch.manual_seed(seed)
    model = MAF(2, hidden_dims=[100], num_layers=5)
    began = time.perf_counter()
    result = fit(model, train, valid, epochs=epochs, batch_size=100, lr=1e-3, seed=seed,
                 patience=10, progress=True, plots=False)  # fmt: skip
    seconds = time.perf_counter() - began
    nll = evaluate(model, test)["nll"]
    return {
        "model": "MAF, 5 MADE layers, hidden 100, reversed orders",
        "data": "two moons, 30,000 points, noise 0.05, standardized; 20k/5k/5k",
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "valid_nll": result.best_valid_nll,
        "test_nll": nll,
        "reference_test_nll": REFERENCE_NLL,
        "seconds": round(seconds, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    found = run_two_moons(args.epochs, args.seed)
    print(
        f"two moons, MAF: test NLL {found['test_nll']:.4f} nats (reference "
        f"{REFERENCE_NLL}), best epoch {found['best_epoch']} of {found['epochs_run']}, "
        f"{found['seconds']:.0f} s"
    )
    RESULTS.parent.mkdir(exist_ok=True)
    record = {"machine": platform.processor() or platform.machine(), "two_moons": found}
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote: {RESULTS}")


if __name__ == "__main__":
    main()
