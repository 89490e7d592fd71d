"""Flow density models against zuko, and probability density distillation.

Three parts (``--parts``), all in one process with one thread by default:

- ``digits``: NICE, RealNVP and MAF on scikit-learn's 8x8 digits with their 17 gray levels,
  dequantized and logit-transformed (``alpha = 0.05``) by :class:`ppdgm.preprocess.Dequantization`
  for both libraries; held-out bits per dimension (the dequantization bound, averaged over
  ``--draws`` noise draws per image) at the epoch of best validation bits/dim.
- ``toys``: the same three flows on 2-D toy densities (two moons, a ring, a checkerboard) drawn
  with a fixed seed; held-out NLL in nats, next to the true density's NLL on the same points
  (closed forms and 1-D quadrature), the floor no model can beat in expectation.
- ``distill``: a MAF teacher (the digits MAF's flow, a 64-D density in logit space) distilled
  into an IAF student by :func:`ppdgm.training.distill.distill`; the times of sampling and of
  scoring with each, whose ratios show which direction is one pass.

zuko (not a dependency of ppdgm: ``pip install zuko``) gets the same data, noise, batches,
optimizer, epochs, hidden widths and number of layers: ``zuko.flows.RealNVP`` and
``zuko.flows.MAF`` as they ship, and for NICE ``zuko.flows.NICE`` with additive couplings (its
default univariate map is affine, which is RealNVP) and a final learned diagonal scaling as in
the NICE paper. Without zuko the script prints a message and runs ppdgm alone.

Usage: ``python benchmarks/bench_flows.py [--parts digits,toys,distill] [--digits-epochs N]
[--toy-epochs N] [--threads T]``. Results are merged into ``benchmarks/results/flows.json`` (a
part not run keeps its previous entries).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ppdgm.data import load_digits
from ppdgm.models import IAF, MAF, NICE, RealNVP
from ppdgm.preprocess import Dequantization, bits_per_dim
from ppdgm.training.distill import distill, reverse_kl

try:
    import zuko
except ImportError:  # the comparison is optional
    zuko = None

ROOT = Path(__file__).resolve().parents[1]
KINDS = {"nice": NICE, "realnvp": RealNVP, "maf": MAF}
LogProb = Callable[[Tensor], Tensor]


# --- 2-D toy densities, each with its exact log-density ----------------------------------------


def two_moons(n: int, generator: torch.Generator, noise: float = 0.1) -> Tensor:
    """Two interleaved half circles (radius 1, the inner one shifted by ``(1, -0.5)``) with
    Gaussian noise, centred."""
    s = torch.rand(n, generator=generator) * math.pi
    inner = torch.rand(n, generator=generator) < 0.5
    x = torch.stack([s.cos(), s.sin()], -1)
    x = torch.where(inner[:, None], torch.stack([1 - s.cos(), 0.5 - s.sin()], -1), x)
    return x - torch.tensor([0.5, 0.25]) + noise * torch.randn(n, 2, generator=generator)


def two_moons_log_prob(x: Tensor, noise: float = 0.1, points: int = 4001) -> Tensor:
    """``log p(x)`` of :func:`two_moons`: the noise's Normal averaged over each arc, by the
    trapezoid rule over the arc's parameter."""
    s = torch.linspace(0.0, math.pi, points, dtype=torch.float64)
    arcs = torch.cat(
        [torch.stack([s.cos(), s.sin()], -1), torch.stack([1 - s.cos(), 0.5 - s.sin()], -1)]
    ) - torch.tensor([0.5, 0.25], dtype=torch.float64)
    d2 = torch.cdist(x.double(), arcs).square()
    density = torch.exp(-d2 / (2 * noise**2)) / (2 * math.pi * noise**2)
    outer, inner = density[:, :points], density[:, points:]
    mean = (torch.trapezoid(outer, s, dim=1) + torch.trapezoid(inner, s, dim=1)) / (2 * math.pi)
    return mean.log()


def ring(n: int, generator: torch.Generator, radius: float = 2.0, width: float = 0.1) -> Tensor:
    """A circle of radius ``radius`` blurred radially by ``N(0, width^2)``."""
    angle = torch.rand(n, generator=generator) * 2 * math.pi
    r = radius + width * torch.randn(n, generator=generator)
    return torch.stack([r * angle.cos(), r * angle.sin()], -1)


def ring_log_prob(x: Tensor, radius: float = 2.0, width: float = 0.1) -> Tensor:
    """``log p(x) = log N(|x|; radius, width^2) - log(2 pi |x|)`` (polar change of variables;
    the mass at negative radii, ``Phi(-20)``, is nil)."""
    r = x.double().norm(dim=-1)
    normal = torch.distributions.Normal(radius, width)
    return normal.log_prob(r) - torch.log(2 * math.pi * r)


