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
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = [
    "ACTIVATIONS",
    "GaussianEncoder",
    "MaskedLinear",
    "connectivity",
    "made_degrees",
    "made_masks",
    "mlp",
]


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
        masks: ``[K, out_features, in_features]`` masks, kept as a boolean buffer that the
            ``state_dict`` leaves out: the owner rebuilds them (MADE from its seed, and it
            saves the orderings and degrees that check them), so that a checkpoint holds
            weights only. A ``state_dict`` that has them (older checkpoints) must have these.
        bias: whether the map adds a learned bias.

    Example:
        >>> layer = MaskedLinear(2, 2, torch.tensor([[[1.0, 0.0], [1.0, 1.0]]]))
        >>> torch.nn.init.ones_(layer.weight); torch.nn.init.zeros_(layer.bias)
        Parameter containing: ...
        >>> layer(torch.tensor([[1.0, 10.0]]), mask=0)
        tensor([[ 1., 11.]], grad_fn=<AddmmBackward0>)
    """

    masks: Tensor

    def __init__(
        self, in_features: int, out_features: int, masks: Tensor, bias: bool = True
    ) -> None:
        super().__init__(in_features, out_features, bias=bias)
        if masks.dim() != 3 or tuple(masks.shape[1:]) != (out_features, in_features):
            raise ValueError(
                f"masks must be [K, {out_features}, {in_features}], got {tuple(masks.shape)}"
            )
        # .bool(), not != 0: comparing booleans with an int first widens them to int64
        self.register_buffer("masks", masks.bool(), persistent=False)

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        saved = state_dict.pop(prefix + "masks", None)  # saved before masks were left out
        if saved is not None and not torch.equal(saved.to(self.masks), self.masks):
            error_msgs.append(f"{prefix}masks: the saved masks differ from this layer's")
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def forward(self, x: Tensor, mask: int = 0) -> Tensor:
        """``x @ (weight * masks[mask]).T + bias``."""
        return F.linear(x, self.masked_weight(mask), self.bias)

    def masked_weight(self, mask: int = 0) -> Tensor:
        """``weight * masks[mask]``, the ``[out, in]`` weight that mask ``mask`` lets through
        (for a caller that applies the same mask many times, as sequential sampling does)."""
        return self.weight * self.masks[mask]

    @property
    def num_parameters(self) -> int:
        """Weights some mask lets through, plus the biases."""
        return int(self.masks.any(0).sum()) + (self.out_features if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, masks={self.masks.shape[0]}"


#: Activation functions by name, as constructors and configs spell them.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "elu": nn.ELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
}


def mlp(sizes: Sequence[int], activation: str = "elu", final_activation: bool = False) -> nn.Module:
    """A multilayer perceptron ``sizes[0] -> ... -> sizes[-1]``: linear layers with
    ``activation`` between them (and after the last one if ``final_activation``).

    Raises:
        ValueError: for fewer than two sizes, a size below 1, or an unknown activation.

    Example:
        >>> mlp([4, 8, 2], "tanh")
        Sequential(
          (0): Linear(in_features=4, out_features=8, bias=True)
          (1): Tanh()
          (2): Linear(in_features=8, out_features=2, bias=True)
        )
    """
    sizes = list(sizes)
    if len(sizes) < 2 or not all(
        isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in sizes
    ):
        raise ValueError(f"an MLP needs at least two positive integer sizes, got {sizes!r}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}"
        )
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2 or final_activation:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class GaussianEncoder(nn.Module):
    """An amortized diagonal-Gaussian encoder ``x -> (loc, scale[, context])``: an MLP body, then
    one linear head for the location, the scale (through a softplus) and, when
    ``context_dim > 0``, a context vector for a conditional flow.

    With ``condition_dim > 0`` it encodes ``x`` given a condition ``c`` (a one-hot label), as if
    the input were ``[x, c]``; the first layer takes them apart, so that ``x`` passes through it
    once however many conditions broadcast against it (every label of an enumerated site).

    Arguments:
        x_dim: the input dimension.
        z_dim: the latent dimension.
        hidden_dims: widths of the body's hidden layers (empty: a linear encoder).
        activation: the body's activation (see :data:`ACTIVATIONS`).
        context_dim: the size of the context output (0: none).
        condition_dim: the size of the condition input (0: none).

    Example:
        >>> loc, scale, context = GaussianEncoder(6, 2, [8], context_dim=3)(torch.zeros(5, 6))
        >>> loc.shape, bool((scale > 0).all()), context.shape
        (torch.Size([5, 2]), True, torch.Size([5, 3]))
        >>> by_label = GaussianEncoder(6, 2, [8], condition_dim=3)
        >>> by_label(torch.zeros(5, 6), torch.eye(3)[:, None, :])[0].shape  # 3 labels x 5 rows
        torch.Size([3, 5, 2])
    """

    def __init__(
        self,
        x_dim: int,
        z_dim: int,
        hidden_dims: Sequence[int] = (),
        activation: str = "elu",
        context_dim: int = 0,
        condition_dim: int = 0,
    ) -> None:
        super().__init__()
        hidden = list(hidden_dims)
        self.z_dim, self.context_dim, self.x_dim = z_dim, context_dim, x_dim
        inputs = x_dim + condition_dim
        self.body = (
            mlp([inputs, *hidden], activation, final_activation=True) if hidden else nn.Identity()
        )
        self.head = nn.Linear(hidden[-1] if hidden else inputs, 2 * z_dim + context_dim)

    def forward(
        self, x: Tensor, condition: Tensor | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """``loc [..., z]``, ``scale [..., z]`` and the context ``[..., c]`` (None if ``c = 0``)
        of rows ``x [..., x_dim]`` (and conditions ``[..., condition_dim]``, broadcast)."""
        if condition is None:
            out = self.head(self.body(x))
        elif isinstance(self.body, nn.Sequential):
            out = self.head(self.body[1:](self._first(self.body[0], x, condition)))
        else:
            out = self._first(self.head, x, condition)
        loc, raw = out[..., : self.z_dim], out[..., self.z_dim : 2 * self.z_dim]
        context = out[..., 2 * self.z_dim :] if self.context_dim else None
        return loc, F.softplus(raw) + 1e-6, context

    def _first(self, layer: nn.Module, x: Tensor, condition: Tensor) -> Tensor:
        # layer([x, c]) with the two products apart: x's once, c's once, then broadcast
        weight = layer.weight
        return F.linear(x, weight[:, : self.x_dim], layer.bias) + F.linear(
            condition, weight[:, self.x_dim :]
        )
