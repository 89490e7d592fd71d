"""Ancestral sampling of a discrete network, vectorized over rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd
import torch
from torch import Tensor

from ppdgm.bn.evidence import decode

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["ancestral_sample", "family_index", "sample_codes"]

#: Rows drawn per batch (bounds memory for very large ``n``).
CHUNK_ROWS = 2**18


def family_index(bn: DiscreteBN, codes: Tensor, variable: str, columns: dict[str, int]) -> Tensor:
    """The row-major index of each row's parent configuration in ``variable``'s flattened CPT."""
    index = torch.zeros(codes.shape[0], dtype=torch.long)
    for u in bn.parents(variable):
        index = index * len(bn.states[u]) + codes[:, columns[u]]
    return index


def sample_codes(bn: DiscreteBN, n: int, generator: torch.Generator | None = None) -> Tensor:
    """``n`` rows of state indices ``[n, len(bn.variables)]`` drawn in topological order.

    Each variable is drawn for all rows at once by inverting its conditional CDF, selected by
    the row's parent configuration.
    """
    columns = {v: j for j, v in enumerate(bn.variables)}
    codes = torch.empty(n, len(bn.variables), dtype=torch.long)
    uniform = torch.rand(n, len(bn.variables), dtype=torch.float64, generator=generator)
    for v in bn.variables:
        j = columns[v]
        card = len(bn.states[v])
        cdf = bn._cached(("cdf", v), lambda v=v, card=card: _cdf(bn._cpts[v], card))
        rows = cdf[family_index(bn, codes, v, columns)]
        codes[:, j] = (uniform[:, j : j + 1] >= rows).sum(-1)
    return codes


def _cdf(table: Tensor, card: int) -> Tensor:
    cdf = table.reshape(-1, card).cumsum(-1)
    # divide by the last entry so that it is exactly one and u < 1 never falls past it
    return cdf / cdf[:, -1:]


def ancestral_sample(bn: DiscreteBN, n: int, *, seed: int | None = None) -> pd.DataFrame:
    """``n`` rows as a DataFrame of categorical columns (see :meth:`DiscreteBN.sample`)."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise ValueError(f"the number of rows must be a non-negative integer, not {n!r}")
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(seed)
    parts = [
        sample_codes(bn, min(CHUNK_ROWS, n - start), generator) for start in range(0, n, CHUNK_ROWS)
    ]
    codes = torch.cat(parts) if parts else torch.empty(0, len(bn.variables), dtype=torch.long)
    return decode(bn, codes)
