"""Property-based fuzzing of ppdgm.bn against brute-force enumeration.

Every generated case ends either as an answer equal to the enumeration of every joint state
(small networks: 2-5 variables of 2-3 states, done in log space so that tiny and denormal
entries are exact), or as a *named* error: a ValueError (or a subclass of it) whose message
names the offending variable, state, column or row. Never a wrong number, a NaN, or another
exception type. Hypothesis runs derandomized and without its example database, so the suite is
seeded and offline; the ``slow`` test runs the same properties with over 10,000 cases.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppdgm.bn import DiscreteBN
from ppdgm.bn.bif import KEYWORDS, BIFError, format_bif, parse_bif, read_bif, write_bif
from ppdgm.bn.elimination import ZeroProbabilityEvidence

# ------------------------------------------------------------------------------ settings


def _settings(n: int) -> settings:
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=n,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


#: Cases of each property in the default suite, and in the slow one.
FAST = {"inference": 60, "frames": 60, "roundtrip": 40, "mutated": 60, "truncated": 6}
SLOW = {"inference": 3000, "frames": 2500, "roundtrip": 1500, "mutated": 3000, "truncated": 60}

# ------------------------------------------------------------------------------ strategies

AWKWARD = [
    "variable",
    "probability",
    "table",
    "default",
    "network",
    "a b",
    "a,b",
    'say "hi"',
    "it's",
    "(x)",
    "{",
    ";",
    "|",
    "//c",
    "/*",
    "ü",
    "日本",
    " ",
    "\t",
    "nan",
    "None",
    "1",
    "1.0",
]
#: Names that a DataFrame reads as a missing cell, or empty text: refused as states.
BAD = [None, float("nan"), np.nan, pd.NA, ""]

plain_names = st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True)
awkward_names = st.one_of(
    st.sampled_from(AWKWARD),
    st.text(min_size=1, max_size=6),
    st.integers(-3, 5),
)
state_names = st.one_of(plain_names, plain_names, plain_names, awkward_names)
variable_names = st.one_of(plain_names, plain_names, plain_names, awkward_names)

#: Entries of CPT rows before normalization: zeros, tiny and denormal values, ordinary ones.
entries = st.one_of(
    st.sampled_from([0.0, 5e-324, 1e-320, 1e-300, 1e-250, 1e-200, 1e-30]),
    st.floats(0.01, 1.0),
)


@dataclass
class Spec:
    """A generated network before construction."""

    names: list[Any]
    parents: dict[int, list[int]]
    cards: list[int]
    states: list[list[Any]]
    tables: list[np.ndarray]

    def build(self) -> DiscreteBN:
        dag = nx.DiGraph()
        dag.add_nodes_from(self.names)
        for j, ps in self.parents.items():
            dag.add_edges_from((self.names[i], self.names[j]) for i in ps)
        return DiscreteBN(
            dag,
            {v: t for v, t in zip(self.names, self.tables, strict=True)},
            {v: tuple(s) for v, s in zip(self.names, self.states, strict=True)},
        )


def _row(draw: Any, card: int) -> list[float]:
    row = draw(st.lists(entries, min_size=card, max_size=card))
    total = math.fsum(row)
    if total == 0:
        row[draw(st.integers(0, card - 1))] = 1.0
        total = 1.0
    out = [x / total for x in row]
    return out


@st.composite
def specs(draw: Any, *, awkward: bool = True, tiny: bool = True) -> Spec:
    n = draw(st.integers(2, 5))
    pool = variable_names if awkward else plain_names
    names = draw(st.lists(pool, min_size=n, max_size=n, unique_by=_key))
    parents = {
        j: sorted(draw(st.sets(st.integers(0, j - 1), max_size=min(j, 2)))) for j in range(n) if j
    }
    parents[0] = []
    cards = [draw(st.integers(2, 3)) for _ in range(n)]
    snames = state_names if awkward else plain_names
    states = [draw(st.lists(snames, min_size=c, max_size=c, unique_by=_key)) for c in cards]
    if awkward and draw(st.integers(0, 4)) == 0:
        # one name that a DataFrame reads as missing, or a repeat: the network must refuse it
        j = draw(st.integers(0, n - 1))
        what = draw(st.sampled_from(["variable", "state", "repeat"]))
        if what == "variable":
            names[j] = draw(st.sampled_from([float("nan"), np.nan, ""]))
        elif what == "state":
            states[j][draw(st.integers(0, cards[j] - 1))] = draw(st.sampled_from(BAD))
        else:
            states[j][-1] = draw(st.sampled_from([states[j][0], 1.0, True]))
            states[j][0] = 1 if states[j][-1] != states[j][0] else states[j][0]
    tables = []
    for j in range(n):
        shape = (*(cards[i] for i in parents[j]), cards[j])
        rows = [_row(draw, cards[j]) for _ in range(math.prod(shape[:-1]))]
        if not tiny:
            rows = [[x if x >= 1e-6 or x == 0 else 0.0 for x in r] for r in rows]
            rows = [r if sum(r) > 0 else [1.0] + [0.0] * (len(r) - 1) for r in rows]
            rows = [[x / sum(r) for x in r] for r in rows]
        tables.append(np.array(rows, dtype=np.float64).reshape(shape))
    return Spec(names, parents, cards, states, tables)


def _key(x: Any) -> Any:
    # unique by text and type, so that lists may still hold equal values of different types
    # (1 and 1.0 and True: the network must refuse them as repeats)
    return (type(x).__name__, repr(x))


def _is_bad(name: Any) -> bool:
    if isinstance(name, str):
        return name == ""
    return name is None or name is pd.NA or (isinstance(name, float) and math.isnan(name))


def _expected_refusal(spec: Spec) -> str | None:
    """A pattern the construction error must mention, or None if the network is valid."""
    for v in spec.names:
        if _is_bad(v):
            return "variable"
    for ss in spec.states:
        for s in ss:
            if _is_bad(s):
                return "state"
        try:
            if len(set(ss)) != len(ss):
                return "repeated"
        except TypeError:  # pragma: no cover - the strategies draw hashable names
            return "hashable"
    return None


def _build(spec: Spec) -> DiscreteBN | None:
    """The network, or None after checking that construction refused it with a named error."""
    expected = _expected_refusal(spec)
    if expected is None:
        return spec.build()
    with pytest.raises(ValueError) as info:
        spec.build()
    message = str(info.value)
    assert expected in message, message
    return None


# ------------------------------------------------------------------------------ brute force


def _log_joint(bn: DiscreteBN) -> np.ndarray:
    """``log p(x)`` of every joint state (axes in ``bn.variables`` order), summed in log space."""
    variables = bn.variables
    position = {v: j for j, v in enumerate(variables)}
    with np.errstate(divide="ignore"):
        logs = {v: np.log(bn.cpt(v).numpy()) for v in variables}
    cards = [len(bn.states[v]) for v in variables]
    out = np.empty(cards)
    for state in itertools.product(*(range(c) for c in cards)):
        total = 0.0
        for v in variables:
            total += logs[v][tuple(state[position[u]] for u in (*bn.parents(v), v))]
        out[state] = total
    return out


def _logsumexp(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64).ravel()
    top = x.max(initial=-np.inf)
    if top == -np.inf:
        return -math.inf
    return float(top + math.log(np.exp(x - top).sum()))


def _brute(bn: DiscreteBN, log_joint: np.ndarray, codes: list[int | None], query: str):
    """``(log p(evidence), p(query | evidence) or None)`` for one row of state indices."""
    index = tuple(slice(None) if c is None else c for c in codes)
    sub = log_joint[index]
    log_z = _logsumexp(sub)
    if log_z == -math.inf:
        return log_z, None
    q = bn.variables.index(query)
    if codes[q] is not None:
        post = np.zeros(len(bn.states[query]))
        post[codes[q]] = 1.0
        return log_z, post
    kept = [j for j, c in enumerate(codes) if c is None]
    axis = kept.index(q)
    moved = np.moveaxis(sub, axis, 0).reshape(sub.shape[axis], -1)
    post = np.array([math.exp(_logsumexp(r) - log_z) for r in moved])
    return log_z, post


# ------------------------------------------------------------------------------ inference


@st.composite
def rows_for(draw: Any, bn: DiscreteBN, max_rows: int = 6) -> list[list[int | None]]:
    n = draw(st.integers(1, max_rows))
    cards = [len(bn.states[v]) for v in bn.variables]
    cell = lambda c: st.one_of(st.none(), st.integers(0, c - 1))  # noqa: E731
    return [draw(st.tuples(*(cell(c) for c in cards))) for _ in range(n)]


def _frame(bn: DiscreteBN, rows: list, missing: Any = None) -> pd.DataFrame:
    data = {
        v: [missing if r[j] is None else bn.states[v][r[j]] for r in rows]
        for j, v in enumerate(bn.variables)
    }
    return pd.DataFrame(data, columns=list(bn.variables), dtype=object)


def _check_inference(spec: Spec, draw: Any) -> None:
    bn = _build(spec)
    if bn is None:
        return
    rows = draw(rows_for(bn))
    missing = draw(st.sampled_from([None, np.nan, pd.NA]))
    frame = _frame(bn, rows, missing)
    query = draw(st.sampled_from(bn.variables))
    log_joint = _log_joint(bn)
    expected = [_brute(bn, log_joint, list(r), query) for r in rows]

    got = bn.log_prob(frame).numpy()
    assert got.shape == (len(rows),)
    for g, (e, _) in zip(got, expected, strict=True):
        assert not math.isnan(g)
        if e == -math.inf:
            assert g == -math.inf
        else:
            assert math.isclose(g, e, rel_tol=1e-9, abs_tol=1e-9), (g, e)

    zero = [i for i, (e, _) in enumerate(expected) if e == -math.inf]
    if zero:
        with pytest.raises(ZeroProbabilityEvidence) as info:
            bn.posterior(frame, query)
        assert f"row(s) {zero[0]}" in str(info.value)
    keep = [i for i in range(len(rows)) if i not in zero]
    if not keep:
        return
    post = bn.posterior(frame.iloc[keep], query)[query].numpy()
    for g, i in zip(post, keep, strict=True):
        assert not np.isnan(g).any()
        np.testing.assert_allclose(g, expected[i][1], rtol=1e-9, atol=1e-12)
    # several query variables take the road of one backward pass
    both = bn.posterior(frame.iloc[keep], list(bn.variables))
    np.testing.assert_allclose(both[query].numpy(), post, rtol=1e-9, atol=1e-12)


# ------------------------------------------------------------------------------ frames


def _frame_cases(draw: Any, bn: DiscreteBN) -> tuple[pd.DataFrame, str | None]:
    """A random frame and what a refusal must name (None: a valid frame)."""
    n = draw(st.integers(0, 4))
    variables = list(bn.variables)
    columns = draw(st.lists(st.sampled_from(variables), max_size=len(variables), unique=True))
    if draw(st.integers(0, 3)) == 0:  # a column named twice, or not a variable
        extra = draw(st.sampled_from([*variables, "zz_unknown", 7, float("nan")]))
        columns.insert(draw(st.integers(0, len(columns))), extra)
    problem = None
    dup = [c for c in dict.fromkeys(columns) if columns.count(c) > 1]
    unknown = [c for c in columns if c not in variables]  # NaN is no variable either
    cells = []
    for c in columns:
        col = []
        for _ in range(n):
            if c in variables:
                choice = draw(st.integers(0, 9))
                states = bn.states[c]
                if choice < 5:
                    col.append(states[draw(st.integers(0, len(states) - 1))])
                elif choice < 7:
                    col.append(draw(st.sampled_from([None, np.nan, pd.NA])))
                elif choice == 7:
                    col.append("no such state")
                elif choice == 8:
                    col.append(draw(st.sampled_from([[1], {"a": 1}, 2.5, True, b"x"])))
                else:
                    col.append(states[0])
            else:
                col.append(draw(st.sampled_from(["x", None, 1])))
        cells.append(col)
    frame = pd.DataFrame({i: col for i, col in enumerate(cells)}, index=range(n), dtype=object)
    frame.columns = columns
    if draw(st.booleans()) and n and columns:
        frame.iloc[draw(st.integers(0, n - 1))] = None  # an all-missing row
    if dup:
        problem = repr(dup[0])
    elif unknown:
        problem = repr(unknown[0])
    return frame, problem


def _check_frame(spec: Spec, draw: Any) -> None:
    bn = _build(spec)
    if bn is None:
        return
    frame, problem = _frame_cases(draw, bn)
    log_joint = _log_joint(bn)
    for call in ("log_prob", "posterior", "impute", "predict", "importance"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if call == "log_prob":
                    out = bn.log_prob(frame)
                elif call == "posterior":
                    out = bn.posterior(frame, bn.variables[0])
                elif call == "impute":
                    out = bn.impute(frame)
                elif call == "importance":
                    out = bn.log_prob(frame, method="importance", num_samples=8, seed=0)
                else:
                    out = bn.predict(frame)
        except ValueError as e:
            message = str(e)
            if problem is not None:
                assert "columns named more than once" in message or "unknown variable" in message
                assert problem in message, message
            else:
                assert any(
                    word in message
                    for word in ("unknown state", "probability zero", "zero under the network")
                ), message
            continue
        assert problem is None, f"{call} accepted a frame with {problem}"
        if call == "log_prob":
            assert out.shape == (len(frame),)
            for i in range(len(frame)):
                codes = _codes(bn, frame.iloc[i])
                expected, _ = _brute(bn, log_joint, codes, bn.variables[0])
                g = float(out[i])
                assert not math.isnan(g)
                assert (
                    (g == expected)
                    if expected == -math.inf
                    else math.isclose(g, expected, rel_tol=1e-9, abs_tol=1e-9)
                )
        elif call == "importance":
            assert out.log_prob.shape == (len(frame),)
            assert not torch.isnan(out.log_prob).any()
            # the estimate is a log-mean of weights no larger than one
            assert bool((out.log_prob <= 1e-9).all())
        elif call == "posterior":
            assert out[bn.variables[0]].shape == (len(frame), len(bn.states[bn.variables[0]]))
            assert not torch.isnan(out[bn.variables[0]]).any()
        else:
            assert len(out) == len(frame)


def _codes(bn: DiscreteBN, row: pd.Series) -> list[int | None]:
    out: list[int | None] = []
    for v in bn.variables:
        x = row.get(v) if v in row.index else None
        if x is None or (pd.api.types.is_scalar(x) and pd.isna(x)):
            out.append(None)
        elif x in bn.states[v]:
            out.append(bn.states[v].index(x))
        else:  # matched by its text, as a CSV read without types
            out.append([str(s) for s in bn.states[v]].index(str(x)))
    return out


# ------------------------------------------------------------------------------ BIF


def _check_roundtrip(spec: Spec, tmp: Any) -> None:
    bn = _build(spec)
    if bn is None:
        return
    path = tmp / "net.bif"
    try:
        write_bif(bn, path)
    except ValueError as e:
        # names that could not be read back: the message names one of them
        message = str(e)
        assert "cannot write" in message or "not distinct once written" in message, message
        texts = [str(v) for v in bn.variables] + [str(s) for ss in bn.states.values() for s in ss]
        assert any(repr(t) in message for t in texts) or "not distinct" in message, message
        return
    back = read_bif(path)
    assert [str(v) for v in bn.variables] == list(back.variables)
    names = {str(v): v for v in bn.variables}
    for w in back.variables:
        v = names[w]
        assert tuple(map(str, bn.states[v])) == back.states[w]
        assert tuple(map(str, bn.parents(v))) == back.parents(w)
        np.testing.assert_allclose(back.cpt(w).numpy(), bn.cpt(v).numpy(), rtol=1e-12, atol=0)


def _check_parse(text: str) -> None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            bn = parse_bif(text)
    except BIFError:
        return
    # a network read from a mutated file is still a valid network
    assert isinstance(bn, DiscreteBN)
    for v in bn.variables:
        table = bn.cpt(v).numpy()
        assert np.isfinite(table).all() and (table >= 0).all()
        np.testing.assert_allclose(table.sum(-1), 1.0, atol=1e-6)
    if bn.variables:
        assert np.isfinite(bn.log_prob({}).numpy()).all()


def _tokens(text: str) -> list[str]:
    import re

    return re.findall(r"\s+|[{}()\[\];,|]|[^\s{}()\[\];,|]+", text)


@st.composite
def mutated(draw: Any) -> str:
    bn = draw(specs(awkward=False)).build()
    text = format_bif(bn)
    kind = draw(st.sampled_from(["token", "line", "chars"]))
    parts = _tokens(text) if kind != "line" else text.splitlines(keepends=True)
    if kind == "chars":
        parts = list(text)
    for _ in range(draw(st.integers(1, 3))):
        if not parts:
            break
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "replace"]))
        i = draw(st.integers(0, len(parts) - 1))
        if op == "delete":
            del parts[i]
        elif op == "duplicate":
            parts.insert(i, parts[i])
        elif op == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        else:
            parts[i] = draw(
                st.sampled_from(
                    [
                        *KEYWORDS,
                        "{",
                        "}",
                        "(",
                        ")",
                        ";",
                        ",",
                        "|",
                        "1e999",
                        "-1",
                        "nan",
                        "2",
                        "0",
                        "/*",
                        "//",
                        '"',
                        "\n",
                        "",
                        "x",
                    ]
                )
            )
    return "".join(parts)


# ------------------------------------------------------------------------------ tests


def _run_inference(n: int) -> None:
    @_settings(n)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _check_inference(data.draw(specs()), data.draw)

    run()


def _run_frames(n: int) -> None:
    @_settings(n)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        _check_frame(data.draw(specs(tiny=False)), data.draw)

    run()


def _run_roundtrip(n: int, tmp: Any) -> None:
    @_settings(n)
    @given(specs())
    def run(spec: Spec) -> None:
        _check_roundtrip(spec, tmp)

    run()


def _run_mutated(n: int) -> None:
    @_settings(n)
    @given(mutated())
    def run(text: str) -> None:
        _check_parse(text)

    run()


def _run_truncated(n: int) -> None:
    @_settings(n)
    @given(specs(awkward=False))
    def run(spec: Spec) -> None:
        text = format_bif(spec.build())
        for cut in range(len(text) + 1):
            _check_parse(text[:cut])

    run()


def _run_all(counts: dict[str, int], tmp: Any) -> None:
    _run_inference(counts["inference"])
    _run_frames(counts["frames"])
    _run_roundtrip(counts["roundtrip"], tmp)
    _run_mutated(counts["mutated"])
    _run_truncated(counts["truncated"])


def test_inference_matches_enumeration():
    _run_inference(FAST["inference"])


def test_frames_answer_or_name_the_problem():
    _run_frames(FAST["frames"])


def test_bif_roundtrip(tmp_path):
    _run_roundtrip(FAST["roundtrip"], tmp_path)


def test_mutated_bif_reads_or_raises_bif_error():
    _run_mutated(FAST["mutated"])


def test_truncated_bif_reads_or_raises_bif_error():
    _run_truncated(FAST["truncated"])


@pytest.mark.slow
def test_fuzz_many_cases(tmp_path):
    """The same properties with over 10,000 generated cases in total."""
    assert sum(SLOW.values()) >= 10_000
    _run_all(SLOW, tmp_path)
