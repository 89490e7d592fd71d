r"""Normalizing-flow factories: Pyro transform modules usable as priors, guides or density models.

Every factory returns a :class:`~pyro.distributions.transforms.ComposeTransformModule` in the
*sampling direction*: it maps base noise ``z`` to data ``x = f(z)``, which is the direction
:class:`~pyro.distributions.TransformedDistribution` expects, so that

.. math:: \log p(x) = \log p_Z(f^{-1}(x)) - \log |\det J_f(f^{-1}(x))|.

What each direction costs (``d`` the dimension):

- :func:`nice`, :func:`real_nvp`, :func:`spline`: coupling layers, one pass both ways.
- :func:`maf`: ``log_prob`` of any data in one pass, sampling in ``d`` sequential passes.
- :func:`iaf`: sampling (and scoring its own samples) in one pass, ``log_prob`` of other data in
  ``d`` sequential passes.
- :func:`planar`, :func:`radial`: no inverse; use them where only samples are scored (guides).

Pyro's :class:`~pyro.distributions.transforms.AffineAutoregressive` computes
``x_i = mu_i(z_{<i}) + sigma_i(z_{<i}) z_i``: its forward (sampling) direction is one pass, so it is
an IAF layer as it stands; :func:`maf` wraps each layer in :class:`Inverse` so that its one-pass
direction is the density direction instead.

References:
    Dinh et al., NICE (2014); Dinh et al., Real NVP (2016); Papamakarios et al., MAF (2017);
    Kingma et al., IAF (2016); Durkan et al., Neural Spline Flows (2019); Rezende & Mohamed (2015).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import torch
from pyro.distributions import constraints
from pyro.distributions.conditional import ConditionalTransform
from pyro.distributions.torch_transform import TransformModule
from pyro.distributions.transforms import (
    AffineAutoregressive,
    AffineCoupling,
    ComposeTransform,
    ComposeTransformModule,
    ConditionalAffineAutoregressive,
    ConditionalAffineCoupling,
    ConditionalPlanar,
    ConditionalRadial,
    Permute,
    Planar,
    Radial,
    spline_coupling,
)
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN, ConditionalDenseNN, DenseNN
from torch import Tensor, nn

from ppdgm._checks import check_int

__all__ = [
    "CONDITIONAL_FLOWS",
    "AdditiveCoupling",
    "ConditionalFlow",
    "Inverse",
    "Scaling",
    "additive_coupling",
    "conditional_flow",
    "iaf",
    "maf",
    "nice",
    "planar",
    "radial",
    "real_nvp",
    "spline",
]

HIDDEN_DIMS = (64, 64)


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


class Inverse(TransformModule):
    """The inverse of a transform module, itself a module so that its parameters are registered
    (``t.inv`` is not an ``nn.Module``, so a :class:`ComposeTransformModule` would drop them).

    Arguments:
        base: the transform to invert; its cache is reused.

    Example:
        >>> t = Inverse(Scaling(2))
        >>> t.base.log_scale.data.fill_(1.0)
        tensor([1., 1.])
        >>> t(torch.ones(1, 2))
        tensor([[0.3679, 0.3679]], grad_fn=<MulBackward0>)
    """

    bijective = True

    def __init__(self, base: TransformModule) -> None:
        super().__init__(cache_size=0)
        self.base = base

    @constraints.dependent_property(is_discrete=False)
    def domain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base.codomain

    @constraints.dependent_property(is_discrete=False)
    def codomain(self) -> constraints.Constraint:  # type: ignore[override]
        return self.base.domain

    @property
    def sign(self) -> int:  # type: ignore[override]
        return self.base.sign

    def _call(self, x: Tensor) -> Tensor:
        return self.base.inv(x)

    def _inverse(self, y: Tensor) -> Tensor:
        return self.base(y)

    def log_abs_det_jacobian(self, x: Tensor, y: Tensor) -> Tensor:
        return -self.base.log_abs_det_jacobian(y, x)


class _AffineAutoregressive(AffineAutoregressive):
    # Pyro's sequential inverse starts from float32 zeros whatever the dtype (pyro-ppl 1.9.2);
    # the same algorithm, starting from zeros of the input's dtype
    def _inverse(self, y: Tensor) -> Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.shape[-1]
        for idx in self.arn.permutation.tolist():
            mean, log_scale = self.arn(torch.stack(x, dim=-1))
            log_scale = clamp_preserve_gradients(
                log_scale, self.log_scale_min_clip, self.log_scale_max_clip
            )
            x[idx] = (y[..., idx] - mean[..., idx]) * torch.exp(-log_scale[..., idx])
        self._cached_log_scale = log_scale
        return torch.stack(x, dim=-1)

    def _inverse_stable(self, y: Tensor) -> Tensor:
        x = [y.new_zeros(y.shape[:-1])] * y.shape[-1]
        for idx in self.arn.permutation.tolist():
            mean, logit_scale = self.arn(torch.stack(x, dim=-1))
            inverse_scale = 1 + torch.exp(-logit_scale[..., idx] - self.sigmoid_bias)
            x[idx] = inverse_scale * y[..., idx] + (1 - inverse_scale) * mean[..., idx]
        self._cached_log_scale = self.logsigmoid(logit_scale + self.sigmoid_bias)
        return torch.stack(x, dim=-1)


def _check(dim: int, num_layers: int, hidden_dims: Sequence[int], least: int = 1) -> list[int]:
    check_int("dim", dim, least)
    check_int("num_layers", num_layers)
    hidden = list(hidden_dims)
    if not all(isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in hidden):
        raise ValueError(f"hidden_dims must be positive integers, got {hidden_dims!r}")
    return hidden


@contextmanager
def _one_dimension_allowed() -> Iterator[None]:
    """Silences Pyro's advice against a one-dimensional MADE: the layer is then an affine map
    (of the context, for a conditional one), which is what a 1-D latent variable needs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "ConditionalAutoRegressiveNN input_dim = 1")
        yield


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


