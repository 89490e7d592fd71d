"""Pictures of training: learning curves and grids of samples, as PNG files.

Drawn on matplotlib's Agg canvas directly (no ``pyplot``, no global backend switch), so they work
without a display and leave the caller's matplotlib state alone.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ppdgm.atomic import atomic_path

__all__ = [
    "image_shape",
    "picture_samples",
    "save_latent_map",
    "save_learning_curves",
    "save_reconstructions",
    "save_sample_grid",
    "save_vae_pictures",
]


def _figure(width: float, height: float) -> Any:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency of the docs extra
        raise ValueError("drawing needs matplotlib: pip install matplotlib") from None
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Any, path: str | os.PathLike[str]) -> Path:
    with atomic_path(path, ".tmp.png") as tmp:
        figure.savefig(tmp, format="png")
    return Path(path)


def image_shape(dim: int) -> tuple[int, int]:
    """``(side, side)`` for a square number of pixels, else one row of ``dim``.

    Example:
        >>> image_shape(784), image_shape(10)
        ((28, 28), (1, 10))
    """
    side = math.isqrt(dim)
    return (side, side) if side * side == dim else (1, dim)


def picture_samples(model: Any, n: int, seed: int | None = None) -> Tensor:
    """``n`` samples of ``model`` to look at: the decoder's means (pixel probabilities) for a
    model whose ``sample`` offers them (the VAEs), else its draws."""
    if "mean" in inspect.signature(model.sample).parameters:
        return model.sample(n, seed=seed, mean=True)
    return model.sample(n, seed=seed)


def save_sample_grid(
    x: Tensor,
    path: str | os.PathLike[str],
    *,
    shape: tuple[int, int] | None = None,
    columns: int | None = None,
    title: str | None = None,
) -> Path:
    """Draws the rows of ``[n, D]`` data as a grid of gray images into a PNG file.

    Arguments:
        x: the images, one per row (values shown from their minimum, black, to maximum, white).
        path: the PNG file (written atomically).
        shape: the height and width of an image; None: :func:`image_shape`.
        columns: images per row of the grid; None: about ``sqrt(n)``.
        title: a line above the grid.
    """
    x = x.detach().cpu().float()
    n, dim = x.shape
    height, width = shape or image_shape(dim)
    columns = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / columns))
    grid = x.new_full((rows * (height + 1) + 1, columns * (width + 1) + 1), float(x.min()))
    for k in range(n):
        r, c = divmod(k, columns)
        top, left = 1 + r * (height + 1), 1 + c * (width + 1)
        grid[top : top + height, left : left + width] = x[k].reshape(height, width)
    scale = 6.0 / max(grid.shape)
    figure = _figure(grid.shape[1] * scale + 0.2, grid.shape[0] * scale + (0.5 if title else 0.2))
    axes = figure.add_axes((0.0, 0.0, 1.0, 0.92 if title else 1.0))
    axes.imshow(grid.numpy(), cmap="gray", interpolation="nearest")
    axes.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    return _save(figure, path)


def save_learning_curves(
    history: Sequence[dict[str, Any]], path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Draws the training loss and the validation NLL of each epoch (``history`` entries with
    ``epoch``, ``train_loss`` and, where there is validation data, ``valid_nll``)."""
    figure = _figure(6.0, 4.0)
    axes = figure.add_subplot()
    epochs = [h["epoch"] for h in history]
    axes.plot(epochs, [h["train_loss"] for h in history], "o-", label="training loss")
    valid = [(h["epoch"], h["valid_nll"]) for h in history if h.get("valid_nll") is not None]
    if valid:
        bound = any(h.get("valid_bound") == "elbo" for h in history)
        label = "validation -ELBO (NLL bound)" if bound else "validation NLL"
        axes.plot(*zip(*valid, strict=True), "s-", label=label)
        best = min(valid, key=lambda item: item[1])
        axes.axvline(best[0], color="gray", linestyle=":", label=f"best, epoch {best[0]}")
    axes.set_xlabel("epoch")
    axes.set_ylabel("nats per example")
    axes.legend()
    axes.grid(alpha=0.3)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def save_reconstructions(
    x: Tensor, reconstructions: Tensor, path: str | os.PathLike[str], *, title: str | None = None
) -> Path:
    """Draws data and their reconstructions as a grid: each data row above its reconstruction
    (up to 16 per row of the grid).

    Raises:
        ValueError: if the two do not have the same shape.
    """
    if x.shape != reconstructions.shape:
        raise ValueError(
            f"data {tuple(x.shape)} and reconstructions {tuple(reconstructions.shape)} differ"
        )
    columns = min(16, len(x))
    blocks = []
    for first in range(0, len(x), columns):
        part, recon = x[first : first + columns], reconstructions[first : first + columns]
        pad = columns - len(part)
        if pad:
            filler = part.new_full((pad, x.shape[1]), float(x.min()))
            part, recon = torch.cat([part, filler]), torch.cat([recon, filler])
        blocks += [part, recon]
    return save_sample_grid(torch.cat(blocks), path, columns=columns, title=title)


