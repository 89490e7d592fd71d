"""``bn.predict``, ``bn.impute``, ``bn.posterior(as_frame=True)``, ``ppdgm bn predict|impute``,
ragged CSV rows and the ``states=`` hint of learning, each against brute-force enumeration of
the joint distribution (``bn_tools.joint_table``: every joint state multiplied out with
itertools.product, independent of the elimination engine)."""

from __future__ import annotations

import gzip
import io
import itertools
import math
from pathlib import Path

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import ppdgm.bn as pbn
import ppdgm.bn.imputation as imputation
from ppdgm.bn import DiscreteBN, ZeroProbabilityEvidence
from ppdgm.cli import main
from ppdgm.commands._common import read_rows

#: Probabilities closer than this count as tied in the oracle (the rule ppdgm documents).
TIE = 1e-12


# ------------------------------------------------------------------------------ the oracle
def _codes(bn: DiscreteBN, row: pd.Series) -> list[int | None]:
    """State index of each variable in the row, None where missing or absent."""
    out: list[int | None] = []
    for v in bn.variables:
        x = row.get(v)
        out.append(None if x is None or (isinstance(x, float) and math.isnan(x)) else
                   bn.states[v].index(x))  # fmt: skip
    return out


def conditional_joint(bn: DiscreteBN, joint: np.ndarray, row: pd.Series) -> np.ndarray:
    """``p(every variable | observed cells of row)`` as an array over all variables (axes in
    ``bn.variables`` order), zero off the evidence: the joint sliced and renormalized."""
    mask = np.ones_like(joint, dtype=bool)
    for axis, code in enumerate(_codes(bn, row)):
        if code is not None:
            keep = np.zeros(joint.shape[axis], dtype=bool)
            keep[code] = True
            shape = [1] * joint.ndim
            shape[axis] = -1
            mask &= keep.reshape(shape)
    sub = np.where(mask, joint, 0.0)
    return sub / sub.sum()


def marginal(bn: DiscreteBN, cond: np.ndarray, variable: str) -> np.ndarray:
    axis = bn.variables.index(variable)
    return cond.sum(axis=tuple(a for a in range(cond.ndim) if a != axis))


def first_best(p: np.ndarray) -> int:
    """The first state within :data:`TIE` of the largest probability."""
    return int(np.flatnonzero(p >= p.max() - TIE)[0])


def brute_predict(bn: DiscreteBN, joint: np.ndarray, rows: pd.DataFrame, v: str) -> list:
    out = []
    for _, row in rows.iterrows():
        out.append(bn.states[v][first_best(marginal(bn, conditional_joint(bn, joint, row), v))])
    return out


def _rows(bn: DiscreteBN, bn_tools, n: int = 30, seed: int = 3) -> pd.DataFrame:
    """Rows with random holes, plus a row with nothing observed and a complete one, under an
    index that is not 0..n-1."""
    rows = bn_tools.hide_cells(bn.sample(n, seed=seed), 0.5, seed=seed + 1)
    rows = pd.concat(
        [rows, pd.DataFrame([{v: None for v in bn.variables}]), bn.sample(1, seed=seed + 2)],
        ignore_index=True,
    ).astype(object)
    rows.index = pd.Index([f"r{i}" for i in range(len(rows))])
    return rows


def _network(name: str, bn_tools) -> DiscreteBN:
    if name == "random3":  # three or four states per variable
        return bn_tools.random_network(3, nodes=(5, 5), cards=(3, 4), max_parents=2)
    return pbn.example(name)


NETWORKS = ["asia", "student", "random3"]


@pytest.fixture(scope="module", params=NETWORKS)
def case(request, bn_tools):
    bn = _network(request.param, bn_tools)
    return bn, bn_tools.joint_table(bn), _rows(bn, bn_tools)


