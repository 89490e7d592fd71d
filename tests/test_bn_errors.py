"""Bad input to ppdgm.bn raises a ValueError (or FileNotFoundError) that names the culprit."""

from __future__ import annotations

import gzip

import networkx as nx
import numpy as np
import pandas as pd
import pytest

import ppdgm.bn as pbn
from ppdgm.bn import CPT_TOLERANCE, DiscreteBN

CHAIN = nx.DiGraph([("a", "b"), ("b", "c")])


def _cpts(**override):
    cpts = {"a": [0.3, 0.7], "b": [[0.9, 0.1], [0.2, 0.8]], "c": [[0.5, 0.5], [0.4, 0.6]]}
    cpts.update(override)
    return cpts


def test_valid_chain_builds():
    bn = DiscreteBN(CHAIN, _cpts())
    assert bn.variables == ("a", "b", "c")


# --------------------------------------------------------------------------- construction


def test_cycle():
    dag = nx.DiGraph([("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(ValueError, match=r"cycle: .*a.*b.*c"):
        DiscreteBN(dag, _cpts(a=[[0.5, 0.5], [0.5, 0.5]]))


def test_self_loop():
    with pytest.raises(ValueError, match=r"cycle.*a"):
        DiscreteBN(nx.DiGraph([("a", "a")]), {"a": [0.5, 0.5]})


def test_not_a_digraph():
    with pytest.raises(TypeError, match="DiGraph"):
        DiscreteBN(nx.Graph([("a", "b")]), {"a": [1.0], "b": [1.0]})


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ([0.9, 0.1], r"CPT of 'b' has shape \(2,\), expected \(2, 2\)"),
        ([[0.9, 0.1], [0.2, 0.8], [0.5, 0.5]], r"CPT of 'b' has shape \(3, 2\)"),
        ([[[0.9, 0.1], [0.2, 0.8]]], r"CPT of 'b' has shape \(1, 2, 2\)"),
    ],
)
def test_wrong_shape(table, match):
    with pytest.raises(ValueError, match=match):
        DiscreteBN(CHAIN, _cpts(b=table))


def test_wrong_shape_against_given_states():
    with pytest.raises(ValueError, match=r"CPT of 'a' has shape \(2,\), expected \(3,\)"):
        DiscreteBN(CHAIN, _cpts(), states={"a": ("x", "y", "z")})


def test_not_summing_to_one():
    off = 10 * CPT_TOLERANCE
    with pytest.raises(ValueError, match=r"'b' does not sum to one.*a=1.*sums to 1\.00001"):
        DiscreteBN(CHAIN, _cpts(b=[[0.9, 0.1], [0.2, 0.8 + off]]))
    with pytest.raises(ValueError, match=r"'a' does not sum to one"):
        DiscreteBN(CHAIN, _cpts(a=[0.3, 0.6]))


def test_rounding_within_tolerance_is_accepted():
    within = CPT_TOLERANCE / 2
    bn = DiscreteBN(CHAIN, _cpts(b=[[0.9, 0.1], [0.2, 0.8 + within]]))
    assert float(bn.cpt("b")[1].sum()) == pytest.approx(1 + within)


def test_negative_entries():
    with pytest.raises(ValueError, match=r"CPT of 'c' has negative entries \(min -0\.1\)"):
        DiscreteBN(CHAIN, _cpts(c=[[1.1, -0.1], [0.4, 0.6]]))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_entries(bad):
    with pytest.raises(ValueError, match=r"CPT of 'c' has non-finite entries"):
        DiscreteBN(CHAIN, _cpts(c=[[bad, 0.5], [0.4, 0.6]]))


def test_non_numeric_table():
    with pytest.raises(ValueError, match=r"CPT of 'a' is not a numeric array"):
        DiscreteBN(CHAIN, _cpts(a=["x", "y"]))


def test_parent_not_in_graph():
    with pytest.raises(ValueError, match=r"parent 'z' of 'b' is not a node of the graph"):
        DiscreteBN(CHAIN, _cpts(), parents={"b": ("z",)})


def test_parents_inconsistent_with_dag():
    with pytest.raises(ValueError, match=r"parents given for 'b' \(\) differ .*\('a',\)"):
        DiscreteBN(CHAIN, _cpts(), parents={"b": ()})
    with pytest.raises(ValueError, match=r"parents given for 'c'"):
        DiscreteBN(CHAIN, _cpts(), parents={"c": ("a",)})
    with pytest.raises(ValueError, match=r"parents given for 'b'"):
        DiscreteBN(CHAIN, _cpts(), parents={"b": ("a", "a")})


def test_parents_for_unknown_variable():
    with pytest.raises(ValueError, match=r"parents given for variable\(s\) not in the graph.*'q'"):
        DiscreteBN(CHAIN, _cpts(), parents={"q": ()})


def test_missing_cpt():
    cpts = _cpts()
    del cpts["c"]
    with pytest.raises(ValueError, match=r"no CPT given for variable\(s\) \['c'\]"):
        DiscreteBN(CHAIN, cpts)


def test_cpt_for_unknown_variable():
    with pytest.raises(ValueError, match=r"CPT given for variable\(s\) not in the graph.*'d'"):
        DiscreteBN(CHAIN, _cpts(d=[1.0]))


def test_states_for_unknown_variable():
    with pytest.raises(ValueError, match=r"states given for variable\(s\) not in the graph.*'d'"):
        DiscreteBN(CHAIN, _cpts(), states={"d": ("x",)})


def test_repeated_state_names():
    with pytest.raises(ValueError, match=r"'a' has repeated state names"):
        DiscreteBN(CHAIN, _cpts(), states={"a": ("x", "x")})


def test_variable_without_states():
    with pytest.raises(ValueError, match=r"'a'"):
        DiscreteBN(nx.DiGraph([("a", "b")]), {"a": [], "b": np.zeros((0, 1))})


# --------------------------------------------------------------------------- data and queries


@pytest.fixture(scope="module")
def student():
    return pbn.student()


def test_unknown_column(student):
    rows = pd.DataFrame({"grade": ["A"], "iq": [120]})
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['iq'\]"):
        student.log_prob(rows)
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['iq'\]"):
        student.posterior(rows, "sat")
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['iq'\]"):
        student.fit(rows)
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['iq'\]"):
        student.model(rows)


def test_unknown_query_variable(student):
    rows = pd.DataFrame({"grade": ["A"]})
    with pytest.raises(ValueError, match=r"unknown variable 'iq'"):
        student.posterior(rows, "iq")
    with pytest.raises(ValueError, match=r"unknown variable 'iq'"):
        student.posterior(rows, ["sat", "iq"])
    with pytest.raises(ValueError, match="no query variables"):
        student.posterior(rows, [])


def test_unknown_state(student):
    rows = pd.DataFrame({"grade": ["A", "F", None, "F"], "sat": ["low"] * 4})
    message = r"unknown state\(s\) \['F'\] of variable 'grade' in 2 row\(s\)"
    with pytest.raises(ValueError, match=message):
        student.log_prob(rows)
    with pytest.raises(ValueError, match=message):
        student.posterior(rows, "letter")
    with pytest.raises(ValueError, match=message):
        student.fit(rows)


def test_unknown_state_of_a_categorical_column(student):
    rows = pd.DataFrame({"sat": pd.Categorical(["low", "medium"])})
    with pytest.raises(ValueError, match=r"\['medium'\] of variable 'sat'"):
        student.log_prob(rows)


def test_an_unhashable_cell_is_an_unknown_state(student):
    rows = pd.DataFrame({"grade": [["A"], "A", None, ["A"]]})
    with pytest.raises(ValueError, match=r"state\(s\) \[\['A'\]\] of variable 'grade' in 2"):
        student.log_prob(rows)


def test_whole_numbers_read_as_floats_match_states_named_by_their_text():
    # a CSV column of numbers with a missing cell is read as floats: 1.0 is the state "1"
    bn = DiscreteBN(
        nx.DiGraph([("a", "b")]),
        {"a": [0.5, 0.5], "b": [[0.9, 0.1], [0.2, 0.8]]},
        states={"a": ("1", "2"), "b": ("no", "yes")},
    )
    floats = pd.DataFrame({"a": [2.0, 1.0, np.nan], "b": ["yes", "no", "yes"]})
    text = pd.DataFrame({"a": ["2", "1", None], "b": ["yes", "no", "yes"]})
    assert bn.log_prob(floats).tolist() == bn.log_prob(text).tolist()
    with pytest.raises(ValueError, match=r"unknown state\(s\) \[1.5\] of variable 'a'"):
        bn.log_prob(pd.DataFrame({"a": [1.5]}))


def test_data_of_the_wrong_type(student):
    with pytest.raises(TypeError, match="DataFrame"):
        student.log_prob([["A", "low"]])


def test_unknown_variable_in_accessors(student):
    with pytest.raises(ValueError, match=r"unknown variable 'iq'"):
        student.cpt("iq")
    with pytest.raises(ValueError, match=r"unknown variable 'iq'"):
        student.parents("iq")


@pytest.mark.parametrize("n", [-1, 2.5, "10", True])
def test_bad_number_of_rows(student, n):
    with pytest.raises(ValueError, match=rf"non-negative integer, not {n!r}"):
        student.sample(n)


# --------------------------------------------------------------------------- learning


def test_fit_errors(student):
    rows = student.sample(50, seed=0)
    with pytest.raises(ValueError, match=r"unknown prior 'laplace'"):
        student.fit(rows, prior="laplace")
    with pytest.raises(ValueError, match=r"pseudo_count must be non-negative, not -1"):
        student.fit(rows, prior="dirichlet", pseudo_count=-1)
    with pytest.raises(ValueError, match=r"equivalent_sample_size must be positive, not 0"):
        student.fit(rows, prior="bdeu", equivalent_sample_size=0)
    with pytest.raises(ValueError, match="pass states only with a DAG"):
        student.fit(rows, states={"sat": ("low", "high")})
    with pytest.raises(ValueError, match=r"variable 'letter' has no observed value"):
        pbn.fit(nx.DiGraph(student.dag), rows.drop(columns=["letter"]))
    with pytest.raises(TypeError, match="structure"):
        pbn.fit("student", rows)


def test_em_init_must_match(student):
    rows = student.sample(50, seed=0).astype(object)
    rows.loc[0, "grade"] = None
    with pytest.raises(ValueError, match="init must have the structure and states"):
        student.fit(rows, init=pbn.asia())


# --------------------------------------------------------------------------- files and names


def test_missing_bif_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no BIF file"):
        pbn.read_bif(tmp_path / "absent.bif")


def test_garbage_bif_file(tmp_path):
    path = tmp_path / "garbage.bif"
    path.write_text("this is not a Bayesian network\n")
    with pytest.raises(ValueError, match=r"garbage\.bif is not a BIF file"):
        pbn.read_bif(path)
    empty = tmp_path / "empty.bif"
    empty.write_text("")
    with pytest.raises(ValueError, match=r"empty\.bif"):
        pbn.read_bif(empty)


def test_binary_bif_file(tmp_path):
    path = tmp_path / "binary.bif"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ValueError, match=r"binary\.bif"):
        pbn.read_bif(path)
    packed = tmp_path / "broken.bif.gz"
    packed.write_bytes(gzip.compress(b"network x {}\n")[:12])
    with pytest.raises(ValueError, match=r"broken\.bif\.gz"):
        pbn.read_bif(packed)


