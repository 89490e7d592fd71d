"""The autoregressive family on MADE networks: MAF (one pass to score data) and IAF (one pass
to sample; conditional on a context with ``context_dim``, the guide flow of Kingma et al.)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from pyro.distributions.transforms import (
    AffineAutoregressive,
    ComposeTransformModule,
    ConditionalAffineAutoregressive,
)
from pyro.distributions.transforms.utils import clamp_preserve_gradients
from pyro.nn import AutoRegressiveNN, ConditionalAutoRegressiveNN
from torch import Tensor

from ppdgm._checks import check_int
from ppdgm.transforms.core import (
    HIDDEN_DIMS,
    ConditionalFlow,
    Inverse,
    check_flow,
    one_dimension_allowed,
)

__all__ = ["iaf", "maf"]


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


def _autoregressive(
    dim: int, hidden_dims: Sequence[int], num_layers: int, stable: bool
) -> list[AffineAutoregressive]:
    hidden = check_flow(dim, num_layers, hidden_dims)
    layers = []
    for i in range(num_layers):
        with one_dimension_allowed():
            net = AutoRegressiveNN(dim, hidden, permutation=_order(dim, i))
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
    dim: int,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
    num_layers: int = 4,
    stable: bool = False,
    context_dim: int | None = None,
) -> ComposeTransformModule | ConditionalFlow:
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
        context_dim: the size of a context the MADEs also see (a guide's ``q(z | x)``): a
            :class:`~ppdgm.transforms.core.ConditionalFlow` of Pyro's conditional affine
            autoregressive layers, in the same orders; None: a plain flow.

    Example:
        >>> iaf(3, [8], num_layers=2)(torch.randn(4, 3)).shape
        torch.Size([4, 3])
        >>> guide = iaf(3, [8], num_layers=2, context_dim=4)
        >>> guide.condition(torch.zeros(5, 4))(torch.randn(5, 3)).shape
        torch.Size([5, 3])
    """
    if context_dim is None:
        return ComposeTransformModule(_autoregressive(dim, hidden_dims, num_layers, stable))
    hidden = check_flow(dim, num_layers, hidden_dims)
    check_int("context_dim", context_dim)
    if stable:
        raise ValueError("a conditional IAF has no stable parametrization; drop stable=True")
    layers = []
    for i in range(num_layers):
        with one_dimension_allowed():
            net = ConditionalAutoRegressiveNN(dim, context_dim, hidden, permutation=_order(dim, i))
        layers.append(ConditionalAffineAutoregressive(net))
    return ConditionalFlow(dim, context_dim, layers)


def _order(dim: int, i: int) -> torch.Tensor:
    """The order of layer ``i``: natural for even ``i``, reversed for odd."""
    return torch.arange(dim) if i % 2 == 0 else torch.arange(dim - 1, -1, -1)