# -------------------------------------------------------------------------------- predict
def test_predict_is_the_argmax_of_the_enumerated_posterior(case):
    bn, joint, rows = case
    rows = rows.drop(columns=[bn.variables[0]])  # an absent column: missing everywhere
    predicted = bn.predict(rows)
    expected_columns = [v for v in bn.variables if v not in rows or rows[v].isna().any()]
    assert list(predicted.columns) == expected_columns
    assert predicted.index.equals(rows.index)
    for v in expected_columns:
        assert isinstance(predicted[v].dtype, pd.CategoricalDtype)
        assert list(predicted[v].cat.categories) == list(bn.states[v])
        assert predicted[v].tolist() == brute_predict(bn, joint, rows, v), v
        if v in rows:
            observed = rows[v].notna()
            assert predicted.loc[observed, v].tolist() == rows.loc[observed, v].tolist()


def test_predict_named_variables(case):
    bn, joint, rows = case
    chosen = [bn.variables[-1], bn.variables[1]]
    predicted = bn.predict(rows, chosen)
    assert list(predicted.columns) == chosen
    for v in chosen:
        assert predicted[v].tolist() == brute_predict(bn, joint, rows, v)
    single = bn.predict(rows, bn.variables[-1])
    assert single[bn.variables[-1]].tolist() == predicted[bn.variables[-1]].tolist()


def test_ties_go_to_the_first_state():
    dag = nx.DiGraph()
    dag.add_nodes_from(["a", "b", "c"])
    cpts = {"a": [0.5, 0.5], "b": [0.25, 0.375, 0.375], "c": [0.2, 0.8]}
    forward = DiscreteBN(dag, cpts, {"a": ("x", "y"), "b": ("u", "v", "w")})
    backward = DiscreteBN(dag, cpts, {"a": ("y", "x"), "b": ("u", "w", "v")})
    rows = pd.DataFrame({"a": [None], "b": [None], "c": [None]})
    assert forward.predict(rows).iloc[0].tolist() == ["x", "v", 1]
    assert backward.predict(rows).iloc[0].tolist() == ["y", "w", 1]
    assert forward.impute(rows).iloc[0].tolist() == ["x", "v", 1]


def test_predict_in_blocks_is_the_same(case, monkeypatch):
    bn, _, rows = case
    whole, filled = bn.predict(rows), bn.impute(rows)
    monkeypatch.setattr(imputation, "ROWS_PER_BLOCK", 7)
    pd.testing.assert_frame_equal(bn.predict(rows, progress=True), whole)
    pd.testing.assert_frame_equal(bn.impute(rows, progress=True), filled)


# --------------------------------------------------------------------------------- impute
def test_impute_fills_each_cell_with_its_enumerated_argmax(case):
    bn, joint, rows = case
    rows = rows.drop(columns=[bn.variables[-1]])  # stays absent, summed out
    filled = bn.impute(rows)
    assert list(filled.columns) == list(rows.columns) and filled.index.equals(rows.index)
    assert not filled.isna().any().any()
    for v in rows.columns:
        assert list(filled[v].cat.categories) == list(bn.states[v])
        observed = rows[v].notna()
        assert filled.loc[observed, v].tolist() == rows.loc[observed, v].tolist()
        hole = ~observed
        expected = brute_predict(bn, joint, rows[hole], v)
        assert filled.loc[hole, v].tolist() == expected, v
    pd.testing.assert_frame_equal(filled[filled.columns], bn.impute(filled))  # nothing to fill


def test_impute_of_complete_rows_converts_them_only():
    bn = pbn.student()
    rows = bn.sample(5, seed=0).astype(object)
    out = bn.impute(rows)
    assert out.astype(object).equals(rows)
    assert all(isinstance(out[v].dtype, pd.CategoricalDtype) for v in out)


def _frequencies(bn: DiscreteBN, frame: pd.DataFrame, variables: list[str]) -> np.ndarray:
    """Relative frequency of each joint state of ``variables`` among the rows."""
    codes = np.stack(
        [frame[v].map({s: i for i, s in enumerate(bn.states[v])}).to_numpy(int) for v in variables],
        1,
    )
    shape = tuple(len(bn.states[v]) for v in variables)
    flat = np.ravel_multi_index(codes.T, shape)
    return np.bincount(flat, minlength=math.prod(shape)).reshape(shape) / len(frame)


