"""Draws the pictures of docs/using-a-density.md into docs/img/: completions of half-hidden
digits, and the anomaly scores of held-out digits, digits of classes the model never saw, and
noise.

``inpainting.png``: a NADE and a VAE trained on scikit-learn's 8x8 digits fill in test digits
whose top half is observed (the NADE exactly, the observed pixels coming first in its order; the
VAE by Metropolis-within-Gibbs) and whose bottom half is observed (the NADE by importance
resampling). ``anomaly-scores.png``: a NADE trained on the digits 0-4 alone scores test digits
0-4, test digits 5-9 and noise rows; the histograms of -log p(x), with the ranking's AUC against
the normal digits.

Run from the repository's root: ``.venv/bin/python docs/make_density_images.py`` (about a
minute on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppdgm.data import load_digit_labels, load_digits
from ppdgm.models import NADE, VAE
from ppdgm.train import fit
from ppdgm.training.plots import save_sample_grid

__all__ = ["IMAGES", "anomaly_scores", "auc", "inpainting", "make_images"]

IMAGES = Path(__file__).parent / "img"


def auc(odd: torch.Tensor, normal: torch.Tensor) -> float:
    """The share of (odd, normal) pairs where the odd row scores higher (ties count half)."""
    above = (odd[:, None] > normal[None, :]).double()
    ties = (odd[:, None] == normal[None, :]).double()
    return float((above + 0.5 * ties).mean())


def inpainting(out_dir: Path, epochs: int) -> Path:
    """Rows: the digits, the observed half (missing pixels gray), then three completions each by
    the NADE (top half given, exact), the VAE (top half given) and the NADE (bottom half given,
    importance resampling)."""
    train, valid = load_digits("train"), load_digits("valid")
    torch.manual_seed(0)
    nade = NADE(64, 64)
    fit(nade, train, valid, epochs=epochs, batch_size=50, lr=0.005, progress=False, plots=False)
    torch.manual_seed(0)
    vae = VAE(64, 8, [128])
    fit(vae, train, valid, epochs=epochs, batch_size=50, lr=0.003, progress=False, plots=False)
    digits = load_digits("test")[:12]
    top = torch.zeros(64, dtype=torch.bool)
    top[:32] = True
    rows = [digits, torch.where(top, digits, 0.5)]
    for k in range(3):
        rows.append(nade.inpaint(digits, top, seed=k))
    for k in range(3):
        rows.append(vae.inpaint(digits, top, steps=300, seed=k))
    rows.append(torch.where(~top, digits, 0.5))
    for k in range(3):
        rows.append(nade.inpaint(digits, ~top, particles=256, seed=k))
    path = out_dir / "inpainting.png"
    title = "completions of half-hidden test digits"  # the rows: see docs/using-a-density.md
    return save_sample_grid(torch.cat(rows), path, columns=len(digits), title=title)


def anomaly_scores(out_dir: Path, epochs: int) -> tuple[Path, dict[str, float]]:
    """The histogram of -log p(x) of a NADE trained on the digits 0-4; returns the file and the
    AUCs of the other classes and of noise against held-out digits 0-4."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x, y = load_digits("train"), load_digit_labels("train")
    test, test_y = load_digits("test"), load_digit_labels("test")
    valid, valid_y = load_digits("valid"), load_digit_labels("valid")
    torch.manual_seed(0)
    nade = NADE(64, 64)
    fit(nade, x[y < 5], valid[valid_y < 5], epochs=epochs, batch_size=50, lr=0.005,
        progress=False, plots=False)  # fmt: skip
    noise = torch.bernoulli(torch.full((100, 64), 0.3), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scores = {
            "test digits 0-4 (normal)": -nade.log_prob(test[test_y < 5]),
            "test digits 5-9 (classes never seen)": -nade.log_prob(test[test_y >= 5]),
            "noise, each pixel on with p = 0.3": -nade.log_prob(noise),
        }
    normal = scores["test digits 0-4 (normal)"]
    aucs = {name: auc(s, normal) for name, s in scores.items() if s is not normal}
    figure, axes = plt.subplots(figsize=(7, 3.5))
    for name, s in scores.items():
        label = name if s is normal else f"{name}, AUC {aucs[name]:.3f}"
        axes.hist(s.numpy(), bins=30, alpha=0.6, label=label)
    axes.set_xlabel("anomaly score, -log p(x) in nats (NADE trained on digits 0-4)")
    axes.set_ylabel("rows")
    axes.legend(fontsize=8)
    figure.tight_layout()
    path = out_dir / "anomaly-scores.png"
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path, aucs


def make_images(out_dir: Path = IMAGES, epochs: int = 60) -> list[Path]:
    """Writes both pictures; returns the files written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    scores, aucs = anomaly_scores(out_dir, epochs)
    for name, value in aucs.items():
        print(f"AUC of {name} against held-out digits 0-4: {value:.3f}")
    return [inpainting(out_dir, epochs), scores]


if __name__ == "__main__":
    for path in make_images():
        print(f"wrote {path}")