def save_latent_map(
    z: Tensor,
    path: str | os.PathLike[str],
    *,
    labels: Tensor | None = None,
    title: str | None = None,
) -> Path:
    """A scatter plot of latent codes ``[n, k]`` (the first two principal components when
    ``k > 2``), coloured by ``labels`` when given.

    Raises:
        ValueError: for codes that are not ``[n, k]`` with ``k >= 2``, or labels of another length.
    """
    z = z.detach().cpu().double()
    if z.dim() != 2 or z.shape[1] < 2:
        raise ValueError(f"a latent map needs [n, k >= 2] codes, got {tuple(z.shape)}")
    if labels is not None and len(labels) != len(z):
        raise ValueError(f"{len(labels)} labels for {len(z)} codes")
    axes_names = ("z1", "z2")
    if z.shape[1] > 2:
        centered = z - z.mean(0)
        _, _, v = torch.linalg.svd(centered, full_matrices=False)
        z = centered @ v[:2].T
        axes_names = ("principal component 1", "principal component 2")
    figure = _figure(5.5, 5.0)
    axes = figure.add_subplot()
    if labels is None:
        axes.scatter(z[:, 0].numpy(), z[:, 1].numpy(), s=4)
    else:
        colours = labels.cpu().numpy()
        points = axes.scatter(z[:, 0].numpy(), z[:, 1].numpy(), c=colours, s=4, cmap="tab10")
        figure.colorbar(points, ax=axes)
    axes.set_xlabel(axes_names[0])
    axes.set_ylabel(axes_names[1])
    if title:
        axes.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def save_vae_pictures(
    model: Any, x: Tensor, out: Path, labels: Tensor | None = None, seed: int = 0
) -> list[Path]:
    """Samples, reconstructions of the first 32 rows of ``x`` and a 2-D latent map of ``x``
    as PNG files in ``out``; for a VAE of labelled rows (a ``y_dim``: CVAE, SSVAE), samples
    of each class, one class a row. Returns the paths."""
    name = type(model).__name__
    classes = getattr(model, "y_dim", None)
    if isinstance(classes, int):
        per_class = 10
        y = torch.arange(classes).repeat_interleave(per_class)
        samples = model.sample(len(y), y=y, seed=seed, mean=True)
        title = f"{name}: the classes 0..{classes - 1}, one a row"
        path = out / "samples-by-class.png"
        return [save_sample_grid(samples, path, columns=per_class, title=title)]
    x = model.check(x)
    paths = [
        save_sample_grid(picture_samples(model, 64, seed), out / "samples.png", title=name),
        save_reconstructions(
            x[:32], model.reconstruct(x[:32]), out / "reconstructions.png", title=name
        ),
    ]
    z = model.encode(x)
    if z.shape[1] >= 2:
        paths.append(save_latent_map(z, out / "latent-map.png", labels=labels, title=name))
    return paths
