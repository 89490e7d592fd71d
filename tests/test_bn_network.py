"""The DiscreteBN container: structure, accessors, immutability and parameter counts."""

from __future__ import annotations

import itertools
import math

import networkx as nx
import pytest
import torch

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN


def _by_hand(bn: DiscreteBN) -> int:
    """Free parameters from the CPT shapes: (last axis - 1) times the product of the others."""
    return sum((bn.cpt(v).shape[-1] - 1) * math.prod(bn.cpt(v).shape[:-1]) for v in bn.variables)


def test_parameter_counts_of_asia():
    bn = pbn.asia()
    counts = bn.parameter_counts()
    # asia 1, smoke 1, tub 2, lung 2, bronc 2, either 4, xray 2, dysp 4
    assert counts.factorized == 18 == _by_hand(bn)
    assert counts.full_joint == 2**8 - 1 == 255
    assert counts.independent == 8
    assert "18" in str(counts) and "255" in str(counts)


def test_parameter_counts_of_student():
    counts = pbn.student().parameter_counts()
    # difficulty 1, intelligence 1, grade 2 * 4, sat 1 * 2, letter 1 * 3
    assert (counts.factorized, counts.full_joint, counts.independent) == (15, 47, 6)


@pytest.mark.parametrize("n", [1, 2, 5, 40])
def test_parameter_counts_of_a_markov_chain(n):
    names = [f"x{i}" for i in range(n)]
    dag = nx.DiGraph()
    dag.add_nodes_from(names)
    dag.add_edges_from(itertools.pairwise(names))
    table = [[0.9, 0.1], [0.3, 0.7]]
    bn = DiscreteBN(dag, {"x0": [0.5, 0.5], **{v: table for v in names[1:]}})
    counts = bn.parameter_counts()
    assert counts.factorized == 2 * n - 1 == _by_hand(bn)
    assert counts.full_joint == 2**n - 1  # exact integers, also beyond float range
    assert counts.independent == n


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_parameter_counts_of_random_networks(seed, bn_tools):
    bn = bn_tools.random_network(seed)
    counts = bn.parameter_counts()
    assert counts.factorized == _by_hand(bn)
    assert counts.full_joint == math.prod(bn.cardinalities.values()) - 1
    assert counts.independent == sum(c - 1 for c in bn.cardinalities.values())


def test_structure_accessors():
    bn = pbn.asia()
    assert isinstance(bn.dag, nx.DiGraph)
    assert set(bn.dag.nodes) == set(bn.variables)
    order = {v: i for i, v in enumerate(bn.variables)}
    assert all(order[u] < order[v] for u, v in bn.dag.edges)
    assert bn.parents("either") == ("lung", "tub")
    assert bn.parents("asia") == ()
    assert bn.states["xray"] == ("yes", "no")
    assert bn.cardinalities == {v: 2 for v in bn.variables}
    assert bn.cpt("dysp").shape == (2, 2, 2)
    assert bn.cpt("dysp").dtype == torch.float64
    assert "asia" in repr(bn) and "8 variables" in repr(bn)
    assert "either" in bn.describe()


def test_parents_follow_edge_order_or_the_given_order():
    dag = nx.DiGraph()
    dag.add_edges_from([("b", "c"), ("a", "c")])
    table = [[[1.0, 0.0], [0.5, 0.5]], [[0.2, 0.8], [0.0, 1.0]]]
    uniform = [0.5, 0.5]
    bn = DiscreteBN(dag, {"a": uniform, "b": uniform, "c": table})
    assert bn.parents("c") == ("b", "a")
    swapped = DiscreteBN(
        dag,
        {"a": uniform, "b": uniform, "c": torch.tensor(table).transpose(0, 1)},
        parents={"c": ("a", "b")},
    )
    assert swapped.parents("c") == ("a", "b")
    rows = bn.sample(200, seed=0)
    torch.testing.assert_close(swapped.log_prob(rows), bn.log_prob(rows))


def test_default_states_are_integers():
    bn = DiscreteBN(nx.DiGraph([("a", "b")]), {"a": [0.2, 0.3, 0.5], "b": [[1, 0]] * 3})
    assert bn.states == {"a": (0, 1, 2), "b": (0, 1)}
    assert float(bn.log_prob({"a": 2, "b": 0}).exp()) == pytest.approx(0.5)


def test_network_is_immutable():
    bn = pbn.sprinkler()
    table = bn.cpt("rain")
    table[0, 0] = 0.0
    assert float(bn.cpt("rain")[0, 0]) == 0.8
    with pytest.raises(nx.NetworkXError):
        bn.dag.add_edge("rain", "cloudy")
    with pytest.raises(TypeError):
        bn.states["rain"] = ("a", "b")  # type: ignore[index]


def test_network_does_not_alias_its_inputs():
    dag = nx.DiGraph([("a", "b")])
    f64 = torch.float64
    cpts = {
        "a": torch.tensor([0.5, 0.5], dtype=f64),
        "b": torch.tensor([[0.9, 0.1], [0.2, 0.8]], dtype=f64),
    }
    bn = DiscreteBN(dag, cpts)
    cpts["b"][0, 0] = 0.0
    dag.add_edge("b", "c")
    assert float(bn.cpt("b")[0, 0]) == 0.9
    assert set(bn.dag.nodes) == {"a", "b"}


def test_with_cpts_returns_a_new_network():
    bn = pbn.sprinkler()
    other = bn.with_cpts({"cloudy": [0.1, 0.9]})
    assert float(bn.cpt("cloudy")[0]) == 0.5
    assert float(other.cpt("cloudy")[0]) == 0.1
    assert other.parents("wet_grass") == bn.parents("wet_grass")
    with pytest.raises(ValueError, match="'cloudy'"):
        bn.with_cpts({"cloudy": [0.1, 0.8]})
