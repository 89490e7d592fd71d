"""A discrete network written as a Pyro program, observed where rows have values."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import pandas as pd
import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from pyro.ops.indexing import Vindex
from torch import Tensor

from ppdgm.bn.evidence import encode

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["PartiallyObservedCategorical", "network_model"]


class PartiallyObservedCategorical(dist.TorchDistribution):
    """A categorical distribution clamped to known values where ``observed`` is true.

    ``log_prob(x)`` is the categorical's where the cell is missing, and where it is observed
    the categorical's at the known value and ``-inf`` at any other: the density of a latent site
    times the evidence indicator. Enumerating it (``TraceEnum_ELBO``) therefore sums out exactly
    the missing cells, and sampling returns the known value where there is one.

    Arguments:
        base: the categorical distribution of the site.
        value: the known state index of each cell (anything where missing).
        observed: which cells are known.
    """

    arg_constraints: ClassVar[dict[str, constraints.Constraint]] = {}
    has_enumerate_support = True

    def __init__(
        self,
        base: dist.Categorical,
        value: Tensor,
        observed: Tensor,
        validate_args: bool | None = None,
    ) -> None:
        batch_shape = torch.broadcast_shapes(base.batch_shape, value.shape, observed.shape)
        self.base = base.expand(batch_shape)
        self.value = value.expand(batch_shape)
        self.observed = observed.expand(batch_shape)
        super().__init__(batch_shape, torch.Size(), validate_args=False)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> constraints.Constraint:
        return self.base.support

    def expand(self, batch_shape: Any, _instance: Any = None) -> PartiallyObservedCategorical:
        batch_shape = torch.Size(batch_shape)
        return PartiallyObservedCategorical(
            self.base.expand(batch_shape),
            self.value.expand(batch_shape),
            self.observed.expand(batch_shape),
        )

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        draw = self.base.sample(torch.Size(sample_shape))
        return torch.where(self.observed, self.value, draw)

    def log_prob(self, value: Tensor) -> Tensor:
        clash = self.observed & (value != self.value)
        return self.base.log_prob(value).masked_fill(clash, float("-inf"))

    def enumerate_support(self, expand: bool = True) -> Tensor:
        return self.base.enumerate_support(expand=expand)


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
    with pyro.plate("data", rows):
        for j, v in enumerate(bn.variables):
            table = bn._cpts[v]
            parents = bn.parents(v)
            probs = Vindex(table)[tuple(values[u] for u in parents)] if parents else table
            site = dist.Categorical(probs=probs)
            column = None if codes is None else codes[:, j]
            observed = None if column is None else column >= 0
            if observed is not None and bool(observed.all()):
                values[v] = pyro.sample(v, site, obs=column)
            elif observed is not None and bool(observed.any()):
                site = PartiallyObservedCategorical(site, column, observed)
                values[v] = pyro.sample(v, site, infer={"enumerate": "parallel"})
            else:
                values[v] = pyro.sample(v, site, infer={"enumerate": "parallel"})
    return values
