"""Exact inference of ppdgm.bn against brute-force enumeration of the joint, and against Pyro."""

from __future__ import annotations

import itertools
import math

import graphviz
import networkx as nx
import numpy as np
import pandas as pd
import pyro
import pytest
import torch
from pyro.infer import TraceEnum_ELBO
from pyro.infer.inspect import get_dependencies

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN, ZeroProbabilityEvidence

SMALL = ["asia", "student", "sprinkler", "random10", "random11", "random12"]
#: Agreement demanded of two exact float64 computations of the same number.
TOL = 1e-9


def _small(name: str, bn_tools) -> DiscreteBN:
    return bn_tools.named_network(name, nodes=(4, 6), cards=(2, 3))


@pytest.fixture(scope="module", params=SMALL)
def small(request, bn_tools):
    """A small network, its full joint by enumeration, and rows with random missing cells."""
    bn = _small(request.param, bn_tools)
    joint = bn_tools.joint_table(bn)
    rows = bn_tools.hide_cells(bn.sample(12, seed=5), 0.4, seed=6)
    # a row with nothing observed and a complete row
    rows = pd.concat(
        [rows, pd.DataFrame([{v: None for v in bn.variables}]), bn.sample(1, seed=8)],
        ignore_index=True,
    ).astype(object)
    return bn, joint, rows


def test_joint_is_a_distribution(small):
    _, joint, _ = small
    assert joint.min() >= 0
    assert joint.sum() == pytest.approx(1.0, abs=1e-12)


def test_log_prob_is_log_sum_over_completions(small, bn_tools):
    bn, joint, rows = small
    ours = bn.log_prob(rows)
    assert ours.dtype == torch.float64 and ours.shape == (len(rows),)
    expected = [bn_tools.brute_log_prob(bn, joint, row) for _, row in rows.iterrows()]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-12, atol=TOL)


def test_posterior_is_normalized_sum_over_completions(small, bn_tools):
    bn, joint, rows = small
    together = bn.posterior(rows, list(bn.variables))
    assert list(together) == list(bn.variables)
    for v in bn.variables:
        alone = bn.posterior(rows, v)[v]
        assert alone.dtype == torch.float64 and alone.shape == (len(rows), len(bn.states[v]))
        expected = np.stack(
            [bn_tools.brute_posterior(bn, joint, row, v) for _, row in rows.iterrows()]
        )
        np.testing.assert_allclose(alone.numpy(), expected, rtol=0, atol=TOL)
        np.testing.assert_allclose(together[v].numpy(), expected, rtol=0, atol=TOL)


def test_posterior_of_an_observed_variable_is_one_hot(small):
    bn, _, rows = small
    v = bn.variables[-1]
    observed = rows[v].notna().tolist()
    codes = [bn.states[v].index(s) for s in rows.loc[observed, v]]
    expected = np.eye(len(bn.states[v]))[codes]
    for result in (bn.posterior(rows, v)[v], bn.posterior(rows, bn.variables)[v]):
        np.testing.assert_allclose(
            result[torch.tensor(observed)].numpy(), expected, rtol=0, atol=TOL
        )


def test_chunking_does_not_change_answers(small):
    bn, _, rows = small
    queries = list(bn.variables[:3])
    for chunk in (1, 3):
        torch.testing.assert_close(
            bn.log_prob(rows, chunk_size=chunk), bn.log_prob(rows), rtol=1e-12, atol=1e-12
        )
        single = bn.posterior(rows, queries[0], chunk_size=chunk)[queries[0]]
        torch.testing.assert_close(single, bn.posterior(rows, queries[0])[queries[0]])
        several = bn.posterior(rows, queries, chunk_size=chunk)
        for q, t in bn.posterior(rows, queries).items():
            torch.testing.assert_close(several[q], t, rtol=1e-12, atol=1e-12)


