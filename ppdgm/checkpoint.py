"""Checkpoints of zoo models: written atomically, read with ``torch.load(weights_only=True)``,
and rebuilt from the model's name and constructor arguments, which every checkpoint records.

A checkpoint is a dict with ``format`` (:data:`FORMAT`), ``model`` (``name``, ``config``,
``dtype``), ``state_dict``, and whatever the writer adds (the training loop adds the epoch, the
optimizer's state, the history and the data's description).
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "FORMAT",
    "build_model",
    "load_model",
    "model_spec",
    "read_checkpoint",
    "save_checkpoint",
]

#: The marker of a ppdgm checkpoint, with the version of its layout.
FORMAT = "ppdgm-checkpoint/1"


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What rebuilds ``model``'s architecture: its zoo name, constructor arguments and dtype.

    Raises:
        ValueError: for a model that is not one of :data:`ppdgm.models.MODELS`.
    """
    from ppdgm.models import MODELS

    name = next((n for n, cls in MODELS.items() if type(model) is cls), None)
    if name is None:
        raise ValueError(
            f"cannot checkpoint a {type(model).__name__}: only the zoo's models "
            f"({', '.join(sorted(MODELS))}) record how to rebuild themselves"
        )
    dtype = next(model.parameters()).dtype
    return {"name": name, "config": model.config, "dtype": str(dtype).removeprefix("torch.")}


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, **extra: Any) -> Path:
    """Writes ``model`` (its spec and ``state_dict``) and ``extra`` entries to ``path``,
    atomically: a temporary file next to it is renamed over it, so an interruption leaves the
    previous checkpoint intact. Returns the path."""
    path = Path(path)
    payload = {"format": FORMAT, "model": model_spec(model), "state_dict": model.state_dict()}
    payload.update(extra)
    tmp = path.with_name(path.name + ".tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint at ``path``, loaded with ``weights_only=True`` (tensors and plain
    containers only: no code from the file runs) and checked.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: for a file that is not a PyTorch file, that holds objects other than tensors
            and plain containers (an untrusted pickle), or that is not a ppdgm checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickles of other protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} is not a ppdgm checkpoint: it holds objects other than tensors and plain "
            "containers, which weights_only loading refuses (a foreign or untrusted pickle)"
        ) from None
    except Exception as e:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not a ppdgm checkpoint (format {found!r}, expected {FORMAT!r}); "
            "write one with ppdgm fit or ppdgm.train.fit"
        )
    spec = payload.get("model")
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("config"), dict)
        or not isinstance(payload.get("state_dict"), dict)
    ):
        raise ValueError(f"{path} is a damaged ppdgm checkpoint: no model spec or state_dict")
    return payload


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A fresh model of the architecture ``spec`` (from :func:`model_spec`) describes.

    Raises:
        ValueError: for an unknown model name, arguments its constructor rejects, or an
            unknown dtype.
    """
    from ppdgm.models import model_class

    cls = model_class(spec.get("name", "?"))
    dtype = getattr(torch, str(spec.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"unknown dtype {spec.get('dtype')!r} in the model spec")
    try:
        model = cls(**spec["config"])
    except TypeError as e:
        raise ValueError(f"cannot rebuild {cls.__name__} from {spec['config']!r}: {e}") from None
    return model.to(dtype)


def load_model(
    path: str | os.PathLike[str], expect: type | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved at ``path``, rebuilt and loaded, with the checkpoint itself.

    Arguments:
        path: a checkpoint written by :func:`save_checkpoint`.
        expect: the class the model must be; None: any zoo model.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: see :func:`read_checkpoint` and :func:`build_model`; also for a checkpoint
            of another class than ``expect`` or a ``state_dict`` that does not fit.
    """
    checkpoint = read_checkpoint(path)
    model = build_model(checkpoint["model"])
    if expect is not None and not isinstance(model, expect):
        raise ValueError(
            f"{path} holds a {type(model).__name__} checkpoint, not a {expect.__name__} one"
        )
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as e:
        message = " ".join(line.strip() for line in str(e).strip().splitlines())
        raise ValueError(f"{path}: the saved weights do not fit the model: {message}") from None
    model.eval()
    return model, checkpoint