SAMPLE_CASES = [
    # network, evidence patterns (each repeated 10,000 times); the rest of each row is missing
    ("student", [{"letter": "strong"}, {"grade": "C", "sat": "high"}]),
    ("asia", [{"asia": "no", "xray": "yes", "dysp": "yes"}, {"tub": "no", "bronc": "yes"}]),
]


@pytest.mark.parametrize(("name", "patterns"), SAMPLE_CASES)
def test_impute_sample_draws_from_the_exact_conditional_joint(name, patterns, bn_tools):
    """The imputed cells of 10,000 rows of each evidence pattern (the patterns interleaved in
    one frame) have the joint frequencies of the exact ``p(missing | observed)`` from
    enumeration.

    Tolerance: each joint state's frequency is a mean of 10,000 Bernoulli(p) draws, standard
    error ``sqrt(p (1 - p) / n)``; every state is within 5 standard errors (a miss has
    probability about 6e-7 per state, under 1e-4 over all states) and a state of probability
    zero is never drawn.
    """
    bn = pbn.example(name)
    joint = bn_tools.joint_table(bn)
    n = 10_000
    rows = pd.DataFrame([{v: p.get(v) for v in bn.variables} for p in patterns] * n)
    filled = bn.impute(rows, sample=True, seed=11)
    assert not filled.isna().any().any()
    for k, pattern in enumerate(patterns):
        part = filled.iloc[k :: len(patterns)]
        assert all((part[v] == s).all() for v, s in pattern.items())
        exact = conditional_joint(bn, joint, pd.Series(pattern))
        free = [v for v in bn.variables if v not in pattern]
        exact = exact.sum(axis=tuple(bn.variables.index(v) for v in pattern))  # drop fixed axes
        freq = _frequencies(bn, part, free)
        stderr = np.sqrt(exact * (1 - exact) / n)
        assert (np.abs(freq - exact) <= 5 * stderr).all(), (pattern, np.abs(freq - exact).max())
        assert (freq[exact == 0] == 0).all()


def test_impute_sample_is_reproducible(case):
    bn, _, rows = case
    first = bn.impute(rows, sample=True, seed=5)
    pd.testing.assert_frame_equal(first, bn.impute(rows, sample=True, seed=5))
    assert not first.isna().any().any()
    observed = rows.notna().to_numpy()
    assert (first.astype(object).to_numpy()[observed] == rows.to_numpy()[observed]).all()
    many = pd.concat([rows] * 20)
    assert not bn.impute(many, sample=True, seed=5).equals(bn.impute(many, sample=True, seed=6))
    torch.manual_seed(0)
    unseeded = bn.impute(many, sample=True)
    torch.manual_seed(0)
    pd.testing.assert_frame_equal(unseeded, bn.impute(many, sample=True))


def test_impute_sample_draws_only_possible_completions():
    bn = pbn.asia()
    rows = pd.DataFrame({"tub": ["no"] * 2000, "lung": ["no"] * 2000, "either": None})
    assert (bn.impute(rows, sample=True, seed=0)["either"] == "no").all()  # either = tub or lung


# ------------------------------------------------------------------------------- as_frame
def test_posterior_as_frame_equals_the_dict(case):
    bn, _, rows = case
    query = [bn.variables[-1], bn.variables[0]]
    as_dict = bn.posterior(rows, query)
    frame = bn.posterior(rows, query, as_frame=True)
    assert frame.index.equals(rows.index)
    assert frame.columns.names == ["variable", "state"]
    assert list(frame.columns) == [(v, s) for v in query for s in bn.states[v]]
    assert (frame.dtypes == np.float64).all()
    for v in query:
        np.testing.assert_array_equal(frame[v].to_numpy(), as_dict[v].numpy())
    one = bn.posterior({bn.variables[0]: bn.states[bn.variables[0]][0]}, bn.variables[-1],
                       as_frame=True)  # fmt: skip
    assert one.shape == (1, len(bn.states[bn.variables[-1]])) and list(one.index) == [0]


