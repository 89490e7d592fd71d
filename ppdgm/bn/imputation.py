r"""Filling in missing cells: the most probable state of each cell, or draws from
:math:`p(\text{missing} \mid \text{observed})`, batched over rows.

Both rest on the exact posterior marginals of :func:`ppdgm.bn.elimination.posterior`: one call
per block of rows for every predicted variable at once, or (for draws) one call per block and
missing variable, each conditioning on the observed cells and on the cells drawn before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppdgm.bn.elimination import ZeroProbabilityEvidence, log_evidence, posterior
from ppdgm.bn.evidence import MISSING, as_frame, check_columns, encode, query_variables

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = [
    "ROWS_PER_BLOCK",
    "TIE_TOLERANCE",
    "draw_states",
    "impute",
    "most_probable_state",
    "predict",
]

#: Rows handled at once (and per step of the progress bar); the draws of ``impute(sample=True)``
#: are made block by block, so they depend on it.
ROWS_PER_BLOCK = 10_000
#: Probabilities this close to a row's largest one count as tied with it (the first state in the
#: network's order wins a tie), so that ties exact in arithmetic stay ties in floating point.
TIE_TOLERANCE = 1e-12


def most_probable_state(probs: Tensor) -> Tensor:
    """The index of the most probable state of each row of ``probs`` ``[N, card]``; among states
    within :data:`TIE_TOLERANCE` of the largest probability, the first.

    Example:
        >>> most_probable_state(torch.tensor([[0.2, 0.8], [0.5, 0.5], [0.1, 0.9 - 1e-16]]))
        tensor([1, 0, 1])
    """
    top = probs.max(-1, keepdim=True).values
    return (probs >= top - TIE_TOLERANCE).to(torch.uint8).argmax(-1)


def draw_states(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One state index per row of ``probs`` ``[N, card]``, drawn by inverting the row's CDF with
    one uniform number per row (a state of probability zero is never drawn).

    Example:
        >>> draw_states(torch.tensor([[0.0, 1.0], [1.0, 0.0]], dtype=torch.float64))
        tensor([1, 0])
    """
    cdf = probs.cumsum(-1)
    # divided by the last entry, the CDF ends at exactly one and u < 1 never falls past it
    cdf = cdf / cdf[:, -1:]
    u = torch.rand(probs.shape[0], 1, dtype=cdf.dtype, generator=generator)
    return (cdf[:, :-1] <= u).sum(-1)


def predict(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any],
    variables: Sequence[str] | str | None = None,
    *,
    progress: bool = False,
) -> pd.DataFrame:
    """The most probable state of each requested variable in each row (see
    :meth:`DiscreteBN.predict`)."""
    frame = as_frame(data)
    check_columns(bn, frame)
    codes = encode(bn, frame)  # also rejects unknown states
    if variables is None:
        missing = (codes == MISSING).any(0).tolist()
        query = [v for v, m in zip(bn.variables, missing, strict=True) if m]
    else:
        query = query_variables(bn, variables) if not _empty(variables) else []
    present = [v for v in bn.variables if v in frame.columns]
    given = codes[:, [bn.variables.index(v) for v in present]]
    chosen = codes[:, [bn.variables.index(v) for v in query]]
    for start, stop in _blocks(len(frame), progress, "predict"):
        block = chosen[start:stop]
        rows = (block == MISSING).any(1)
        if not query or not bool(rows.any()):
            continue
        positions = start + rows.nonzero().flatten()
        evidence = _frame(bn, present, given[positions], None)
        post = _posterior(bn, evidence, query, positions)
        best = torch.stack([most_probable_state(post[v]) for v in query], 1)
        block[rows] = torch.where(block[rows] == MISSING, best, block[rows])
    return _frame(bn, query, chosen, frame.index)