def test_marginals_sum_to_one(small):
    bn, _, _ = small
    for v in bn.variables:
        frame = pd.DataFrame({v: list(bn.states[v])})
        assert float(bn.log_prob(frame).exp().sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", ["alarm", "sachs"])
def test_marginals_sum_to_one_for_networks_read_from_bif(name, example_network):
    """sum_s p(v = s) must be one for every variable, also where BIF rounding left CPT rows
    that sum to one only within CPT_TOLERANCE (alarm, sachs: rows off by 1e-7)."""
    bn = example_network(name)
    worst = 0.0
    for v in bn.variables:
        frame = pd.DataFrame({v: list(bn.states[v])})
        worst = max(worst, abs(float(bn.log_prob(frame).exp().sum()) - 1))
    assert worst < 1e-12


# --------------------------------------------------------------------------- edge cases


def test_zero_probability_evidence():
    bn = pbn.asia()
    # either = tub or lung: tub = yes forces either = yes
    rows = pd.DataFrame(
        [
            {"either": "no", "tub": "yes"},
            {"either": "yes", "tub": "yes"},
            {"xray": "no"},
            {"either": "no", "lung": "yes", "dysp": "yes"},
        ]
    )
    lp = bn.log_prob(rows)
    assert not torch.isnan(lp).any()
    assert lp[0] == -math.inf and lp[3] == -math.inf
    assert torch.isfinite(lp[[1, 2]]).all()
    with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 0, 3"):
        bn.posterior(rows, "smoke")
    with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 0, 3"):
        bn.posterior(rows, ["smoke", "asia"])
    with pytest.raises(ZeroProbabilityEvidence):
        bn.posterior(rows.iloc[[0]], "either")
    # chunked: the row number is that of the whole frame, not of the chunk
    with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 2\b"):
        bn.posterior(rows.iloc[1:], "smoke", chunk_size=1)
    with pytest.raises(ZeroProbabilityEvidence, match=r"row\(s\) 2\b"):
        bn.posterior(rows.iloc[1:], ["smoke", "bronc"], chunk_size=1)
    assert issubclass(ZeroProbabilityEvidence, ValueError)
    fine = bn.posterior(rows.iloc[[1, 2]], ["smoke", "lung"])
    assert all(torch.isfinite(t).all() for t in fine.values())


def test_zero_probability_complete_row():
    bn = pbn.sprinkler()
    row = {"cloudy": "no", "sprinkler": "no", "rain": "no", "wet_grass": "yes"}
    assert float(bn.log_prob(row)) == -math.inf


def test_log_prob_without_evidence_is_zero():
    bn = pbn.asia()
    blank = pd.DataFrame([{v: None for v in bn.variables}] * 3)
    torch.testing.assert_close(bn.log_prob(blank), torch.zeros(3, dtype=torch.float64))
    no_columns = pd.DataFrame(index=range(2))
    torch.testing.assert_close(bn.log_prob(no_columns), torch.zeros(2, dtype=torch.float64))
    nan = pd.DataFrame({"asia": [np.nan, np.nan]})
    torch.testing.assert_close(bn.log_prob(nan), torch.zeros(2, dtype=torch.float64))


def test_posterior_without_evidence_is_the_prior_marginal():
    bn = pbn.sprinkler()
    post = bn.posterior(pd.DataFrame(index=range(2)), ["cloudy", "rain"])
    torch.testing.assert_close(post["cloudy"], torch.tensor([[0.5, 0.5]] * 2, dtype=torch.float64))
    torch.testing.assert_close(post["rain"], torch.tensor([[0.5, 0.5]] * 2, dtype=torch.float64))


def test_empty_frame_gives_empty_tensors():
    bn = pbn.student()
    empty = pd.DataFrame(columns=list(bn.variables))
    lp = bn.log_prob(empty)
    assert lp.shape == (0,) and lp.dtype == torch.float64
    one = bn.posterior(empty, "grade")
    assert one["grade"].shape == (0, 3) and one["grade"].dtype == torch.float64
    several = bn.posterior(empty, ["grade", "sat"])
    assert several["grade"].shape == (0, 3) and several["sat"].shape == (0, 2)


def test_missing_markers_and_input_forms_agree():
    bn = pbn.student()
    with_none = pd.DataFrame({"grade": ["A", None], "sat": [None, "high"]})
    with_nan = pd.DataFrame({"grade": ["A", np.nan], "sat": [np.nan, "high"]})
    reordered = with_none[["sat", "grade"]]
    categorical = with_none.astype({"grade": pd.CategoricalDtype(["A", "B", "C"])})
    expected = bn.log_prob(with_none)
    for frame in (with_nan, reordered, categorical):
        torch.testing.assert_close(bn.log_prob(frame), expected, rtol=0, atol=0)
    single = bn.log_prob({"grade": "A"})
    assert single.shape == (1,)
    assert float(single) == pytest.approx(float(expected[0]), rel=1e-12)


def test_sampled_frame_is_accepted_as_evidence():
    bn = pbn.asia()
    rows = bn.sample(5, seed=0)
    expected = [
        sum(
            math.log(
                float(
                    bn.cpt(v)[
                        (
                            *(bn.states[u].index(row[u]) for u in bn.parents(v)),
                            bn.states[v].index(row[v]),
                        )
                    ]
                )
            )
            for v in bn.variables
        )
        for _, row in rows.iterrows()
    ]
    np.testing.assert_allclose(bn.log_prob(rows).numpy(), expected, rtol=1e-12)


def test_no_underflow_on_a_long_chain():
    """300 variables with improbable transitions: p(row) ~ 1e-900, far below float64's range,
    in one batch with rows of ordinary probability (each row keeps its own scale)."""
    n, stay = 300, 0.999
    names = [f"x{i}" for i in range(n)]
    dag = nx.DiGraph(list(itertools.pairwise(names)))
    transition = [[stay, 1 - stay], [1 - stay, stay]]
    bn = DiscreteBN(dag, {"x0": [0.5, 0.5], **{v: transition for v in names[1:]}})
    rows = pd.DataFrame(
        [
            {v: i % 2 for i, v in enumerate(names)},  # flips at every step
            # every other cell missing: observed cells two steps apart flip, 2 s (1 - s) each
            {v: (i // 2) % 2 for i, v in enumerate(names) if i % 2 == 0},
            {v: 0 for v in names},  # never flips
            {"x0": 0},
            {},
        ],
        columns=names,
    )
    log_half = math.log(0.5)
    expected = [
        log_half + (n - 1) * math.log(1 - stay),
        log_half + (n // 2 - 1) * math.log(2 * stay * (1 - stay)),
        log_half + (n - 1) * math.log(stay),
        log_half,
        0.0,
    ]
    assert expected[0] < -2000
    for chunk in (None, 2):
        ours = bn.log_prob(rows, chunk_size=chunk).numpy()
        np.testing.assert_allclose(ours, expected, rtol=1e-12, atol=1e-12)
    x1 = [[0, 1], [0.5, 0.5], [1, 0], [stay, 1 - stay], [0.5, 0.5]]
    # 151 steps from x0 = 0: p(same) = (1 + (2 s - 1)^151) / 2
    same = (1 + (2 * stay - 1) ** 151) / 2
    x151 = [[0, 1], [0.5, 0.5], [1, 0], [same, 1 - same], [0.5, 0.5]]
    x1, x151 = torch.tensor(x1, dtype=torch.float64), torch.tensor(x151, dtype=torch.float64)
    both = bn.posterior(rows, ["x1", "x151"])
    torch.testing.assert_close(both["x1"], x1, rtol=0, atol=1e-12)
    torch.testing.assert_close(both["x151"], x151, rtol=0, atol=1e-12)
    torch.testing.assert_close(bn.posterior(rows, "x1")["x1"], x1, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- Pyro


def _guide(data):
    pass


def _mixed_rows(bn: DiscreteBN, seed: int) -> tuple[pd.DataFrame, set[str]]:
    """Rows where some columns are fully observed, some partly and some fully missing.

    Returns the rows and the latent sites (the columns with a missing cell).
    """
    rng = np.random.default_rng(seed)
    rows = bn.sample(8, seed=seed).astype(object)
    kinds = rng.permutation(np.arange(len(bn.variables)) % 3)
    for v, kind in zip(bn.variables, kinds, strict=True):
        if kind == 1:
            hide = rng.random(len(rows)) < 0.5
            hide[0], hide[1] = True, False
            rows.loc[hide, v] = None
        elif kind == 2:
            rows[v] = None
    latent = {v for v in bn.variables if rows[v].isna().any()}
    return rows, latent


PYRO_NETWORKS = ["asia", "student", "sprinkler", "random20", "random21"]


@pytest.mark.parametrize("name", PYRO_NETWORKS)
def test_trace_enum_elbo_is_minus_log_prob(name, bn_tools):
    """With no latent site in the guide, TraceEnum_ELBO sums out the latent sites exactly.

    ``differentiable_loss`` refuses a loss that depends on no parameter (the CPTs are constants),
    so the value is taken with ``loss``.
    """
    bn = _small(name, bn_tools)
    rows, latent = _mixed_rows(bn, seed=3)
    assert 0 < len(latent) < len(bn.variables)
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    pyro.clear_param_store()
    loss = elbo.loss(bn.model, _guide, rows)
    assert loss == pytest.approx(-float(bn.log_prob(rows).sum()), rel=1e-12, abs=TOL)
    for column in (bn.variables[0], bn.variables[-1]):
        part = rows[[column]]
        loss = elbo.loss(bn.model, _guide, part)
        assert loss == pytest.approx(-float(bn.log_prob(part).sum()), rel=1e-12, abs=TOL)


def _check_marginals(bn: DiscreteBN, rows: pd.DataFrame, sites: set[str]) -> None:
    elbo = TraceEnum_ELBO(max_plate_nesting=1)
    marginals = elbo.compute_marginals(bn.model, _guide, rows)
    assert sites <= set(marginals)
    posterior = bn.posterior(rows, sorted(sites))
    for v in sites:
        d = marginals[v]
        support = torch.arange(len(bn.states[v])).unsqueeze(-1).expand(-1, len(rows))
        probs = d.log_prob(support).exp().T  # [N, card]
        torch.testing.assert_close(probs, posterior[v], rtol=0, atol=TOL)


@pytest.mark.parametrize("name", PYRO_NETWORKS)
def test_compute_marginals_of_fully_missing_columns(name, bn_tools):
    bn = _small(name, bn_tools)
    rows, _ = _mixed_rows(bn, seed=4)
    hidden = list(bn.variables[1::3])
    rows = rows.dropna(axis=1, how="any")
    for v in hidden:
        rows[v] = None
    _check_marginals(bn, rows, set(hidden))


@pytest.mark.parametrize("name", PYRO_NETWORKS)
def test_compute_marginals_with_partially_observed_columns(name, bn_tools):
    """compute_marginals rebuilds each enumerated site's distribution as ``type(fn)(logits=...)``;
    the sites of partially observed columns must survive that."""
    bn = _small(name, bn_tools)
    rows, latent = _mixed_rows(bn, seed=4)
    partial = {v for v in latent if rows[v].notna().any()}
    assert partial
    _check_marginals(bn, rows, latent)


def _prior_edges(model, *args) -> set[tuple[str, str]]:
    deps = get_dependencies(model, args)["prior_dependencies"]
    return {(u, v) for v, ups in deps.items() for u in ups if u != v}


@pytest.mark.parametrize("name", PYRO_NETWORKS)
def test_prior_dependencies_are_the_network_edges(name, bn_tools):
    """Pyro's prior_dependencies name upstream *latent* sites only: with no data every edge
    appears; with data, exactly the edges whose parent has a missing cell."""
    bn = _small(name, bn_tools)
    assert _prior_edges(bn.model) == set(bn.dag.edges)
    rows, latent = _mixed_rows(bn, seed=5)
    assert _prior_edges(bn.model, rows) == {(u, v) for u, v in bn.dag.edges if u in latent}
    deps = get_dependencies(bn.model, (rows,))["prior_dependencies"]
    assert set(deps) == set(bn.variables)


@pytest.mark.parametrize("name", PYRO_NETWORKS)
def test_render_model_draws_every_edge(name, bn_tools):
    bn = _small(name, bn_tools)
    for data in (None, _mixed_rows(bn, seed=6)[0]):
        graph = pyro.render_model(bn.model, model_args=(data,))
        assert isinstance(graph, graphviz.Digraph)
        for u, v in bn.dag.edges:
            assert f"{u} -> {v}" in graph.source


def test_model_trace_shapes_and_observations():
    bn = pbn.student()
    rows = pd.DataFrame({"grade": ["A", None, "C"], "sat": ["low", "high", "high"]})
    trace = pyro.poutine.trace(bn.model).get_trace(rows)
    sites = [n for n, s in trace.nodes.items() if s["type"] == "sample" and n != "data"]
    assert sites == list(bn.variables)
    assert trace.nodes["sat"]["is_observed"]
    assert trace.nodes["sat"]["value"].tolist() == [0, 1, 1]
    assert not trace.nodes["grade"]["is_observed"]
    assert trace.nodes["grade"]["infer"].get("enumerate") == "parallel"
    # the known cells of a partly observed column are kept when the model runs forward
    assert trace.nodes["grade"]["value"][[0, 2]].tolist() == [0, 2]
    prior = pyro.poutine.trace(bn.model).get_trace(None, num_rows=4)
    assert all(prior.nodes[v]["value"].shape == (4,) for v in bn.variables)
