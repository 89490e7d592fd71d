"""ppdgm.estimate against closed forms (probabilistic PCA), brute-force enumeration (Gaussian
mixtures, networks with hidden nodes), Pyro's own estimators, and bad input.

Monte Carlo comparisons use fixed seeds and tolerances of four reported standard errors (a false
failure has probability below 1e-4 per comparison) unless a test says otherwise.
"""

from __future__ import annotations

import math
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI, RenyiELBO, Trace_ELBO
from pyro.infer.autoguide import AutoNormal
from pyro.infer.importance import vectorized_importance_weights
from torch import nn

import ppdgm.bn as pbn
from ppdgm.estimate import (
    Estimate,
    LogLikelihood,
    LowESSWarning,
    ParetoKWarning,
    comparison_table,
)
from ppdgm.infer.stats import MeanAccumulator, WeightAccumulator, pareto_k, tail_size

Z_TOL = 4.0


pytestmark = pytest.mark.usefixtures("float64")


# ------------------------------------------------------------------------ the closed forms
class PPCA:
    """Probabilistic PCA ``x = W z + mu + eps``, ``z ~ N(0, I)``, ``eps ~ N(0, sigma^2 I)``:
    marginal ``N(mu, W W^T + sigma^2 I)``, posterior ``N(M^-1 W^T (x - mu), sigma^2 M^-1)`` with
    ``M = W^T W + sigma^2 I``."""

    def __init__(self, dim: int = 5, latent: int = 2, sigma: float = 0.5, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(dim, latent, generator=g, dtype=torch.float64)
        self.mu = torch.randn(dim, generator=g, dtype=torch.float64)
        self.sigma = sigma
        self.dim, self.latent = dim, latent
        self.marginal = dist.MultivariateNormal(
            self.mu, self.W @ self.W.T + sigma**2 * torch.eye(dim)
        )
        self.M_inv = torch.linalg.inv(self.W.T @ self.W + sigma**2 * torch.eye(latent))

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([self.latent]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, self.sigma).to_event(1), obs=x)

    def posterior_loc(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mu) @ self.W @ self.M_inv.T

    def posterior_guide(self, x: torch.Tensor) -> None:
        cov = self.sigma**2 * self.M_inv
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.MultivariateNormal(self.posterior_loc(x), cov))

    def diagonal(self, x: torch.Tensor, inflate: float = 1.5, shift: float = 0.2):
        """A worse guide: the posterior's marginal scales inflated, its mean shifted."""
        scale = (self.sigma**2 * self.M_inv).diagonal().sqrt() * inflate
        return self.posterior_loc(x) + shift, scale.expand(x.shape[0], -1)

    def worse_guide(self, x: torch.Tensor) -> None:
        loc, scale = self.diagonal(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    def elbo(self, x: torch.Tensor) -> torch.Tensor:
        """The ELBO of :meth:`worse_guide` in closed form, per point."""
        m, s = self.diagonal(x)
        resid = x - m @ self.W.T - self.mu
        expected = -0.5 * self.dim * math.log(2 * math.pi * self.sigma**2) - (
            resid.pow(2).sum(-1) + (s**2 @ self.W.pow(2).sum(0))
        ) / (2 * self.sigma**2)
        kl = 0.5 * (s**2 + m**2 - 1 - torch.log(s**2)).sum(-1)
        return expected - kl

    def data(self, n: int, seed: int = 1) -> torch.Tensor:
        torch.manual_seed(seed)
        return self.marginal.sample((n,))


@pytest.fixture(scope="module")
def ppca() -> PPCA:
    return PPCA()


def gmm_model(x: torch.Tensor) -> None:
    weights = torch.tensor([0.2, 0.5, 0.3])
    locs = torch.tensor([-2.0, 0.0, 3.0])
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(weights))
        pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)


def gmm_brute(x: torch.Tensor) -> torch.Tensor:
    weights = torch.tensor([0.2, 0.5, 0.3])
    locs = torch.tensor([-2.0, 0.0, 3.0])
    total = torch.zeros_like(x)
    for c in range(3):
        total += weights[c] * dist.Normal(locs[c], 1.0).log_prob(x).exp()
    return total.log()


def assert_within(est: Estimate, exact: torch.Tensor, z: float = Z_TOL) -> None:
    """Every point within ``z`` of its stderr, plus the bias of a log of a mean (stderr^2)."""
    gap = (est.log_prob - exact).abs()
    assert bool((gap <= z * est.stderr + est.stderr**2 + 1e-12).all()), (gap / est.stderr).max()