def impute(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any],
    *,
    sample: bool = False,
    seed: int | None = None,
    progress: bool = False,
) -> pd.DataFrame:
    """A copy of the rows with every missing cell filled (see :meth:`DiscreteBN.impute`)."""
    frame = as_frame(data)
    check_columns(bn, frame)
    codes = encode(bn, frame)
    present = [v for v in bn.variables if v in frame.columns]
    columns = [bn.variables.index(v) for v in present]
    filled = codes[:, columns].clone()
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    for start, stop in _blocks(len(frame), progress, "impute"):
        block = filled[start:stop]
        holes = block == MISSING
        if not bool(holes.any()):
            continue
        if not sample:
            rows = holes.any(1)
            query = [v for v, h in zip(present, holes.any(0).tolist(), strict=True) if h]
            positions = start + rows.nonzero().flatten()
            post = _posterior(bn, _frame(bn, present, block[rows], None), query, positions)
            best = torch.stack(
                [
                    most_probable_state(post[v]) if v in post else block[rows, j]
                    for j, v in enumerate(present)
                ],
                1,
            )
            block[rows] = torch.where(holes[rows], best, block[rows])
            continue
        # a draw from p(missing | observed): each missing variable in turn, given the observed
        # cells and the cells drawn so far
        for j, v in enumerate(present):
            rows = holes[:, j]
            if not bool(rows.any()):
                continue
            positions = start + rows.nonzero().flatten()
            # a variable without a column is missing everywhere, so summed out
            evidence = _frame(bn, present, block[rows], None)
            post = _posterior(bn, evidence, [v], positions, frame)
            block[rows, j] = draw_states(post[v], generator)
    out = frame.copy()
    for j, v in enumerate(present):
        out[v] = _categorical(bn, v, filled[:, j])
    return out


def _empty(variables: Sequence[str] | str) -> bool:
    """Whether ``variables`` is an empty sequence of names (predict then predicts nothing)."""
    return isinstance(variables, (list, tuple)) and not variables


def _blocks(n: int, progress: bool, label: str) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` of each block of rows, with a progress bar over several blocks."""
    several = n > ROWS_PER_BLOCK
    with tqdm(
        total=n, desc=label, unit="row", unit_scale=True, disable=not (progress and several)
    ) as bar:
        for start in range(0, n, ROWS_PER_BLOCK):
            stop = min(start + ROWS_PER_BLOCK, n)
            yield start, stop
            bar.update(stop - start)


def _posterior(
    bn: DiscreteBN,
    evidence: pd.DataFrame,
    query: list[str],
    positions: Tensor,
    original: pd.DataFrame | None = None,
) -> dict[str, Tensor]:
    """The posterior of ``query`` given the ``evidence`` rows, which are the rows at
    ``positions`` of the caller's data; a row of probability zero is named by its position
    there (found among ``original``'s rows when given: the evidence may hold drawn cells)."""
    try:
        return posterior(bn, evidence, query)
    except ZeroProbabilityEvidence:
        rows = original.iloc[positions.numpy()] if original is not None else evidence
        impossible = positions[~torch.isfinite(log_evidence(bn, rows))].tolist()
        if not impossible:
            raise
        shown = ", ".join(map(str, impossible[:10])) + (", ..." if len(impossible) > 10 else "")
        raise ZeroProbabilityEvidence(
            f"the evidence of row(s) {shown} (counting from 0) has probability zero under the "
            f"network, so no state of its missing cells can be chosen there"
        ) from None


def _categorical(bn: DiscreteBN, variable: str, codes: Tensor) -> pd.Categorical:
    """State names from state indices (``-1``: missing), over the network's states."""
    dtype = bn.derived.get(
        ("categorical", variable), lambda: pd.CategoricalDtype(list(bn.states[variable]))
    )
    return pd.Categorical.from_codes(codes.numpy(), dtype=dtype, validate=False)


def _frame(
    bn: DiscreteBN, variables: list[str], codes: Tensor, index: pd.Index | None
) -> pd.DataFrame:
    """Categorical columns of state names from a ``[N, len(variables)]`` index tensor."""
    columns = {v: _categorical(bn, v, codes[:, j]) for j, v in enumerate(variables)}
    if index is None:
        index = pd.RangeIndex(codes.shape[0])
    return pd.DataFrame(columns, index=index) if columns else pd.DataFrame(index=index)
