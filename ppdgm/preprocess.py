r"""Dequantization and the logit transform: continuous flows as models of data on a grid.

Data on ``L`` levels (scikit-learn's digits: ``L = 17`` gray levels ``0..16``; 8-bit pixels:
``L = 256``) have no density, so a flow is fitted to dequantized values ``v = x + u``,
``u ~ U(0, 1)^D``, mapped to the flow's space by

.. math::

    y = v / L \in [0, 1)^D, \qquad t = \operatorname{logit}(\alpha + (1 - 2\alpha)\, y)

(the logit is optional; RealNVP uses ``alpha = 0.05``). A flow density ``p(t)`` gives the
density ``p_V(v) = p(t(v)) |\det dt/dv|`` and a discrete model ``P(x) = \int_{[0,1)^D}
p_V(x + u)\, du``; Jensen's inequality bounds it (Theis et al., 2016):

.. math::

    \log P(x) \ge E_u[\log p(t(x + u)) + \log |\det dt/dv|], \qquad
    \log |\det dt/dv| = \sum_i \Bigl[\log(1 - 2\alpha) - \log s_i - \log(1 - s_i)\Bigr] - D \log L,

with ``s = alpha + (1 - 2 alpha) y``. Bits per dimension are ``-log P(x) / (D log 2)``
(:func:`bits_per_dim`). The flow's mass outside the grid (``v`` outside ``[0, L)^D``) belongs
to no datum, so ``P`` sums to at most 1 and the bound holds for its normalized version too.

References:
    Theis, van den Oord and Bethge, A note on the evaluation of generative models (2016);
    Dinh, Sohl-Dickstein and Bengio, Density estimation using Real NVP (2016), section 4.1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pyro.distributions import TorchDistribution, constraints
from torch import Tensor
from torch.distributions.transforms import (
    AffineTransform,
    ComposeTransform,
    IndependentTransform,
    SigmoidTransform,
    Transform,
)

from ppdgm._checks import check_int

__all__ = ["Dequantization", "Floor", "bits_per_dim"]


def bits_per_dim(log_prob: Tensor | float, dim: int) -> Tensor | float:
    r"""``-log_prob / (dim log 2)``: a log-probability in nats of ``dim``-dimensional data as
    bits per dimension.

    Example:
        >>> bits_per_dim(-64 * math.log(17), 64)  # uniform over 17 levels: log2(17) bits
        4.087462841250339
    """
    check_int("dim", dim)
    return -log_prob / (dim * math.log(2))


@dataclass(frozen=True)
class Dequantization:
    r"""Uniform dequantization of data on ``levels`` levels ``0..L-1``, optionally followed by
    the logit transform (see the module's description for the math).

    :meth:`forward` maps data to the flow's space with the log-Jacobian that turns the flow's
    log-density into the bound on ``log P(x)``; :attr:`transform` is the same map as a torch
    transform in the sampling direction (flow space to ``v``), to append to a flow.

    Arguments:
        levels: ``L >= 2``, the number of levels.
        logit_alpha: ``alpha`` in ``(0, 0.5)``; None: no logit (the flow models ``y = v / L``).

    Example:
        >>> pre = Dequantization(17, logit_alpha=0.05)
        >>> x = torch.tensor([[0.0, 16.0]])
        >>> t, log_det = pre.forward(x, torch.Generator().manual_seed(0))
        >>> pre.quantize(pre.transform(t)), log_det.shape
        (tensor([[ 0., 16.]]), torch.Size([1]))
    """

    levels: int
    logit_alpha: float | None = None

    def __post_init__(self) -> None:
        check_int("levels", self.levels, least=2)
        alpha = self.logit_alpha
        if alpha is not None and (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not 0.0 < float(alpha) < 0.5
        ):
            raise ValueError(f"logit_alpha must be in (0, 0.5) or None, got {alpha!r}")

    @property
    def transform(self) -> Transform:
        """The map from the flow's space to dequantized data ``v`` (``[..., D]``, one event
        dimension), the inverse of ``v -> t``; caching, so that a flow's samples are scored
        without inverting it."""
        scale = float(self.levels)
        if self.logit_alpha is None:
            parts: list[Transform] = [AffineTransform(0.0, scale, cache_size=1)]
        else:
            # v = L (sigmoid(t) - alpha) / (1 - 2 alpha)
            a = float(self.logit_alpha)
            parts = [
                SigmoidTransform(cache_size=1),
                AffineTransform(-a * scale / (1 - 2 * a), scale / (1 - 2 * a), cache_size=1),
            ]
        return IndependentTransform(ComposeTransform(parts, cache_size=1), 1, cache_size=1)

    def check(self, x: Tensor, name: str = "x") -> Tensor:
        """``x`` itself, checked to hold integers in ``0..L-1``.

        Raises:
            ValueError: naming the first value that is NaN, not an integer or out of range.
        """
        bad = ~((x == x.round()) & (x >= 0) & (x <= self.levels - 1))
        if bool(bad.any()):
            index = tuple(int(i) for i in bad.nonzero()[0])
            where = f"{name}[{', '.join(map(str, index))}]"
            value = float(x[index])
            if math.isnan(value):
                raise ValueError(f"{where} is NaN; dequantization needs every value observed")
            raise ValueError(
                f"{where} = {value:g}, but dequantized data must be integers in "
                f"0..{self.levels - 1} (levels={self.levels})"
            )
        return x

    def dequantize(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``v = x + u`` with ``u ~ U(0, 1)`` drawn for every entry of ``x`` (checked)."""
        self.check(x)
        u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        return x + u

    def to_flow_space(self, v: Tensor) -> tuple[Tensor, Tensor]:
        r"""``t(v)`` and ``log |det dt/dv|`` per row (``[...]``) for dequantized ``v``."""
        transform = self.transform
        t = transform.inv(v)
        return t, -transform.log_abs_det_jacobian(t, v)

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        r"""Dequantizes ``x`` (``[..., D]`` integers) and maps it to the flow's space:
        ``t`` and ``log |det dt/dv|`` per row, so that ``log p(t) + log_det`` is a one-draw
        unbiased estimate of the bound on ``log P(x)``.

        Raises:
            ValueError: for values that are not integers in ``0..L-1`` or NaN.
        """
        return self.to_flow_space(self.dequantize(x, generator))

    def quantize(self, v: Tensor) -> Tensor:
        """The level of each dequantized value, ``floor(v)`` clamped to ``0..L-1``."""
        return v.floor().clamp(0, self.levels - 1)