# ----------------------------------------------------------------------- probabilistic PCA
@pytest.mark.parametrize("k", [1, 7, 1000])
def test_posterior_guide_is_exact_for_any_k(ppca: PPCA, k: int) -> None:
    x = ppca.data(50)
    exact = ppca.marginal.log_prob(x)
    pyro.set_rng_seed(k)
    est = LogLikelihood(ppca.model, ppca.posterior_guide, num_samples=k)(x)
    torch.testing.assert_close(est.log_prob, exact, atol=1e-6, rtol=0)
    assert est.log_prob.dtype == torch.float64 and est.log_prob.shape == (50,)
    if k > 1:
        assert float(est.stderr.max()) < 1e-6
        torch.testing.assert_close(est.ess, torch.full((50,), float(k)))
    elbo = LogLikelihood(
        ppca.model, ppca.posterior_guide, method="elbo", num_samples=k, analytic_kl=False
    )(x)
    torch.testing.assert_close(elbo.log_prob, exact, atol=1e-6, rtol=0)


def test_worse_guide_orders_the_bounds(ppca: PPCA) -> None:
    """ELBO = E[IWAE_1] < IWAE_10 < IWAE_1000 -> exact, on 2,000 points (the gaps grow like N,
    the noise like sqrt(N))."""
    x = ppca.data(2000)
    exact = float(ppca.marginal.log_prob(x).sum())
    closed_elbo = float(ppca.elbo(x).sum())
    pyro.set_rng_seed(0)
    est = {k: LogLikelihood(ppca.model, ppca.worse_guide, num_samples=k)(x) for k in (1, 10, 1000)}
    elbo = LogLikelihood(ppca.model, ppca.worse_guide, method="elbo", num_samples=1000)(x)
    assert abs(elbo.total - closed_elbo) < Z_TOL * elbo.total_stderr
    # a one-sample estimate has the spread of one log weight: sqrt(K) times the ELBO's stderr
    sd_one = math.sqrt(1000 * float(elbo.stderr.pow(2).sum()))
    assert abs(est[1].total - closed_elbo) < Z_TOL * sd_one
    assert est[10].total > closed_elbo + Z_TOL * (sd_one + est[10].total_stderr)
    assert est[1000].total > est[10].total + Z_TOL * (est[10].total_stderr + est[1000].total_stderr)
    bias = float(est[1000].stderr.pow(2).sum())
    assert abs(est[1000].total - exact) < Z_TOL * est[1000].total_stderr + bias
    assert elbo.total < est[10].total < est[1000].total <= exact + Z_TOL * est[1000].total_stderr


def test_elbo_analytic_kl_matches_closed_form(ppca: PPCA) -> None:
    x = ppca.data(200)
    closed = ppca.elbo(x)
    pyro.set_rng_seed(1)
    analytic = LogLikelihood(ppca.model, ppca.worse_guide, method="elbo", num_samples=200)(x)
    sampled = LogLikelihood(
        ppca.model, ppca.worse_guide, method="elbo", num_samples=200, analytic_kl=False
    )(x)
    for est in (analytic, sampled):
        z = (est.log_prob - closed) / est.stderr
        assert float(z.abs().max()) < 4.5  # 200 points: P(any |z| > 4.5) < 2e-3
        assert abs(est.total - float(closed.sum())) < Z_TOL * est.total_stderr


def test_stderr_coverage(ppca: PPCA) -> None:
    """Over 3 seeds x 2,000 independent repetitions, the exact value lies within +-2 reported
    stderr in 95.4% of cases for a normal estimate; the tolerance [0.93, 0.975] allows the
    delta method's approximation and 6,000 draws' binomial noise (sd 0.003)."""
    x = ppca.data(1).expand(2000, -1)  # one point repeated: independent samples for each copy
    exact = ppca.marginal.log_prob(x[:1])
    covered = []
    for seed in range(3):
        pyro.set_rng_seed(seed)
        est = LogLikelihood(ppca.model, ppca.worse_guide, num_samples=300)(x)
        covered.append(((est.log_prob - exact).abs() <= 2 * est.stderr).double())
        elbo = LogLikelihood(ppca.model, ppca.worse_guide, method="elbo", num_samples=50)(x)
        covered_elbo = ((elbo.log_prob - ppca.elbo(x[:1])).abs() <= 2 * elbo.stderr).double()
        assert 0.93 <= float(covered_elbo.mean()) <= 0.975
    assert 0.93 <= float(torch.cat(covered).mean()) <= 0.975


def test_prior_proposal_converges(ppca: PPCA) -> None:
    model = PPCA(dim=3, latent=1, sigma=1.0, seed=2)
    x = model.data(20)
    pyro.set_rng_seed(0)
    est = LogLikelihood(model.model, num_samples=20_000, chunk_size=5000)(x)
    assert_within(est, model.marginal.log_prob(x))
    assert est.pareto_k is not None and bool((est.pareto_k < 0.5).all())


