"""Ancestral sampling of ppdgm.bn: goodness of fit to the CPTs and the joint, seeds, edge cases."""

from __future__ import annotations

import itertools

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import chisquare

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN

#: Goodness-of-fit tests pass when the chi-square p-value exceeds this (seeds are fixed).
P_MIN = 1e-3


def _network(name: str, bn_tools) -> DiscreteBN:
    return bn_tools.named_network(name, nodes=(6, 8), cards=(2, 4))


def _codes(bn: DiscreteBN, frame: pd.DataFrame) -> np.ndarray:
    """State indices of a sampled frame, looked up by state name (not through the categorical)."""
    return np.stack(
        [np.array([bn.states[v].index(s) for s in frame[v].astype(object)]) for v in bn.variables],
        axis=1,
    )


def _goodness_of_fit(observed: np.ndarray, probs: np.ndarray) -> float:
    """The chi-square p-value of counts against probabilities; cells of probability zero must
    be empty and are left out of the test."""
    assert observed[probs == 0].sum() == 0, "a state of probability zero was sampled"
    keep = probs > 0
    if keep.sum() < 2:
        return 1.0
    expected = probs[keep] / probs[keep].sum() * observed[keep].sum()
    return float(chisquare(observed[keep], expected).pvalue)


@pytest.mark.parametrize(
    ("name", "rows"), [("asia", 100_000), ("student", 50_000), ("random30", 50_000)]
)
def test_conditional_frequencies_match_the_cpts(name, rows, bn_tools):
    """For each variable, the three most frequent parent configurations (with at least 5 expected
    rows in every possible cell) have child frequencies that fit the CPT row."""
    bn = _network(name, bn_tools)
    codes = _codes(bn, bn.sample(rows, seed=2024))
    column = {v: j for j, v in enumerate(bn.variables)}
    tested = 0
    for v in bn.variables:
        table = bn.cpt(v).numpy()
        parents = [column[u] for u in bn.parents(v)]
        configs, counts = np.unique(codes[:, parents], axis=0, return_counts=True)
        for config in configs[np.argsort(-counts)][:3]:
            rows_here = (codes[:, parents] == config).all(1)
            probs = table[tuple(config)]
            observed = np.bincount(codes[rows_here, column[v]], minlength=len(probs))
            if (probs[probs > 0] * rows_here.sum()).min() < 5:
                continue
            assert _goodness_of_fit(observed, probs) > P_MIN, (v, config)
            tested += 1
    assert tested >= len(bn.variables)


@pytest.mark.parametrize("name", ["sprinkler", "student", "asia"])
def test_joint_frequencies_match_the_joint(name, bn_tools):
    bn = _network(name, bn_tools)
    joint = bn_tools.joint_table(bn)
    codes = _codes(bn, bn.sample(50_000, seed=77))
    flat = np.ravel_multi_index(codes.T, joint.shape)
    observed = np.bincount(flat, minlength=joint.size)
    assert _goodness_of_fit(observed, joint.ravel()) > P_MIN


def test_frequencies_across_internal_batches():
    """More rows than one internal batch (2**18): every batch draws fresh numbers."""
    bn = pbn.sprinkler()
    frame = bn.sample(300_000, seed=5)
    codes = _codes(bn, frame)
    head, tail = codes[:1000], codes[2**18 : 2**18 + 1000]
    assert not np.array_equal(head, tail)
    observed = np.bincount(codes[:, bn.variables.index("cloudy")], minlength=2)
    assert _goodness_of_fit(observed, np.array([0.5, 0.5])) > P_MIN
    late = codes[2**18 :]
    observed = np.bincount(late[:, bn.variables.index("cloudy")], minlength=2)
    assert _goodness_of_fit(observed, np.array([0.5, 0.5])) > P_MIN


def test_same_seed_same_rows_and_different_seeds_differ():
    bn = pbn.asia()
    a, b = bn.sample(500, seed=1), bn.sample(500, seed=1)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(bn.sample(500, seed=2))


def test_seed_none_uses_the_global_torch_generator():
    bn = pbn.student()
    torch.manual_seed(0)
    a = bn.sample(200)
    torch.manual_seed(0)
    b = bn.sample(200)
    pd.testing.assert_frame_equal(a, b)
    assert not a.equals(bn.sample(200))


def test_output_columns_and_state_names():
    bn = pbn.student()
    frame = bn.sample(1000, seed=0)
    assert list(frame.columns) == list(bn.variables)
    assert len(frame) == 1000
    for v in bn.variables:
        assert isinstance(frame[v].dtype, pd.CategoricalDtype)
        assert list(frame[v].cat.categories) == list(bn.states[v])
        assert not frame[v].isna().any()
        assert set(frame[v].astype(object)) <= set(bn.states[v])


def test_integer_states(bn_tools):
    bn = bn_tools.random_network(3, integer_states=True)
    frame = bn.sample(300, seed=0)
    for v in bn.variables:
        assert bn.states[v] == tuple(range(len(bn.states[v])))
        assert set(frame[v].astype(object)) <= set(bn.states[v])
    # the sampled frame is valid evidence
    assert torch.isfinite(bn.log_prob(frame)).all()


def test_sample_zero_rows():
    bn = pbn.asia()
    frame = bn.sample(0, seed=0)
    assert frame.shape == (0, len(bn.variables))
    assert list(frame.columns) == list(bn.variables)
    assert bn.log_prob(frame).shape == (0,)


def test_zero_probability_states_never_appear():
    dag = nx.DiGraph([("a", "b"), ("b", "c")])
    cpts = {
        "a": [0.0, 0.5, 0.5, 0.0],
        "b": [[1.0, 0.0, 0.0], [0.0, 0.3, 0.7], [0.7, 0.3, 0.0], [0.0, 0.0, 1.0]],
        "c": [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]],
    }
    bn = DiscreteBN(dag, cpts)
    codes = _codes(bn, bn.sample(50_000, seed=9))
    a, b, c = codes.T
    assert set(a) == {1, 2}
    assert set(zip(a.tolist(), b.tolist(), strict=True)) == {(1, 1), (1, 2), (2, 0), (2, 1)}
    assert not ((b == 0) & (c == 0)).any() and not ((b == 1) & (c == 1)).any()
    # the logical OR of asia: either = yes whenever tub or lung is yes
    asia = pbn.asia()
    frame = asia.sample(20_000, seed=4).astype(object)
    forced = (frame["tub"] == "yes") | (frame["lung"] == "yes")
    assert (frame.loc[forced, "either"] == "yes").all()
    assert (frame.loc[~forced, "either"] == "no").all()


@pytest.mark.parametrize("name", ["student", "random31"])
def test_every_sampled_row_has_positive_probability(name, bn_tools):
    bn = _network(name, bn_tools)
    frame = bn.sample(2000, seed=1)
    assert torch.isfinite(bn.log_prob(frame)).all()


def test_pairwise_frequencies_match_exact_marginals():
    """A check through inference: p(grade, letter) from samples against the exact joint."""
    bn = pbn.student()
    frame = bn.sample(50_000, seed=13).astype(object)
    observed = np.array(
        [
            ((frame["grade"] == g) & (frame["letter"] == s)).sum()
            for g, s in itertools.product(bn.states["grade"], bn.states["letter"])
        ]
    )
    cells = pd.DataFrame(
        list(itertools.product(bn.states["grade"], bn.states["letter"])),
        columns=["grade", "letter"],
    )
    probs = bn.log_prob(cells).exp().numpy()
    assert probs.sum() == pytest.approx(1.0, abs=1e-12)
    assert _goodness_of_fit(observed, probs) > P_MIN
