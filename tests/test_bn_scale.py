"""Bayesian networks past the small ones: elimination orders from a heap equal to the greedy
rescan they replace, no underflow on stars and chains of a thousand variables (closed forms), a
memory guard that refuses before allocating, and the importance road within its error bars."""

from __future__ import annotations

import itertools
import math
import random
import warnings

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from ppdgm.bn import TooLargeForExactInference, memory_limit
from ppdgm.bn.elimination import elimination_plan, greedy_order
from ppdgm.bn.examples import asia
from ppdgm.bn.network import DiscreteBN
from ppdgm.infer.estimate import UnreliableWeightsWarning, low_ess_threshold
from ppdgm.infer.stats import pareto_threshold

pytestmark = pytest.mark.usefixtures("one_thread")


def rescan_order(graph: nx.Graph, eliminate, cards, criterion) -> list[str]:
    """The greedy order by rescanning every candidate at every step (the definition)."""
    g = {v: set(graph.neighbors(v)) for v in graph.nodes}
    rank = {v: i for i, v in enumerate(eliminate)}
    remaining, order = set(eliminate), []
    while remaining:

        def score(v):
            nb = list(g[v])
            fill = sum(1 for i, a in enumerate(nb) for b in nb[i + 1 :] if b not in g[a])
            weight = math.prod(cards[u] for u in nb) * cards[v]
            return (fill, weight, rank[v]) if criterion == "min-fill" else (weight, fill, rank[v])

        v = min(remaining, key=score)
        nb = list(g[v])
        for i, a in enumerate(nb):
            g[a].discard(v)
            for b in nb[i + 1 :]:
                g[a].add(b)
                g[b].add(a)
        del g[v]
        remaining.remove(v)
        order.append(v)
    return order


@pytest.mark.parametrize("criterion", ["min-fill", "min-weight"])
@pytest.mark.parametrize("seed", range(6))
def test_the_heap_order_is_the_greedy_order(criterion: str, seed: int) -> None:
    rng = random.Random(seed)
    graph = nx.gnp_random_graph(40, 0.12, seed=seed)
    graph = nx.relabel_nodes(graph, {i: f"v{i:02d}" for i in graph})
    cards = {v: rng.choice([2, 3, 4]) for v in graph}
    eliminate = [v for v in sorted(graph) if rng.random() < 0.8]
    assert greedy_order(graph, eliminate, cards, criterion) == rescan_order(
        graph, eliminate, cards, criterion
    )


LEAF = ((0.99, 0.01), (0.01, 0.99))


def star(k: int, hub: tuple[float, float] = (0.3, 0.7)) -> DiscreteBN:
    dag = nx.DiGraph([("hub", f"leaf{i}") for i in range(k)])
    cpts = {"hub": list(hub), **{f"leaf{i}": [list(p) for p in LEAF] for i in range(k)}}
    return DiscreteBN(dag, cpts, {v: (0, 1) for v in dag}, name=f"star{k}")


@pytest.mark.parametrize("k", [400, 1000])
def test_a_star_of_a_thousand_leaves_does_not_underflow(k: int) -> None:
    bn = star(k)
    leaves = np.arange(k) % 2 == 0  # half the leaves say 0, half say 1: both hubs unlikely
    row = pd.DataFrame([{f"leaf{i}": int(v) for i, v in enumerate(leaves)}])
    given = [
        math.log(p) + sum(math.log(q[int(v)]) for v in leaves)
        for p, q in ((0.3, LEAF[0]), (0.7, LEAF[1]))
    ]
    exact = float(np.logaddexp(*given))
    assert exact < -745  # below the smallest float64: the product must be rescaled
    assert float(bn.log_prob(row)[0]) == pytest.approx(exact, rel=1e-12)
    posterior = bn.posterior(row, "hub")["hub"][0]
    expected = torch.softmax(torch.tensor(given, dtype=torch.float64), 0)
    torch.testing.assert_close(posterior, expected, rtol=1e-10, atol=1e-300)


def test_a_chain_of_a_thousand_variables_does_not_underflow() -> None:
    n = 1000
    transition = np.array([[0.99, 0.01], [0.02, 0.98]])
    dag = nx.DiGraph([(f"x{i}", f"x{i + 1}") for i in range(n - 1)])
    cpts = {"x0": [0.5, 0.5], **{f"x{i}": transition.tolist() for i in range(1, n)}}
    bn = DiscreteBN(dag, cpts, {v: (0, 1) for v in dag}, name="chain")
    values = [i % 2 for i in range(n)]  # a switch at every step: probability 0.01 or 0.02 each
    full = pd.DataFrame([{f"x{i}": v for i, v in enumerate(values)}])
    exact = math.log(0.5) + sum(math.log(transition[a, b]) for a, b in itertools.pairwise(values))
    assert exact < -3000
    assert float(bn.log_prob(full)[0]) == pytest.approx(exact, rel=1e-12)
    # the ends only: p(x_999 | x_0) is a matrix power
    ends = pd.DataFrame([{"x0": 0, f"x{n - 1}": 1}])
    power = np.linalg.matrix_power(transition, n - 1)
    assert float(bn.log_prob(ends)[0]) == pytest.approx(math.log(0.5 * power[0, 1]), rel=1e-12)


