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
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import pyro
import torch
from pyro.distributions import Distribution
from pyro.nn import PyroModule
from torch import Tensor

from ppdgm._checks import check_int

__all__ = [
    "Autoregressive",
    "Chain",
    "check_data",
    "joint_table_size",
    "seeded",
    "values_checked",
    "walk",
]

#: A chain: yields the distribution of step ``t``, receives its value, for ``t = 0..D-1``.
Chain = Generator[Distribution, Tensor, None]


def check_data(x: Any, dim: int, *, binary: bool, name: str, dtype: torch.dtype) -> Tensor:
    """``x`` as a ``[N, dim]`` tensor of ``dtype``, checked.

    Raises:
        ValueError: naming the fault: not a tensor, not ``[N, dim]``, a NaN or infinite value, or
            (``binary``) a value other than 0 and 1.

    Example:
        >>> check_data(torch.tensor([[0, 1]]), 2, binary=True, name="m", dtype=torch.float64)
        tensor([[0., 1.]], dtype=torch.float64)
        >>> check_data(torch.tensor([[0.0, 0.5]]), 2, binary=True, name="m", dtype=torch.float64)
        Traceback (most recent call last):
        ...
        ValueError: m models binary data, but x[0, 1] = 0.5; binarize first (e.g. x > 0.5)
    """
    if not isinstance(x, Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"x must be a tensor, not {type(x).__name__}") from None
    if x.dim() != 2 or x.shape[1] != dim:
        raise ValueError(f"{name} expects x of shape [N, {dim}], got {tuple(x.shape)}")
    x = x.to(dtype)
    if _VALUES_CHECKED.get():
        return x
    # x (1 - x) is 0 exactly at 0 and 1, and NaN or nonzero anywhere else: one cheap pass
    if bool((x * (1 - x) if binary else x - x).any()):
        bad = ((x != 0) & (x != 1)) if binary else ~torch.isfinite(x)
        row, col = (int(i) for i in bad.nonzero()[0])  # the first offending value
        value = float(x[row, col])
        if math.isnan(value):
            raise ValueError(f"x[{row}, {col}] is NaN; {name} needs every value observed")
        if binary:
            raise ValueError(
                f"{name} models binary data, but x[{row}, {col}] = {value:g}; "
                "binarize first (e.g. x > 0.5)"
            )
        raise ValueError(f"x[{row}, {col}] = {value:g}; {name} needs finite values")
    return x


_VALUES_CHECKED: ContextVar[bool] = ContextVar("ppdgm_values_checked", default=False)


@contextmanager
def values_checked() -> Iterator[None]:
    """Inside the block :func:`check_data` checks types and shapes but does not scan the values
    again: for a training loop whose data were checked in full before it began (one scan of
    the data set instead of one per minibatch and step)."""
    token = _VALUES_CHECKED.set(True)
    try:
        yield
    finally:
        _VALUES_CHECKED.reset(token)


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


@contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Runs the block on torch's global random stream seeded with ``seed`` and restores the
    stream afterwards; ``seed=None`` leaves the stream alone."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


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


class Autoregressive(PyroModule):
    """Base of the autoregressive models: ``sample`` and ``model`` from ``_conditionals``.

    Subclasses set :attr:`dim`, :attr:`binary` and the buffer ``order`` (a permutation, the
    variable at each step), store their constructor's arguments in ``_config``, and define
    ``log_prob`` and ``_conditionals``.
    """

    binary: bool = True
    order: Tensor
    _config: dict[str, Any]
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
    @property
    def config(self) -> dict[str, Any]:
        """The constructor's arguments: ``type(m)(**m.config)`` builds the same architecture."""
        return dict(self._config)

    @property
    def dtype(self) -> torch.dtype:
        """The floating-point type of the parameters."""
        return next(self.parameters()).dtype

    @property
    def num_parameters(self) -> int:
        """Free parameters: those that ``log_prob`` depends on (weights that a mask zeroes or
        that feed no conditional are not counted)."""
        return sum(p.numel() for p in self.parameters())

    def check(self, x: Any) -> Tensor:
        """``x`` as ``[N, dim]`` data in the parameters' dtype (see :func:`check_data`)."""
        return check_data(x, self.dim, binary=self.binary, name=self._name(), dtype=self.dtype)

    def training_loss(self, x: Tensor, step: int) -> Tensor:
        """The maximum-likelihood objective of a minibatch: ``-mean log p(x)``."""
        return -self.log_prob(x).mean()

    def site_name(self, variable: int) -> str:
        """The name of the Pyro sample site of variable ``variable`` (``x_3``)."""
        return f"x_{variable}"

    def sample(self, n: int, seed: int | None = None) -> Tensor:
        """``n`` independent draws, ``[n, dim]``, one variable at a time along the ordering and
        vectorized over the draws.

        Arguments:
            n: the number of draws.
            seed: seeds torch's random stream for this call only; None uses it as it is.
        """
        check_int("n", n, least=0)
        with torch.no_grad(), seeded(seed):
            return self._sample(n)

    def _sample(self, n: int, **chain: Any) -> Tensor:
        x = torch.zeros(n, self.dim, dtype=self.dtype, device=self.order.device)
        order = chain.pop("order", self.order).tolist()
        values = walk(self._conditionals((n,), **chain), lambda t, d: d.sample())
        x[:, order] = torch.stack(values, -1)
        return x

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
        arguments = ", ".join(f"{k}={v!r}" for k, v in self._config.items())
        return f"{type(self).__name__}({arguments})"

    def extra_repr(self) -> str:
        return f"{', '.join(f'{k}={v!r}' for k, v in self._config.items())}"
