r"""Masked layers for autoregressive networks (MADE): degrees, masks and a masked linear map.

MADE (Germain et al., 2015) makes an autoencoder autoregressive by masking its weights. Each unit
gets a *degree*: input ``j`` the rank of ``x_j`` in the ordering (``1..D``), hidden unit ``k`` a
degree ``m(k)`` in ``[min of the previous layer, D - 1]``. A hidden unit sees the units below it
of degree at most its own; output ``i`` sees the last hidden units of degree strictly below the
rank of ``x_i``. Then output ``i`` depends on ``x_j`` only if ``rank(j) < rank(i)``.

Why not ``pyro.nn.AutoRegressiveNN``: its ``create_mask`` spaces the hidden degrees evenly
(deterministic, from ``linspace``), so connectivity-agnostic training, which draws new hidden
degrees for every mask, cannot be expressed with it, and its ``MaskedLinear`` holds one mask
where an ensemble needs several. :func:`made_masks` follows the same conventions (the tests
check that it gives Pyro's masks for Pyro's degrees).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MaskedLinear", "connectivity", "made_degrees", "made_masks"]


def made_degrees(
    order: Tensor, hidden_dims: Sequence[int], generator: torch.Generator | None = None
) -> list[Tensor]:
    """Degrees of the input units and of each hidden layer's units.

    Arguments:
        order: a permutation of ``range(D)``; ``order[t]`` is the variable at step ``t``.
        hidden_dims: the widths of the hidden layers.
        generator: the random source of the hidden degrees.

    Returns:
        ``[input degrees (D,), hidden degrees (h_1,), ...]``, integer tensors; input ``j`` has
        degree ``rank(j) + 1`` and hidden degrees are uniform on ``[min(previous), D - 1]``
        (on ``D - 1`` alone when ``D = 1``: such units reach no output).

    Example:
        >>> made_degrees(torch.tensor([2, 0, 1]), [4], torch.Generator().manual_seed(0))[0]
        tensor([2, 3, 1])
    """
    dim = order.numel()
    inputs = torch.empty(dim, dtype=torch.long)
    inputs[order] = torch.arange(1, dim + 1)
    degrees = [inputs]
    for width in hidden_dims:
        low = min(int(degrees[-1].min()), max(dim - 1, 1))
        high = max(dim - 1, low)
        degrees.append(torch.randint(low, high + 1, (width,), generator=generator))
    return degrees


def made_masks(degrees: Sequence[Tensor]) -> list[Tensor]:
    """The ``[out, in]`` 0/1 masks of each layer, the last one mapping to the ``D`` outputs.

    Arguments:
        degrees: input degrees then hidden degrees, as from :func:`made_degrees`.

    Example:
        >>> masks = made_masks([torch.tensor([1, 2]), torch.tensor([1, 1])])
        >>> [m.tolist() for m in masks]
        [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 0.0], [1.0, 1.0]]]
    """
    masks = [
        (later[:, None] >= earlier[None, :]).to(torch.get_default_dtype())
        for earlier, later in itertools.pairwise(degrees)
    ]
    outputs = degrees[0]
    masks.append((outputs[:, None] > degrees[-1][None, :]).to(torch.get_default_dtype()))
    return masks


def connectivity(masks: Sequence[Tensor]) -> Tensor:
    """``[D, D]`` booleans: entry ``[i, j]`` says whether some path of unmasked weights leads
    from input ``j`` to output ``i``.

    Example:
        >>> connectivity(made_masks([torch.tensor([1, 2]), torch.tensor([1, 1])])).tolist()
        [[False, False], [True, False]]
    """
    paths = masks[0].double()
    for mask in masks[1:]:
        paths = (mask.double() @ paths).clamp(max=1.0)  # clamped: counts could overflow
    return paths > 0


class MaskedLinear(nn.Linear):
    """A linear map whose weight is multiplied by one of several fixed 0/1 masks.

    Arguments:
        in_features: input width.
        out_features: output width.
        masks: ``[K, out_features, in_features]`` masks, kept as a boolean buffer (saved in
            the ``state_dict``, a quarter of the size of floats).

    Example:
        >>> layer = MaskedLinear(2, 2, torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
        >>> torch.nn.init.ones_(layer.weight); torch.nn.init.zeros_(layer.bias)
        Parameter containing: ...
        >>> layer(torch.tensor([[1.0, 10.0]]), mask=0)
        tensor([[ 1., 11.]], grad_fn=<AddmmBackward0>)
    """

    masks: Tensor

    def __init__(self, in_features: int, out_features: int, masks: Tensor) -> None:
        super().__init__(in_features, out_features)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (out_features, in_features):
            raise ValueError(
                f"masks must be [K, {out_features}, {in_features}], got {tuple(masks.shape)}"
            )
        self.register_buffer("masks", masks != 0)

    def forward(self, x: Tensor, mask: int = 0) -> Tensor:
        """``x @ (weight * masks[mask]).T + bias``."""
        return F.linear(x, self.weight * self.masks[mask], self.bias)

    @property
    def num_parameters(self) -> int:
        """Weights some mask lets through, plus the biases."""
        return int((self.masks != 0).any(0).sum()) + self.out_features

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, masks={self.masks.shape[0]}"