def _flip(dim: int) -> Permute:
    # reversing the coordinates lets the next coupling layer transform the half this one kept
    return Permute(torch.arange(dim - 1, -1, -1))


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
    hidden = _check(dim, 1, hidden_dims, least=2)
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
    _check(dim, num_layers, hidden_dims, least=2)
    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts += _parity_coupling(
            dim, i, lambda split: additive_coupling(dim, hidden_dims, split_dim=split)
        )
    return ComposeTransformModule([*parts, Scaling(dim)])


def real_nvp(
    dim: int, hidden_dims: Sequence[int] = HIDDEN_DIMS, num_layers: int = 4
) -> ComposeTransformModule:
    """RealNVP: Pyro's affine coupling layers, alternating between the odd and the even
    coordinates (:func:`_parity_coupling`), each in the density direction: ``z_B = (x_B -
    t(x_A)) exp(-s(x_A))`` (an :class:`Inverse` of Pyro's layer), as RealNVP is usually trained.

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.

    Example:
        >>> real_nvp(3, [8], num_layers=2)(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """
    hidden = _check(dim, num_layers, hidden_dims, least=2)

    def layer(split: int) -> torch.distributions.Transform:
        net = DenseNN(split, hidden, param_dims=[dim - split, dim - split])
        return Inverse(AffineCoupling(split, net))

    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts += _parity_coupling(dim, i, layer)
    return ComposeTransformModule(parts)


def _autoregressive(
    dim: int, hidden_dims: Sequence[int], num_layers: int, stable: bool
) -> list[AffineAutoregressive]:
    hidden = _check(dim, num_layers, hidden_dims)
    layers = []
    for i in range(num_layers):
        order = torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
        with _one_dimension_allowed():
            net = AutoRegressiveNN(dim, hidden, permutation=order)
        layers.append(_AffineAutoregressive(net, stable=stable))
    return layers


