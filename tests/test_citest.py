"""Empirical conditional-independence tests against scipy, pgmpy and the graphs they check."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats as st
import torch
from pgmpy.estimators.CITests import pearsonr

from ppdgm.bn import asia
from ppdgm.graph.citest import CITestResult, check_independencies, fisher_z_test, g_test
from ppdgm.independence import Independence, d_separated

# ------------------------------------------------------------------------------ the statistics


def g_test_by_scipy(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, int, float]:
    """Sums scipy's G statistic (no continuity correction) over the strata of z."""
    keys = [tuple(row) for row in z] if z.shape[1] else [()] * len(x)
    total, dof = 0.0, 0
    for key in set(keys):
        rows = np.array([k == key for k in keys])
        table = pd.crosstab(x[rows, 0], y[rows, 0]).to_numpy()
        if min(table.shape) > 1:
            g, _, d, _ = st.chi2_contingency(table, correction=False, lambda_="log-likelihood")
            total, dof = total + g, dof + d
    return total, dof, float(st.chi2.sf(total, dof)) if dof else 1.0


@pytest.mark.parametrize("k", [0, 1, 2])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_g_test_agrees_with_scipy(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 400
    z = rng.integers(0, 3, size=(n, k))
    shift = z.sum(axis=1, keepdims=True) if k else 0
    x = (rng.integers(0, 3, size=(n, 1)) + shift) % 4
    y = rng.integers(0, 2 + seed, size=(n, 1)) + (x == 0) * seed
    if k:  # a stratum where x takes a single state: it contributes no degrees of freedom
        x[z[:, 0] == 2] = 1
    ours = g_test(x, y, z)
    expected = g_test_by_scipy(x, y, z)
    assert ours[1] == expected[1]
    np.testing.assert_allclose(ours[0], expected[0], rtol=1e-10)
    np.testing.assert_allclose(ours[2], expected[2], rtol=1e-8)


def test_g_test_joint_variables() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 2, size=(300, 2))
    y = rng.integers(0, 3, size=(300, 1))
    joint = (x[:, :1] * 2 + x[:, 1:]).astype(float)  # the pair as one four-state variable
    assert g_test(x, y, np.empty((300, 0))) == pytest.approx(
        g_test_by_scipy(joint, y, np.empty((300, 0)))
    )


def partial_correlation_by_precision(data: np.ndarray) -> float:
    """-P_01 / sqrt(P_00 P_11), P the inverse covariance of (x, y, z...)."""
    precision = np.linalg.inv(np.cov(data, rowvar=False))
    return -precision[0, 1] / np.sqrt(precision[0, 0] * precision[1, 1])


@pytest.mark.parametrize("k", [0, 1, 3])
def test_fisher_z_agrees_with_the_precision_matrix_and_pgmpy(k: int) -> None:
    rng = np.random.default_rng(k)
    n = 500
    z = rng.normal(size=(n, k))
    x = z.sum(axis=1, keepdims=True) + rng.normal(size=(n, 1))
    y = 0.1 * x + (z[:, :1] if k else 0.0) + rng.normal(size=(n, 1))
    stat, p = fisher_z_test(x, y, z)
    r = partial_correlation_by_precision(np.column_stack([x, y, z]))
    expected_stat = abs(np.arctanh(r)) * np.sqrt(n - k - 3)
    np.testing.assert_allclose(stat, expected_stat, rtol=1e-9)
    np.testing.assert_allclose(p, 2 * st.norm.sf(expected_stat), rtol=1e-8)
    # pgmpy regresses without an intercept: centred data make that the same regression
    data = np.column_stack([x, y, z])
    frame = pd.DataFrame(data - data.mean(axis=0), columns=["x", "y", *map(str, range(k))])
    coefficient, _ = pearsonr("x", "y", [str(i) for i in range(k)], frame, boolean=False)
    np.testing.assert_allclose(coefficient, r, rtol=1e-9)


