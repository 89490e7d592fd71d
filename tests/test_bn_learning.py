"""Learning CPTs with ppdgm.bn.fit: recovery, agreement with pgmpy's estimators, and EM."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from pgmpy.estimators import BayesianEstimator, MaximumLikelihoodEstimator
from pgmpy.models import DiscreteBayesianNetwork

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN, FitResult


def _random(seed: int, bn_tools) -> DiscreteBN:
    return bn_tools.random_network(seed, nodes=(5, 7), cards=(2, 3), max_parents=2)


def _pgmpy_table(cpd, bn: DiscreteBN, v: str) -> np.ndarray:
    """A pgmpy CPD read by state names into ppdgm's axis order (pgmpy sorts the parents)."""
    axes = (*bn.parents(v), v)
    shape = tuple(len(bn.states[u]) for u in axes)
    out = np.empty(shape)
    for index in itertools.product(*(range(n) for n in shape)):
        out[index] = cpd.get_value(**{u: bn.states[u][i] for u, i in zip(axes, index, strict=True)})
    return out


def _parent_counts(bn: DiscreteBN, frame: pd.DataFrame, v: str) -> np.ndarray:
    """Rows per parent configuration of ``v``, shaped like its CPT without the last axis."""
    shape = tuple(len(bn.states[u]) for u in bn.parents(v))
    counts = np.zeros(shape)
    for config, n in frame.groupby(list(bn.parents(v)), observed=True).size().items():
        config = config if isinstance(config, tuple) else (config,)
        counts[tuple(bn.states[u].index(s) for u, s in zip(bn.parents(v), config, strict=True))] = n
    return counts


# --------------------------------------------------------------------------- complete data


@pytest.mark.parametrize("name", ["student", "random40"])
def test_mle_recovers_the_cpts(name, bn_tools):
    """From 100k rows every CPT entry is within five standard errors sqrt(p (1 - p) / N_u) of the
    truth, and within 0.01 where its parent configuration has at least 25,000 rows (standard
    error <= 0.5 / sqrt(25000) = 0.0032)."""
    truth = pbn.student() if name == "student" else _random(40, bn_tools)
    frame = truth.sample(100_000, seed=0)
    result = pbn.fit(truth, frame)
    assert isinstance(result, FitResult)
    assert result.method == "counts" and result.iterations == 0 and result.converged
    for v in truth.variables:
        p, q = truth.cpt(v).numpy(), result.network.cpt(v).numpy()
        n_u = _parent_counts(truth, frame, v) if truth.parents(v) else np.array(len(frame))
        n_u = n_u[..., None]
        seen = np.broadcast_to(n_u > 0, p.shape)
        se = np.sqrt(p * (1 - p) / np.maximum(n_u, 1))
        assert (np.abs(q - p) <= 5 * se + 1e-12)[seen].all(), v
        many = np.broadcast_to(n_u >= 25_000, p.shape)
        assert (np.abs(q - p) <= 0.01)[many].all(), v


def test_fit_result_of_complete_data(bn_tools):
    truth = pbn.asia()
    frame = truth.sample(3000, seed=1)
    result = truth.fit(frame)
    net = result.network
    assert net.variables == truth.variables
    assert all(net.parents(v) == truth.parents(v) for v in truth.variables)
    assert dict(net.states) == dict(truth.states)
    assert result.log_likelihood == [pytest.approx(float(net.log_prob(frame).sum()), rel=1e-12)]
    assert result.objective == result.log_likelihood
    # the maximum: perturbing a table lowers the likelihood
    worse = net.with_cpts({"dysp": 0.9 * net.cpt("dysp") + 0.05})
    assert float(worse.log_prob(frame).sum()) < result.log_likelihood[0]


def _pgmpy_setup(bn: DiscreteBN, frame: pd.DataFrame):
    model = DiscreteBayesianNetwork()
    model.add_nodes_from(bn.variables)
    model.add_edges_from(bn.dag.edges)
    names = {v: list(bn.states[v]) for v in bn.variables}
    return model, frame.astype(object), names


