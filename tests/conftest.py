"""Shared fixtures for the tests of ppdgm.bn: random networks, hidden cells, brute-force joints."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from types import SimpleNamespace

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN


def make_random_network(
    seed: int,
    *,
    nodes: tuple[int, int] = (6, 9),
    cards: tuple[int, int] = (2, 5),
    max_parents: int = 3,
    concentration: float = 1.0,
    integer_states: bool = False,
) -> DiscreteBN:
    """A random DAG with Dirichlet CPTs, deterministic in ``seed``.

    Node names are shuffled against the topological order and edges are added in a random
    order, so the parents' axis order differs from both the names and the topological order.
    """
    rng = np.random.default_rng(seed)
    n = int(rng.integers(nodes[0], nodes[1] + 1))
    names = [f"v{i}" for i in rng.permutation(n)]
    edges = []
    for j in range(1, n):
        k = int(rng.integers(0, min(j, max_parents) + 1))
        edges += [(names[i], names[j]) for i in rng.choice(j, size=k, replace=False)]
    edges = [edges[i] for i in rng.permutation(len(edges))]
    dag = nx.DiGraph()
    dag.add_nodes_from(names[i] for i in rng.permutation(n))
    dag.add_edges_from(edges)
    card = {v: int(rng.integers(cards[0], cards[1] + 1)) for v in names}
    cpts = {}
    for v in dag:
        shape = (*(card[u] for u in dag.predecessors(v)), card[v])
        cpts[v] = rng.dirichlet(np.full(card[v], concentration), size=shape[:-1])
    states = None
    if not integer_states:
        states = {v: tuple(f"{v}s{k}" for k in range(card[v])) for v in names}
    return DiscreteBN(dag, cpts, states, name=f"random{seed}")


def normalized(bn: DiscreteBN) -> DiscreteBN:
    """The network with every CPT row divided by its sum.

    BIF files round their numbers, so rows of some shipped networks (alarm, sachs) sum to one only
    within 1e-7; the joint is then not normalized and answers at the 1e-9 level would depend on
    which barren variables an engine prunes. Comparisons at 1e-9 use normalized tables.
    """
    return bn.with_cpts({v: bn.cpt(v) / bn.cpt(v).sum(-1, keepdim=True) for v in bn.variables})


def hide_cells(
    frame: pd.DataFrame, fraction: float, seed: int, always: tuple[str, ...] = ()
) -> pd.DataFrame:
    """A copy of ``frame`` (object dtype) with ``fraction`` of the cells set to None at random,
    and the columns ``always`` missing in every row."""
    rng = np.random.default_rng(seed)
    out = frame.astype(object).copy()
    mask = rng.random(out.shape) < fraction
    out = out.mask(mask, None)
    for c in always:
        out[c] = None
    return out


def joint_table(bn: DiscreteBN) -> np.ndarray:
    """The full joint ``p[i_1, ..., i_V]`` (axes in ``bn.variables`` order), by enumerating every
    joint state with itertools.product and multiplying CPT entries; independent of the engine."""
    variables = bn.variables
    position = {v: j for j, v in enumerate(variables)}
    tables = {v: bn.cpt(v).numpy() for v in variables}
    parents = {v: bn.parents(v) for v in variables}
    cards = [len(bn.states[v]) for v in variables]
    joint = np.empty(cards)
    for state in itertools.product(*(range(c) for c in cards)):
        p = 1.0
        for v in variables:
            index = tuple(state[position[u]] for u in (*parents[v], v))
            p *= tables[v][index]
        joint[state] = p
    return joint


def brute_log_prob(bn: DiscreteBN, joint: np.ndarray, row: pd.Series) -> float:
    """``log p(observed cells of row)``: the log of the joint summed over the row's completions."""
    return math.log(joint[_evidence_index(bn, row)].sum())


def brute_posterior(bn: DiscreteBN, joint: np.ndarray, row: pd.Series, variable: str) -> np.ndarray:
    """``p(variable | observed cells of row)`` by summing the joint over the row's completions."""
    sub = joint[_evidence_index(bn, row)]
    # the sliced array keeps one axis per missing variable, in bn.variables order
    kept = [v for v in bn.variables if _missing(row.get(v))]
    if variable not in kept:
        out = np.zeros(len(bn.states[variable]))
        out[bn.states[variable].index(row[variable])] = 1.0
        return out
    axis = kept.index(variable)
    marginal = sub.sum(axis=tuple(a for a in range(sub.ndim) if a != axis))
    return marginal / marginal.sum()


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _evidence_index(bn: DiscreteBN, row: pd.Series) -> tuple:
    return tuple(
        slice(None) if _missing(row.get(v)) else bn.states[v].index(row[v]) for v in bn.variables
    )


def named_network(name: str, **shape: tuple[int, int]) -> DiscreteBN:
    """An example network by name, or ``random<seed>`` for a random one (``shape``: the sizes
    :func:`make_random_network` takes)."""
    if name.startswith("random"):
        return make_random_network(int(name.removeprefix("random")), max_parents=2, **shape)
    return pbn.example(name)


@pytest.fixture(scope="session")
def bn_tools() -> SimpleNamespace:
    """The helpers of this file, for test modules (which should not import conftest)."""
    return SimpleNamespace(
        random_network=make_random_network,
        named_network=named_network,
        normalized=normalized,
        hide_cells=hide_cells,
        joint_table=joint_table,
        brute_log_prob=brute_log_prob,
        brute_posterior=brute_posterior,
    )


@pytest.fixture(scope="session")
def example_network() -> Callable[[str], DiscreteBN]:
    """``ppdgm.bn.example`` cached for the session (one network object per name for every test)."""
    cache: dict[str, DiscreteBN] = {}

    def load(name: str) -> DiscreteBN:
        if name not in cache:
            cache[name] = pbn.example(name)
        return cache[name]

    return load


@pytest.fixture
def one_thread():
    """Small tensors: one thread is as fast, and does not wait on a busy second core."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def float64():
    """Float64 by default and an empty Pyro parameter store, restored afterwards."""
    import pyro

    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    pyro.clear_param_store()
    yield
    torch.set_default_dtype(previous)
