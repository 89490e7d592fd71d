r"""Normalizing-flow density models: NICE, RealNVP, MAF and IAF on a standard Normal base, with
exact ``log p(x) = log N(f^{-1}(x); 0, I) - log |det J_f(f^{-1}(x))|``, and optionally
dequantized for data on a grid of levels (see :mod:`ppdgm.preprocess`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions.transforms import ComposeTransformModule
from torch import Tensor

from ppdgm import transforms
from ppdgm.base import Model, check_data, register_model
from ppdgm.preprocess import Dequantization, Floor
from ppdgm.settings import from_data, setting

__all__ = ["IAF", "MAF", "NICE", "FlowModel", "RealNVP"]

#: Rounds of rejection sampling a dequantized model tries before giving up.
MAX_SAMPLING_ROUNDS = 100


class FlowModel(Model):
    r"""A density model ``x = f(z)``, ``z ~ N(0, I)``, for a flow ``f`` in the sampling direction
    (as :mod:`ppdgm.transforms` builds them), optionally on dequantized data.

    Continuous data: ``log_prob`` is exact, and ``model(x)`` is the Pyro program
    ``pyro.plate("data")`` over the rows of ``x`` around one observed site ``x`` whose
    distribution is the flow's :class:`~pyro.distributions.TransformedDistribution`.

    Data on ``L`` levels (``preprocessing`` given): the flow's samples ``t`` map to dequantized
    ``v`` (:attr:`Dequantization.transform <ppdgm.preprocess.Dequantization.transform>`) and the
    datum is ``x = floor(v)``, so that ``P(x) = \int_{[x, x+1]} p_V(v) dv``. Then

    - ``log_prob(x)`` is a one-draw unbiased estimate (fresh ``u ~ U(0, 1)^D`` each call, from
      torch's global stream) of the dequantization bound
      ``E_u[log p_V(x + u)] <= log P(x)``, in nats;
    - ``sample(n)`` returns levels (integers in ``0..L-1``, in the parameters' dtype), drawn
      from ``P`` normalized: draws whose ``v`` falls off the grid are rejected;
    - ``model(x)`` draws a latent ``v`` (site ``"v"``) and observes ``x`` under
      :class:`~ppdgm.preprocess.Floor`, and ``guide(x)`` is the uniform dequantization
      ``v = x + u``: with them, :class:`~ppdgm.estimate.LogLikelihood`'s ``"elbo"`` is the
      dequantization bound and ``"importance"`` tightens it to ``log P(x)``; ``"exact"``
      refuses the model (its latent ``v`` is continuous), since ``log_prob`` is a bound.

    Arguments:
        dim: the dimension ``d`` of the data.
        flow: the flow ``f``, a ``[..., d] -> [..., d]`` transform module.
        preprocessing: the dequantization (and logit transform) of data on a grid; None:
            continuous data.
    """

    family = "flow"

    def __init__(
        self,
        dim: int,
        flow: ComposeTransformModule,
        preprocessing: Dequantization | None = None,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.flow = flow
        self.preprocessing = preprocessing
        self.register_buffer("base_loc", torch.zeros(dim))
        self.register_buffer("base_scale", torch.ones(dim))

    @property
    def log_prob_is_exact(self) -> bool:
        """Whether :meth:`log_prob` is exact: for continuous data; on dequantized levels it is
        a one-draw estimate of a bound (see the class description)."""
        return self.preprocessing is None

    def summary(self) -> str:
        """One line: the flow, its data and the number of parameters."""
        data = (
            "continuous data"
            if self.preprocessing is None
            else f"{self.preprocessing.levels} levels, dequantized (log_prob is a bound)"
        )
        head = f"{type(self).__name__}({self.extra_repr()})"
        return f"{head}: {data}; {self.num_parameters:,} parameters"

    def distribution(self) -> dist.TransformedDistribution:
        """The flow's distribution over ``[d]`` vectors: of the data, or of the dequantized
        ``v`` when the model has a preprocessing."""
        base = dist.Normal(self.base_loc, self.base_scale).to_event(1)
        parts = (
            [self.flow] if self.preprocessing is None else [self.flow, self.preprocessing.transform]
        )
        return dist.TransformedDistribution(base, parts)

    def check(self, x: Any) -> Tensor:
        """``x`` as ``[N, d]`` data in the parameters' dtype.

        Raises:
            ValueError: naming the shape or value, for data that is not ``[N, d]``, for NaN or
                inf, and for values that are not levels when the model dequantizes.
        """
        x = check_data(x, self.dim, binary=False, name=type(self).__name__, dtype=self.dtype)
        if self.preprocessing is not None:
            self.preprocessing.check(x)
        return x

    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` of each row of ``[N, d]`` data, ``[N]``: exact for continuous data, a
        one-draw estimate of the dequantization bound on ``log P(x)`` for levels."""
        x = self.check(x)
        if self.preprocessing is None:
            return self.distribution().log_prob(x)
        return self.distribution().log_prob(self.preprocessing.dequantize(x))

    def _sample(self, n: int) -> Tensor:
        """``n`` draws ``[n, d]``: of the data, or levels for a dequantized model.

        Raises:
            ValueError: for a dequantized model whose flow puts so little mass on the grid
                that rejection sampling finds no ``n`` draws on it.
        """
        if self.preprocessing is None:
            return self.distribution().sample((n,))
        return self._sample_levels(n)

    def _sample_levels(self, n: int) -> Tensor:
        distribution, levels = self.distribution(), self.preprocessing.levels
        kept: list[Tensor] = []
        accepted = drawn = 0
        for _ in range(MAX_SAMPLING_ROUNDS):
            if accepted >= n:
                return torch.cat(kept)[:n].floor() if kept else self.base_loc.new_empty(0, self.dim)
            rate = max(accepted / drawn, 0.01) if drawn else 1.0
            m = math.ceil(1.2 * (n - accepted) / rate) + 16
            v = distribution.sample((m,))
            on_grid = ((v >= 0) & (v < levels)).all(-1)
            kept.append(v[on_grid])
            accepted, drawn = accepted + int(on_grid.sum()), drawn + m
        raise ValueError(
            f"only {accepted} of {drawn} draws fell on the grid 0..{levels - 1}: the flow puts "
            "almost all its mass off the data's range (train it first)"
        )

    def model(self, x: Tensor) -> None:
        """The model as a Pyro program (see the class description)."""
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            if self.preprocessing is None:
                pyro.sample("x", self.distribution(), obs=x)
            else:
                v = pyro.sample("v", self.distribution())
                pyro.sample("x", Floor(v), obs=x)

    def guide(self, x: Tensor) -> None:
        """The uniform dequantization ``q(v | x) = U(x, x + 1)^D`` of a dequantized model.

        Raises:
            ValueError: for a model of continuous data, which has no latent variable.
        """
        if self.preprocessing is None:
            raise ValueError(
                f"{type(self).__name__} models continuous data: it has no latent variable, "
                "so no guide (give it levels to dequantize)"
            )
        x = self.check(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("v", dist.Uniform(x, x + 1).to_event(1))

    def extra_repr(self) -> str:
        if self.preprocessing is None:
            return f"dim={self.dim}"
        pre = self.preprocessing
        return f"dim={self.dim}, levels={pre.levels}, logit_alpha={pre.logit_alpha}"


class _Named(FlowModel):
    # the zoo's flows: a factory of ppdgm.transforms and plain-data arguments (a checkpoint's
    # config)
    factory: ClassVar[Callable[..., ComposeTransformModule]]

    @dataclass(frozen=True)
    class Config:
        """A flow's settings (see the class)."""

        dim: int = from_data()
        hidden_dims: tuple[int, ...] = setting(
            transforms.HIDDEN_DIMS, "widths of each layer's networks", flag="--hidden"
        )
        num_layers: int = setting(4, "flow layers", flag="--flow-layers")
        levels: int | None = from_data()
        logit_alpha: float | None = setting(
            None,
            "alpha of the logit transform after dequantization (dequantized data only)",
            parse=float,
            flag_default=0.05,
        )

    def __init__(
        self,
        dim: int,
        hidden_dims: Sequence[int] = transforms.HIDDEN_DIMS,
        num_layers: int = 4,
        *,
        levels: int | None = None,
        logit_alpha: float | None = None,
    ) -> None:
        if levels is None and logit_alpha is not None:
            raise ValueError(
                f"logit_alpha={logit_alpha!r} needs levels: the logit transform is for "
                "dequantized data on a grid of levels"
            )
        pre = None if levels is None else Dequantization(levels, logit_alpha)
        hidden = list(hidden_dims)
        super().__init__(dim, type(self).factory(dim, hidden, num_layers), pre)
        self._record(
            dim=dim,
            hidden_dims=hidden,
            num_layers=num_layers,
            levels=levels,
            logit_alpha=logit_alpha,
        )


@register_model("nice")
class NICE(_Named):
    """NICE: additive coupling layers and a final diagonal scaling (see
    :func:`ppdgm.transforms.nice`).

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.
        levels: ``L``, for data on the levels ``0..L-1`` (dequantized); None: continuous data.
        logit_alpha: with ``levels``, the ``alpha`` of the logit transform; None: no logit.

    Example:
        >>> model = NICE(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
        >>> digits = NICE(64, levels=17, logit_alpha=0.05)  # 17 gray levels, dequantized
        >>> x = digits.sample(3, seed=0)
        >>> bool(((x >= 0) & (x <= 16) & (x == x.round())).all()), digits.log_prob(x).shape
        (True, torch.Size([3]))
    """

    factory = staticmethod(transforms.nice)


@register_model("realnvp")
class RealNVP(_Named):
    """RealNVP: affine coupling layers alternating odd and even coordinates (see
    :func:`ppdgm.transforms.real_nvp`).

    Arguments:
        dim: the dimension ``d >= 2``.
        hidden_dims: widths of each coupling network's hidden layers.
        num_layers: the number of coupling layers.
        levels: ``L``, for data on the levels ``0..L-1`` (dequantized); None: continuous data.
        logit_alpha: with ``levels``, the ``alpha`` of the logit transform; None: no logit.

    Example:
        >>> model = RealNVP(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    factory = staticmethod(transforms.real_nvp)


@register_model("maf")
class MAF(_Named):
    """Masked autoregressive flow: ``log_prob`` in one pass per layer, sampling in ``d``
    (see :func:`ppdgm.transforms.maf`).

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.
        levels: ``L``, for data on the levels ``0..L-1`` (dequantized); None: continuous data.
        logit_alpha: with ``levels``, the ``alpha`` of the logit transform; None: no logit.

    Example:
        >>> model = MAF(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    factory = staticmethod(transforms.maf)


@register_model("iaf")
class IAF(_Named):
    """Inverse autoregressive flow: sampling in one pass per layer, ``log_prob`` of data in ``d``
    (see :func:`ppdgm.transforms.iaf`).

    Arguments:
        dim: the dimension ``d``.
        hidden_dims: widths of each MADE's hidden layers.
        num_layers: the number of autoregressive layers.
        levels: ``L``, for data on the levels ``0..L-1`` (dequantized); None: continuous data.
        logit_alpha: with ``levels``, the ``alpha`` of the logit transform; None: no logit.

    Example:
        >>> model = IAF(2, hidden_dims=[8], num_layers=2)
        >>> model.log_prob(torch.zeros(3, 2)).shape, model.sample(4, seed=0).shape
        (torch.Size([3]), torch.Size([4, 2]))
    """

    factory = staticmethod(transforms.iaf)