def maf(
    dim: int, hidden_dims: Sequence[int] = HIDDEN_DIMS, num_layers: int = 4, stable: bool = False
) -> ComposeTransformModule:
    r"""MAF: affine autoregressive layers on MADE whose one-pass direction is data to noise,

    .. math:: z_i = (x_i - \mu_i(x_{<i})) / \sigma_i(x_{<i}),

    so ``log_prob`` is one pass and sampling is ``d`` passes. Each layer is an
    :class:`Inverse` of Pyro's :class:`AffineAutoregressive`; layer ``k``'s order is
    ``0, 1, ..., d-1`` for even ``k`` and reversed for odd ``k``: the Jacobian ``dz/dx`` of
    a layer is lower triangular in its order.

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.
        stable: use Pyro's sigmoid-gated ("stable") parametrization of the scale.

    Example:
        >>> flow = maf(3, [8], num_layers=2)
        >>> flow(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """
    layers = _autoregressive(dim, hidden_dims, num_layers, stable)
    return ComposeTransformModule([Inverse(layer) for layer in layers])


def iaf(
    dim: int, hidden_dims: Sequence[int] = HIDDEN_DIMS, num_layers: int = 4, stable: bool = False
) -> ComposeTransformModule:
    r"""IAF: Pyro's affine autoregressive layers on MADE, one pass from noise to data,

    .. math:: x_i = \mu_i(z_{<i}) + \sigma_i(z_{<i}) z_i,

    so sampling and scoring the flow's own samples are one pass (the guide's use), while
    ``log_prob`` of other data is ``d`` passes. Layer ``k``'s order is ``0, ..., d-1`` for even
    ``k`` and reversed for odd ``k``: the Jacobian ``dx/dz`` of a layer is lower triangular in its
    order.

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.
        stable: use Pyro's sigmoid-gated ("stable") parametrization of the scale.

    Example:
        >>> iaf(3, [8], num_layers=2)(torch.randn(4, 3)).shape
        torch.Size([4, 3])
    """
    return ComposeTransformModule(_autoregressive(dim, hidden_dims, num_layers, stable))


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
    hidden = _check(dim, num_layers, hidden_dims, least=2)
    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts.append(spline_coupling(dim, hidden_dims=hidden, count_bins=count_bins, bound=bound))
        if i < num_layers - 1:
            parts.append(_flip(dim))
    return ComposeTransformModule(parts)


def planar(dim: int, num_layers: int = 4) -> ComposeTransformModule:
    """Pyro's planar flows ``x = z + u h(w^T z + b)`` (no inverse: for guides).

    Example:
        >>> planar(2, num_layers=3)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """
    _check(dim, num_layers, ())
    return ComposeTransformModule([Planar(dim) for _ in range(num_layers)])


def radial(dim: int, num_layers: int = 4) -> ComposeTransformModule:
    """Pyro's radial flows ``x = z + beta h(alpha, r) (z - z_0)`` (no inverse: for guides).

    Example:
        >>> radial(2, num_layers=3)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """
    _check(dim, num_layers, ())
    return ComposeTransformModule([Radial(dim) for _ in range(num_layers)])


class ConditionalFlow(nn.Module):
    """A flow whose layers depend on a context vector (an encoder's output): the guide transform
    of an amortized ``q(z | x)``. :meth:`condition` fixes the context and gives an ordinary
    transform in the sampling direction.

    Arguments:
        dim: the dimension of the variable the flow transforms.
        context_dim: the size of the context.
        parts: conditional transforms of Pyro (``ConditionalTransformModule``) and fixed
            transforms (permutations), applied in order.
    """

    def __init__(
        self, dim: int, context_dim: int, parts: Sequence[torch.distributions.Transform]
    ) -> None:
        super().__init__()
        self.dim, self.context_dim = dim, context_dim
        self.parts = list(parts)
        self.layers = nn.ModuleList([p for p in self.parts if isinstance(p, nn.Module)])

    def condition(self, context: Tensor | None) -> ComposeTransform:
        """The flow at ``context`` (``[..., context_dim]``, broadcast against the input's batch).

        Raises:
            ValueError: for no context or one whose last dimension is not ``context_dim``.
        """
        if context is None:
            raise ValueError(
                f"this conditional flow needs a context of size {self.context_dim} "
                "(a guide flow must be given the encoder's context)"
            )
        if context.shape[-1] != self.context_dim:
            raise ValueError(
                f"the flow's context must have size {self.context_dim} in its last dimension, "
                f"got shape {tuple(context.shape)}"
            )
        return ComposeTransform(
            [p.condition(context) if isinstance(p, ConditionalTransform) else p for p in self.parts]
        )

    def extra_repr(self) -> str:
        return f"dim={self.dim}, context_dim={self.context_dim}"


