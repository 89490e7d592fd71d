"""Rows of data as a model takes them: one tensor, a tuple of tensors or a dict of tensors.

A training set or a minibatch is one of

- a tensor ``[N, ...]``: a model is called as ``model(x)``;
- a tuple ``(x, y, ...)`` of tensors with the same ``N``: called as ``model(x, y, ...)``;
- a dict ``{"x": x, "y": y}``: called as ``model(x=x, y=y)``,

so that labels (or any other per-row input) reach a model's ``log_prob``, ``model`` and
``guide``. Every function here treats the three alike: the rows of all tensors are selected,
moved and checked together.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Batch",
    "as_arguments",
    "check_rows",
    "first_tensor",
    "map_tensors",
    "num_rows",
    "replace_first",
    "select_rows",
    "split_rows",
]

#: A tensor, a tuple of tensors or a dict of tensors, all with the same number of rows.
Batch = Tensor | tuple[Tensor, ...] | Mapping[str, Tensor]


def _tensors(data: Batch) -> list[tuple[str, Tensor]]:
    if isinstance(data, Tensor):
        return [("x", data)]
    if isinstance(data, tuple):
        return [(f"[{i}]", t) for i, t in enumerate(data)]
    if isinstance(data, Mapping):
        return [(f"[{k!r}]", t) for k, t in data.items()]
    raise ValueError(
        f"data must be a tensor, a tuple of tensors or a dict of tensors, not {type(data).__name__}"
    )


def map_tensors(data: Batch, fn: Any) -> Batch:
    """``data`` with ``fn`` applied to each of its tensors, in the same container."""
    if isinstance(data, Tensor):
        return fn(data)
    if isinstance(data, tuple):
        return tuple(fn(t) for t in data)
    return {k: fn(t) for k, t in data.items()}


def first_tensor(data: Batch) -> Tensor:
    """The tensor that counts the rows and dimensions: ``data`` itself, or the first one."""
    return _tensors(data)[0][1]


def replace_first(data: Batch, tensor: Tensor) -> Batch:
    """``data`` with its first tensor (the rows a model scores) replaced by ``tensor``; the
    others (labels) stay.

    Example:
        >>> x, y = torch.zeros(2, 3), torch.ones(2)
        >>> replace_first((x, y), torch.ones(2, 3))[0].sum().item()
        6.0
    """
    if isinstance(data, Tensor):
        return tensor
    if isinstance(data, tuple):
        return (tensor, *data[1:])
    first = next(iter(data))
    return {k: tensor if k == first else t for k, t in data.items()}


def num_rows(data: Batch) -> int:
    """The number of rows ``N``."""
    return len(first_tensor(data))


def select_rows(data: Batch, index: Tensor | slice) -> Batch:
    """The rows ``index`` of every tensor of ``data``."""
    return map_tensors(data, lambda t: t[index])


def split_rows(data: Batch, size: int) -> Iterator[Batch]:
    """``data`` in consecutive chunks of ``size`` rows (the last may be shorter)."""
    n = num_rows(data)
    for start in range(0, n, size):
        yield select_rows(data, slice(start, start + size))


def as_arguments(data: Batch) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The positional and keyword arguments a model is called with for ``data``.

    Example:
        >>> x, y = torch.zeros(2, 3), torch.ones(2)
        >>> as_arguments((x, y))[0][1], as_arguments({"x": x, "y": y})[1]["y"]
        (tensor([1., 1.]), tensor([1., 1.]))
    """
    if isinstance(data, Tensor):
        return (data,), {}
    if isinstance(data, tuple):
        return data, {}
    return (), dict(data)


def check_rows(data: Any, name: str = "data") -> Batch:
    """``data`` checked: a tensor, tuple or dict of tensors (lists and arrays are converted), at
    least one tensor, all with the same number of rows, and no NaN or infinite value.

    Raises:
        ValueError: naming the tensor and the fault.

    Example:
        >>> check_rows((torch.zeros(3, 2), torch.zeros(2)), "train")
        Traceback (most recent call last):
        ...
        ValueError: train[1] has 2 rows, but train[0] has 3; every tensor needs one row per example
    """
    if isinstance(data, list):
        data = tuple(data)
    if not isinstance(data, (Tensor, tuple, Mapping)):
        try:
            data = torch.as_tensor(data)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name} must be a tensor, a tuple of tensors or a dict of tensors, not "
                f"{type(data).__name__}"
            ) from None
    if isinstance(data, (tuple, Mapping)) and not len(data):
        raise ValueError(f"{name} holds no tensor")
    parts = _tensors(data)
    label = (lambda key: name) if isinstance(data, Tensor) else (lambda key: f"{name}{key}")
    rows = None
    for key, t in parts:
        if not isinstance(t, Tensor):
            raise ValueError(f"{label(key)} must be a tensor, not {type(t).__name__}")
        if t.dim() == 0:
            raise ValueError(f"{label(key)} is a scalar; it needs one row per example")
        if rows is None:
            rows, first = len(t), key
        elif len(t) != rows:
            raise ValueError(
                f"{label(key)} has {len(t)} rows, but {label(first)} has {rows}; every tensor "
                "needs one row per example"
            )
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t)).nonzero()[0].tolist()
            where = ", ".join(str(i) for i in bad)
            raise ValueError(
                f"{label(key)}[{where}] is {float(t[tuple(bad)])}: data must be finite "
                "(drop or impute the rows with missing values)"
            )
    return data