def test_fisher_z_sets_use_bonferroni() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 2))
    y = rng.normal(size=(400, 3))
    _, p = fisher_z_test(x, y, np.empty((400, 0)))
    pairs = [
        fisher_z_test(x[:, [i]], y[:, [j]], np.empty((400, 0)))[1]
        for i in range(2)
        for j in range(3)
    ]
    assert p == pytest.approx(min(1.0, 6 * min(pairs)))


def test_p_values_are_uniform_under_independence() -> None:
    """Calibration: 300 tests of true independencies, both tests; KS against U(0, 1)."""
    rng = np.random.default_rng(11)
    g_values, z_values = [], []
    for _ in range(300):
        z = rng.integers(0, 2, size=(400, 1))
        x = (rng.random((400, 1)) < 0.3 + 0.4 * z).astype(int)
        y = (rng.random((400, 1)) < 0.6 - 0.3 * z).astype(int)
        g_values.append(g_test(x, y, z)[2])
        c = rng.normal(size=(200, 1))
        z_values.append(
            fisher_z_test(c + rng.normal(size=(200, 1)), c + rng.normal(size=(200, 1)), c)[1]
        )
    assert st.kstest(g_values, "uniform").pvalue > 0.001
    assert st.kstest(z_values, "uniform").pvalue > 0.001


# ----------------------------------------------------------------------- sampling and testing
TRUE_IN_ASIA = [
    ("asia", "smoke"),
    ("xray", "dysp", "either"),
    ("smoke", "dysp", ["bronc", "either"]),
    ("bronc", "either", "smoke"),
    ("xray", ["bronc", "smoke"], "either"),
]
FALSE_IN_ASIA = [
    ("smoke", "dysp"),
    ("tub", "lung", "either"),
    ("smoke", "dysp", "bronc"),
    ("bronc", "either"),
]


def test_network_independencies_hold_and_dependencies_are_caught() -> None:
    bn = asia()
    results = check_independencies(bn, TRUE_IN_ASIA + FALSE_IN_ASIA, num_samples=20000, seed=0)
    assert [r.statement for r in results] == [
        Independence(*s) for s in TRUE_IN_ASIA + FALSE_IN_ASIA
    ]
    for r in results:
        assert r.method == "G-test" and r.num_samples == 20000
        assert r.d_separated is d_separated(bn, r.statement.xs, r.statement.ys, r.statement.given)
        assert r.p_value > 0.01 if r.d_separated else r.p_value < 1e-4, r
    assert [r.d_separated for r in results] == [True] * 5 + [False] * 4


def test_a_network_sample_is_tested_like_the_data_frame() -> None:
    bn = asia()
    frame = bn.sample(5000, seed=3)
    from_frame = check_independencies(frame, [("tub", "smoke", "lung")])[0]
    from_network = check_independencies(bn, ("tub", "smoke", "lung"), num_samples=5000, seed=3)[0]
    assert from_frame.statistic == pytest.approx(from_network.statistic)
    assert from_frame.d_separated is None and from_network.d_separated is True
    holes = frame.astype(object)
    holes.loc[:99, "tub"] = None
    assert check_independencies(holes, [("tub", "smoke")])[0].num_samples == 4900


def linear_gaussian() -> None:
    a = pyro.sample("a", dist.Normal(0.0, 1.0))
    b = pyro.sample("b", dist.Normal(a, 1.0))
    c = pyro.sample("c", dist.Normal(b, 1.0))
    d = pyro.sample("d", dist.Normal(a, 1.0))
    pyro.sample("e", dist.Normal(c + d, 1.0), obs=torch.tensor(0.0))


def test_continuous_program() -> None:
    statements = [
        ("c", "d", "b"),
        ("a", "c", "b"),
        ("a", "e", ["c", "d"]),
        ("c", "d", ["b", "e"]),
        ("a", "e"),
        ("b", "d"),
    ]
    results = check_independencies(linear_gaussian, statements, num_samples=4000, seed=0)
    assert [r.d_separated for r in results] == [True, True, True, False, False, False]
    for r in results:
        assert r.method == "Fisher z" and r.dof is None
        assert r.p_value > 0.01 if r.d_separated else r.p_value < 1e-6, r