def _conditional_iaf(dim: int, context: int, hidden: list[int], i: int) -> ConditionalTransform:
    order = torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
    with _one_dimension_allowed():
        net = ConditionalAutoRegressiveNN(dim, context, hidden, permutation=order)
    return ConditionalAffineAutoregressive(net)


def _conditional_coupling(
    dim: int, context: int, hidden: list[int], i: int
) -> ConditionalTransform:
    split = dim // 2
    net = ConditionalDenseNN(split, context, hidden, param_dims=[dim - split, dim - split])
    return ConditionalAffineCoupling(split, net)


def _conditional_planar(dim: int, context: int, hidden: list[int], i: int) -> ConditionalTransform:
    return ConditionalPlanar(DenseNN(context, hidden, param_dims=[1, dim, dim]))


def _conditional_radial(dim: int, context: int, hidden: list[int], i: int) -> ConditionalTransform:
    return ConditionalRadial(DenseNN(context, hidden, param_dims=[dim, 1, 1]))


#: The kinds of :func:`conditional_flow`: ``(layer factory, permute between layers, least dim)``.
CONDITIONAL_FLOWS = {
    "iaf": (_conditional_iaf, False, 1),
    "real_nvp": (_conditional_coupling, True, 2),
    "planar": (_conditional_planar, False, 1),
    "radial": (_conditional_radial, False, 1),
}


def conditional_flow(
    kind: str,
    dim: int,
    context_dim: int,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
    num_layers: int = 2,
) -> ConditionalFlow:
    r"""A :class:`ConditionalFlow` for guides, built from Pyro's conditional transforms.

    Kinds:

    - ``"iaf"``: affine autoregressive layers on MADE whose networks also see the context
      (Kingma et al. 2016); one pass to sample and to score the samples; the order is reversed
      in every other layer, as in :func:`iaf`.
    - ``"real_nvp"``: affine coupling layers with alternating halves.
    - ``"planar"``, ``"radial"``: the flows of Rezende & Mohamed (2015) with parameters computed
      from the context by an MLP (no inverse).

    Arguments:
        kind: one of :data:`CONDITIONAL_FLOWS`.
        dim: the dimension of the variable (``z``).
        context_dim: the size of the context vector.
        hidden_dims: widths of each layer's networks.
        num_layers: the number of layers.

    Example:
        >>> flow = conditional_flow("iaf", 3, context_dim=4, hidden_dims=[8])
        >>> flow.condition(torch.zeros(5, 4))(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """
    if kind not in CONDITIONAL_FLOWS:
        raise ValueError(
            f"unknown conditional flow {kind!r}; choose one of {', '.join(CONDITIONAL_FLOWS)}"
        )
    make, permute, least = CONDITIONAL_FLOWS[kind]
    hidden = _check(dim, num_layers, hidden_dims, least=least)
    check_int("context_dim", context_dim)
    parts: list[torch.distributions.Transform] = []
    for i in range(num_layers):
        parts.append(make(dim, context_dim, hidden, i))
        if permute and i < num_layers - 1:
            parts.append(_flip(dim))
    return ConditionalFlow(dim, context_dim, parts)
