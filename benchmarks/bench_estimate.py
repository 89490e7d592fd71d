"""Importance-sampled log p(x) under a small VAE: ppdgm's LogLikelihood against plain PyTorch.

The issue's target: K = 5,000 samples per image on 10,000 binary images of dimension 784, within
1.2 times the time of a pure-PyTorch evaluation of the same bound in the same run, with peak
memory bounded by the chunk size (not by K).

- The VAE (defined here; the model zoo's comes later): a diagonal Gaussian encoder and a Bernoulli
  decoder, each an MLP with one hidden layer, randomly initialized (the timing does not depend on
  training). Data: the first ``--rows`` images of binarized MNIST's validation split when
  ``../shared/data/binarized_mnist`` is there, random binary vectors otherwise.
- ``ppdgm``: ``LogLikelihood(model, guide, num_samples=K, chunk_size=C)`` on the Pyro program
  (which also computes the standard error, the effective sample size and the Pareto k).
- ``torch``: the same bound by hand, ``log mean_k p(x, z_k) / q(z_k | x)`` in chunks of C samples,
  with the encoder run once (the Pyro guide runs it once per chunk).
- time: one full-size run of each (the totals, compared within their standard errors), then the
  ratio from ``--repeat`` alternating short runs (4 chunks; the cost per chunk does not depend on
  K), the best of each: on a shared machine the neighbours' load swings single long runs by 2x.
- memory: the growth of the peak resident size (VmHWM, reset before the run) at two chunk sizes
  and two values of K, each in a fresh process.

Usage: ``python benchmarks/bench_estimate.py [--rows N] [--samples K] [--chunk-size C]``;
writes ``benchmarks/results/estimate.json``. About 5 microseconds per sample and row for each
method on two idle cores: the full size (10,000 x 5,000) takes about 10 minutes per method,
``--rows 2000 --samples 1000`` a few minutes in all.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
import torch.nn.functional as F
from torch import nn

from ppdgm.infer.estimate import LogLikelihood, ParetoKWarning

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "binarized_mnist"
RESULTS = Path(__file__).parent / "results" / "estimate.json"


class VAE(nn.Module):
    """A small VAE: ``q(z | x) = N(loc(x), scale(x))``, ``p(x | z) = Bernoulli(logits(z))``."""

    def __init__(self, x_dim: int = 784, z_dim: int = 32, hidden: int = 256) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Softplus(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(
            nn.Linear(z_dim, hidden), nn.Softplus(), nn.Linear(hidden, x_dim)
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.encoder(x).chunk(2, -1)
        return loc, log_scale.clamp(-5, 2).exp()

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        zeros = x.new_zeros(self.z_dim)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(zeros, 1.0).to_event(1))
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        loc, scale = self.encode(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    @torch.no_grad()
    def iwae_by_hand(self, x: torch.Tensor, num_samples: int, chunk: int) -> torch.Tensor:
        """``log (1/K) sum_k p(x, z_k) / q(z_k | x)`` per row, in plain PyTorch."""
        loc, scale = self.encode(x)
        log_norm = 0.5 * math.log(2 * math.pi)
        total = torch.full((x.shape[0],), -math.inf, dtype=torch.float64)
        done = 0
        while done < num_samples:
            c = min(chunk, num_samples - done)
            eps = torch.randn(c, *loc.shape, dtype=loc.dtype)
            z = loc + scale * eps
            logits = self.decoder(z)
            log_px = -F.binary_cross_entropy_with_logits(
                logits, x.expand_as(logits), reduction="none"
            ).sum(-1)
            log_pz = (-0.5 * z**2 - log_norm).sum(-1)
            log_qz = (-0.5 * eps**2 - log_norm - scale.log()).sum(-1)
            lw = (log_px + log_pz - log_qz).double()
            total = torch.logaddexp(total, torch.logsumexp(lw, 0))
            done += c
        return total - math.log(num_samples)


def load_rows(rows: int, dim: int, seed: int) -> tuple[torch.Tensor, str]:
    path = DATA / "binarized_mnist_valid.amat"
    if path.exists():
        with path.open() as f:
            lines = [next(f) for _ in range(rows)]
        data = np.array([line.split() for line in lines], dtype=np.float32)
        return torch.from_numpy(data), f"binarized MNIST validation, first {rows} images"
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(rows, dim, generator=g) < 0.3).float(), f"{rows} random binary vectors"


def peak_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def resident_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the high-water mark VmHWM drops to the current resident size


def ppdgm_estimate(vae: VAE, x: torch.Tensor, k: int, chunk: int):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoKWarning)  # an untrained VAE: heavy tails expected
        return LogLikelihood(vae.model, vae.guide, num_samples=k, chunk_size=chunk)(x)


def memory_growth(rows: int, k: int, chunk: int, seed: int) -> float:
    """Peak resident growth (MiB) of one estimate, measured in a fresh process."""
    out = subprocess.run(
        [sys.executable, __file__, "--memory-case", f"{rows},{k},{chunk}", "--seed", str(seed)],
        check=True,
        capture_output=True,
        text=True,
    )
    return float(out.stdout.split()[-1])


def memory_case(spec: str, seed: int) -> None:
    rows, k, chunk = (int(v) for v in spec.split(","))
    torch.manual_seed(seed)
    vae = VAE()
    x, _ = load_rows(rows, 784, seed)
    ppdgm_estimate(vae, x[:8], 2, 2)  # imports and first-call allocations
    before = resident_mib()
    reset_peak()
    ppdgm_estimate(vae, x, k, chunk)
    print(peak_mib() - before)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--chunk-size", type=int, default=32, help="samples per pass (32)")
    parser.add_argument("--repeat", type=int, default=7, help="short timed runs of each (7)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (all)")
    parser.add_argument("--memory-case", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_case:
        memory_case(args.memory_case, args.seed)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    vae = VAE()
    x, source = load_rows(args.rows, 784, args.seed)
    k, chunk = args.samples, args.chunk_size
    print(f"data: {source}; K = {k}, chunk = {chunk}, {torch.get_num_threads()} threads")

    ppdgm_estimate(vae, x[:64], 2 * chunk, chunk)  # warm up both paths
    vae.iwae_by_hand(x[:64], 2 * chunk, chunk)

    # the full size once each: the totals, and the time of a whole run
    pyro.set_rng_seed(args.seed)
    start = time.perf_counter()
    by_hand = vae.iwae_by_hand(x, k, chunk)
    torch_full = time.perf_counter() - start
    pyro.set_rng_seed(args.seed + 1)
    start = time.perf_counter()
    est = ppdgm_estimate(vae, x, k, chunk)
    ppdgm_full = time.perf_counter() - start
    gap = float(est.log_prob.sum() - by_hand.sum())
    # both are estimates of the same bound from independent samples: compare against the stderr
    z = gap / max(est.total_stderr * math.sqrt(2), 1e-12)
    per = torch_full / (k * args.rows) * 1e9
    print(f"full size: pure PyTorch {torch_full:.1f} s ({per:.0f} ns per sample and row), ppdgm")
    print(f"  {ppdgm_full:.1f} s: ratio {ppdgm_full / torch_full:.3f}")
    print(
        f"  log p(x) per row: ppdgm {float(est.log_prob.mean()):.4f}, by hand "
        f"{float(by_hand.mean()):.4f}; totals differ by {gap:.3f} = {z:.2f} x sqrt(2) stderr"
    )

    # the ratio: short runs (4 chunks) alternating, the best of each; on a shared machine one
    # long run per method measures the neighbours' load as much as the code
    short = min(k, 4 * chunk)
    torch_times, ppdgm_times = [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        vae.iwae_by_hand(x, short, chunk)
        torch_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        ppdgm_estimate(vae, x, short, chunk)
        ppdgm_times.append(time.perf_counter() - start)
    torch_s, ppdgm_s = min(torch_times), min(ppdgm_times)
    ratio = ppdgm_s / torch_s
    pairs = sorted(p / t for p, t in zip(ppdgm_times, torch_times, strict=True))
    median = pairs[len(pairs) // 2]
    print(
        f"ratio over {args.repeat} alternating runs of K = {short}: best {ppdgm_s:.2f} s over "
        f"best {torch_s:.2f} s = {ratio:.3f} (median of pairs {median:.3f}; target <= 1.2)"
    )

    # memory, each case in a fresh process: rows fixed, chunk and K varied
    n = min(args.rows, 2000)
    memory = []
    for c, kk in ((chunk, 4 * chunk), (chunk, 16 * chunk), (4 * chunk, 16 * chunk)):
        growth = memory_growth(n, kk, c, args.seed)
        memory.append({"rows": n, "chunk_size": c, "samples": kk, "peak_growth_mib": growth})
        print(f"memory: {n} rows, chunk {c:4d}, K {kk:5d}: peak grows {growth:7.1f} MiB")
    one_pass = n * chunk * 784 * 4 / 2**20
    print(f"(one [chunk, rows, 784] float32 tensor at chunk {chunk}: {one_pass:.1f} MiB)")

    result = {
        "data": source,
        "rows": args.rows,
        "samples": k,
        "chunk_size": chunk,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "full_torch_seconds": torch_full,
        "full_ppdgm_seconds": ppdgm_full,
        "full_ratio": ppdgm_full / torch_full,
        "timing_samples": short,
        "torch_seconds_all": torch_times,
        "ppdgm_seconds_all": ppdgm_times,
        "ratio": ratio,
        "ratio_median_of_pairs": median,
        "target_ratio": 1.2,
        "mean_log_prob_ppdgm": float(est.log_prob.mean()),
        "mean_log_prob_torch": float(by_hand.mean()),
        "total_gap_in_stderr": z,
        "min_ess": float(est.ess.min()),
        "memory": memory,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