def wide(k: int = 10) -> DiscreteBN:
    """One child of ``k`` four-state roots: a table of ``2 * 4**k`` entries."""
    dag = nx.DiGraph([(f"r{i}", "c") for i in range(k)])
    rng = np.random.default_rng(0)
    table = rng.random((4,) * k + (2,))
    cpts = {f"r{i}": [0.25] * 4 for i in range(k)}
    cpts["c"] = table / table.sum(-1, keepdims=True)
    states = {v: ("a", "b", "c", "d") for v in dag}
    states["c"] = ("x", "y")
    return DiscreteBN(dag, cpts, states, name="wide")


def test_the_memory_guard_refuses_before_allocating(monkeypatch) -> None:
    bn = wide()
    rows = pd.DataFrame({"c": ["x", "y"], "r0": ["a", None]})
    exact = bn.log_prob(rows)  # fits the default limit (half of the memory)
    monkeypatch.setenv("PPDGM_MEMORY_LIMIT", "4M")
    assert memory_limit() == 4 * 2**20
    with pytest.raises(TooLargeForExactInference, match=r"needs .* more than the limit of 4\.0"):
        bn.log_prob(rows)
    with pytest.raises(TooLargeForExactInference, match='method="importance"'):
        bn.posterior(rows, "r1")
    with pytest.raises(TooLargeForExactInference, match="EM on wide"):
        bn.fit(bn.sample(20, seed=0).assign(r1=None))
    estimate = bn.log_prob(rows, method="importance", num_samples=4000, seed=0)  # the way out
    assert bool(((estimate.log_prob - exact).abs() < 4 * estimate.stderr).all())
    monkeypatch.setenv("PPDGM_MEMORY_LIMIT", "lots")
    with pytest.raises(ValueError, match="PPDGM_MEMORY_LIMIT='lots'"):
        memory_limit()


def test_the_plan_of_a_wide_network_reports_its_memory() -> None:
    plan = elimination_plan(wide(), ["c"], ())
    assert plan.least_memory >= 8 * 4**9  # the child's table, summed over one root
    plan.check_memory(plan.least_memory)
    with pytest.raises(TooLargeForExactInference, match="joins 11 variables"):
        plan.check_memory(plan.least_memory - 1)


def random_network(n: int, seed: int) -> DiscreteBN:
    rng = np.random.default_rng(seed)
    names = [f"v{i}" for i in range(n)]
    dag = nx.DiGraph()
    dag.add_nodes_from(names)
    for j in range(1, n):
        for i in rng.choice(j, size=min(j, 2), replace=False):
            dag.add_edge(names[i], names[j])
    cards = {v: int(rng.integers(2, 4)) for v in names}
    cpts = {}
    for v in names:
        parents = sorted(dag.predecessors(v), key=names.index)
        table = rng.dirichlet(np.ones(cards[v]), size=[cards[u] for u in parents] or None)
        cpts[v] = table
    parents = {v: tuple(sorted(dag.predecessors(v), key=names.index)) for v in names}
    states = {v: tuple(range(cards[v])) for v in names}
    return DiscreteBN(dag, cpts, states, parents=parents, name="random")


def test_the_importance_road_is_within_its_error_bars_or_says_it_is_not() -> None:
    bn = random_network(25, seed=1)
    rows = bn.sample(12, seed=2)
    rows = rows.mask(np.random.default_rng(3).random(rows.shape) < 0.7)  # 70 % missing
    exact = bn.log_prob(rows)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreliableWeightsWarning)
        estimate = bn.log_prob(rows, method="importance", num_samples=3000, seed=4)

    def reliable(found) -> torch.Tensor:  # what warn_unreliable does not flag
        k, ess = found.pareto_k, found.ess
        return (k <= pareto_threshold(3000)) | (k.isnan() & (ess >= low_ess_threshold(3000)))

    trusted = reliable(estimate)
    assert bool(trusted.all()) or caught
    z = ((estimate.log_prob - exact) / estimate.stderr)[trusted]
    assert int(trusted.sum()) >= 8 and float(z.abs().max()) < 4.5
    query = ["v3", "v24"]
    posterior = bn.posterior(rows, query)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableWeightsWarning)  # the same rows as above
        sampled = bn.posterior(rows, query, method="importance", num_samples=3000, seed=5)
    trusted = reliable(sampled)
    for v in query:
        error = (sampled.probs[v] - posterior[v]).abs()[trusted]
        assert bool((error <= 4.5 * sampled.stderr[v][trusted] + 1e-12).all())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableWeightsWarning)
        frame = bn.posterior(rows, query, method="importance", num_samples=100, as_frame=True)
    cards = bn.cardinalities
    assert list(frame.columns.get_level_values("variable")) == [
        v for v in query for _ in range(cards[v])
    ]


