"""A user's VAE written as a plain Pyro program, trained by ``ppdgm.train.fit``, against a
hand-written PyTorch step of the same networks.

For each network (the CS236 one, 784-300-300 with 10 latents and ELU; a small one, 784-64
with 4 latents) and each loss (the ELBO with one sample; the IWAE bound with 5), one epoch of
binarized MNIST rows (``--rows``, batch 100, one thread) is timed three ways, alternating in
one process so that all see the same machine:

- ``hand``: plain PyTorch: encoder, softplus scale, reparameterized draws, decoder, the log
  weights written out, fused Adam (the optimizer ``fit`` uses);
- ``ppdgm``: ``fit`` on the module below, whose ``model`` and ``guide`` are Pyro programs
  (``pyro.module``, ``pyro.plate("data")``, ``pyro.sample``), with nothing of ppdgm in it: its
  second epoch, once the loss is recorded as a graph (:mod:`ppdgm.infer.traced`; the first
  epoch's extra time, mostly the recording, is printed as ``once``);
- ``compiled``: the same with ``SVIObjective(compile=True)`` (``ppdgm fit --compile``): the
  recorded graph compiled by ``torch.compile`` (Inductor), its one-time cost printed apart;
- ``pyro``: Pyro's own ``SVI`` with ``Trace_ELBO`` (or ppdgm's IWAE loss) and ``pyro.optim.Adam``.

Target (issue 15): ppdgm within 1.10 times the hand-written step. Prints the milliseconds per
step and the ratios; writes ``benchmarks/results/programs.json``.

Run: ``.venv/bin/python benchmarks/bench_programs.py [--rows 5000] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import math
import platform
import time
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch
from torch import nn
from torch.nn import functional as F

from ppdgm.data import load_binarized_mnist
from ppdgm.infer.iwae import IWAE
from ppdgm.infer.svi import SVIObjective
from ppdgm.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "programs.json"
NETWORKS = {"cs236 784-300-300-10": ([300, 300], 10), "small 784-64-4": ([64], 4)}


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ELU())
    return nn.Sequential(*layers)


class StudentVAE(nn.Module):
    """The VAE as a student writes it in Pyro (the course's tutorial style)."""

    def __init__(self, hidden: list[int], z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = mlp([784, *hidden, 2 * z_dim])
        self.decoder = mlp([z_dim, *reversed(hidden), 784])

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, F.softplus(raw)).to_event(1))


def hand_epoch(vae: StudentVAE, x: torch.Tensor, k: int, seed: int) -> float:
    """One epoch of plain PyTorch on copies of the networks: the same math, batches and Adam."""
    encoder, decoder = copy.deepcopy(vae.encoder), copy.deepcopy(vae.decoder)
    optimizer = torch.optim.Adam([*encoder.parameters(), *decoder.parameters()], fused=True)
    half_log_2pi = 0.5 * math.log(2 * math.pi)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    index = torch.randperm(len(x), generator=generator)
    for first in range(0, len(x), 100):
        batch = x[index[first : first + 100]]
        loc, raw = encoder(batch).chunk(2, -1)
        scale = F.softplus(raw)
        eps = torch.randn((k, *loc.shape))
        z = loc + scale * eps
        logits = decoder(z)
        log_px = -F.binary_cross_entropy_with_logits(
            logits, batch.expand_as(logits), reduction="none"
        ).sum(-1)
        log_pz = (-0.5 * z**2 - half_log_2pi).sum(-1)
        log_qz = (-0.5 * eps**2 - scale.log() - half_log_2pi).sum(-1)
        lw = log_px + log_pz - log_qz  # [k, batch]
        if k == 1:
            loss = -lw.mean()
        else:
            loss = -(torch.logsumexp(lw, 0) - math.log(k)).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def ppdgm_epoch(
    vae: StudentVAE, x: torch.Tensor, k: int, seed: int, compile: bool = False
) -> float:
    """The second epoch of ``fit``: the steady state, once the loss is recorded as a graph
    (after 10 steps of the first epoch; the one-time cost is printed apart)."""
    objective = SVIObjective("elbo" if k == 1 else "iwae", k, compile=compile)
    result = fit(vae, x, epochs=2, seed=seed, objective=objective, progress=False, plots=False)
    (COMPILING if compile else RECORDING).append(
        result.history[0]["seconds"] - result.history[1]["seconds"]
    )
    return result.history[1]["seconds"]


