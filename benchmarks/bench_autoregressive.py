"""Autoregressive models on binarized MNIST: training throughput and likelihood.

Three parts (``--parts``), each model in one process:

- ``throughput``: images per second of ``ppdgm.train.fit`` (the library's loop: seeded shuffles,
  input checks, the model's objective, Adam) against a hand-written pure-PyTorch training step
  of the same network (same math, same masks, same batches and optimizer), run alternately in
  the same process; the target is a ratio (hand-written over ppdgm) of at most 1.15.
- ``precision``: images per second of ``fit`` with ``precision="bf16-mixed"`` (bfloat16 matrix
  products under ``torch.autocast``) against the default float32 steps, alternately in the same
  process; the ratio is the speed-up (no target: it depends on the processor's bfloat16
  instructions).
- ``quality``: train on the training split (``--train-rows`` of it) for ``--epochs`` epochs or
  ``--budget-minutes`` per model, whichever ends first, keep the best epoch on the validation
  split (``--valid-rows``), and report its exact NLL in nats against the published test NLLs
  (FVSBN 97.45, NADE(500) 88.86, MADE 1 mask 88.40, MADE 32 masks 86.64; the issue's target
  is within 1.5 nats), with the training time and epochs.

Usage: ``python benchmarks/bench_autoregressive.py [--parts throughput,quality] [--models ...]
[--epochs N] [--budget-minutes M] [--train-rows N]``; without the MNIST files (``--data-dir``)
throughput runs on random binary images and quality is skipped. Results are merged into
``benchmarks/results/autoregressive.json`` (a part not run keeps its previous entries).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn import functional as F

from ppdgm.data import load_binarized_mnist
from ppdgm.models import FVSBN, MADE, NADE
from ppdgm.training.checkpoint import load_model
from ppdgm.training.loop import PRECISIONS, evaluate, fit, retain_freed_memory

ROOT = Path(__file__).resolve().parents[1]
#: name: (constructor, published test NLL in nats)
MODELS: dict[str, tuple[Callable[[str], torch.nn.Module], float]] = {
    "fvsbn": (lambda ordering: FVSBN(784), 97.45),
    "nade-500": (lambda ordering: NADE(784, 500), 88.86),
    "made-1mask": (lambda ordering: MADE(784, [500]), 88.40),
    "made-32masks": (lambda ordering: MADE(784, [500], 32, ordering=ordering), 86.64),
    "made-8000": (lambda ordering: MADE(784, [8000]), 88.40),
    "made-32masks-8000": (lambda ordering: MADE(784, [8000], 32, ordering=ordering), 86.64),
    "made-32masks-8000-direct": (
        lambda ordering: MADE(784, [8000], 32, ordering=ordering, direct=True),
        86.64,
    ),
    "made-32masks-4000x2-direct": (
        lambda ordering: MADE(784, [4000, 4000], 32, ordering=ordering, direct=True),
        86.64,
    ),
    # the paper's best (its code's README): two layers of 8,000 units and direct connections
    "made-32masks-8000x2-direct": (
        lambda ordering: MADE(784, [8000, 8000], 32, ordering=ordering, direct=True),
        86.64,
    ),
}


def hand_written_logits(
    model: torch.nn.Module, params: list[torch.Tensor]
) -> Callable[[torch.Tensor, int], torch.Tensor]:
    """``model``'s network written out in plain PyTorch on ``params`` (tensors shaped like
    ``model.parameters()``, in that order): the logits of a batch at training step ``step``."""
    if isinstance(model, FVSBN):
        weight, bias = params
        mask = model.mask

        def logits(v: torch.Tensor, step: int) -> torch.Tensor:
            return F.linear(v, weight * mask, bias)
    elif isinstance(model, NADE):
        W, c, V, b = params

        def logits(v: torch.Tensor, step: int) -> torch.Tensor:
            a = (v[:, :-1].T.unsqueeze(-1) * W[:, :-1].T.unsqueeze(1)).cumsum(0)
            h = torch.cat([torch.zeros_like(a[:1]), a]).add_(c).sigmoid_()
            return torch.baddbmm(b.view(-1, 1, 1), h, V.unsqueeze(-1)).squeeze(-1).T
    else:
        masks = [layer.masks for layer in model.layers]
        direct = model.direct.masks if model.direct is not None else None
        n = 2 * len(masks)  # each layer's weight and bias, then the direct weight if any
        pairs = list(zip(params[0:n:2], params[1:n:2], strict=True))

        def logits(v: torch.Tensor, step: int) -> torch.Tensor:
            k = step % len(masks[0])
            x = v
            for (w, b), m in zip(pairs[:-1], masks[:-1], strict=True):
                v = F.relu(F.linear(v, w * m[k], b))
            w, b = pairs[-1]
            out = F.linear(v, w * masks[-1][k], b)
            return out if direct is None else out + F.linear(x, params[n] * direct[k])

    return logits


def hand_written_epoch(
    model: torch.nn.Module, x: torch.Tensor, batch_size: int, lr: float, seed: int
) -> float:
    """One epoch of plain PyTorch on copies of ``model``'s tensors: the same network written
    out by hand (:func:`hand_written_logits`), Adam, ``-mean log p`` per minibatch. Returns
    seconds."""
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)  # the kernel that fit uses
    logits = hand_written_logits(model, params)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    index = torch.randperm(len(x), generator=generator)
    for step, first in enumerate(range(0, len(x), batch_size)):
        batch = x[index[first : first + batch_size]]
        loss = F.binary_cross_entropy_with_logits(logits(batch, step), batch, reduction="none")
        loss = loss.sum(-1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def throughput(name: str, x: torch.Tensor, args: argparse.Namespace) -> dict[str, object]:
    make = MODELS[name][0]
    torch.manual_seed(0)
    model = make(args.made_ordering)
    ours, theirs = [], []
    for repeat in range(args.repeats):  # alternate, so that both see the same machine load
        torch.manual_seed(repeat)
        copy = make(args.made_ordering)
        copy.load_state_dict(model.state_dict())
        result = fit(
            copy,
            x,
            epochs=1,
            batch_size=args.batch_size,
            lr=1e-3,
            seed=repeat,
            progress=False,
            plots=False,
        )
        ours.append(result.seconds)
        theirs.append(hand_written_epoch(model, x, args.batch_size, 1e-3, repeat))
    ppdgm_rate, torch_rate = len(x) / min(ours), len(x) / min(theirs)
    row = {
        "model": name,
        "images": len(x),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "ppdgm_images_per_s": ppdgm_rate,
        "pytorch_images_per_s": torch_rate,
        "ratio": torch_rate / ppdgm_rate,
        "target": 1.15,
    }
    print(
        f"{name:<14} ppdgm {ppdgm_rate:9.1f} img/s   hand-written {torch_rate:9.1f} img/s   "
        f"ratio {row['ratio']:.3f} (target <= 1.15)"
    )
    return row


def precision(name: str, x: torch.Tensor, args: argparse.Namespace) -> dict[str, object]:
    make = MODELS[name][0]
    torch.manual_seed(0)
    model = make(args.made_ordering)
    seconds: dict[str, list[float]] = {kind: [] for kind in PRECISIONS}
    for repeat in range(args.repeats):  # alternate, so that both see the same machine load
        for kind, times in seconds.items():
            copy = make(args.made_ordering)
            copy.load_state_dict(model.state_dict())
            result = fit(copy, x, epochs=1, batch_size=args.batch_size, lr=1e-3, seed=repeat,
                         precision=kind, progress=False, plots=False)  # fmt: skip
            times.append(result.seconds)
    float32, bf16 = len(x) / min(seconds["32"]), len(x) / min(seconds["bf16-mixed"])
    row = {
        "model": name,
        "images": len(x),
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "float32_images_per_s": float32,
        "bf16_mixed_images_per_s": bf16,
        "speedup": bf16 / float32,
    }
    print(
        f"{name:<18} float32 {float32:9.1f} img/s   bf16-mixed {bf16:9.1f} img/s   "
        f"speed-up {row['speedup']:.2f}x"
    )
    return row


def device_name(device: torch.device) -> str:
    """``cpu``, or the name of the GPU (``NVIDIA H200``)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def quality(
    name: str,
    train: torch.Tensor,
    full_valid: torch.Tensor,
    args: argparse.Namespace,
) -> dict[str, object]:
    valid = full_valid[: args.valid_rows]
    make, published = MODELS[name]
    torch.manual_seed(args.seed)
    model = make(args.made_ordering).to(args.device)
    if args.init:  # a second phase (e.g. a lower learning rate) from an earlier run's best
        model.load_state_dict(load_model(args.init, expect=type(model))[0].state_dict())
    budget = args.budget_minutes * 60 if args.budget_minutes else None
    out = Path(args.runs) / name if args.runs else None
    result = fit(
        model,
        train,
        valid,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        lr_decay=args.lr_decay,
        precision=args.precision,
        patience=args.patience,
        max_seconds=budget,
        seed=args.seed,
        out_dir=out,
        resume=args.resume,
        overwrite=not args.resume,
        progress=not args.no_progress,
        plots=bool(out),
        data={"name": "binarized-mnist", "data_dir": str(args.data_dir)},
    )
    if args.metrics_dir:  # the learning curve, also of a run that keeps no checkpoints
        metrics = Path(args.metrics_dir) / f"{name}.metrics.jsonl"
        metrics.parent.mkdir(parents=True, exist_ok=True)
        metrics.write_text("".join(json.dumps(entry) + "\n" for entry in result.history))
    nll = result.best_valid_nll
    if len(valid) < len(full_valid):  # the best epoch, chosen on part, scored on the whole split
        nll = evaluate(model, full_valid, batch_size=args.batch_size)["nll"]
    row = {
        "model": name,
        "config": model.config,
        "parameters": model.num_parameters,
        "train_rows": len(train),
        "valid_rows": len(full_valid),
        "selection_valid_rows": len(valid),
        "selection_valid_nll_nats": result.best_valid_nll,
        "epochs_run": len(result.history),
        "best_epoch": result.best_epoch,
        "stopped_early": result.stopped_early,
        "training_seconds": result.seconds,  # of this call: a resumed run's earlier ones not
        "resumed": args.resume,
        "valid_nll_nats": nll,
        "valid_bits_per_dim": nll / (784 * math.log(2)),
        "published_test_nll_nats": published,
        "gap_nats": nll - published,
        "within_1_5_nats": nll - published <= 1.5,
        "settings": {
            "batch_size": args.batch_size,
            "lr": args.lr,
            "weight_decay": args.weight_decay,
            "lr_decay": args.lr_decay,
            "precision": args.precision,
            "patience": args.patience,
            "epochs": args.epochs,
            "budget_minutes": args.budget_minutes,
            "init": args.init,
            "device": device_name(next(model.parameters()).device),
        },
    }
    print(
        f"{name:<14} valid NLL {nll:8.3f} nats (published {published}; gap {nll - published:+.2f})"
        f"  {len(result.history)} epochs in {result.seconds:.0f} s"
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="throughput,quality")
    parser.add_argument("--models", default=",".join(MODELS), help=", ".join(MODELS))
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/binarized_mnist"))
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--throughput-rows", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--budget-minutes", type=float, help="training time per model")
    parser.add_argument("--patience", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.0, help="Adam's L2 penalty")
    parser.add_argument(
        "--lr-decay", type=float, default=1.0, help="learning rate times this each epoch"
    )
    parser.add_argument(
        "--precision", default="32", choices=PRECISIONS, help="of the training steps"
    )
    parser.add_argument("--train-rows", type=int, help="the first N training images only")
    parser.add_argument(
        "--valid-rows",
        type=int,
        help="choose the best epoch on the first N validation images (then score it on all)",
    )
    parser.add_argument("--made-ordering", default="agnostic", help="ordering of made-32masks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="start from this checkpoint's weights (one model)")
    parser.add_argument("--runs", help="keep each quality run's checkpoints in RUNS/MODEL")
    parser.add_argument(
        "--metrics-dir",
        default=str(ROOT / "benchmarks/results/curves"),
        help="write each quality run's MODEL.metrics.jsonl here (benchmarks/results/curves)",
    )
    parser.add_argument("--device", default="cpu", help="train on this torch device (cpu)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in RUNS/MODEL (same settings)"
    )
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument(
        "--release-memory",
        action="store_true",
        help="leave glibc's default of unmapping freed large blocks",
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/autoregressive.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    retained = False if args.release_memory else retain_freed_memory()
    parts, names = args.parts.split(","), args.models.split(",")
    unknown = [n for n in names if n not in MODELS] + [
        p for p in parts if p not in ("throughput", "precision", "quality")
    ]
    if unknown:
        parser.error(f"unknown models or parts: {', '.join(unknown)}")
    if args.resume and (args.init or not args.runs):
        parser.error("--resume needs --runs (the folder of the run) and no --init")
    data_dir = Path(args.data_dir)
    have_data = (data_dir / "binarized_mnist_train.amat").is_file()
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "retain_freed_memory": retained,
        "processor": platform.processor() or platform.machine(),
    }
    train = load_binarized_mnist(data_dir, "train") if have_data else None
    if "throughput" in parts or "precision" in parts:
        if train is not None:
            x = train[: args.throughput_rows]
        else:
            print(f"no MNIST files in {data_dir}: timings on random binary images")
            x = torch.bernoulli(torch.full((args.throughput_rows, 784), 0.13))
        if "throughput" in parts:
            results["throughput"] = [throughput(n, x, args) for n in names]
        if "precision" in parts:
            results["precision"] = [precision(n, x, args) for n in names]
    if "quality" in parts:
        if train is None:
            print(f"no MNIST files in {data_dir}: quality skipped")
        else:
            valid = load_binarized_mnist(data_dir, "valid")
            rows = {row["model"]: row for row in results.get("quality", [])}
            for n in names:  # one model at a time, so that an interrupted run keeps the others
                rows[n] = quality(n, train[: args.train_rows], valid, args)
                results["quality"] = list(rows.values())
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_text(json.dumps(results, indent=2) + "\n")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