def test_the_importance_road_says_when_it_cannot_be_trusted() -> None:
    # a hub the prior almost rules out, which every leaf points to: the network is a poor
    # proposal (five draws in a thousand have the right hub and carry all the weight)
    bn = star(40, hub=(0.005, 0.995))
    row = pd.DataFrame([{f"leaf{i}": 0 for i in range(40)}])
    with pytest.warns(UnreliableWeightsWarning, match="unreliable for 1 of 1"):
        bn.posterior(row, "hub", method="importance", num_samples=1000, seed=0)
    bn = asia()
    row = pd.DataFrame([{"asia": "yes"}])
    impossible = pd.DataFrame([{"tub": "yes", "either": "no"}])  # either = tub or lung
    with pytest.raises(ValueError, match="none of the 200 samples is compatible"):
        bn.posterior(impossible, "lung", method="importance", num_samples=200, seed=0)
    with pytest.raises(ValueError, match="unknown method 'magic'"):
        bn.log_prob(row, method="magic")


def test_both_roads_to_several_marginals_agree() -> None:
    from ppdgm.bn.elimination import _observed_columns, _posterior_by_gradient, posterior

    bn = random_network(12, seed=6)
    rows = bn.sample(30, seed=7)
    rows = rows.mask(np.random.default_rng(8).random(rows.shape) < 0.5)
    query = list(bn.variables)
    observed = _observed_columns(bn, rows)
    backward = _posterior_by_gradient(bn, rows, observed, query, None, 0)
    chosen = posterior(bn, rows, query)
    for v in query:
        one = posterior(bn, rows, v)[v]
        torch.testing.assert_close(backward[v], one, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(chosen[v], one, rtol=1e-10, atol=1e-12)


def test_the_reduced_road_equals_the_batched_one() -> None:
    from ppdgm.bn.evidence import encode
    from ppdgm.bn.reduced import reduced_query

    bn = random_network(18, seed=9)
    rows = bn.sample(25, seed=10)
    rows = rows.mask(np.random.default_rng(11).random(rows.shape) < 0.5)
    codes = encode(bn, rows)
    factor, log_scale = reduced_query(bn, codes)
    torch.testing.assert_close(factor.log() + log_scale, bn.log_prob(rows), rtol=1e-12, atol=0)
    for q in ("v0", "v9", "v17"):
        factor, _ = reduced_query(bn, codes, q)
        expected = bn.posterior(rows, q)[q]
        torch.testing.assert_close(factor / factor.sum(-1, keepdim=True), expected)
    # a hub whose elimination meets more factors than numpy's einsum takes (40 observed leaves)
    hub = star(40)
    leaves = hub.sample(5, seed=12).drop(columns="hub")
    factor, log_scale = reduced_query(hub, encode(hub, leaves))
    torch.testing.assert_close(factor.log() + log_scale, hub.log_prob(leaves), rtol=1e-12, atol=0)
    factor, _ = reduced_query(hub, encode(hub, leaves), "hub")
    torch.testing.assert_close(
        factor / factor.sum(-1, keepdim=True), hub.posterior(leaves, "hub")["hub"]
    )
    # evidence of probability zero: -inf, as on the batched road
    either = asia()
    impossible = pd.DataFrame([{"tub": "yes", "either": "no"}, {"tub": "no"}])
    factor, log_scale = reduced_query(either, encode(either, impossible))
    torch.testing.assert_close(factor.log() + log_scale, either.log_prob(impossible))


def test_wide_networks_take_the_reduced_road() -> None:
    from ppdgm.bn import example
    from ppdgm.bn.elimination import _reduce

    water = example("water")
    rows = water.sample(30, seed=0)
    rows = rows.mask(np.random.default_rng(0).random(rows.shape) < 0.5)
    observed = [v for v in water.variables if rows[v].notna().any()]
    assert _reduce(water, observed, (), len(rows))  # cliques of 10^4-10^5 entries
    assert not _reduce(asia(), list(asia().variables), (), 1000)
    log_p = water.log_prob(rows)
    # the batched road on the same rows, forced: the same numbers
    from ppdgm.bn.elimination import _batches, _plan, execute

    plan = _plan(water, observed, ())
    batched = torch.cat(
        [
            factor.log() + scale
            for _, size, lam in _batches(water, rows, plan, 30)
            for factor, scale in [execute(plan, water.tables, lam, size)]
        ]
    )
    torch.testing.assert_close(log_p, batched, rtol=1e-12, atol=0)