@pytest.mark.parametrize("name", ["student", "random41", "random42"])
def test_mle_equals_pgmpy(name, bn_tools):
    truth = pbn.student() if name == "student" else _random(int(name[-2:]), bn_tools)
    frame = truth.sample(3000, seed=2)
    ours = pbn.fit(truth, frame).network
    model, data, names = _pgmpy_setup(truth, frame)
    estimator = MaximumLikelihoodEstimator(model, data, state_names=names)
    for v in truth.variables:
        seen = _parent_counts(truth, frame, v) > 0 if truth.parents(v) else np.array(True)
        theirs = _pgmpy_table(estimator.estimate_cpd(v), truth, v)
        mask = np.broadcast_to(seen[..., None], theirs.shape)
        np.testing.assert_allclose(ours.cpt(v).numpy()[mask], theirs[mask], rtol=1e-12)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            {"prior": "bdeu", "equivalent_sample_size": 10.0},
            {"prior_type": "BDeu", "equivalent_sample_size": 10},
        ),
        (
            {"prior": "bdeu", "equivalent_sample_size": 3.0},
            {"prior_type": "BDeu", "equivalent_sample_size": 3},
        ),
        ({"prior": "dirichlet", "pseudo_count": 1.0}, {"prior_type": "K2"}),
        (
            {"prior": "dirichlet", "pseudo_count": 2.5},
            {"prior_type": "dirichlet", "pseudo_counts": 2.5},
        ),
    ],
    ids=["bdeu10", "bdeu3", "k2", "dirichlet2.5"],
)
@pytest.mark.parametrize("name", ["student", "random43"])
def test_bayesian_estimates_equal_pgmpy(name, ours, theirs, bn_tools):
    """Few rows (so the prior matters, and some parent configurations are never seen)."""
    truth = pbn.student() if name == "student" else _random(43, bn_tools)
    frame = truth.sample(60, seed=3)
    result = pbn.fit(truth, frame, **ours)
    model, data, names = _pgmpy_setup(truth, frame)
    estimator = BayesianEstimator(model, data, state_names=names)
    for v in truth.variables:
        reference = _pgmpy_table(estimator.estimate_cpd(v, **theirs), truth, v)
        np.testing.assert_allclose(result.network.cpt(v).numpy(), reference, rtol=1e-12)
    # the objective adds sum alpha log theta to the log-likelihood
    ll = float(result.network.log_prob(frame).sum())
    assert result.log_likelihood[0] == pytest.approx(ll, rel=1e-12)
    assert result.objective[0] < result.log_likelihood[0]


def test_dag_fit_infers_states_from_data():
    truth = pbn.student()
    frame = truth.sample(2000, seed=4).astype(object)
    result = pbn.fit(nx.DiGraph(truth.dag), frame)
    net = result.network
    assert set(net.variables) == set(truth.variables)
    for v in truth.variables:
        assert net.states[v] == tuple(sorted(frame[v].unique()))
        assert set(net.parents(v)) == set(truth.parents(v))
    # same numbers as fitting the network itself, up to the state order
    reference = pbn.fit(truth, frame).network
    for v in truth.variables:
        axes = (*net.parents(v), v)
        index = np.ix_(
            *(
                [net.states[u].index(s) for s in reference.states[u]]
                for u in (*reference.parents(v), v)
            )
        )
        permuted = net.cpt(v).permute(*(axes.index(u) for u in (*reference.parents(v), v)))
        torch.testing.assert_close(permuted[index], reference.cpt(v), rtol=1e-12, atol=1e-12)


