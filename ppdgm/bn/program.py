"""A discrete network written as a Pyro program, observed where rows have values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from torch import Tensor

from ppdgm.bn.evidence import encode

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["PartiallyObservedCategorical", "network_model"]


class PartiallyObservedCategorical(dist.Categorical):
    """A categorical distribution clamped to known values where ``observed`` is true.

    ``log_prob(x)`` is the categorical's where the cell is missing, and where it is observed
    the categorical's at the known value and ``-inf`` at any other: the density of a latent site
    times the evidence indicator. Enumerating it (``TraceEnum_ELBO``) therefore sums out exactly
    the missing cells, and sampling returns the known value where there is one. Without
    ``value`` it is a plain categorical (as ``TraceEnum_ELBO.compute_marginals`` builds it).

    Arguments:
        probs: event probabilities (or ``logits``), as for ``Categorical``.
        logits: event log-probabilities, unnormalized.
        value: the known state index of each cell (anything where missing).
        observed: which cells are known.
    """

    def __init__(
        self,
        probs: Tensor | None = None,
        logits: Tensor | None = None,
        value: Tensor | None = None,
        observed: Tensor | None = None,
        validate_args: bool | None = None,
    ) -> None:
        params = probs if probs is not None else logits
        assert params is not None
        shape = params.shape[:-1]
        if value is not None:
            shape = torch.broadcast_shapes(shape, value.shape)
            params = params.expand((*shape, params.shape[-1]))
        if probs is not None:
            super().__init__(probs=params, validate_args=validate_args)
        else:
            super().__init__(logits=params, validate_args=validate_args)
        if value is None or observed is None:
            value = torch.zeros((), dtype=torch.long)
            observed = torch.zeros((), dtype=torch.bool)
        self.value = value.expand(self.batch_shape)
        self.observed = observed.expand(self.batch_shape)

    @property
    def clamped(self) -> Tensor:
        """The cells clamped to their known value (``observed``), as :mod:`ppdgm.infer`
        recognizes a latent site that is observed in part."""
        return self.observed

    def expand(self, batch_shape: Any, _instance: Any = None) -> PartiallyObservedCategorical:
        batch_shape = torch.Size(batch_shape)
        return PartiallyObservedCategorical(
            logits=self.logits.expand((*batch_shape, self.logits.shape[-1])),
            value=self.value.expand(batch_shape),
            observed=self.observed.expand(batch_shape),
        )

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        draw = super().sample(torch.Size(sample_shape))
        return torch.where(self.observed, self.value, draw)

    def log_prob(self, value: Tensor) -> Tensor:
        clash = self.observed & (value != self.value)
        return super().log_prob(value).masked_fill(clash, float("-inf"))


def network_model(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any] | None = None,
    *,
    num_rows: int = 1,
) -> dict[str, Tensor]:
    """The Pyro program of a network (see :meth:`DiscreteBN.model`)."""
    codes = None if data is None else encode(bn, data)
    rows = num_rows if codes is None else codes.shape[0]
    values: dict[str, Tensor] = {}
    with pyro.plate(bn.plate, rows):
        for j, v in enumerate(bn.variables):
            table = bn.derived.get(("log_cpt", v), lambda v=v: bn.tables[v].log())
            parents = bn.parents(v)
            # logits, not probs: torch clamps zero probabilities to machine epsilon, and an
            # impossible row must have log-probability -inf, as bn.log_prob says
            logits = Vindex(table)[tuple(values[u] for u in parents)] if parents else table
            site = dist.Categorical(logits=logits)
            column = None if codes is None else codes[:, j]
            observed = None if column is None else column >= 0
            if observed is not None and bool(observed.all()):
                values[v] = pyro.sample(v, site, obs=column)
            elif observed is not None and bool(observed.any()):
                site = PartiallyObservedCategorical(logits=logits, value=column, observed=observed)
                values[v] = pyro.sample(v, site, infer={"enumerate": "parallel"})
            else:
                values[v] = pyro.sample(v, site, infer={"enumerate": "parallel"})
    return values
