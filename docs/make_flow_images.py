"""Draws the pictures of docs/normalizing-flows.md into docs/img/ (matplotlib, Agg backend).

- ``flow-toy-densities.png``: the three 2-D toy densities of ``benchmarks/bench_flows.py``, their
  exact densities and those of NICE, RealNVP and MAF trained on samples of them;
- ``flow-digits-samples.png``: held-out digits (17 gray levels) and samples of dequantized
  RealNVP and MAF models trained on the others;
- ``flow-distillation.png``: a MAF teacher on two moons, the IAF student distilled from it, the
  student's samples and the KL curve.

Usage: ``python docs/make_flow_images.py [toys] [digits] [distillation]`` (all three by default,
about a minute on one CPU thread).
"""

from __future__ import annotations

import importlib.util
import math
import sys
from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from ppdgm.data import load_digits
from ppdgm.models import IAF, MAF, NICE, RealNVP
from ppdgm.models.flows import FlowModel
from ppdgm.training.distill import distill

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "docs" / "img"
LIMIT = 3.0
GRID = torch.linspace(-LIMIT, LIMIT, 200)


def load_toys() -> dict[str, tuple[Callable[..., Tensor], Callable[[Tensor], Tensor]]]:
    """The toy densities of the benchmark (one definition for both)."""
    spec = importlib.util.spec_from_file_location("bench_flows", ROOT / "benchmarks/bench_flows.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.TOYS


def fit(model: FlowModel, x: Tensor, epochs: int, batch_size: int = 128, seed: int = 0) -> None:
    """Adam on ``-mean log p(x)`` over shuffled minibatches."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for first in range(0, len(x), batch_size):
            loss = model.training_loss(x[order[first : first + batch_size]], 0)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


@torch.no_grad()
def density_image(log_prob: Callable[[Tensor], Tensor]) -> Tensor:
    points = torch.cartesian_prod(GRID, GRID)
    # rows of the image are y (the second coordinate), from the bottom up
    return log_prob(points).exp().reshape(len(GRID), len(GRID)).T


def show(ax: plt.Axes, image: Tensor, title: str) -> None:
    ax.imshow(image.numpy(), origin="lower", extent=(-LIMIT, LIMIT, -LIMIT, LIMIT), cmap="magma")
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def toy_densities() -> None:
    toys = load_toys()
    kinds = {"NICE": NICE, "RealNVP": RealNVP, "MAF": MAF}
    fig, axes = plt.subplots(len(toys), 2 + len(kinds), figsize=(10, 7.5))
    for row, (name, (draw, log_prob)) in enumerate(toys.items()):
        x = draw(6000, torch.Generator().manual_seed(0))
        axes[row, 0].hist2d(*x.T.numpy(), bins=100, range=[[-LIMIT, LIMIT]] * 2, cmap="magma")
        axes[row, 0].set_title(f"{name}: 6,000 samples", fontsize=9)
        axes[row, 0].set_xticks([])
        axes[row, 0].set_yticks([])
        show(axes[row, 1], density_image(lambda p, f=log_prob: f(p).float()), "exact density")
        for col, (label, cls) in enumerate(kinds.items(), start=2):
            torch.manual_seed(0)
            model = cls(2, [64, 64], 5)
            fit(model, x, epochs=12)
            with torch.no_grad():
                nll = -float(model.log_prob(draw(2000, torch.Generator().manual_seed(1))).mean())
            show(axes[row, col], density_image(model.log_prob), f"{label}: NLL {nll:.2f} nats")
        print(name, flush=True)
    fig.tight_layout()
    fig.savefig(OUT / "flow-toy-densities.png", dpi=90)
    plt.close(fig)


def digit_grid(ax: plt.Axes, x: Tensor, title: str, columns: int = 8) -> None:
    rows = math.ceil(len(x) / columns)
    canvas = torch.full((rows * 9 + 1, columns * 9 + 1), 16.0)
    for i, image in enumerate(x):
        r, c = divmod(i, columns)
        canvas[1 + 9 * r : 9 * r + 9, 1 + 9 * c : 9 * c + 9] = image.reshape(8, 8)
    ax.imshow(canvas.numpy(), cmap="gray_r", vmin=0, vmax=16)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def digit_samples() -> None:
    train, test = load_digits("train", binary=False), load_digits("test", binary=False)
    fig, axes = plt.subplots(1, 3, figsize=(10, 2.7))
    digit_grid(axes[0], test[:32], "held-out digits (17 gray levels)")
    for ax, (label, cls) in zip(axes[1:], {"RealNVP": RealNVP, "MAF": MAF}.items(), strict=True):
        torch.manual_seed(0)
        model = cls(64, [128, 128], 5, levels=17, logit_alpha=0.05)
        fit(model, train, epochs=60)
        with torch.no_grad():
            torch.manual_seed(1)
            bits = float(torch.stack([model.log_prob(test) for _ in range(8)]).mean())
        bits = -bits / (64 * math.log(2))
        digit_grid(ax, model.sample(32, seed=0), f"{label} samples ({bits:.2f} bits/dim)")
        print(label, flush=True)
    fig.tight_layout()
    fig.savefig(OUT / "flow-digits-samples.png", dpi=90)
    plt.close(fig)


def distillation() -> None:
    draw = load_toys()["two-moons"][0]
    x = draw(6000, torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    teacher = MAF(2, [64, 64], 5)
    fit(teacher, x, epochs=12)
    student = IAF(2, [64, 64], 5)
    result = distill(teacher, student, steps=1500, num_samples=256, lr=1e-3, progress=False)
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.4))
    show(axes[0], density_image(teacher.log_prob), "MAF teacher p (scores in one pass)")
    show(axes[1], density_image(student.log_prob), "IAF student q (samples in one pass)")
    samples = student.sample(3000, seed=0)
    axes[2].scatter(*samples.T.numpy(), s=1, alpha=0.4)
    axes[2].set_xlim(-LIMIT, LIMIT)
    axes[2].set_ylim(-LIMIT, LIMIT)
    axes[2].set_aspect("equal")
    axes[2].set_title("3,000 student samples", fontsize=9)
    steps = torch.arange(1, len(result.kl) + 1)
    smooth = torch.tensor(result.kl).unfold(0, 50, 1).mean(-1)
    axes[3].plot(steps, result.kl, lw=0.5, alpha=0.4, label="each step")
    axes[3].plot(steps[49:], smooth, label="mean of 50 steps")
    axes[3].set_yscale("symlog", linthresh=0.01)  # single estimates can be below 0
    axes[3].set_xlabel("step")
    axes[3].set_title("KL(q || p), nats (Monte Carlo)", fontsize=9)
    axes[3].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(OUT / "flow-distillation.png", dpi=90)
    plt.close(fig)


def main() -> None:
    torch.set_num_threads(1)
    OUT.mkdir(parents=True, exist_ok=True)
    parts = {"toys": toy_densities, "digits": digit_samples, "distillation": distillation}
    for name in sys.argv[1:] or parts:
        parts[name]()
    print(f"wrote {OUT}/flow-*.png")


if __name__ == "__main__":
    main()