def checkerboard(n: int, generator: torch.Generator) -> Tensor:
    """Uniform on the 8 black squares of a 4 x 4 board on ``[-2, 2]^2``."""
    x1 = torch.rand(n, generator=generator) * 4 - 2
    x2 = torch.rand(n, generator=generator) - 2 * torch.randint(0, 2, (n,), generator=generator)
    return torch.stack([x1, x2 + (x1.floor() % 2)], -1)


def checkerboard_log_prob(x: Tensor) -> Tensor:
    """``log(1/8)`` on the black squares, ``-inf`` elsewhere."""
    x = x.double()
    inside = (x.abs() <= 2).all(-1) & ((x.floor().sum(-1) % 2) == 0)
    return torch.where(inside, -math.log(8.0), -math.inf)


TOYS: dict[str, tuple[Callable[[int, torch.Generator], Tensor], Callable[[Tensor], Tensor]]] = {
    "two-moons": (two_moons, two_moons_log_prob),
    "ring": (ring, ring_log_prob),
    "checkerboard": (checkerboard, checkerboard_log_prob),
}


# --- the two libraries' models, behind one interface ---------------------------------------------


def ppdgm_flow(kind: str, dim: int, args: argparse.Namespace, pre: Dequantization | None) -> Any:
    levels, alpha = (None, None) if pre is None else (pre.levels, pre.logit_alpha)
    return KINDS[kind](dim, args.hidden, args.layers, levels=levels, logit_alpha=alpha)


def zuko_flow(kind: str, dim: int, args: argparse.Namespace) -> nn.Module:
    from zuko.transforms import DependentTransform, MonotonicAffineTransform

    hidden = tuple(args.hidden)
    if kind == "realnvp":
        return zuko.flows.RealNVP(dim, transforms=args.layers, hidden_features=hidden)
    if kind == "maf":
        return zuko.flows.MAF(dim, transforms=args.layers, hidden_features=hidden)

    def additive(shift: Tensor) -> MonotonicAffineTransform:
        return MonotonicAffineTransform(shift, torch.zeros_like(shift))

    def scaling(shift: Tensor, log_scale: Tensor) -> DependentTransform:
        return DependentTransform(MonotonicAffineTransform(shift, log_scale), 1)

    couplings = zuko.flows.NICE(
        dim, transforms=args.layers, hidden_features=hidden, univariate=additive, shapes=[()]
    )
    scale = zuko.lazy.UnconditionalTransform(scaling, torch.zeros(dim), torch.zeros(dim))
    return zuko.flows.Flow([*couplings.transform.transforms, scale], couplings.base)


def zuko_log_prob(flow: nn.Module, pre: Dequantization | None) -> LogProb:
    if pre is None:
        return lambda x: flow().log_prob(x)

    def log_prob(x: Tensor) -> Tensor:
        t, log_det = pre.forward(x)  # the same noise stream and Jacobian as ppdgm's models
        return flow().log_prob(t) + log_det

    return log_prob


# --- one training protocol for both ---------------------------------------------------------------


@torch.no_grad()
def mean_log_prob(log_prob: LogProb, x: Tensor, draws: int, seed: int) -> float:
    """The mean over rows of ``log_prob``, each row's value averaged over ``draws`` calls (the
    dequantization noise; one call for continuous data)."""
    torch.manual_seed(seed)
    return float(torch.stack([log_prob(x) for _ in range(draws)]).mean())


def train(
    module: nn.Module,
    log_prob: LogProb,
    x: Tensor,
    valid: Tensor,
    args: argparse.Namespace,
    epochs: int,
    draws: int,
    seed: int,
) -> dict[str, Any]:
    """Adam on ``-mean log_prob`` over shuffled minibatches, the same batches and noise for
    every model; keeps the state of the epoch with the best validation log-likelihood."""
    optimizer = torch.optim.Adam(module.parameters(), lr=args.lr)
    shuffle = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + 1)
    best, best_epoch, best_state, diverged = -math.inf, 0, None, False
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        module.train()
        order = torch.randperm(len(x), generator=shuffle)
        for first in range(0, len(x), args.batch_size):
            # the dequantization noise of this batch comes from a stream shared by both libraries
            torch.manual_seed(int(torch.randint(2**62, (), generator=noise)))
            loss = -log_prob(x[order[first : first + args.batch_size]]).mean()
            if not torch.isfinite(loss):
                diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if diverged:
            break
        if epoch % args.eval_every == 0 or epoch == epochs:
            module.eval()
            score = mean_log_prob(log_prob, valid, draws, seed=epoch)
            if score > best:
                best, best_epoch, best_state = score, epoch, copy.deepcopy(module.state_dict())
    seconds = time.perf_counter() - start
    if best_state is not None:
        module.load_state_dict(best_state)
    return {"seconds": seconds, "best_epoch": best_epoch, "diverged": diverged}