# ------------------------------------------------------------------------------ bad input
def test_bad_input_is_refused_with_its_name():
    bn = pbn.student()
    for call in (bn.predict, bn.impute, lambda rows: bn.impute(rows, sample=True)):
        with pytest.raises(ValueError, match=r"unknown variable\(s\) \['iq'\]"):
            call(pd.DataFrame({"iq": [1], "grade": ["A"]}))
        with pytest.raises(ValueError, match=r"unknown state\(s\) \['D'\] of variable 'grade'"):
            call(pd.DataFrame({"grade": ["D", None]}))
    with pytest.raises(ValueError, match=r"unknown variable 'grde'"):
        bn.predict(pd.DataFrame({"grade": [None]}), ["grde"])


def test_rows_with_nothing_observed_get_the_prior_answer(bn_tools):
    bn = pbn.student()
    joint = bn_tools.joint_table(bn)
    rows = pd.DataFrame({v: [np.nan, None] for v in bn.variables})
    predicted = bn.impute(rows)
    prior = pd.Series(dict.fromkeys(bn.variables))
    for v in bn.variables:
        best = bn.states[v][first_best(marginal(bn, conditional_joint(bn, joint, prior), v))]
        assert predicted[v].tolist() == [best, best]


def test_impossible_rows_are_named():
    bn = pbn.asia()
    rows = pd.DataFrame({"tub": ["no", "yes", "yes"], "either": ["no", "no", "no"],
                         "lung": [None, None, "no"]})  # fmt: skip
    # predict: row 2 misses the variables without a column, given impossible observed cells
    with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 1, 2 \(counting from 0\)"):
        bn.predict(rows)
    # impute fills the cells of the frame only, and row 2 has none missing
    for sample in (False, True):
        with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 1 \(counting from 0\)"):
            bn.impute(rows, sample=sample, seed=0)
    # a complete row needs no inference: predicting what is observed returns it
    assert bn.predict(rows.iloc[2:], ["tub"])["tub"].tolist() == ["yes"]


def test_empty_frames():
    bn = pbn.asia()
    rows = pd.DataFrame({"smoke": pd.Series([], dtype=object), "lung": []})
    assert bn.predict(rows).shape == (0, 0)  # no row misses anything
    assert list(bn.predict(rows, ["lung", "tub"]).columns) == ["lung", "tub"]
    assert bn.impute(rows, sample=True, seed=0).shape == (0, 2)


# -------------------------------------------------------------------- learning: states=
def test_fit_suggests_the_states_to_pass():
    bn = pbn.student()
    rows = bn.sample(300, seed=0).astype(object)
    rows.loc[3, "grade"] = "D"
    hint = "ppdgm.bn.fit(bn.dag, data, states={**bn.states, 'grade': ('A', 'B', 'C', 'D')})"
    with pytest.raises(ValueError, match=r"unknown state\(s\) \['D'\]") as info:
        bn.fit(rows)
    assert hint in str(info.value)
    # ... and the suggestion works
    learned = pbn.fit(bn.dag, rows, states={**bn.states, "grade": ("A", "B", "C", "D")}).network
    assert learned.states["grade"] == ("A", "B", "C", "D")
    assert learned.parents("grade") == bn.parents("grade")
    with pytest.raises(ValueError, match="pass states only with a DAG") as info:
        bn.fit(rows, states={"grade": ("A", "B", "C", "D")})
    assert hint in str(info.value)
    dag = nx.DiGraph(bn.dag)
    with pytest.raises(ValueError, match=r"unknown state\(s\) \['D'\]") as info:
        pbn.fit(dag, rows, states={"grade": ("A", "B", "C")})
    assert "Pass every state: fit(dag, data, states={'grade': ('A', 'B', 'C', 'D'), ...})" in str(
        info.value
    )
    with pytest.raises(ValueError, match=r"'letter' has no observed value.*states=\{'letter': "):
        pbn.fit(dag, rows.drop(columns="letter"))