@pytest.mark.parametrize("keep", [0.5, 0.98])
def test_truncated_bif_file(tmp_path, keep):
    whole = tmp_path / "whole.bif"
    pbn.asia().write_bif(whole)
    text = whole.read_text()
    cut = tmp_path / "cut.bif"
    cut.write_text(text[: int(len(text) * keep)])
    with pytest.raises(ValueError, match=r"cut\.bif"):
        pbn.read_bif(cut)


def test_bif_file_with_bad_probabilities(tmp_path):
    path = tmp_path / "bad.bif"
    pbn.sprinkler().write_bif(path)
    text = path.read_text()
    start = text.index("probability ( cloudy )")
    end = text.index(";", start)
    path.write_text(text[:start] + "probability ( cloudy ) {\n    table 0.5, 0.7" + text[end:])
    with pytest.raises(ValueError, match=r"bad\.bif.*'cloudy'"):
        pbn.read_bif(path)


def test_unknown_example():
    with pytest.raises(ValueError, match=r"unknown example network 'nope'.*asia"):
        pbn.example("nope")


def test_available_examples():
    names = pbn.available()
    for name in ["asia", "sprinkler", "student", "alarm", "child", "win95pts"]:
        assert name in names


# --------------------------------------------------------------------------- fuzzed cases