def compiled_epoch(vae: StudentVAE, x: torch.Tensor, k: int, seed: int) -> float:
    """As :func:`ppdgm_epoch`, with ``SVIObjective(compile=True)`` (``ppdgm fit --compile``)."""
    return ppdgm_epoch(vae, x, k, seed, compile=True)


#: the first epoch's extra seconds over the second (recording the graph, warming up)
RECORDING: list[float] = []
COMPILING: list[float] = []


def pyro_epoch(vae: StudentVAE, x: torch.Tensor, k: int, seed: int) -> float:
    pyro.clear_param_store()
    loss = pyro.infer.Trace_ELBO() if k == 1 else IWAE(k)
    svi = pyro.infer.SVI(vae.model, vae.guide, pyro.optim.Adam({"lr": 1e-3}), loss=loss)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    index = torch.randperm(len(x), generator=generator)
    for first in range(0, len(x), 100):
        svi.step(x[index[first : first + 100]])
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(ROOT.parent / "shared/data/binarized_mnist"))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--particles", type=int, default=5, help="IWAE's K (5)")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    torch.set_num_threads(1)
    x = load_binarized_mnist(args.data_dir, "train")[: args.rows]
    steps = math.ceil(len(x) / 100)
    rows = []
    for network, (hidden, z_dim) in NETWORKS.items():
        for loss, k in (("elbo", 1), ("iwae", args.particles)):
            torch.manual_seed(0)
            template = StudentVAE(hidden, z_dim)
            runs = {
                "hand": hand_epoch,
                "ppdgm": ppdgm_epoch,
                "compiled": compiled_epoch,
                "pyro": pyro_epoch,
            }
            times: dict[str, list[float]] = {name: [] for name in runs}
            for repeat in range(args.repeats + 1):  # the first round warms up, unrecorded
                for name, run in runs.items():
                    vae = copy.deepcopy(template)
                    seconds = run(vae, x, k, repeat)
                    if repeat:
                        times[name].append(seconds)
            ms = {name: min(t) / steps * 1e3 for name, t in times.items()}  # least disturbed
            once = sorted(RECORDING)[len(RECORDING) // 2]
            compiling = max(COMPILING)  # the first compile; later ones hit Inductor's cache
            RECORDING.clear()
            COMPILING.clear()
            row = {
                "network": network,
                "loss": loss if k == 1 else f"iwae K={k}",
                "ms_per_step": ms,
                "ratio_ppdgm": ms["ppdgm"] / ms["hand"],
                "ratio_compiled": ms["compiled"] / ms["hand"],
                "ratio_pyro": ms["pyro"] / ms["hand"],
                "first_epoch_extra_s": once,
                "first_epoch_extra_s_compiled": compiling,
                "target": 1.10,
            }
            rows.append(row)
            print(
                f"{network:<22} {row['loss']:<10} hand {ms['hand']:6.2f} ms  ppdgm "
                f"{ms['ppdgm']:6.2f} ms ({row['ratio_ppdgm']:.3f}x)  compiled "
                f"{ms['compiled']:6.2f} ms ({row['ratio_compiled']:.3f}x)  Pyro SVI "
                f"{ms['pyro']:6.2f} ms ({row['ratio_pyro']:.3f}x); once {once:.2f} s, "
                f"compiling {compiling:.1f} s",
                flush=True,
            )
    result = {
        "machine": {
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "pyro": pyro.__version__,
            "threads": 1,
        },
        "rows": args.rows,
        "batch_size": 100,
        "repeats": args.repeats,
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