def run_pair(
    kind: str,
    dim: int,
    data: dict[str, Tensor],
    pre: Dequantization | None,
    args: argparse.Namespace,
    epochs: int,
    draws: int,
    seed: int,
) -> list[dict[str, Any]]:
    rows = []
    libraries = ["ppdgm"] + (["zuko"] if zuko is not None and not args.no_zuko else [])
    for library in libraries:
        torch.manual_seed(seed)
        if library == "ppdgm":
            model = ppdgm_flow(kind, dim, args, pre)
            log_prob: LogProb = model.log_prob
        else:
            model = zuko_flow(kind, dim, args)
            log_prob = zuko_log_prob(model, pre)
        info = train(model, log_prob, data["train"], data["valid"], args, epochs, draws, seed)
        test = mean_log_prob(log_prob, data["test"], draws, seed=seed + 2)
        rows.append(
            {
                "library": library,
                "model": kind,
                "seed": seed,
                "parameters": sum(p.numel() for p in model.parameters()),
                "epochs": epochs,
                "test_log_prob": test,
                **info,
                "trained": model,
            }
        )
    return rows


def digits_part(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = {s: load_digits(s, binary=False) for s in ("train", "valid", "test")}
    pre = Dequantization(17, logit_alpha=0.05)
    rows, models = [], {}
    for kind in args.models:
        for seed in args.seeds:
            for row in run_pair(kind, 64, data, pre, args, args.digits_epochs, args.draws, seed):
                row["test_bits_per_dim"] = bits_per_dim(row["test_log_prob"], 64)
                trained = row.pop("trained")
                if seed == args.seeds[0]:
                    models[(row["library"], kind)] = trained
                rows.append(row)
                print(
                    f"digits {kind:8s} {row['library']:6s} seed {seed}: "
                    f"{row['test_bits_per_dim']:.4f} bits/dim (best epoch {row['best_epoch']}, "
                    f"{row['parameters']:,} parameters, {row['seconds']:.1f} s)",
                    flush=True,
                )
    return rows, models


def toys_part(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, (draw, log_prob) in TOYS.items():
        generator = torch.Generator().manual_seed(args.data_seed)
        data = {
            "train": draw(args.toy_train, generator),
            "valid": draw(2000, generator),
            "test": draw(args.toy_test, generator),
        }
        truth = -float(log_prob(data["test"]).mean())
        print(f"{name}: true density's NLL on the test points {truth:.4f} nats", flush=True)
        for kind in args.models:
            for seed in args.seeds:
                for row in run_pair(kind, 2, data, None, args, args.toy_epochs, 1, seed):
                    row.pop("trained")
                    row.update(toy=name, test_nll=-row["test_log_prob"], true_nll=truth)
                    rows.append(row)
                    print(
                        f"  {kind:8s} {row['library']:6s} seed {seed}: {row['test_nll']:.4f} "
                        f"nats (best epoch {row['best_epoch']}, {row['seconds']:.1f} s)",
                        flush=True,
                    )
    return rows


def summary(rows: list[dict[str, Any]], key: str, group: tuple[str, ...]) -> list[dict[str, Any]]:
    """Mean and standard deviation of ``key`` over seeds, per ``group`` and library."""
    table: dict[tuple[Any, ...], list[float]] = {}
    for row in rows:
        table.setdefault((*(row[g] for g in group), row["library"]), []).append(row[key])
    out = []
    for labels, values in table.items():
        mean = sum(values) / len(values)
        spread = (
            math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
            if len(values) > 1
            else 0.0
        )
        out.append(
            {
                **dict(zip((*group, "library"), labels, strict=True)),
                key: mean,
                "std": spread,
                "seeds": len(values),
            }
        )
    return out


def best_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def distill_part(args: argparse.Namespace, maf: MAF | None) -> dict[str, Any]:
    """Distils the digits MAF's flow (or an untrained MAF) into an IAF of the same size."""
    torch.manual_seed(args.data_seed)
    teacher = MAF(64, args.hidden, args.layers)
    if maf is not None:  # the same flow, as a density of continuous 64-D vectors (logit space)
        teacher.flow.load_state_dict(maf.flow.state_dict())
    student = IAF(64, args.hidden, args.layers)
    with torch.no_grad():
        kl_before = reverse_kl(teacher, student, 2000)
    result = distill(
        teacher,
        student,
        steps=args.distill_steps,
        num_samples=args.distill_samples,
        lr=args.distill_lr,
        seed=args.data_seed,
        progress=False,
    )
    with torch.no_grad():
        kl_after = reverse_kl(teacher, student, 2000)
        x = teacher.sample(args.timing_rows, seed=0)
        # each call scores a fresh copy: the layers' caches must not hand back an inverse
        times = {
            "teacher_sample": best_time(lambda: teacher.sample(args.timing_rows), 3),
            "student_sample": best_time(lambda: student.sample(args.timing_rows), 3),
            "teacher_log_prob": best_time(lambda: teacher.log_prob(x.clone()), 3),
            "student_log_prob": best_time(lambda: student.log_prob(x.clone()), 3),
        }
    if maf is not None:  # both as models of the digits: the student scores in d passes
        test = load_digits("test", binary=False)
        pre = maf.preprocessing
        scored = IAF(64, args.hidden, args.layers, levels=pre.levels, logit_alpha=pre.logit_alpha)
        scored.flow.load_state_dict(student.flow.state_dict())
        bits = {
            "teacher_test_bits_per_dim": bits_per_dim(
                mean_log_prob(maf.log_prob, test, args.draws, seed=0), 64
            ),
            "student_test_bits_per_dim": bits_per_dim(
                mean_log_prob(scored.log_prob, test, args.draws, seed=0), 64
            ),
        }
    else:
        bits = {}
    row = {
        "dim": 64,
        "teacher": "digits MAF (logit space)" if maf is not None else "untrained MAF",
        "steps": args.distill_steps,
        "num_samples": args.distill_samples,
        "seconds": result.seconds,
        "kl_before": float(kl_before.mean()),
        "kl_before_stderr": float(kl_before.std() / math.sqrt(2000)),
        "kl_after": float(kl_after.mean()),
        "kl_after_stderr": float(kl_after.std() / math.sqrt(2000)),
        **bits,
        "timing_rows": args.timing_rows,
        **times,
        "sampling_speedup_student_over_teacher": times["teacher_sample"] / times["student_sample"],
        "scoring_speedup_teacher_over_student": times["student_log_prob"]
        / times["teacher_log_prob"],
    }
    print(
        f"distill 64-D: KL {row['kl_before']:.2f} -> {row['kl_after']:.3f} nats in "
        f"{row['seconds']:.1f} s; the student samples "
        f"{row['sampling_speedup_student_over_teacher']:.1f}x faster, the teacher scores "
        f"{row['scoring_speedup_teacher_over_student']:.1f}x faster",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="digits,toys,distill")
    parser.add_argument("--models", default="nice,realnvp,maf")
    parser.add_argument("--hidden", type=int, nargs="+", default=[128, 128])
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--digits-epochs", type=int, default=100)
    parser.add_argument("--toy-epochs", type=int, default=20)
    parser.add_argument("--toy-train", type=int, default=10_000)
    parser.add_argument("--toy-test", type=int, default=5_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--draws", type=int, default=8, help="noise draws per held-out image")
    parser.add_argument("--distill-steps", type=int, default=3000)
    parser.add_argument("--distill-samples", type=int, default=256)
    parser.add_argument("--distill-lr", type=float, default=1e-3)
    parser.add_argument("--timing-rows", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seeds", default="0,1,2", help="model seeds (init, batches, noise)")
    parser.add_argument("--data-seed", type=int, default=0, help="the toys' data, distillation")
    parser.add_argument("--no-zuko", action="store_true", help="run ppdgm alone")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/flows.json")
    args = parser.parse_args()
    args.models = args.models.split(",")
    args.seeds = [int(seed) for seed in args.seeds.split(",")]
    parts = args.parts.split(",")
    torch.set_num_threads(args.threads)
    if zuko is None:
        print("zuko is not installed (pip install zuko): running ppdgm alone", flush=True)
    results: dict[str, Any] = {
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "zuko": getattr(zuko, "__version__", None),
            "threads": args.threads,
        },
        "settings": {k: v for k, v in vars(args).items() if k not in ("out",) and not callable(v)},
    }
    digits_models: dict[Any, Any] = {}
    if "digits" in parts:
        start = time.perf_counter()
        results["digits"], digits_models = digits_part(args)
        results["digits_summary"] = summary(results["digits"], "test_bits_per_dim", ("model",))
        results["digits_seconds"] = time.perf_counter() - start
    if "toys" in parts:
        start = time.perf_counter()
        results["toys"] = toys_part(args)
        results["toys_summary"] = summary(results["toys"], "test_nll", ("toy", "model"))
        results["toys_seconds"] = time.perf_counter() - start
    if "distill" in parts:
        start = time.perf_counter()
        results["distill"] = distill_part(args, digits_models.get(("ppdgm", "maf")))
        results["distill_seconds"] = time.perf_counter() - start
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():  # a part not run keeps its previous entries
        results = {**json.loads(args.out.read_text()), **results}
        results.pop("seconds", None)  # the total of an older layout
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name in ("digits_summary", "toys_summary"):
        for row in results.get(name, []):
            print(name, json.dumps(row))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
