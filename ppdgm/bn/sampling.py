"""Ancestral sampling of a discrete network, vectorized over rows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ppdgm.bn.evidence import decode

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["ancestral_sample", "blank_cells", "family_index", "sample_codes"]

#: Rows drawn per batch (bounds memory for very large ``n``).
CHUNK_ROWS = 2**18


def family_index(
    bn: DiscreteBN, codes: Mapping[str, Tensor] | Tensor, variable: str, columns: dict[str, int]
) -> Tensor:
    """The row-major index of each row's parent configuration in ``variable``'s flattened CPT.

    ``codes`` is either a ``[n, len(bn.variables)]`` tensor (``columns`` names its columns) or a
    mapping from variable to a ``[n]`` tensor of state indices.
    """
    index = None
    for u in bn.parents(variable):
        column = codes[u] if isinstance(codes, Mapping) else codes[:, columns[u]]
        index = column if index is None else index * len(bn.states[u]) + column
    if index is None:
        n = next(iter(codes.values())).shape[0] if isinstance(codes, Mapping) else codes.shape[0]
        return torch.zeros(n, dtype=torch.long)
    return index


def sample_codes(
    bn: DiscreteBN, n: int, generator: torch.Generator | None = None
) -> dict[str, Tensor]:
    """``n`` rows of state indices, a ``[n]`` tensor per variable, drawn in topological order.

    Each variable is drawn for all rows at once by inverting its conditional CDF: with
    ``u ~ U[0, 1)``, the state is the number of CDF entries of the row's parent configuration
    at or below ``u``.
    """
    columns = {v: j for j, v in enumerate(bn.variables)}
    drawn: dict[str, Tensor] = {}
    for v in bn.variables:
        card = len(bn.states[v])
        cdf = bn.derived.get(("cdf", v), lambda v=v, card=card: _cdf(bn.tables[v], card))
        u = torch.rand(n, dtype=torch.float64, generator=generator)
        if card == 1:
            drawn[v] = torch.zeros(n, dtype=torch.long)
            continue
        offset = family_index(bn, drawn, v, columns) * card if bn.parents(v) else None
        state = torch.zeros(n, dtype=torch.long)
        for k in range(card - 1):
            bound = cdf[k].expand(n) if offset is None else cdf.take(offset + k)
            state += u >= bound
        drawn[v] = state
    return drawn


def _cdf(table: Tensor, card: int) -> Tensor:
    cdf = table.reshape(-1, card).cumsum(-1)
    # divide by the last entry so that it is exactly one and u < 1 never falls past it
    return (cdf / cdf[:, -1:]).flatten()


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
    if not parts:
        parts = [{v: torch.zeros(0, dtype=torch.long) for v in bn.variables}]
    return decode(bn, {v: torch.cat([p[v] for p in parts]) for v in bn.variables})


def blank_cells(frame: pd.DataFrame, fraction: float, seed: int | None = None) -> pd.DataFrame:
    """A copy of ``frame`` with each cell independently made missing with probability ``fraction``
    (missing completely at random).

    Raises:
        ValueError: for a fraction outside [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the fraction of missing cells must be in [0, 1], not {fraction}")
    mask = np.random.default_rng(seed).random(frame.shape) < fraction
    return frame.astype(object).mask(mask)