@pytest.mark.parametrize("bad", [None, float("nan"), np.nan, pd.NA, ""])
def test_state_that_reads_as_missing_is_refused(bad):
    with pytest.raises(ValueError, match=r"state .* of variable 'b' .* not a valid state name"):
        DiscreteBN(CHAIN, _cpts(), states={"a": ("x", "y"), "b": ("ok", bad)})


@pytest.mark.parametrize("bad", [float("nan"), ""])
def test_variable_that_reads_as_missing_is_refused(bad):
    dag = nx.DiGraph([("a", bad)])
    with pytest.raises(ValueError, match=r"variable .* has an invalid name"):
        DiscreteBN(dag, {"a": [0.5, 0.5], bad: [[0.5, 0.5], [0.5, 0.5]]})


def test_equal_state_names_of_different_types_are_repeats():
    with pytest.raises(ValueError, match=r"'a' has repeated state names .*positions 0 and 1"):
        DiscreteBN(CHAIN, _cpts(), states={"a": (1, 1.0)})


@pytest.mark.parametrize(
    "call",
    [
        lambda bn, f: bn.log_prob(f),
        lambda bn, f: bn.posterior(f, "a"),
        lambda bn, f: bn.log_prob(f, method="importance", num_samples=4),
        lambda bn, f: bn.impute(f),
        lambda bn, f: bn.predict(f),
        lambda bn, f: bn.fit(f),
        lambda bn, f: pbn.fit(CHAIN, f),
    ],
)
def test_duplicate_columns_are_named(call):
    bn = DiscreteBN(CHAIN, _cpts())
    frame = pd.DataFrame([[0, 0, 1]], columns=["a", "b", "a"])
    with pytest.raises(ValueError, match=r"columns named more than once: 'a'"):
        call(bn, frame)