def test_program_with_a_plate_and_discrete_sites() -> None:
    def mixture(n: int) -> None:
        with pyro.plate("data", n):
            z = pyro.sample("z", dist.Bernoulli(0.5))
            pyro.sample("x1", dist.Bernoulli(0.2 + 0.6 * z))
            pyro.sample("x2", dist.Bernoulli(0.7 - 0.5 * z))
        pyro.sample("global", dist.Normal(0.0, 1.0))

    true, false = check_independencies(
        mixture, [("x1", "x2", "z"), ("x1", "x2")], 10, num_samples=1000
    )
    assert true.method == "G-test" and true.num_samples == 10000 and true.p_value > 0.01
    assert false.p_value < 1e-6
    with pytest.raises(ValueError, match=r"equal shapes, got x1 \(10,\), global \(\)"):
        check_independencies(mixture, [("x1", "global")], 10, num_samples=100)


def test_a_program_that_does_not_broadcast_is_sampled_one_draw_at_a_time() -> None:
    def scalar_only() -> None:
        a = pyro.sample("a", dist.Normal(0.0, 1.0))
        b = pyro.sample("b", dist.Normal(float(a), 1.0))  # float(): no batching possible
        pyro.sample("c", dist.Normal(b, 1.0))

    (result,) = check_independencies(scalar_only, [("a", "c", "b")], num_samples=300, seed=1)
    assert result.num_samples == 300 and result.p_value > 0.01


def test_random_state_and_determinism() -> None:
    torch.manual_seed(7)
    before = torch.get_rng_state()
    first = check_independencies(linear_gaussian, [("a", "c")], num_samples=500, seed=4)
    assert torch.equal(before, torch.get_rng_state())
    again = check_independencies(linear_gaussian, [("a", "c")], num_samples=500, seed=4)
    other = check_independencies(linear_gaussian, [("a", "c")], num_samples=500, seed=5)
    assert first == again and first != other


def test_result_text() -> None:
    result = CITestResult(Independence("a", "b", "c"), "G-test", 3.14159, 2, 0.2079, 100, True)
    assert (
        str(result)
        == "a ⊥ b | c: G-test G = 3.14, dof 2, p = 0.208 (100 samples; graph: d-separated)"
    )


# ------------------------------------------------------------------------------ bad input
def test_bad_input() -> None:
    bn = asia()
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['smok'\] in xs"):
        check_independencies(bn, [("smok", "tub")], num_samples=100)
    with pytest.raises(ValueError, match=r"\['tub'\] appear in both ys and given"):
        check_independencies(bn, [("smoke", "tub", "tub")], num_samples=100)
    with pytest.raises(ValueError, match="a tuple"):
        check_independencies(bn, ["smoke"], num_samples=100)
    with pytest.raises(ValueError, match=r"unknown variable\(s\) \['q'\] in given"):
        check_independencies(pd.DataFrame({"a": [1, 2], "b": [2, 1]}), [("a", "b", "q")])

    def vector() -> None:
        pyro.sample("v", dist.Dirichlet(torch.ones(3)))
        pyro.sample("s", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match=r"site 'v' is vector-valued \(event shape \(3,\)\)"):
        check_independencies(vector, [("v", "s")], num_samples=100)

    def broken() -> None:
        raise KeyError("column")

    with pytest.raises(ValueError, match="broken' failed before its first site: KeyError"):
        check_independencies(broken, [("a", "b")])
    with pytest.raises(ValueError, match="too few"):
        fisher_z_test(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)))
    with pytest.raises(TypeError, match="DiscreteBN"):
        check_independencies(nx.DiGraph([("a", "b")]), [("a", "b")])