def test_dag_fit_with_given_states_keeps_unseen_states():
    dag = nx.DiGraph([("a", "b")])
    frame = pd.DataFrame({"a": ["x", "x", "y"], "b": ["u", "v", "u"]})
    net = pbn.fit(dag, frame, states={"b": ("u", "v", "w")}).network
    assert net.states["a"] == ("x", "y")
    assert net.states["b"] == ("u", "v", "w")
    torch.testing.assert_close(
        net.cpt("b"), torch.tensor([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float64)
    )


# --------------------------------------------------------------------------- EM


def _hide(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return frame.astype(object).mask(rng.random(frame.shape) < fraction)


def _never_decreases(values: list[float]) -> None:
    values = np.asarray(values)
    slack = 1e-9 * np.abs(values[:-1])
    assert (np.diff(values) >= -slack).all(), np.diff(values).min()


@pytest.mark.parametrize("name", ["student", "random44"])
def test_em_with_cells_missing_at_random_approaches_the_complete_fit(name, bn_tools):
    """30% of the cells missing at random (20k rows): every entry of the EM estimate whose parent
    configuration has at least 2,000 complete rows is within 0.03 of the complete-data estimate
    (the information lost is worth a few standard errors of at most 0.5 / sqrt(2000) = 0.011)."""
    truth = pbn.student() if name == "student" else _random(44, bn_tools)
    complete = truth.sample(20_000, seed=5)
    missing = _hide(complete, 0.3, seed=6)
    reference = pbn.fit(truth, complete).network
    result = pbn.fit(truth, missing, max_iter=200)
    assert result.method == "em"
    assert result.converged and 1 <= result.iterations < 200
    assert len(result.log_likelihood) == result.iterations + 1
    _never_decreases(result.log_likelihood)
    _never_decreases(result.objective)
    assert result.log_likelihood[-1] == pytest.approx(
        float(result.network.log_prob(missing).sum()), rel=1e-10
    )
    checked = 0
    for v in truth.variables:
        n_u = _parent_counts(truth, complete, v) if truth.parents(v) else np.array(len(complete))
        many = np.broadcast_to((n_u >= 2000)[..., None], tuple(reference.cpt(v).shape))
        error = (result.network.cpt(v) - reference.cpt(v)).abs().numpy()
        assert error[many].max(initial=0) <= 0.03, v
        checked += int(many.sum())
    assert checked >= sum(t.numel() for t in map(truth.cpt, truth.variables)) // 2


def test_em_objective_with_a_prior_never_decreases():
    truth = pbn.asia()
    missing = _hide(truth.sample(2000, seed=7), 0.5, seed=8)
    result = pbn.fit(truth, missing, prior="dirichlet", pseudo_count=1.0, tol=1e-10, max_iter=50)
    assert result.iterations >= 5
    _never_decreases(result.objective)
    for ll, objective in zip(result.log_likelihood, result.objective, strict=True):
        assert objective < ll  # log theta < 0 and alpha > 0


def test_em_with_a_hidden_variable():
    """The column of intelligence is absent: EM learns a latent variable from its children."""
    truth = pbn.student()
    observed = truth.sample(5000, seed=9).drop(columns=["intelligence"])
    result = pbn.fit(truth, observed, max_iter=100)
    assert result.method == "em" and result.iterations >= 2
    _never_decreases(result.log_likelihood)
    assert result.log_likelihood[-1] > result.log_likelihood[0] + 1.0
    assert result.log_likelihood[-1] == pytest.approx(
        float(result.network.log_prob(observed).sum()), rel=1e-10
    )
    # the true network explains the data no better than the (local) maximum found by EM, beyond
    # a small margin: EM's estimate is at least as likely as the truth minus 1 nat per 1000 rows
    truth_ll = float(truth.log_prob(observed).sum())
    assert result.log_likelihood[-1] > truth_ll - 5.0
    # a DAG cannot be fit without the hidden variable's states ...
    with pytest.raises(ValueError, match="intelligence"):
        pbn.fit(nx.DiGraph(truth.dag), observed)
    # ... but can with them
    states = {"intelligence": ("low", "high")}
    dag_fit = pbn.fit(nx.DiGraph(truth.dag), observed, states=states, max_iter=20)
    assert dag_fit.method == "em"
    _never_decreases(dag_fit.log_likelihood)


def test_em_is_reproducible_and_accepts_an_init():
    truth = pbn.sprinkler()
    missing = _hide(truth.sample(1000, seed=10), 0.4, seed=11)
    a = pbn.fit(truth, missing, seed=3)
    b = pbn.fit(truth, missing, seed=3)
    for v in truth.variables:
        assert torch.equal(a.network.cpt(v), b.network.cpt(v))
    from_truth = pbn.fit(truth, missing, init=truth, max_iter=1)
    assert from_truth.iterations == 1
    assert from_truth.log_likelihood[0] == pytest.approx(
        float(truth.log_prob(missing).sum()), rel=1e-12
    )
    assert from_truth.log_likelihood[1] >= from_truth.log_likelihood[0]


def test_em_iterations_are_exact_expected_counts():
    """One EM step from the truth equals normalized expected counts computed by brute force."""
    truth = pbn.sprinkler()
    frame = _hide(truth.sample(50, seed=12), 0.5, seed=13)
    step = pbn.fit(truth, frame, init=truth, max_iter=1, tol=-math.inf).network
    position = {v: j for j, v in enumerate(truth.variables)}
    expected = {v: np.zeros(tuple(truth.cpt(v).shape)) for v in truth.variables}
    tables = {v: truth.cpt(v).numpy() for v in truth.variables}
    for _, row in frame.iterrows():
        completions = []
        for state in itertools.product(*(range(len(truth.states[v])) for v in truth.variables)):
            if any(
                isinstance(row[v], str) and truth.states[v].index(row[v]) != state[position[v]]
                for v in truth.variables
            ):
                continue
            p = 1.0
            for v in truth.variables:
                p *= tables[v][tuple(state[position[u]] for u in (*truth.parents(v), v))]
            completions.append((state, p))
        total = sum(p for _, p in completions)
        for state, p in completions:
            for v in truth.variables:
                expected[v][tuple(state[position[u]] for u in (*truth.parents(v), v))] += p / total
    for v in truth.variables:
        counts = expected[v]
        total = counts.sum(-1, keepdims=True)
        # a parent configuration with no expected rows gets a uniform row
        reference = np.where(total > 0, counts / np.maximum(total, 1e-300), 1 / counts.shape[-1])
        np.testing.assert_allclose(step.cpt(v).numpy(), reference, rtol=1e-9, atol=1e-12)