class Floor(TorchDistribution):
    r"""The distribution of ``x = floor(v)`` given ``v`` (``[..., D]``, one event dimension):
    ``log P(x | v)`` is 0 where ``x <= v <= x + 1`` in every coordinate and ``-inf`` elsewhere
    (the closed bins make it robust to rounding at the edges, a set of measure zero).

    With ``v`` drawn from a dequantized flow and observed ``x``, the marginal is
    ``P(x) = \int_{[x, x+1]} p_V(v) dv``; a guide ``v = x + u``, ``u ~ U(0, 1)^D``, makes the
    ELBO the dequantization bound and importance sampling converge to ``log P(x)``.

    Example:
        >>> Floor(torch.tensor([[0.3, 2.9]])).log_prob(torch.tensor([[0.0, 2.0], [0.0, 1.0]]))
        tensor([0., -inf])
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {"v": constraints.real}
    support = constraints.real_vector  # integers; left unchecked so that -inf is the answer
    has_rsample = False

    def __init__(self, v: Tensor, validate_args: bool | None = None) -> None:
        if v.dim() < 1:
            raise ValueError(f"Floor needs v with an event dimension, got shape {tuple(v.shape)}")
        self.v = v
        super().__init__(v.shape[:-1], v.shape[-1:], validate_args=validate_args)

    def expand(self, batch_shape: torch.Size, _instance: Any = None) -> Floor:
        return Floor(self.v.expand(*batch_shape, *self.event_shape))

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        return self.v.floor().expand(*sample_shape, *self.v.shape)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = ((x <= self.v) & (self.v <= x + 1)).all(-1)
        return torch.zeros_like(inside, dtype=self.v.dtype).masked_fill(~inside, -math.inf)