def test_variable_named_data_takes_importance_sampling():
    dag = nx.DiGraph([("data", "b")])
    bn = DiscreteBN(dag, {"data": [0.5, 0.5], "b": [[0.5, 0.5], [0.3, 0.7]]})
    assert bn.plate == "_data"
    rows = pd.DataFrame({"data": [0, None], "b": [None, 1]})
    est = bn.log_prob(rows, method="importance", num_samples=10, seed=0)
    assert float(est.log_prob[0]) == pytest.approx(np.log(0.5))
    post = bn.posterior(rows, "data", method="importance", num_samples=10, seed=0)
    assert post.probs["data"].shape == (2, 2)


@pytest.mark.parametrize("method", ["exact", "importance"])
def test_zero_rows_give_empty_results(method):
    bn = DiscreteBN(CHAIN, _cpts())
    rows = pd.DataFrame({"a": [], "c": []})
    log_p = bn.log_prob(rows, method=method, num_samples=30)
    assert (log_p if method == "exact" else log_p.log_prob).shape == (0,)
    post = bn.posterior(rows, ["a", "b"], method=method, num_samples=30)
    probs = post if method == "exact" else post.probs
    assert probs["b"].shape == (0, 2)
    frame = bn.posterior(rows, "b", method=method, num_samples=30, as_frame=True)
    assert frame.shape == (0, 2)


def test_importance_on_rows_that_observe_nothing():
    bn = DiscreteBN(CHAIN, _cpts())
    rows = pd.DataFrame({"a": [None, None]})
    assert bn.log_prob(rows, method="importance", num_samples=30).log_prob.tolist() == [0, 0]
    post = bn.posterior(rows, "a", method="importance", num_samples=4000, seed=0)
    assert post.probs["a"][:, 1].tolist() == pytest.approx([0.7, 0.7], abs=0.05)


def test_variable_named_by_a_number_is_one_query_variable():
    bn = DiscreteBN(nx.DiGraph([(0, 1)]), {0: [0.5, 0.5], 1: [[0.9, 0.1], [0.2, 0.8]]})
    assert bn.posterior({1: 1}, 0)[0][0].tolist() == pytest.approx([1 / 9, 8 / 9])
    assert list(bn.predict({1: 1}, 0).columns) == [0]


@pytest.mark.parametrize("tiny", [1e-200, 1e-300, 5e-324])
def test_products_of_tiny_entries_do_not_underflow(tiny):
    net = DiscreteBN(
        CHAIN, _cpts(a=[tiny, 1 - tiny], b=[[tiny, 1 - tiny], [0.0, 1.0]], c=[[1, 0], [0, 1]])
    )
    expected = 2 * np.log(tiny)
    for row in ({"c": 0}, {"b": 0}, {"a": 0, "b": 0}):
        assert float(net.log_prob(row)[0]) == pytest.approx(expected, rel=1e-12)
    post = net.posterior({"c": 0}, ["a", "b"])
    assert post["a"].tolist() == [[1.0, 0.0]] and post["b"].tolist() == [[1.0, 0.0]]
    # the denormal entry itself, against a normal one: p(a = 0 | b = 0) = tiny / (tiny + 1e-300)
    net = DiscreteBN(CHAIN, _cpts(a=[0.5, 0.5], b=[[tiny, 1 - tiny], [1e-300, 1 - 1e-300]]))
    got = net.posterior({"b": 0}, "a")["a"][0, 0].item()
    assert got == pytest.approx(tiny / (tiny + 1e-300), rel=1e-9)
