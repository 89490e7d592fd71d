"""Draws the pictures of docs/vaes.md into docs/img/: samples and reconstructions of the VAE
trained in the CS236 setting by ``benchmarks/bench_vae.py --parts cs236 --runs runs`` (its
checkpoint ``runs/cs236-meanfield/best.pt``), and the latent map of a VAE with a 2-D latent
space trained on scikit-learn's digits for a few seconds, coloured by digit class.

Run from the repository's root: ``.venv/bin/python docs/make_vae_images.py [CHECKPOINT]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ppdgm.checkpoint import load_model
from ppdgm.data import load_binarized_mnist, load_digit_labels, load_digits
from ppdgm.models import VAE
from ppdgm.train import fit
from ppdgm.training.plots import save_latent_map, save_reconstructions, save_sample_grid

__all__ = ["IMAGES", "make_images"]

IMAGES = Path(__file__).parent / "img"
ROOT = Path(__file__).resolve().parents[1]


def make_images(checkpoint: Path, out_dir: Path = IMAGES) -> list[Path]:
    """Writes ``vae-samples.png``, ``vae-reconstructions.png`` and ``vae-latent-map.png``."""
    vae, saved = load_model(checkpoint, expect=VAE)
    data_dir = saved.get("data", {}).get("data_dir") or ROOT.parent / "shared/data/binarized_mnist"
    valid = load_binarized_mnist(data_dir, "valid")
    title = "VAE, z 10, 784-300-300, 20,000 iterations"
    paths = [
        save_sample_grid(
            vae.sample(64, seed=0, mean=True), out_dir / "vae-samples.png", title=title
        ),
        save_reconstructions(
            valid[:32],
            vae.reconstruct(valid[:32]),
            out_dir / "vae-reconstructions.png",
            title=title,
        ),
    ]
    torch.manual_seed(0)
    small = VAE(64, 2, [64])
    fit(small, load_digits("train"), epochs=60, batch_size=50, lr=3e-3, progress=False, plots=False)
    paths.append(
        save_latent_map(
            small.encode(load_digits("valid")),
            out_dir / "vae-latent-map.png",
            labels=load_digit_labels("valid"),
            title="q(z | x) means of validation digits (VAE on 8x8 digits, z 2)",
        )
    )
    return paths


if __name__ == "__main__":
    default = ROOT / "runs/cs236-meanfield/best.pt"
    for path in make_images(Path(sys.argv[1]) if len(sys.argv) > 1 else default):
        print(path)