def test_states_from_the_data_are_the_values_seen():
    bn = pbn.student()
    rows = bn.sample(200, seed=1).astype(object)
    rows = rows[rows["grade"] != "C"]
    learned = pbn.fit(nx.DiGraph(bn.dag), rows).network
    assert learned.states["grade"] == ("A", "B")  # C never seen: pass states= to keep it
    kept = pbn.fit(nx.DiGraph(bn.dag), rows, states={"grade": ("A", "B", "C")}).network
    assert kept.states["grade"] == ("A", "B", "C")


# ---------------------------------------------------------------------- the command line
def _read(path: Path | str) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture
def rows_csv(tmp_path: Path, bn_tools) -> tuple[Path, pd.DataFrame]:
    bn = pbn.student()
    rows = bn_tools.hide_cells(bn.sample(60, seed=2), 0.4, seed=3)
    rows.loc[len(rows)] = [None] * len(bn.variables)
    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    return path, _read(path)


def test_cli_predict_is_the_library(rows_csv, tmp_path, capsys, bn_tools):
    path, rows = rows_csv
    bn = pbn.student()
    out = tmp_path / "predictions.csv"
    assert main(["bn", "predict", "student", "--data", str(path), "-o", str(out)]) == 0
    assert f"wrote: {out}" in capsys.readouterr().out
    expected = bn.predict(rows).astype(str)
    pd.testing.assert_frame_equal(_read(out), expected, check_dtype=False)
    joint = bn_tools.joint_table(bn)
    assert _read(out)["grade"].tolist() == brute_predict(bn, joint, rows, "grade")
    assert main(["bn", "predict", "student", "--data", str(path), "--variables", "sat,grade"]) == 0
    shown = pd.read_csv(io.StringIO(capsys.readouterr().out), dtype=str)
    pd.testing.assert_frame_equal(shown, expected[["sat", "grade"]], check_dtype=False)


