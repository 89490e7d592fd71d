"""Draws the picture of docs/autoregressive.md into docs/img/: digits from the training set, then
samples of FVSBN, NADE and MADE each trained on them for a few seconds.

Run from the repository's root: ``.venv/bin/python docs/make_autoregressive_images.py``
(about half a minute on a CPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

from ppdgm.data import load_digits
from ppdgm.models import FVSBN, MADE, NADE
from ppdgm.train import evaluate, fit
from ppdgm.training.plots import save_sample_grid

__all__ = ["IMAGES", "make_images"]

IMAGES = Path(__file__).parent / "img"


def make_images(out_dir: Path = IMAGES, epochs: int = 60) -> list[Path]:
    """Trains the three models on the binarized 8x8 digits and writes one PNG of 4 x 16 images
    (rows: data, FVSBN, NADE, MADE); returns the files written."""
    train, valid = load_digits("train"), load_digits("valid")
    rows = [train[:16]]
    titles = ["data"]
    for make in (
        lambda: FVSBN(64),
        lambda: NADE(64, 64),
        lambda: MADE(64, [256], 8, ordering="agnostic"),
    ):
        torch.manual_seed(0)
        model = make()
        fit(model, train, valid, epochs=epochs, batch_size=50, lr=0.005, progress=False)
        nll = evaluate(model, valid)["nll"]
        rows.append(model.sample(16, seed=len(rows)))  # a seed each: shared draws would couple them
        titles.append(f"{type(model).__name__} {nll:.1f}")
    grid = torch.cat(rows)
    title = "rows: " + ", ".join(titles) + " (validation NLL, nats)"
    out_dir.mkdir(parents=True, exist_ok=True)
    return [save_sample_grid(grid, out_dir / "autoregressive-samples.png", columns=16, title=title)]


if __name__ == "__main__":
    for path in make_images():
        print(f"wrote {path}")
