"""The coupling family: NICE's additive coupling with a final scaling, RealNVP's affine coupling
(conditional on a context with ``context_dim``), and rational-quadratic spline coupling; one
pass in both directions."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from pyro.distributions import constraints
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import (
    AffineCoupling,
    ComposeTransformModule,
    ConditionalAffineCoupling,
    Permute,
    spline_coupling,
)
from pyro.nn import ConditionalDenseNN, DenseNN
from torch import Tensor, nn

from ppdgm._checks import check_int
from ppdgm.transforms.core import HIDDEN_DIMS, ConditionalFlow, Inverse, check_flow, flip

__all__ = [
    "AdditiveCoupling",
    "Scaling",
    "additive_coupling",
    "nice",
    "real_nvp",
    "spline",
]


class AdditiveCoupling(TransformModule):
    r"""NICE's additive coupling layer, volume preserving (``log |det J| = 0``):

    .. math:: y_{1:k} = x_{1:k}, \qquad y_{k+1:d} = x_{k+1:d} + m(x_{1:k}).

    Arguments:
        split_dim: ``k``, the number of inputs passed through unchanged.
        hypernet: the shift network ``m``, mapping ``[..., k]`` to ``[..., d - k]``.

    Example:
        >>> t = AdditiveCoupling(1, DenseNN(1, [8], param_dims=[1]))
        >>> x = torch.randn(3, 2)
        >>> torch.allclose(t.inv(t(x).clone()), x), t.log_abs_det_jacobian(x, t(x)).shape
        (True, torch.Size([3]))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, split_dim: int, hypernet: nn.Module) -> None:
        super().__init__(cache_size=1)
        self.split_dim = split_dim
        self.hypernet = hypernet

    def _call(self, x: Tensor) -> Tensor:
        x1, x2 = x[..., : self.split_dim], x[..., self.split_dim :]
        return torch.cat([x1, x2 + self.hypernet(x1)], dim=-1)

    def _inverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[..., : self.split_dim], y[..., self.split_dim :]
        return torch.cat([y1, y2 - self.hypernet(y1)], dim=-1)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return x.new_zeros(x.shape[:-1])


class Scaling(TransformModule):
    r"""NICE's final diagonal scaling ``y = x \odot \exp(s)``, with ``log |det J| = \sum_i s_i``.

    Arguments:
        dim: the dimension ``d``; ``s`` starts at zero (the identity).

    Example:
        >>> t = Scaling(2)
        >>> t(torch.ones(1, 2)), t.log_abs_det_jacobian(torch.ones(1, 2), torch.ones(1, 2))
        (tensor([[1., 1.]], grad_fn=<MulBackward0>), tensor([0.], grad_fn=<ExpandBackward0>))
    """

    domain = constraints.real_vector
    codomain = constraints.real_vector
    bijective = True
    sign = +1

    def __init__(self, dim: int) -> None:
        super().__init__(cache_size=1)
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def _call(self, x: Tensor) -> Tensor:
        return x * self.log_scale.exp()

    def _inverse(self, y: Tensor) -> Tensor:
        return y * (-self.log_scale).exp()

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return self.log_scale.sum().expand(x.shape[:-1])


def _parity_coupling(
    dim: int, i: int, make: Callable[[int], torch.distributions.Transform]
) -> list[torch.distributions.Transform]:
    """Coupling layer ``i`` of a flow: for even ``i`` the odd coordinates are transformed given
    the even ones, for odd ``i`` the reverse (a checkerboard on a row of pixels, as RealNVP and
    zuko alternate); Pyro's coupling layers transform the last coordinates given the first
    ``split``, so the layer ``make(split)`` sits between a permutation and its inverse."""
    kept = torch.arange(i % 2, dim, 2)  # the coordinates the layer conditions on
    moved = torch.arange(1 - i % 2, dim, 2)
    order = torch.cat([kept, moved])
    return [Permute(order), make(len(kept)), Permute(torch.argsort(order))]


