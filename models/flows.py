r"""Normalizing-flow density models: NICE, RealNVP, MAF and IAF on a standard Normal base, with
exact ``log p(x) = log N(f^{-1}(x); 0, I) - log |det J_f(f^{-1}(x))|``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ComposeTransformModule
from torch import Tensor, nn

from ppdgm import flows
from ppdgm.autoregressive import check_data, seeded

__all__ = ["IAF", "MAF", "NICE", "FlowModel", "RealNVP"]


class FlowModel(nn.Module):
    """A density model ``x = f(z)``, ``z ~ N(0, I)``, for a flow ``f`` in the sampling direction
    (as :mod:`ppdgm.flows` builds them).

    ``model(x)`` is the Pyro program: ``pyro.plate("data")`` over the rows of ``x`` and one
    observed site ``x`` whose distribution is the flow's
    :class:`~pyro.distributions.TransformedDistribution`.

    Arguments:
        dim: the dimension ``d`` of the data.
        flow: the flow ``f``, a ``[..., d] -> [..., d]`` transform module.
    """

    def __init__(self, dim: int, flow: ComposeTransformModule) -> None:
        super().__init__()
        self.dim = dim
        self.flow = flow
        self.register_buffer("base_loc", torch.zeros(dim))
        self.register_buffer("base_scale", torch.ones(dim))

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the parameters."""
        return self.base_loc.dtype

    def distribution(self) -> dist.TransformedDistribution:
        """The flow's distribution over ``[d]`` vectors."""
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        return dist.TransformedDistribution(base, [self.flow])

    def check(self, x: Any) -> Tensor:
        """``x`` as ``[N, d]`` data in the parameters' dtype.

        Raises:
            ValueError: naming the shape, for data that is not ``[N, d]``, or for NaN or inf.
        """
        return check_data(x, self.dim, binary=False, name=type(self).__name__, dtype=self.dtype)

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of ``[N, d]`` data, exactly: ``[N]``."""
        return self.distribution().log_prob(self.check(x))

    def training_loss(self, x: Tensor, step: int) -> Tensor:
        """The maximum-likelihood objective of a minibatch: ``-mean log p(x)``."""
        return -self.log_prob(x).mean()

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` draws ``[n, d]`` (``seed``: a private seed; the global stream is left alone)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative integer, got {n!r}")
        with torch.no_grad(), seeded(seed):
            return self.distribution().sample((n,))

    def model(self, x: Tensor) -> None:
        """The model as a Pyro program (see the class description)."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", self.distribution(), obs=x)


def _build(
    factory: Callable[..., ComposeTransformModule],
    dim: int,
    hidden_dims: Sequence[int],
    num_layers: int,
) -> ComposeTransformModule:
    return factory(dim, tuple(hidden_dims), num_layers)


class NICE(FlowModel):
    """NICE: additive coupling layers and a final diagonal scaling (see :func:`ppdgm.flows.nice`).

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.

    Example:
        >>> model = NICE(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64), num_layers: int = 4):
        super().__init__(dim, _build(flows.nice, dim, hidden_dims, num_layers))


class RealNVP(FlowModel):
    """RealNVP: affine coupling layers with alternating halves (see :func:`ppdgm.flows.real_nvp`).

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.

    Example:
        >>> model = RealNVP(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64), num_layers: int = 4):
        super().__init__(dim, _build(flows.real_nvp, dim, hidden_dims, num_layers))


class MAF(FlowModel):
    """Masked autoregressive flow: ``log_prob`` in one pass per layer, sampling in ``d``
    (see :func:`ppdgm.flows.maf`).

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.

    Example:
        >>> model = MAF(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64), num_layers: int = 4):
        super().__init__(dim, _build(flows.maf, dim, hidden_dims, num_layers))


class IAF(FlowModel):
    """Inverse autoregressive flow: sampling in one pass per layer, ``log_prob`` of data in ``d``
    (see :func:`ppdgm.flows.iaf`).

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.

    Example:
        >>> model = IAF(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    def __init__(self, dim: int, hidden_dims: Sequence[int] = (64, 64), num_layers: int = 4):
        super().__init__(dim, _build(flows.iaf, dim, hidden_dims, num_layers))
