r"""Machinery shared by the autoregressive density models of :mod:`ppdgm.models`.

An autoregressive model writes a joint density with the chain rule along an ordering
:math:`o_1, \dots, o_D` of the variables,

.. math::

    p(x) = \prod_{t=1}^{D} p(x_{o_t} \mid x_{o_1}, \dots, x_{o_{t-1}}),

each conditional a distribution whose parameters a network computes from the earlier variables.
A model here supplies two things: ``log_prob`` (every conditional in one vectorized pass) and
``_conditionals`` (the same conditionals one step at a time, as a generator that yields the
distribution of step ``t`` and receives its value). :class:`Autoregressive` derives from the
second both ``sample`` (vectorized over samples) and ``model(x)``, the Pyro program with one
sample site per variable inside ``pyro.plate("data")``; since each site's parameters are computed
from the values earlier sites returned, Pyro's provenance tracking (and so
:func:`ppdgm.inspect.dependency_graph`) sees the chain rule's edges.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Generator
from typing import Any

import pyro
import torch
from pyro.distributions import Distribution
from pyro.nn import PyroModule
from torch import Tensor

from ppdgm._checks import check_int
from ppdgm.base import Model, check_data, observed_cells, seeded

__all__ = ["Autoregressive", "Chain", "joint_table_size", "walk"]

#: A chain: yields the distribution of step ``t``, receives its value, for ``t = 0..D-1``.
Chain = Generator[Distribution, Tensor, None]


def joint_table_size(dim: int) -> str:
    """``2^dim - 1``, the free parameters of a full joint table over ``dim`` binary variables,
    exactly when short and approximately otherwise.

    Example:
        >>> joint_table_size(8), joint_table_size(784)
        ('255', '≈ 1.0e+236')
    """
    if dim <= 60:
        return f"{2**dim - 1:,}"
    exponent = dim * math.log10(2)
    return f"≈ {10 ** (exponent % 1):.1f}e+{int(exponent)}"


def walk(chain: Chain, draw: Callable[[int, Distribution], Tensor]) -> list[Tensor]:
    """Runs a chain: at each step ``t`` ``draw(t, distribution)`` gives the value sent back."""
    values: list[Tensor] = []
    distribution = next(chain)
    while True:
        value = draw(len(values), distribution)
        values.append(value)
        try:
            distribution = chain.send(value)
        except StopIteration:
            return values


class Autoregressive(PyroModule, Model):
    """Base of the autoregressive models: ``sample`` and ``model`` from ``_conditionals``.

    Subclasses set :attr:`dim`, :attr:`binary` and the buffer ``order`` (a permutation, the
    variable at each step), record their constructor's arguments (``_record``), and define
    ``log_prob`` and ``_conditionals``.
    """

    family = "autoregressive"
    binary: bool = True
    order: Tensor
    _formula: str = ""

    def __init__(self, dim: int) -> None:
        check_int("dim", dim)
        super().__init__()
        self.dim = dim
        self.register_buffer("order", torch.arange(dim))

    # ------------------------------------------------------------------ to be defined
    def log_prob(self, x: Tensor) -> Tensor:
        """``log p(x)`` for each row of ``[N, dim]`` data: ``[N]``."""
        raise NotImplementedError

    def _conditionals(self, shape: tuple[int, ...]) -> Chain:
        raise NotImplementedError

    # ------------------------------------------------------------------ derived
    def check(self, x: Any) -> Tensor:
        """``x`` as ``[N, dim]`` data in the parameters' dtype (see :func:`check_data`)."""
        return check_data(x, self.dim, binary=self.binary, name=self._name(), dtype=self.dtype)

    def site_name(self, variable: int) -> str:
        """The name of the Pyro sample site of variable ``variable`` (``x_3``)."""
        return f"x_{variable}"

    def _sample(self, n: int, **chain: Any) -> Tensor:
        """``n`` draws, one variable at a time along the ordering, vectorized over draws."""
        x = torch.zeros(n, self.dim, dtype=self.dtype, device=self.order.device)
        order = chain.pop("order", self.order).tolist()
        values = walk(self._conditionals((n,), **chain), lambda t, d: d.sample())
        x[:, order] = torch.stack(values, -1)
        return x

    def inpaint(
        self,
        x: Tensor,
        observed: Tensor | None = None,
        *,
        particles: int = 256,
        seed: int | None = None,
    ) -> Tensor:
        r"""Fills in the unobserved variables of each row with a draw from the model's
        conditional distribution given the observed ones; observed values never change.

        **Exact** when, in a row, every observed variable comes before every unobserved one in
        the model's order (the top rows of an image in raster order): the chain is run with the
        observed values clamped, an exact draw from :math:`p(x_u \mid x_o)`.

        **Approximate** otherwise (sampling importance resampling): ``particles`` completions
        are drawn as above, each weighted by the model's probability of the observed values
        that come after unobserved ones, :math:`w = \prod_{t \in o} p(x_{o_t} \mid
        x_{<t})`, and one is drawn in proportion to the weights. Consistent as ``particles``
        grows (its bias is of order ``1 / particles``); a row whose weights are exact (no
        observed variable after an unobserved one) is drawn exactly.

        Arguments:
            x: ``[N, dim]`` rows; unobserved cells may hold anything, NaN included.
            observed: ``[N, dim]`` or ``[dim]`` booleans, True where the value is given; None:
                the cells of ``x`` that are not NaN.
            particles: completions weighed per row on the approximate road.
            seed: a private seed for the draws (None: torch's random stream as it is).

        Returns:
            ``[N, dim]``: ``x`` with its unobserved cells filled in.

        Example:
            >>> from ppdgm.models import FVSBN
            >>> model = FVSBN(4)
            >>> x = torch.tensor([[1.0, 0.0, float("nan"), float("nan")]])
            >>> filled = model.inpaint(x, seed=0)
            >>> filled[:, :2].tolist(), bool(((filled == 0) | (filled == 1)).all())
            ([[1.0, 0.0]], True)
        """
        check_int("particles", particles)
        x, observed = observed_cells(x, observed, self.dim, self.check)
        order = self.order.tolist()
        in_order = observed[:, order]
        # a row is exact when no observed step follows an unobserved one
        seen_gap = torch.cumsum((~in_order).int(), 1) > 0
        exact = not bool((in_order & seen_gap).any())
        k = 1 if exact else particles
        n = x.shape[0]
        rows = x.repeat_interleave(k, 0)
        given = observed.repeat_interleave(k, 0)
        log_w = torch.zeros(n * k, dtype=torch.float64, device=x.device)

        def draw(t: int, d: Distribution) -> Tensor:
            nonlocal log_w
            v = order[t]
            value = torch.where(given[:, v], rows[:, v], d.sample())
            if not exact:
                log_w = log_w + torch.where(given[:, v], d.log_prob(value), 0.0).double()
            return value

        with torch.no_grad(), seeded(seed):
            values = walk(self._conditionals((n * k,)), draw)
            filled = torch.zeros_like(rows)
            filled[:, order] = torch.stack(values, -1).to(rows.dtype)
            if not exact:
                pick = torch.multinomial(torch.softmax(log_w.view(n, k), 1), 1).squeeze(1)
                filled = filled.view(n, k, self.dim)[torch.arange(n), pick]
        return torch.where(observed, x, filled)

    def model(self, x: Tensor) -> None:
        """The model as a Pyro program: ``pyro.plate("data")`` over the rows of ``x`` and, in
        the ordering's order, one observed sample site per variable (``x_0``, ``x_1``, ...)
        whose distribution depends on the values the earlier sites returned."""
        x = self.check(x)
        order = self.order.tolist()
        with pyro.plate("data", x.shape[0]):
            walk(
                self._conditionals((x.shape[0],)),
                lambda t, d: pyro.sample(self.site_name(order[t]), d, obs=x[:, order[t]]),
            )

    def summary(self) -> str:
        """Parameter counts: this model against a full joint table (and FVSBN's ``n(n+1)/2``).

        Example:
            >>> from ppdgm.models import NADE
            >>> print(NADE(784, 500).summary())
            NADE(dim=784, hidden_dim=500): 784,784 parameters (2nd + n)
              FVSBN, one logistic regression per variable: n(n+1)/2 = 307,720
              full joint table over 784 binary variables: 2^n - 1 ≈ 1.0e+236
        """
        head = f"{self._name()}: {self.num_parameters:,} parameters"
        lines = [f"{head} ({self._formula})" if self._formula else head]
        if self.binary:
            n = self.dim
            if type(self).__name__ != "FVSBN":
                lines.append(
                    "  FVSBN, one logistic regression per variable: n(n+1)/2 = "
                    f"{n * (n + 1) // 2:,}"
                )
            size = joint_table_size(n)
            size = size if size.startswith("≈") else f"= {size}"
            lines.append(f"  full joint table over {n} binary variables: 2^n - 1 {size}")
        return "\n".join(lines)

    def _name(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({arguments})"

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.config.items())
