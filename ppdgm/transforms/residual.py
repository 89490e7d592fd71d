"""The residual family of Rezende & Mohamed (2015): planar and radial flows, with no inverse (for
guides, which score only their own samples); conditional on a context with ``context_dim``,
their parameters computed from it by an MLP."""

from __future__ import annotations

from collections.abc import Sequence

from pyro.distributions.transforms import (
    ComposeTransformModule,
    ConditionalPlanar,
    ConditionalRadial,
    Planar,
    Radial,
)
from pyro.nn import DenseNN

from ppdgm._checks import check_int
from ppdgm.transforms.core import HIDDEN_DIMS, ConditionalFlow, check_flow

__all__ = ["planar", "radial"]


def planar(
    dim: int,
    num_layers: int = 4,
    context_dim: int | None = None,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
) -> ComposeTransformModule | ConditionalFlow:
    """Pyro's planar flows ``x = z + u h(w^T z + b)`` (no inverse: for guides).

    Arguments:
        dim: the dimension ``d``.
        num_layers: the number of layers.
        context_dim: the size of a context from which an MLP (``hidden_dims``) computes each
            layer's ``u, w, b``; None: a plain flow with its own parameters.
        hidden_dims: the widths of that MLP's hidden layers.

    Example:
        >>> import torch
        >>> planar(2, num_layers=3)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
        >>> planar(2, 2, context_dim=3).condition(torch.zeros(4, 3))(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """
    return _residual(
        Planar, ConditionalPlanar, [1, dim, dim], dim, num_layers, context_dim, hidden_dims
    )


def radial(
    dim: int,
    num_layers: int = 4,
    context_dim: int | None = None,
    hidden_dims: Sequence[int] = HIDDEN_DIMS,
) -> ComposeTransformModule | ConditionalFlow:
    """Pyro's radial flows ``x = z + beta h(alpha, r) (z - z_0)`` (no inverse: for guides).

    Arguments:
        dim: the dimension ``d``.
        num_layers: the number of layers.
        context_dim: the size of a context from which an MLP (``hidden_dims``) computes each
            layer's ``z_0, alpha, beta``; None: a plain flow with its own parameters.
        hidden_dims: the widths of that MLP's hidden layers.

    Example:
        >>> import torch
        >>> radial(2, num_layers=3)(torch.randn(4, 2)).shape
        torch.Size([4, 2])
    """
    return _residual(
        Radial, ConditionalRadial, [dim, 1, 1], dim, num_layers, context_dim, hidden_dims
    )


def _residual(
    plain: type,
    conditional: type,
    param_dims: list[int],
    dim: int,
    num_layers: int,
    context_dim: int | None,
    hidden_dims: Sequence[int],
) -> ComposeTransformModule | ConditionalFlow:
    """``num_layers`` layers of ``plain(dim)``, or of ``conditional`` on an MLP from the context
    to the layer's parameters (``param_dims``) when ``context_dim`` is given."""
    hidden = check_flow(dim, num_layers, hidden_dims)
    if context_dim is None:
        return ComposeTransformModule([plain(dim) for _ in range(num_layers)])
    check_int("context_dim", context_dim)
    layers = [
        conditional(DenseNN(context_dim, hidden, param_dims=param_dims)) for _ in range(num_layers)
    ]
    return ConditionalFlow(dim, context_dim, layers)
