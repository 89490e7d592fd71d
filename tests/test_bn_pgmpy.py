"""ppdgm.bn against pgmpy 1.0: posteriors, log-probabilities, conversion and BIF round trips."""

from __future__ import annotations

import gzip
import itertools
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pgmpy
import pytest
import torch
from pgmpy.inference import VariableElimination
from pgmpy.readwrite import BIFReader

import ppdgm.bn as pbn

BIF_NETWORKS = [
    "cancer",
    "earthquake",
    "sachs",
    "survey",
    "child",
    "alarm",
    "insurance",
    "hailfinder",
    "win95pts",
]
NETWORKS = ["asia", *BIF_NETWORKS, "random0", "random1", "random2", "random3"]
ROWS = 4
#: Agreement demanded of two exact float64 computations of the same number.
TOL = 1e-9


def _pgmpy_file(name: str) -> Path:
    return Path(pgmpy.__file__).parent / "utils" / "example_models" / f"{name}.bif.gz"


def _load(name, example_network, bn_tools):
    if name.startswith("random"):
        return bn_tools.random_network(int(name.removeprefix("random")))
    return example_network(name)


def _cpd_table(cpd, bn, v) -> np.ndarray:
    """A pgmpy CPD read entry by entry (by state name) into ppdgm's axis order."""
    axes = (*bn.parents(v), v)
    shape = tuple(len(bn.states[u]) for u in axes)
    out = np.empty(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        names = {u: bn.states[u][i] for u, i in zip(axes, index, strict=True)}
        out[index] = cpd.get_value(**names)
    return out


def _factor_probs(factor, variable, states) -> np.ndarray:
    return np.array([factor.get_value(**{variable: s}) for s in states])


@pytest.fixture(scope="module", params=NETWORKS)
def case(request, example_network, bn_tools):
    """One network (tables renormalized), its pgmpy twin, and evidence rows with two queries."""
    name = request.param
    bn = bn_tools.normalized(_load(name, example_network, bn_tools))
    model = bn.to_pgmpy()
    rng = np.random.default_rng(7)
    queries = tuple(rng.choice(bn.variables, size=2, replace=False).tolist())
    complete = bn.sample(ROWS, seed=3)
    rows = bn_tools.hide_cells(complete, 0.5, seed=11, always=queries)
    return SimpleNamespace(
        name=name,
        bn=bn,
        model=model,
        ve=VariableElimination(model),
        queries=queries,
        complete=complete,
        rows=rows,
    )


def _evidence(row) -> dict:
    return {k: v for k, v in row.items() if isinstance(v, str)}


def test_twin_is_consistent(case):
    assert case.model.check_model()
    assert set(case.model.nodes()) == set(case.bn.variables)
    assert set(case.model.edges()) == set(case.bn.dag.edges)


def test_posterior_single_variable(case):
    for q in case.queries:
        ours = case.bn.posterior(case.rows, [q])[q]
        assert ours.dtype == torch.float64
        assert ours.shape == (ROWS, len(case.bn.states[q]))
        for n, (_, row) in enumerate(case.rows.iterrows()):
            ref = case.ve.query([q], evidence=_evidence(row), show_progress=False)
            expected = _factor_probs(ref, q, case.bn.states[q])
            np.testing.assert_allclose(ours[n].numpy(), expected, rtol=0, atol=TOL)


def test_posterior_several_variables(case):
    """Several variables take the gradient path (d log Z / d lambda); same answers as pgmpy."""
    ours = case.bn.posterior(case.rows, list(case.queries))
    assert list(ours) == list(case.queries)
    for n, (_, row) in enumerate(case.rows.iterrows()):
        ref = case.ve.query(
            list(case.queries), evidence=_evidence(row), joint=False, show_progress=False
        )
        for q in case.queries:
            expected = _factor_probs(ref[q], q, case.bn.states[q])
            np.testing.assert_allclose(ours[q][n].numpy(), expected, rtol=0, atol=TOL)


def test_log_prob_of_complete_rows_is_the_chain_of_pgmpy_cpds(case):
    ours = case.bn.log_prob(case.complete)
    assert ours.dtype == torch.float64 and ours.shape == (ROWS,)
    for n, (_, row) in enumerate(case.complete.iterrows()):
        expected = 0.0
        for cpd in case.model.get_cpds():
            family = {u: row[u] for u in cpd.variables}
            expected += math.log(cpd.get_value(**family))
        assert float(ours[n]) == pytest.approx(expected, rel=1e-12, abs=TOL)


def test_log_prob_with_missing_cells_is_pgmpy_evidence_probability(case):
    """log p(e_1, ..., e_k) = sum_i log p(e_i | e_1..e_{i-1}), each factor a pgmpy VE query."""
    ours = case.bn.log_prob(case.rows)
    for n, (_, row) in enumerate(case.rows.iterrows()):
        items = list(_evidence(row).items())
        expected = 0.0
        for i, (v, s) in enumerate(items):
            ref = case.ve.query([v], evidence=dict(items[:i]), show_progress=False)
            expected += math.log(ref.get_value(**{v: s}))
        assert float(ours[n]) == pytest.approx(expected, rel=1e-12, abs=TOL)


def test_from_pgmpy_of_to_pgmpy_is_identical(case):
    back = pbn.from_pgmpy(case.model)
    assert back.variables == case.bn.variables
    assert set(back.dag.edges) == set(case.bn.dag.edges)
    for v in case.bn.variables:
        assert back.states[v] == case.bn.states[v]
        assert back.parents(v) == case.bn.parents(v)
        assert torch.equal(back.cpt(v), case.bn.cpt(v))


def test_to_pgmpy_tables_match_by_state_name(case):
    """Every pgmpy CPD entry, read by state names, is the ppdgm CPT entry."""
    for v in case.bn.variables:
        table = _cpd_table(case.model.get_cpds(v), case.bn, v)
        np.testing.assert_array_equal(table, case.bn.cpt(v).numpy())


@pytest.mark.parametrize("name", BIF_NETWORKS)
def test_example_equals_pgmpy_reading_of_the_same_file(name, example_network):
    """``example(name)`` has pgmpy's own reading of the shipped file: structure, states, and
    tables, the latter renormalized where the file's rows sum to one only within rounding."""
    ours = example_network(name)
    text = gzip.decompress(_pgmpy_file(name).read_bytes()).decode()
    theirs = BIFReader(string=text, n_jobs=1).get_model()
    assert set(theirs.nodes()) == set(ours.variables)
    assert set(theirs.edges()) == set(ours.dag.edges)
    for v in ours.variables:
        cpd = theirs.get_cpds(v)
        assert tuple(cpd.state_names[v]) == ours.states[v]
        table = _cpd_table(cpd, ours, v)
        np.testing.assert_allclose(table, ours.cpt(v).numpy(), rtol=0, atol=pbn.CPT_TOLERANCE)
        np.testing.assert_allclose(
            table / table.sum(-1, keepdims=True), ours.cpt(v).numpy(), rtol=0, atol=1e-15
        )


def test_builtin_asia_equals_pgmpy_asia():
    ours = pbn.example("asia")
    theirs = pbn.read_bif(_pgmpy_file("asia"))
    assert set(theirs.dag.edges) == set(ours.dag.edges)
    for v in ours.variables:
        assert theirs.states[v] == ours.states[v]
        aligned = theirs.cpt(v).permute(
            *(theirs.parents(v).index(u) for u in ours.parents(v)), len(ours.parents(v))
        )
        torch.testing.assert_close(aligned, ours.cpt(v), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["asia", "sachs", "insurance", "random0", "random3"])
def test_bif_round_trip(name, tmp_path, example_network, bn_tools):
    """``write_bif`` prints each probability with ``repr`` (the shortest text that parses back
    to the same double): the tables come back exactly."""
    bn = _load(name, example_network, bn_tools)
    path = tmp_path / f"{name}.bif"
    bn.write_bif(path)
    assert not list(tmp_path.glob("*.tmp"))
    back = pbn.read_bif(path)
    assert back.name == name
    assert set(back.variables) == set(bn.variables)
    assert set(back.dag.edges) == set(bn.dag.edges)
    for v in bn.variables:
        assert back.states[v] == bn.states[v]
        assert back.parents(v) == bn.parents(v)
        torch.testing.assert_close(back.cpt(v), bn.cpt(v), rtol=0, atol=1e-15)


def test_bif_round_trip_of_gzip_file(tmp_path):
    bn = pbn.student()
    plain = tmp_path / "student.bif"
    bn.write_bif(plain)
    packed = tmp_path / "student.bif.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    back = pbn.read_bif(packed)
    assert back.name == "student"
    for v in bn.variables:
        assert torch.equal(back.cpt(v), bn.cpt(v))