def test_pareto_warning_for_a_light_tailed_proposal(ppca: PPCA) -> None:
    """A proposal narrower than the posterior: the weights have a heavy tail."""
    x = ppca.data(20)

    def narrow(x: torch.Tensor) -> None:
        scale = (ppca.sigma**2 * ppca.M_inv).diagonal().sqrt() * 0.3
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(ppca.posterior_loc(x), scale).to_event(1))

    pyro.set_rng_seed(0)
    with pytest.warns(ParetoKWarning, match=r"unreliable for \d+ of 20 data points"):
        est = LogLikelihood(ppca.model, narrow, num_samples=2000)(x)
    assert float(est.pareto_k.max()) > 0.7
    assert "Pareto k           max" in est.summary()


# ------------------------------------------------------------------------ guides of all kinds
def test_autonormal_guide(ppca: PPCA) -> None:
    x = ppca.data(20)
    guide = AutoNormal(ppca.model)
    pyro.set_rng_seed(0)
    svi = SVI(ppca.model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
    for _ in range(300):
        svi.step(x)
    est = LogLikelihood(ppca.model, guide, num_samples=2000)(x)
    assert_within(est, ppca.marginal.log_prob(x))
    elbo = LogLikelihood(ppca.model, guide, method="elbo", num_samples=2000)(x)
    assert bool((elbo.log_prob < est.log_prob).all())


class Encoder(nn.Module):
    """An amortized guide's network: ``x -> (loc, scale)`` of a diagonal Gaussian."""

    def __init__(self, dim: int, latent: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, latent)
        self.log_scale = nn.Parameter(torch.zeros(latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.linear(x), self.log_scale.exp().expand(*x.shape[:-1], -1)


def test_amortized_guide(ppca: PPCA) -> None:
    encoder = Encoder(ppca.dim, ppca.latent).double()
    with torch.no_grad():  # the exact posterior mean, a diagonal scale: close, not exact
        encoder.linear.weight.copy_(ppca.M_inv @ ppca.W.T)
        encoder.linear.bias.copy_(-ppca.M_inv @ ppca.W.T @ ppca.mu)
        encoder.log_scale.copy_((ppca.sigma**2 * ppca.M_inv).diagonal().sqrt().log() + 0.1)

    def guide(x: torch.Tensor) -> None:
        pyro.module("encoder", encoder)
        loc, scale = encoder(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    x = ppca.data(30)
    pyro.set_rng_seed(0)
    est = LogLikelihood(ppca.model, guide, num_samples=500)(x)
    assert_within(est, ppca.marginal.log_prob(x))
    assert float(est.ess.min()) > 100


# ------------------------------------------------------------------ mixtures and networks
def test_gaussian_mixture_exact_and_importance() -> None:
    x = torch.linspace(-5, 6, 23)
    exact = LogLikelihood(gmm_model, method="exact")(x)
    torch.testing.assert_close(exact.log_prob, gmm_brute(x), atol=1e-12, rtol=0)
    assert exact.ess is None and bool((exact.stderr == 0).all())
    pyro.set_rng_seed(0)
    est = LogLikelihood(gmm_model, num_samples=4000)(x)
    assert_within(est, gmm_brute(x))
    assert est.pareto_k is not None and bool(torch.isnan(est.pareto_k).all())  # 3 values only


def global_choice_model(x: torch.Tensor) -> None:
    """A global discrete choice between two sets of cluster locations, local assignments."""
    locs = torch.tensor([[-2.0, 1.0], [0.0, 4.0]])
    g = pyro.sample("g", dist.Categorical(torch.tensor([0.3, 0.7])))
    with pyro.plate("data", len(x)):
        c = pyro.sample("c", dist.Categorical(torch.tensor([0.6, 0.4])))
        pyro.sample("x", dist.Normal(locs[g, c], 1.0), obs=x)


def test_global_latent_gives_each_points_own_marginal() -> None:
    """log p(x_i) = log sum_g p(g) sum_c p(c) p(x_i | g, c), the global summed out per point."""
    x = torch.tensor([-2.5, 0.3, 1.2, 5.0])
    locs = torch.tensor([[-2.0, 1.0], [0.0, 4.0]])
    brute = torch.zeros(4)
    for g, pg in enumerate([0.3, 0.7]):
        for c, pc in enumerate([0.6, 0.4]):
            brute += pg * pc * dist.Normal(locs[g, c], 1.0).log_prob(x).exp()
    exact = LogLikelihood(global_choice_model, method="exact")(x)
    torch.testing.assert_close(exact.log_prob, brute.log(), atol=1e-12, rtol=0)
    pyro.set_rng_seed(0)
    est = LogLikelihood(global_choice_model, num_samples=5000)(x)
    assert_within(est, brute.log())


def hidden_asia() -> tuple[pbn.DiscreteBN, pd.DataFrame]:
    bn = pbn.asia()
    rows = bn.sample(40, seed=0).astype(object)
    rows[["tub", "either", "bronc"]] = None  # hidden nodes
    rows.iloc[::3, 0] = None  # and some missing cells
    return bn, rows


def test_network_exact_matches_log_prob_and_enumeration(bn_tools: SimpleNamespace) -> None:
    bn, rows = hidden_asia()
    joint = bn_tools.joint_table(bn)
    brute = torch.tensor([bn_tools.brute_log_prob(bn, joint, row) for _, row in rows.iterrows()])
    own = LogLikelihood(bn.model, method="exact")(rows)  # uses bn.log_prob
    enumerated = LogLikelihood(lambda d: bn.model(d), method="exact")(rows)  # TraceEnum
    torch.testing.assert_close(own.log_prob, bn.log_prob(rows), atol=0, rtol=0)
    torch.testing.assert_close(enumerated.log_prob, brute, atol=1e-10, rtol=0)
    torch.testing.assert_close(own.log_prob, brute, atol=1e-10, rtol=0)


def test_random_network_with_hidden_cells(bn_tools: SimpleNamespace) -> None:
    bn = bn_tools.random_network(5, nodes=(6, 7), cards=(2, 3))
    rows = bn_tools.hide_cells(bn.sample(30, seed=1), 0.4, seed=2, always=(bn.variables[1],))
    joint = bn_tools.joint_table(bn)
    brute = torch.tensor([bn_tools.brute_log_prob(bn, joint, row) for _, row in rows.iterrows()])
    enumerated = LogLikelihood(lambda d: bn.model(d), method="exact")(rows)
    torch.testing.assert_close(enumerated.log_prob, brute, atol=1e-10, rtol=0)
    pyro.set_rng_seed(3)
    est = LogLikelihood(bn.model, num_samples=3000)(rows)
    assert_within(est, brute)


def test_network_importance_and_elbo_converge() -> None:
    bn, rows = hidden_asia()
    exact = bn.log_prob(rows)
    pyro.set_rng_seed(0)
    est = LogLikelihood(bn.model, num_samples=3000)(rows)
    assert_within(est, exact)
    elbo = LogLikelihood(bn.model, method="elbo", num_samples=3000)(rows)
    assert bool((elbo.log_prob <= exact + Z_TOL * elbo.stderr).all())
    assert elbo.total < est.total


# -------------------------------------------------------------- per data point, unlike Pyro
def test_batch_equals_separate_calls(ppca: PPCA) -> None:
    x = torch.linspace(-5, 6, 7)
    batch = LogLikelihood(gmm_model, method="exact")(x).log_prob
    single = torch.cat(
        [LogLikelihood(gmm_model, method="exact")(x[i : i + 1]).log_prob for i in range(7)]
    )
    torch.testing.assert_close(batch, single, atol=1e-14, rtol=0)

    xs = ppca.data(6)
    pyro.set_rng_seed(0)
    estimator = LogLikelihood(ppca.model, ppca.worse_guide, num_samples=2000)
    batch_est = estimator(xs)
    for i in range(6):
        one = estimator(xs[i : i + 1])
        gap = abs(float(one.log_prob[0] - batch_est.log_prob[i]))
        assert gap < Z_TOL * math.hypot(float(one.stderr[0]), float(batch_est.stderr[i]))


def test_pyro_vectorized_importance_weights_sums_over_points_first(ppca: PPCA) -> None:
    """``vectorized_importance_weights`` gives ``log mean_k prod_i w_ik``: far below the
    per-point bound, and not the sum of its own single-point values."""
    x = ppca.data(30)
    exact = float(ppca.marginal.log_prob(x).sum())
    pyro.set_rng_seed(0)
    with torch.no_grad():
        log_w, _, _ = vectorized_importance_weights(
            ppca.model, ppca.worse_guide, x, num_samples=1000, max_plate_nesting=1
        )
    pyro_total = float(torch.logsumexp(log_w, 0) - math.log(1000))
    ours = LogLikelihood(ppca.model, ppca.worse_guide, num_samples=1000)(x)
    assert abs(ours.total - exact) < Z_TOL * ours.total_stderr + 0.1
    assert pyro_total < exact - 5  # Pyro's sum-first estimate is far looser


def global_mean_model(x: torch.Tensor) -> None:
    mean = pyro.sample("mean", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Normal(mean, 1.0))
        pyro.sample("x", dist.Normal(z, 1.0), obs=x)


def global_mean_guide(x: torch.Tensor) -> None:
    pyro.sample("mean", dist.Normal(0.0, 1.0))
    with pyro.plate("data", len(x)):
        pyro.sample("z", dist.Normal(x / 2, 0.9))


def test_pyro_renyi_elbo_differs_with_a_global_site() -> None:
    """With one site outside the data plate, RenyiELBO(alpha=0) sums the log weights over the
    points before the log-mean-exp: its batch value is not the sum of its single-point values.
    Ours is, and each point's value is that point's marginal, N(0, 3) here."""
    x = torch.tensor([2.5, 3.0, 2.8, 3.2, 2.6, 3.1])
    renyi = RenyiELBO(alpha=0, num_particles=2000, vectorize_particles=True)
    pyro.set_rng_seed(0)
    with torch.no_grad():
        renyi_batch = -renyi.loss(global_mean_model, global_mean_guide, x)
        renyi_single = sum(
            -renyi.loss(global_mean_model, global_mean_guide, x[i : i + 1]) for i in range(6)
        )
    estimator = LogLikelihood(global_mean_model, global_mean_guide, num_samples=2000)
    batch = estimator(x)
    single = [estimator(x[i : i + 1]) for i in range(6)]
    exact = dist.Normal(0.0, math.sqrt(3.0)).log_prob(x)
    assert_within(batch, exact)
    spread = math.hypot(batch.total_stderr, math.sqrt(sum(s.total_stderr**2 for s in single)))
    assert abs(batch.total - sum(s.total for s in single)) < Z_TOL * spread
    # Renyi's batch value bounds the joint log p(x_1..6), which the shared mean makes far higher
    joint = dist.MultivariateNormal(torch.zeros(6), 2 * torch.eye(6) + torch.ones(6, 6))
    assert float(exact.sum()) + 3 < renyi_batch <= float(joint.log_prob(x)) + 0.1
    assert abs(renyi_single - float(exact.sum())) < 0.5


def test_single_point_matches_pyro_renyi_elbo(ppca: PPCA) -> None:
    """With one data point and one plate Pyro's RenyiELBO(alpha=0) is the IWAE bound too; both
    draw the same samples from the same seed (ours probes the program on a stream of its own),
    so the numbers agree to rounding."""
    x = ppca.data(1)
    renyi_elbo = RenyiELBO(alpha=0, num_particles=300, vectorize_particles=True)
    with torch.no_grad():  # Pyro's first call runs the program to guess its plate nesting
        renyi_elbo.loss(ppca.model, ppca.worse_guide, x)
    pyro.set_rng_seed(5)
    with torch.no_grad():
        renyi = -renyi_elbo.loss(ppca.model, ppca.worse_guide, x)
    pyro.set_rng_seed(5)
    ours = LogLikelihood(ppca.model, ppca.worse_guide, num_samples=300, chunk_size=300)(x)
    assert ours.total == pytest.approx(renyi, abs=1e-10)


# -------------------------------------------------------------------- streaming statistics
def test_chunks_give_the_same_statistics() -> None:
    torch.manual_seed(0)
    lw = torch.randn(1000, 7) * torch.linspace(0.1, 3, 7)
    whole, pieces = WeightAccumulator(1000), WeightAccumulator(1000)
    whole.add(lw)
    for chunk in lw.split(77):
        pieces.add(chunk)
    for a, b in zip(whole.result(), pieces.result(), strict=True):
        torch.testing.assert_close(a, b)
    log_mean, stderr, ess, _ = whole.result()
    w = lw.exp()
    torch.testing.assert_close(log_mean, w.mean(0).log())
    torch.testing.assert_close(ess, w.sum(0) ** 2 / (w**2).sum(0))
    torch.testing.assert_close(stderr, w.std(0) / math.sqrt(1000) / w.mean(0))  # delta method
    mean = MeanAccumulator()
    for chunk in lw.split(130):
        mean.add(chunk)
    torch.testing.assert_close(mean.result()[0], lw.mean(0))
    torch.testing.assert_close(mean.result()[1], lw.std(0) / math.sqrt(1000))


def test_chunk_size_bounds_each_pass(ppca: PPCA) -> None:
    shapes = []

    def guide(x: torch.Tensor) -> None:
        loc, scale = ppca.diagonal(x)
        with pyro.plate("data", x.shape[0]):
            shapes.append(pyro.sample("z", dist.Normal(loc, scale).to_event(1)).shape)

    x = ppca.data(11)
    LogLikelihood(ppca.model, guide, num_samples=250, chunk_size=100)(x)
    assert shapes == [(11, 2), (100, 11, 2), (100, 11, 2), (50, 11, 2)]  # probe, then chunks
    est = LogLikelihood(ppca.model, ppca.posterior_guide, num_samples=250, chunk_size=7)(x)
    torch.testing.assert_close(est.log_prob, ppca.marginal.log_prob(x), atol=1e-6, rtol=0)


def test_bernoulli_fast_path_is_the_distributions_log_prob() -> None:
    """site_log_prob's shortcut for Bernoulli(logits).to_event(n): the same numbers, masked."""
    from ppdgm.infer.weights import site_log_prob

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5, 6)
    value = (torch.rand(4, 5, 6) < 0.4).double()
    mask = torch.tensor([True, False, True, True])[:, None]
    with pyro.validation_enabled(False):
        for event in (1, 2):
            fn = dist.Bernoulli(logits=logits).to_event(event)
            site = {"fn": fn, "value": value, "args": (), "kwargs": {}, "scale": 1.0}
            expected = fn.log_prob(value)
            fast = site_log_prob({**site, "mask": None})
            assert fast.shape == fn.batch_shape
            torch.testing.assert_close(fast, expected, atol=0, rtol=0)
            if event == 1:
                masked = site_log_prob({**site, "mask": mask})
                torch.testing.assert_close(masked, expected.masked_fill(~mask, 0))


@pytest.mark.parametrize("shape", [0.2, 0.5, 0.9])
def test_pareto_k_recovers_a_known_tail(shape: float) -> None:
    """Weights drawn from a generalized Pareto distribution of known shape, 200 points."""
    torch.manual_seed(0)
    u = torch.rand(4000, 200)
    weights = (u.pow(-shape) - 1) / shape
    top = weights.log().topk(tail_size(4000) + 1, dim=0).values
    k = pareto_k(top)
    assert abs(float(k.mean()) - shape) < 0.05
    assert float(k.std()) < 0.15


def test_summary_and_table(ppca: PPCA) -> None:
    x = ppca.data(10)
    pyro.set_rng_seed(0)
    exact = Estimate(ppca.marginal.log_prob(x), torch.zeros(10), None, "exact", None)
    est = LogLikelihood(ppca.model, ppca.worse_guide, num_samples=100)(x)
    elbo = LogLikelihood(ppca.model, ppca.worse_guide, method="elbo", num_samples=100)(x)
    text = est.summary()
    assert text.startswith("importance K=100, 10 data points")
    assert f"{est.total:.4f} ± {est.total_stderr:.4f}" in text
    assert "ESS" in text and "Pareto k" in text
    table = comparison_table({"closed form": exact, "IWAE K=100": est, "ELBO": elbo})
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["method", "sum", "log"]
    assert lines[1].startswith("closed form") and lines[2].startswith("IWAE K=100")
    gap = float(re.split(r"\s{2,}", lines[3])[4])
    assert gap == pytest.approx(elbo.total - exact.total, abs=1e-4)
    assert len(est) == 10 and est.label == "importance K=100"
    assert repr(LogLikelihood(ppca.model, method="exact")) == (
        "LogLikelihood(method='exact', plate='data')"
    )


# ------------------------------------------------------------------------------ bad input
def test_bad_arguments(ppca: PPCA) -> None:
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="num_samples must be a positive integer"):
            LogLikelihood(ppca.model, num_samples=bad)
    with pytest.raises(ValueError, match="chunk_size must be a positive integer, got 0"):
        LogLikelihood(ppca.model, chunk_size=0)
    with pytest.raises(ValueError, match="unknown method 'exactly'; choose one of"):
        LogLikelihood(ppca.model, method="exactly")


def test_data_that_does_not_match_the_plate(ppca: PPCA) -> None:
    def fixed_size(x: torch.Tensor) -> None:
        with pyro.plate("data", 100):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(
        ValueError, match=r"site 'x' has shape \(50,\), but plate 'data' has size 100"
    ):
        LogLikelihood(fixed_size)(torch.zeros(50))

    def no_event(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match=r"site 'x' has shape \(7, 3\).*to_event"):
        LogLikelihood(no_event)(torch.zeros(7, 3))


def test_guide_that_does_not_match(ppca: PPCA) -> None:
    x = ppca.data(5)

    def extra(x: torch.Tensor) -> None:
        ppca.worse_guide(x)
        pyro.sample("w", dist.Normal(0.0, 1.0))

    def missing(x: torch.Tensor) -> None:
        pass

    def outside(x: torch.Tensor) -> None:
        pyro.sample("z", dist.Normal(torch.zeros(2), 1.0).to_event(1))

    cases = [
        (extra, r"the guide samples \['w'\], which are not latent sites of the model"),
        (missing, r"does not sample the model's latent site\(s\) \['z'\]"),
        (outside, r"guide's site 'z' has shape \(2,\), the model's \(5, 2\); .*outside plate"),
    ]
    for guide, message in cases:
        for method in ("importance", "elbo"):
            with pytest.raises(ValueError, match=message):
                LogLikelihood(ppca.model, guide, method=method)(x)


def test_nan_in_the_data(ppca: PPCA) -> None:
    x = ppca.data(8)
    x[3, 1] = float("nan")
    x[6, 0] = float("nan")
    with pytest.raises(
        ValueError, match=r"site 'x' has NaN in 2 of its 8 data points \(indices 3, 6\)"
    ):
        LogLikelihood(ppca.model, ppca.worse_guide)(x)


def test_no_plate_with_that_name(ppca: PPCA) -> None:
    with pytest.raises(ValueError, match=r"no plate named 'rows'.*its plates: 'data'"):
        LogLikelihood(ppca.model, plate="rows")(ppca.data(3))

    def no_plate(x: torch.Tensor) -> None:
        pyro.sample("x", dist.Normal(0.0, 1.0).expand(x.shape).to_event(1), obs=x)

    with pytest.raises(ValueError, match=r"no plate named 'data'.*\(its plates: none\)"):
        LogLikelihood(no_plate, method="exact")(torch.zeros(3))


def test_other_bad_programs(ppca: PPCA) -> None:
    with pytest.raises(ValueError, match=r"latent site\(s\) z \(Independent\) are continuous"):
        LogLikelihood(ppca.model, method="exact")(ppca.data(3))

    def global_obs(x: torch.Tensor) -> None:
        pyro.sample("total", dist.Normal(0.0, 10.0), obs=x.sum())
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)

    with pytest.raises(ValueError, match="observed site 'total' is outside plate 'data'"):
        LogLikelihood(global_obs)(torch.zeros(4))

    def subsampled(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x), subsample_size=2) as idx:
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x[idx])

    with pytest.raises(ValueError, match="subsamples 2 of 4 data points"):
        LogLikelihood(subsampled)(torch.zeros(4))

    def sequential(x: torch.Tensor) -> None:
        for i in pyro.plate("data", len(x)):
            pyro.sample(f"x{i}", dist.Normal(0.0, 1.0), obs=x[i])

    with pytest.raises(ValueError, match="plate 'data' is sequential"):
        LogLikelihood(sequential)(torch.zeros(3))

    def latent_only(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="observes nothing inside plate 'data'"):
        LogLikelihood(latent_only)(torch.zeros(3))

    def bad_scale(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Normal(0.0, 1.0))
            pyro.sample("x", dist.Normal(z, torch.tensor(-1.0)), obs=x)

    with pyro.validation_enabled(False):  # else the scale is rejected when the site is made
        with pytest.raises(ValueError, match="model log-density of site 'x' is NaN"):
            LogLikelihood(bad_scale, num_samples=3)(torch.zeros(2))

    def complains(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("x", dist.Normal(0.0, 1.0), obs=x)
        raise ValueError("the program's own message")

    with pytest.raises(ValueError, match=r"^the program's own message$"):  # no shape table
        LogLikelihood(complains)(torch.zeros(3))


def test_network_rows_with_zero_probability() -> None:
    bn = pbn.asia()
    rows = pd.DataFrame({"tub": ["yes", None], "either": ["no", None], "smoke": [None, "yes"]})
    pyro.set_rng_seed(0)
    exact = LogLikelihood(bn.model, method="exact")(rows)
    est = LogLikelihood(bn.model, num_samples=500)(rows)
    assert exact.log_prob[0] == -math.inf
    # the program's sites take log-probabilities, so an impossible row is -inf there too
    assert est.log_prob[0] == -math.inf
    assert est.log_prob[1] == pytest.approx(math.log(0.5), abs=1e-12)
    assert np.isfinite(est.stderr[1].item())


# --------------------------------------------------------------------------- command line
def test_command_line_methods(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    from ppdgm.cli import main

    bn, rows = hidden_asia()
    data = tmp_path / "rows.csv"
    rows.to_csv(data, index=False)
    exact = bn.log_prob(rows).numpy()
    for method in ("exact", "importance", "elbo"):
        out = tmp_path / f"{method}.csv"
        argv = ["bn", "loglik", "asia", "--data", str(data), "-o", str(out), "--seed", "0"]
        assert main([*argv, "--method", method, "--samples", "2000"]) == 0
        notes = capsys.readouterr().out
        result = pd.read_csv(out)
        if method == "exact":
            np.testing.assert_allclose(result["log_prob"], exact, rtol=1e-8)  # CSV digits
            assert "stderr" not in result.columns
            assert re.search(r"log p\(data\) = \S+ nats in total", notes)
            continue
        stderr = result["stderr"].to_numpy()
        if method == "importance":
            gap = np.abs(result["log_prob"].to_numpy() - exact)
            assert bool((gap <= Z_TOL * stderr + stderr**2 + 1e-12).all())
            total = float(re.search(r"log p\(data\) = (\S+) ± (\S+) nats in total", notes)[1])
            assert "effective sample size per row: min" in notes
        else:
            assert bool((result["log_prob"].to_numpy() <= exact + Z_TOL * stderr).all())
            total = float(re.search(r"ELBO = (\S+) ± (\S+) nats in total", notes)[1])
        assert total == pytest.approx(result["log_prob"].sum(), abs=1e-3)
        assert "2,000 samples per row" in notes


def test_command_line_bad_samples(capsys: pytest.CaptureFixture[str]) -> None:
    from ppdgm.cli import main

    with pytest.raises(SystemExit):
        main(["bn", "loglik", "asia", "--data", "x.csv", "--samples", "0"])
    assert "argument --samples" in capsys.readouterr().err


def test_a_tiny_ess_warns_where_pareto_k_is_undefined() -> None:
    """A discrete prior as proposal for a rare latent state: the weights take two values, so no
    Pareto k can be fitted (NaN), and one or two draws of the rare state carry all the weight.
    The estimate is then unreliable and says so; an exact guide (equal weights) does not."""

    def model(x):
        with pyro.plate("data", len(x)):
            z = pyro.sample("z", dist.Bernoulli(0.002))
            pyro.sample("x", dist.Normal(10.0 * z, 0.5), obs=x)

    def exact_guide(x):
        with pyro.plate("data", len(x)):
            pyro.sample("z", dist.Bernoulli(torch.ones_like(x)))

    x = torch.tensor([10.0])
    pyro.set_rng_seed(0)
    with pytest.warns(LowESSWarning, match=r"effective sample size below 10 of 1000"):
        est = LogLikelihood(model, num_samples=1000)(x)
    assert torch.isnan(est.pareto_k).all() and float(est.ess[0]) < 10
    exact = math.log(0.002) + float(dist.Normal(10.0, 0.5).log_prob(x))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        good = LogLikelihood(model, exact_guide, num_samples=1000)(x)
    assert float(good.log_prob[0]) == pytest.approx(exact, abs=1e-9)
    assert float(good.ess[0]) == pytest.approx(1000)


def _coin_model(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        z = pyro.sample("z", dist.Bernoulli(0.3))
        pyro.sample("x", dist.Normal(2.0 * z, 1.0), obs=x)


def _coin_flips(x: torch.Tensor) -> None:
    with pyro.plate("data", x.shape[0]):
        pyro.sample("x", dist.Bernoulli(0.5), obs=x)


@pytest.mark.parametrize("method", ["exact", "importance", "elbo"])
def test_infinite_observations_no_rows_and_values_outside_the_support_are_named(
    method: str,
) -> None:
    estimate = LogLikelihood(_coin_model, method=method, num_samples=20)
    with pytest.raises(ValueError, match=r"'x' has an infinite value in 1 of its 3 .*indices 2"):
        estimate(torch.tensor([0.0, 1.0, math.inf]))
    with pytest.raises(ValueError, match="no data points to score"):
        estimate(torch.zeros(0))
    flips = LogLikelihood(_coin_flips, method=method, num_samples=20)
    with pytest.raises(ValueError, match=r"'x' has values outside the support .*\(indices 1\)"):
        flips(torch.tensor([1.0, 2.0, 0.0]))  # Bernoulli's log-density at 2 is -log 2 unchecked
    assert flips(torch.tensor([1.0, 0.0])).log_prob.tolist() == pytest.approx([-math.log(2)] * 2)


def test_no_rows_is_named_by_evaluate_bounds_and_fit() -> None:
    # a mean over no rows used to come back as an NLL of -0.0, and validation on it as "best"
    from ppdgm.infer.estimate import bounds
    from ppdgm.models import VAE
    from ppdgm.train import evaluate, fit

    vae = VAE(4, 2, [8])
    with pytest.raises(ValueError, match="no rows to evaluate: x has 0 rows"):
        evaluate(vae, torch.zeros(0, 4))
    with pytest.raises(ValueError, match="no rows to score: x has 0 rows"):
        bounds(vae, torch.zeros(0, 4), [1, 5])
    with pytest.raises(ValueError, match="validation data has 0 rows: pass valid=None"):
        fit(vae, torch.ones(3, 4), torch.zeros(0, 4), epochs=1, progress=False)
    with pytest.raises(ValueError, match="no training data: train has 0 rows"):
        fit(vae, torch.zeros(0, 4), epochs=1, progress=False)
