"""Rows of state names to and from state indices, with missing cells marked ``-1``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = [
    "MISSING",
    "as_frame",
    "check_columns",
    "check_unique_columns",
    "decode",
    "encode",
    "indicators",
    "query_variables",
    "unknown_states",
]

#: The index that marks a missing cell.
MISSING = -1


def as_frame(data: pd.DataFrame | Mapping[str, Any]) -> pd.DataFrame:
    """A DataFrame from a DataFrame, a mapping of columns, or a mapping of scalars (one row).

    Raises:
        ValueError: for columns named more than once (see :func:`check_unique_columns`), or
            a mapping whose columns cannot make a frame (of different lengths).
        TypeError: for anything else than a DataFrame or a mapping.
    """
    if isinstance(data, pd.DataFrame):
        frame = data
    elif isinstance(data, pd.Series):
        frame = data.to_frame().T
    elif isinstance(data, Mapping):
        if all(np.ndim(x) == 0 for x in data.values()):
            frame = pd.DataFrame({k: [v] for k, v in data.items()})
        else:
            try:
                frame = pd.DataFrame(dict(data))
            except ValueError as e:
                lengths = {k: (len(x) if np.ndim(x) else "scalar") for k, x in data.items()}
                raise ValueError(
                    f"the columns of the data do not make a table ({e}): their lengths are "
                    f"{lengths}; give every column the same number of rows"
                ) from None
    else:
        raise TypeError(f"data must be a pandas DataFrame or a mapping, not {type(data).__name__}")
    check_unique_columns(frame)
    return frame


def check_unique_columns(frame: pd.DataFrame) -> None:
    """Raises a ValueError naming the columns of ``frame`` that are named more than once (a
    cell of such a column is ambiguous).

    Example:
        >>> check_unique_columns(pd.DataFrame([[0, 0, 1]], columns=["a", "b", "a"]))
        Traceback (most recent call last):
        ...
        ValueError: columns named more than once: 'a' (2 times); give each variable one column
    """
    repeated = frame.columns[frame.columns.duplicated()]
    if len(repeated):
        counts = frame.columns.value_counts(dropna=False)
        shown = ", ".join(
            f"{c!r} ({int(counts[c]) if c in counts.index else 'several'} times)"
            for c in dict.fromkeys(repeated.tolist())
        )
        raise ValueError(f"columns named more than once: {shown}; give each variable one column")


def encode(
    bn: DiscreteBN, data: pd.DataFrame | Mapping[str, Any], *, compact: bool = False
) -> Tensor:
    """State indices of each cell: a tensor ``[N, len(bn.variables)]``, ``-1`` where missing.

    Columns follow ``bn.variables``; a variable without a column is missing in every row. A cell
    matches a state by equality, or by its text when the states are strings (so a CSV read
    without types still matches). The indices are int64, or with ``compact`` the smallest
    integer type that holds them (one byte a cell for up to 127 states).

    Raises:
        ValueError: for a column that is not a variable of the network, or a cell that is not
            one of its variable's states (the message names the variable and the values).
    """
    frame = as_frame(data)
    check_columns(bn, frame)
    largest = max((len(s) for s in bn.states.values()), default=1)
    dtype = np.int64 if not compact else np.int8 if largest < 128 else np.int32
    codes = np.full((len(frame), len(bn.variables)), MISSING, dtype=dtype)
    for j, v in enumerate(bn.variables):
        if v in frame.columns:
            lookup = bn.derived.get(("lookup", v), lambda v=v: _lookup(bn.states[v]))
            codes[:, j] = _encode_column(v, frame[v], bn.states[v], lookup)
    return torch.from_numpy(codes)


def query_variables(bn: DiscreteBN, variables: Sequence[str] | str) -> list[str]:
    """The query variables, a name or a sequence of names, in order without repeats.

    A single name that is a variable of the network is one query variable, whatever its
    type (a network may name its variables by numbers or tuples).

    Raises:
        ValueError: for none, or a name that is not a variable of the network.
    """
    if isinstance(variables, str) or _is_variable(bn, variables):
        query = [variables]
    else:
        try:
            query = list(dict.fromkeys(variables))
        except TypeError:  # one name that is not a variable (an int, None)
            query = [variables]
    if not query:
        raise ValueError("no query variables given")
    for v in query:
        bn._check_variable(v)
    return query


def check_columns(bn: DiscreteBN, frame: pd.DataFrame) -> None:
    """Raises a ValueError naming any column that is not a variable of the network, or that is
    named more than once."""
    check_unique_columns(frame)
    unknown = [c for c in frame.columns if not _is_variable(bn, c)]
    if unknown:
        raise ValueError(
            f"unknown variable(s) {unknown} in the data; the network has {list(bn.variables)}"
        )


def _is_variable(bn: DiscreteBN, column: Any) -> bool:
    try:
        return column in bn.states
    except TypeError:  # an unhashable column label
        return False


def unknown_states(bn: DiscreteBN, data: pd.DataFrame | Mapping[str, Any]) -> dict[str, list[Any]]:
    """The values of each column that are not states of its variable (matched as by
    :func:`encode`), in order of appearance; only the columns that have some.

    Example:
        >>> from ppdgm.bn import asia
        >>> unknown_states(asia(), {"smoke": ["yes", "maybe", None, "often", "maybe"]})
        {'smoke': ['maybe', 'often']}
    """
    frame = as_frame(data)
    out = {}
    for v in bn.variables:
        if v in frame.columns:
            column = frame[v]
            _, bad = _match(column, bn.states[v], _lookup(bn.states[v]))
            if bad.any():
                out[v] = _distinct(column[bad].tolist())
    return out


def _lookup(states: Sequence[Any]) -> dict[Any, int]:
    return {s: i for i, s in enumerate(states)}


def _encode_column(
    variable: str, column: pd.Series, states: Sequence[Any], lookup: dict[Any, int]
) -> np.ndarray:
    if isinstance(column.dtype, pd.CategoricalDtype) and list(column.cat.categories) == list(
        states
    ):
        return column.cat.codes.to_numpy()
    codes, bad = _match(column, states, lookup)
    if bad.any():
        shown = _distinct(column[bad].tolist())[:5]
        raise ValueError(
            f"unknown state(s) {shown} of variable {variable!r} in {int(bad.sum())} row(s); "
            f"its states are {list(states)}"
        )
    return codes


def _match(
    column: pd.Series, states: Sequence[Any], lookup: dict[Any, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The state index of each cell (``MISSING`` where missing) and where a value is unknown.

    A cell matches a state by equality, or by its text when the states are strings. The column
    is factorized (one hashing pass in C), so only its distinct values are looked up.
    """
    cells = column.to_numpy()
    try:
        first, distinct = pd.factorize(cells, use_na_sentinel=True)
    except TypeError:  # an unhashable cell (a list): every cell on its own, none of them a state
        first, distinct = np.arange(len(cells)), cells
    text = all(isinstance(s, str) for s in states)
    unknown = -2
    found = np.empty(len(distinct) + 1, dtype=np.int64)
    found[-1] = MISSING  # the sentinel -1 indexes the last entry
    for i, value in enumerate(distinct.tolist()):
        if pd.api.types.is_scalar(value) and pd.isna(value):  # only in the unhashable case
            found[i] = MISSING
            continue
        j = _find(lookup, value)
        if j is None and text:
            # numbers read from a CSV without types still match states named by their text
            # (a column of whole numbers with missing cells is read as floats: 1.0 is "1")
            j = lookup.get(str(value))
            if j is None and isinstance(value, float) and value.is_integer():
                j = lookup.get(str(int(value)))
        found[i] = unknown if j is None else j
    codes = found[first]
    bad = codes == unknown
    codes[bad] = MISSING
    return codes, bad


def _distinct(values: list[Any]) -> list[Any]:
    """The values in order of appearance without repeats (unhashable ones by equality)."""
    out: list[Any] = []
    for x in values:
        if x not in out:
            out.append(x)
    return out


def _find(lookup: dict[Any, int], value: Any) -> int | None:
    try:
        return lookup.get(value)
    except TypeError:  # an unhashable cell is no state
        return None


def decode(bn: DiscreteBN, codes: Mapping[str, Tensor]) -> pd.DataFrame:
    """A DataFrame of categorical state-name columns from a ``[n]`` index tensor per variable
    (``-1`` becomes NaN)."""
    columns = {}
    for v in bn.variables:
        index = codes[v].to(torch.int8 if len(bn.states[v]) < 127 else torch.int32).numpy()
        columns[v] = pd.Categorical.from_codes(index, categories=list(bn.states[v]))
    return pd.DataFrame(columns)


def indicators(codes: Tensor, cardinality: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """Evidence indicators ``lambda[s, n]``: one where cell n is missing or equals s, else zero.

    Rows are the last axis, the layout of the elimination engine.
    """
    states = torch.arange(cardinality, device=codes.device).unsqueeze(-1)
    return ((codes == states) | (codes < 0)).to(dtype)
