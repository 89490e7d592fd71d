"""VAEs on binarized MNIST: the speed of an SVI step, and the likelihood bounds reached.

Parts (``--parts``, comma-separated):

- ``speed``: one epoch of ``ppdgm.train.fit`` with :class:`ppdgm.svi.SVIObjective` (the ELBO with
  one sample, what ``Trace_ELBO`` minimizes), against a hand-written pure-PyTorch step of the same
  networks (same math, batches and Adam) and against Pyro's default SVI (``pyro.module``,
  ``Trace_ELBO``, ``pyro.optim.Adam``) on the VAE's programs; run alternately in one process.
  Target: ppdgm within 1.10 times the hand-written step.
- ``cs236``: the Stanford CS236 setting: latent size 10, MLPs 784-300-300 (ELU), 20,000 Adam
  iterations of 100 images (40 epochs), then on the validation split the negative ELBO with its
  KL and reconstruction terms and the negative IWAE bounds with 1/10/100/1,000 samples
  (reference: 100 ± 2 (KL 19.5, rec 82); 99 / 97 / 96 / 95). ``--guide-flows`` adds the same
  VAE with flow guides (IAF by default), which must improve both bounds.
- ``iwae-arch``: the IWAE paper's one-stochastic-layer model (784-200-200-50, tanh), trained as a
  VAE (``Trace_ELBO``) and as an IWAE with K = 50, each for ``--budget-minutes`` of CPU, then the
  negative IWAE bound with K = 5,000 on ``--eval-rows`` validation images (published test NLL:
  88.71 and 87.10), with the curve of validation -ELBO per epoch.

Results are merged into ``benchmarks/results/vae.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
import warnings
from pathlib import Path
from typing import Any

import pyro
import torch
from torch.nn import functional as F

from ppdgm.data import load_binarized_mnist
from ppdgm.infer.estimate import LogLikelihood, UnreliableWeightsWarning
from ppdgm.infer.svi import SVIObjective
from ppdgm.models import VAE
from ppdgm.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]


def hand_written_epoch(vae: VAE, x: torch.Tensor, lr: float, seed: int) -> float:
    """One epoch of plain PyTorch on copies of ``vae``'s mean-field networks: encoder, softplus
    scale, reparameterized draw, decoder, ``log p(x|z) + log p(z) - log q(z|x)``, Adam."""
    import copy

    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    params = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr, fused=True)  # the kernel that fit uses
    k = vae.z_dim
    log_2pi = math.log(2 * math.pi)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    index = torch.randperm(len(x), generator=generator)
    for first in range(0, len(x), 100):
        batch = x[index[first : first + 100]]
        out = encoder.head(encoder.body(batch))
        loc, scale = out[:, :k], F.softplus(out[:, k:]) + 1e-6
        eps = torch.randn_like(loc)
        z = loc + scale * eps
        logits = decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(logits, batch, reduction="none").sum(-1)
        log_pz = -0.5 * (z.pow(2) + log_2pi).sum(-1)
        log_qz = -(0.5 * (eps.pow(2) + log_2pi) + scale.log()).sum(-1)
        loss = -(log_px + log_pz - log_qz).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def pyro_svi_epoch(vae: VAE, x: torch.Tensor, lr: float, seed: int) -> float:
    """One epoch of Pyro's default SVI on the VAE's programs (parameters via ``pyro.module``)."""
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()

    def model(batch: torch.Tensor) -> None:
        pyro.module("vae", vae)
        vae.model(batch)

    def guide(batch: torch.Tensor) -> None:
        pyro.module("vae", vae)
        vae.guide(batch)

    svi = SVI(model, guide, pyro.optim.Adam({"lr": lr}), Trace_ELBO())
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    index = torch.randperm(len(x), generator=generator)
    for first in range(0, len(x), 100):
        svi.step(x[index[first : first + 100]])
    return time.perf_counter() - start


def speed(x: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    torch.manual_seed(0)
    template = VAE(784, 10, [300, 300])
    times: dict[str, list[float]] = {"ppdgm": [], "pytorch": [], "pyro": []}
    for repeat in range(args.repeats):  # alternate, so that all see the same machine load
        for name in times:
            vae = VAE(784, 10, [300, 300])
            vae.load_state_dict(template.state_dict())
            if name == "ppdgm":
                result = fit(
                    vae, x, epochs=1, lr=1e-3, seed=repeat, objective=SVIObjective(),
                    progress=False, plots=False,
                )  # fmt: skip
                times[name].append(result.seconds)
            elif name == "pytorch":
                times[name].append(hand_written_epoch(vae, x, 1e-3, repeat))
            else:
                times[name].append(pyro_svi_epoch(vae, x, 1e-3, repeat))
    steps = math.ceil(len(x) / 100)
    best = {name: min(t) / steps * 1e3 for name, t in times.items()}
    row = {
        "images": len(x),
        "batch_size": 100,
        "repeats": args.repeats,
        "ms_per_step": best,
        "ratio_ppdgm": best["ppdgm"] / best["pytorch"],
        "ratio_pyro_svi": best["pyro"] / best["pytorch"],
        "target": 1.10,
    }
    print(
        f"SVI step (784-300-300-10, batch 100): hand-written {best['pytorch']:.2f} ms, "
        f"ppdgm {best['ppdgm']:.2f} ms ({row['ratio_ppdgm']:.3f}x, target <= 1.10), "
        f"Pyro SVI {best['pyro']:.2f} ms ({row['ratio_pyro_svi']:.3f}x)"
    )
    return row


@torch.no_grad()
def bounds(
    vae: VAE, valid: torch.Tensor, ks: list[int], eval_rows: int, seed: int = 0
) -> dict[str, Any]:
    """Negative ELBO (with KL and reconstruction) on all of ``valid`` and negative IWAE bounds on
    its first ``eval_rows`` rows, in nats per image."""
    torch.manual_seed(seed)
    rec, kl = [], []
    for chunk in valid.split(500):
        q = vae.posterior(vae.check(chunk))
        z = q.rsample()
        rec.append(vae.likelihood(z).log_prob(chunk))
        analytic = vae.analytic_kl(chunk)
        kl.append(analytic if analytic is not None else q.log_prob(z) - vae.prior().log_prob(z))
    rec_mean, kl_mean = -float(torch.cat(rec).mean()), float(torch.cat(kl).mean())
    out: dict[str, Any] = {
        "neg_elbo": rec_mean + kl_mean,
        "kl": kl_mean,
        "reconstruction": rec_mean,
        "valid_rows": len(valid),
        "iwae_rows": min(eval_rows, len(valid)),
    }
    rows = valid[:eval_rows]
    for k in ks:
        estimator = LogLikelihood(vae.model, vae.guide, num_samples=k)
        with warnings.catch_warnings():  # a bound to report, whatever its weights' tails
            warnings.simplefilter("ignore", UnreliableWeightsWarning)
            values = [estimator(chunk).log_prob for chunk in rows.split(500)]
        out[f"neg_iwae_{k}"] = -float(torch.cat(values).mean())
    return out


def train_vae(
    vae: VAE,
    train: torch.Tensor,
    valid: torch.Tensor,
    objective: SVIObjective,
    epochs: int,
    budget_minutes: float | None,
    run: Path | None,
    args: argparse.Namespace,
) -> tuple[Any, float]:
    result = fit(
        vae,
        train,
        valid[: args.valid_rows],
        epochs=epochs,
        lr=args.lr,
        seed=args.seed,
        objective=objective,
        max_seconds=budget_minutes * 60 if budget_minutes else None,
        out_dir=run,
        overwrite=True,
        progress=not args.no_progress,
        plots=run is not None,
        data={"name": "binarized-mnist", "data_dir": str(args.data_dir)},
    )
    return result, result.seconds


def cs236(train: torch.Tensor, valid: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    rows = []
    for flow in [None, *[f for f in args.guide_flows.split(",") if f]]:
        torch.manual_seed(args.seed)
        vae = VAE(784, 10, [300, 300], guide_flow=flow, flow_layers=2)
        name = f"cs236-{flow or 'meanfield'}"
        run = Path(args.runs) / name if args.runs else None
        epochs = math.ceil(args.iterations * 100 / len(train))
        result, seconds = train_vae(vae, train, valid, SVIObjective(), epochs, None, run, args)
        row = {
            "model": name,
            "config": vae.config,
            "parameters": vae.num_parameters,
            "iterations": epochs * math.ceil(len(train) / 100),
            "epochs": epochs,
            "best_epoch": result.best_epoch,
            "training_seconds": seconds,
            **bounds(vae, valid, [1, 10, 100, 1000], args.eval_rows),
            "reference": {"neg_elbo": 100, "kl": 19.5, "reconstruction": 82,
                          "neg_iwae": {"1": 99, "10": 97, "100": 96, "1000": 95}},
        }  # fmt: skip
        print(
            f"{name:<18} -ELBO {row['neg_elbo']:.2f} (KL {row['kl']:.2f}, rec "
            f"{row['reconstruction']:.2f}); -IWAE 1/10/100/1000 "
            + " / ".join(f"{row[f'neg_iwae_{k}']:.2f}" for k in (1, 10, 100, 1000))
            + f"  [{seconds:.0f} s, {epochs} epochs]"
        )
        rows.append(row)
    return rows


def iwae_arch(train: torch.Tensor, valid: torch.Tensor, args: argparse.Namespace) -> list[dict]:
    rows = []
    for loss, k, published in (("elbo", 1, 88.71), ("iwae", 50, 87.10)):
        torch.manual_seed(args.seed)
        vae = VAE(784, 50, [200, 200], activation="tanh")
        name = f"iwae-arch-{loss}-k{k}"
        run = Path(args.runs) / name if args.runs else None
        objective = SVIObjective(loss, k)
        result, seconds = train_vae(
            vae, train, valid, objective, args.max_epochs, args.budget_minutes, run, args
        )
        row = {
            "model": name,
            "config": vae.config,
            "objective": objective.settings,
            "epochs": len(result.history),
            "training_seconds": seconds,
            "curve_valid_neg_elbo": [h["valid_nll"] for h in result.history],
            **bounds(vae, valid, [1, 5000], args.eval_rows),
            "published_test_nll": published,
        }
        print(
            f"{name:<22} -ELBO {row['neg_elbo']:.2f}; -IWAE_5000 {row['neg_iwae_5000']:.2f} "
            f"on {row['iwae_rows']} rows (published {published})  [{seconds:.0f} s, "
            f"{row['epochs']} epochs]"
        )
        rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="speed,cs236")
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/binarized_mnist"))
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    parser.add_argument("--speed-rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20_000, help="cs236: Adam steps")
    parser.add_argument("--guide-flows", default="iaf", help="cs236: flow guides to compare")
    parser.add_argument("--budget-minutes", type=float, default=30.0, help="iwae-arch: per run")
    parser.add_argument("--max-epochs", type=int, default=3280, help="iwae-arch: epoch cap")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--valid-rows", type=int, default=2000, help="validation during training")
    parser.add_argument("--eval-rows", type=int, default=2000, help="rows for the IWAE bounds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", help="keep each run's checkpoints and pictures in RUNS/NAME")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/vae.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    parts = args.parts.split(",")
    unknown = [p for p in parts if p not in ("speed", "cs236", "iwae-arch")]
    if unknown:
        parser.error(f"unknown parts: {', '.join(unknown)}")
    data_dir = Path(args.data_dir)
    if not (data_dir / "binarized_mnist_train.amat").is_file():
        parser.error(f"no binarized MNIST in {data_dir} (--data-dir)")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    results["machine"] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "pyro": pyro.__version__,
        "threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
    }
    train = load_binarized_mnist(data_dir, "train")
    valid = load_binarized_mnist(data_dir, "valid")
    for part in parts:
        if part == "speed":
            results["speed"] = speed(train[: args.speed_rows], args)
        elif part == "cs236":
            results["cs236"] = cs236(train, valid, args)
        else:
            results["iwae_arch"] = iwae_arch(train, valid, args)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