@pytest.mark.parametrize("sample", [False, True])
def test_cli_impute_is_the_library(rows_csv, tmp_path, capsys, sample):
    path, rows = rows_csv
    bn = pbn.student()
    out, again = tmp_path / "imputed.csv", tmp_path / "again.csv"
    extra = ["--sample", "--seed", "4"] if sample else []
    assert main(["bn", "impute", "student", "--data", str(path), *extra, "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote: {out}" in printed
    assert f"filled {int(rows.isna().to_numpy().sum()):,} missing cells in 61 rows" in printed
    expected = bn.impute(rows, sample=sample, seed=4 if sample else None).astype(str)
    pd.testing.assert_frame_equal(_read(out), expected, check_dtype=False)
    if sample:
        assert main(["bn", "impute", "student", "--data", str(path), *extra, "-o", str(again)]) == 0
        assert again.read_text() == out.read_text()


def test_cli_several_blocks_show_progress(tmp_path, capsys, monkeypatch):
    bn = pbn.asia()
    rows = bn.sample(50, seed=0).astype(object).mask(np.random.default_rng(0).random((50, 8)) < 0.3)
    path, out = tmp_path / "rows.csv", tmp_path / "imputed.csv"
    rows.to_csv(path, index=False)
    monkeypatch.setattr(imputation, "ROWS_PER_BLOCK", 16)
    assert main(["bn", "impute", "asia", "--data", str(path), "--sample", "--seed", "1",
                 "-o", str(out)]) == 0  # fmt: skip
    assert "impute" in capsys.readouterr().err  # the bar, on standard error
    expected = bn.impute(_read(path), sample=True, seed=1).astype(str)
    pd.testing.assert_frame_equal(_read(out), expected, check_dtype=False)
    assert main(["bn", "impute", "asia", "--data", str(path), "--no-progress", "-o", str(out)]) == 0
    assert capsys.readouterr().err == ""


def test_cli_impossible_rows_are_left_empty(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    path.write_text("tub,either,smoke,lung\nyes,no,,\n,,yes,\n")
    out = tmp_path / "p.csv"
    assert main(["bn", "predict", "asia", "--data", str(path), "-o", str(out)]) == 0
    assert "1 row(s) have probability zero under the network (rows 1," in capsys.readouterr().out
    predicted = _read(out)
    assert predicted.iloc[0].isna().all()
    expected = pbn.asia().predict(_read(path).iloc[1:], list(predicted.columns))
    assert predicted.iloc[1].tolist() == expected.iloc[0].tolist()
    assert main(["bn", "impute", "asia", "--data", str(path), "-o", str(out)]) == 0
    assert "their missing cells are left empty" in capsys.readouterr().out
    imputed = _read(out)
    assert imputed.iloc[0].tolist()[:2] == ["yes", "no"] and imputed.iloc[0, 2:].isna().all()
    assert not imputed.iloc[1].isna().any()


CLI_ERRORS = [
    (["predict", "student", "--variables", "grde"], "'grde'"),
    (["impute", "student", "--seed", "3"], "--seed applies to the draws of --sample only"),
]


@pytest.mark.parametrize(("argv", "expected"), CLI_ERRORS)
def test_cli_errors(argv, expected, rows_csv, capsys):
    path, _ = rows_csv
    assert main(["bn", *argv, "--data", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("ppdgm bn: error: ")
    assert expected in captured.err


# ----------------------------------------------------------------------- ragged CSV rows
RAGGED = [
    ("smoke,lung\nyes,no\nyes\n", 3, 1, 2),  # too few cells
    ("smoke,lung\nyes,no\n\nno,yes\nyes,no,no\n", 5, 3, 2),  # too many, after a blank line
    ("smoke,lung,xray\r\n,,\r\nyes,no\r\n", 3, 2, 3),  # Windows line ends
    ('smoke,lung\n"yes",no\n"y,es\nno",no,yes\n', 3, 3, 2),  # line breaks inside quotes
]


@pytest.mark.parametrize(("text", "line", "found", "expected"), RAGGED)
@pytest.mark.parametrize("action", ["predict", "impute", "loglik", "query", "fit"])
def test_ragged_rows_are_refused_with_their_line(
    text, line, found, expected, action, tmp_path, capsys
):
    path = tmp_path / "ragged.csv"
    path.write_text(text, newline="")
    argv = ["bn", action, "asia", "--data", str(path)]
    assert main([*argv, "--vars", "lung"] if action == "query" else argv) == 2
    err = capsys.readouterr().err
    plural = "cell" if found == 1 else "cells"
    assert (
        f"{path}, line {line}: {found} {plural}, but the header (line 1) has {expected} cells"
        in err
    )


def test_well_formed_files_read_as_before(tmp_path, monkeypatch):
    path = tmp_path / "rows.csv"
    path.write_text('smoke,lung\n"yes",\n\n,"no"\n   \n"a,\nb",yes\n')
    rows = read_rows(path)
    assert rows.to_dict("list") == {
        "smoke": ["yes", np.nan, "a,\nb"],
        "lung": [np.nan, "no", "yes"],
    }
    monkeypatch.setattr("sys.stdin", io.StringIO("smoke,lung\nyes\n"))
    with pytest.raises(ValueError, match=r"standard input, line 2: 1 cell, but the header"):
        read_rows("-")
    monkeypatch.setattr("sys.stdin", io.StringIO("smoke,lung\nyes,\n"))
    assert read_rows("-").shape == (1, 2)
    packed = tmp_path / "rows.csv.gz"  # compressed files are read as before, and checked
    packed.write_bytes(gzip.compress(b"smoke,lung\nyes,\n"))
    assert read_rows(packed).to_dict("list") == {"smoke": ["yes"], "lung": [np.nan]}
    packed.write_bytes(gzip.compress(b"smoke,lung\nyes,no\n,,\n"))
    with pytest.raises(ValueError, match=r"rows.csv.gz, line 3: 3 cells, but the header"):
        read_rows(packed)


def test_a_large_file_is_checked_without_a_loop_over_lines(tmp_path):
    """100,000 rows; the bad one near the end (the check is vectorized: well under a second)."""
    lines = ["a,b,c", *itertools.repeat("1,,3", 100_000)]
    lines[99_990] = "1,2"
    path = tmp_path / "big.csv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"big.csv, line 99991: 2 cells, but the header"):
        read_rows(path)