def additive_coupling(
    dim: int, hidden_dims: Sequence[int] = HIDDEN_DIMS, split_dim: int | None = None
) -> AdditiveCoupling:
    """One :class:`AdditiveCoupling` layer with a ReLU MLP shift network.

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of the shift network's hidden layers.
        split_dim: inputs passed through unchanged (``d // 2`` by default).

    Example:
        >>> additive_coupling(4, [8]).split_dim
        2
    """
    hidden = check_flow(dim, 1, hidden_dims, least=2)
    split = dim // 2 if split_dim is None else split_dim
    if not 0 < split < dim:
        raise ValueError(f"split_dim must be in 1..{dim - 1}, got {split_dim!r}")
    return AdditiveCoupling(split, DenseNN(split, hidden, param_dims=[dim - split]))


def nice(
    dim: int, hidden_dims: Sequence[int] = HIDDEN_DIMS, num_layers: int = 4
) -> ComposeTransformModule:
    """NICE: additive coupling layers that alternate between shifting the odd coordinates given
    the even ones and the reverse, then a diagonal :class:`Scaling` (see :func:`_parity_coupling`).

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.

    Example:
        >>> flow = nice(2, [8], num_layers=2)
        >>> flow(torch.randn(5, 2)).shape
        torch.Size([5, 2])
    """
    check_flow(dim, num_layers, hidden_dims, least=2)
    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts += _parity_coupling(
            dim, i, lambda split: additive_coupling(dim, hidden_dims, split_dim=split)
        )
    return ComposeTransformModule([*parts, Scaling(dim)])


def real_nvp(
    dim: int,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
    num_layers: int = 4,
    context_dim: int | None = None,
) -> ComposeTransformModule | ConditionalFlow:
    """RealNVP: Pyro's affine coupling layers, alternating between the odd and the even
    coordinates (:func:`_parity_coupling`), each in the density direction: ``z_B = (x_B -
    t(x_A)) exp(-s(x_A))`` (an :class:`Inverse` of Pyro's layer), as RealNVP is usually trained.

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.
        context_dim: the size of a context the layers depend on (a guide's ``q(z | x)``): a
            :class:`~ppdgm.transforms.core.ConditionalFlow` of Pyro's conditional affine
            couplings in the sampling direction, halves swapped between layers; None: a plain
            flow.

    Example:
        >>> real_nvp(3, [8], num_layers=2)(torch.randn(5, 3)).shape
        torch.Size([5, 3])
        >>> guide = real_nvp(3, [8], num_layers=2, context_dim=4)
        >>> guide.condition(torch.zeros(5, 4))(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """
    hidden = check_flow(dim, num_layers, hidden_dims, least=2)
    if context_dim is not None:
        check_int("context_dim", context_dim)
        split = dim // 2
        layers: list[torch.distributions.Transform] = []
        for i in range(num_layers):
            net = ConditionalDenseNN(split, context_dim, hidden, param_dims=[dim - split] * 2)
            layers.append(ConditionalAffineCoupling(split, net))
            if i < num_layers - 1:
                layers.append(flip(dim))
        return ConditionalFlow(dim, context_dim, layers)

    def layer(split: int) -> torch.distributions.Transform:
        net = DenseNN(split, hidden, param_dims=[dim - split, dim - split])
        return Inverse(AffineCoupling(split, net))

    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts += _parity_coupling(dim, i, layer)
    return ComposeTransformModule(parts)


def spline(
    dim: int,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
    num_layers: int = 4,
    count_bins: int = 8,
    bound: float = 3.0,
) -> ComposeTransformModule:
    """Neural spline flow: Pyro's rational-quadratic spline coupling layers with alternating
    halves; the identity outside ``[-bound, bound]``.

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.
        count_bins: the number of spline segments.
        bound: half the width of the interval the splines act on.

    Example:
        >>> spline(2, [8], num_layers=2)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """
    hidden = check_flow(dim, num_layers, hidden_dims, least=2)
    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts.append(spline_coupling(dim, hidden_dims=hidden, count_bins=count_bins, bound=bound))
        if i < num_layers - 1:
            parts.append(flip(dim))
    return ComposeTransformModule(parts)
