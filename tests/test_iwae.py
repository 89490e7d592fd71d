"""ppdgm.infer.iwae.IWAE: its value is minus the per-point IWAE bound, its gradient is autograd's of
that bound (or the doubly-reparameterized one), and SVI trains with it."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer import SVI
from pyro.infer.autoguide import AutoNormal
from torch import nn

from ppdgm.estimate import LogLikelihood
from ppdgm.infer.iwae import IWAE

DIM, LATENT, SIGMA = 4, 2, 0.5


pytestmark = pytest.mark.usefixtures("float64")


class Problem:
    """Probabilistic PCA with a learnable W and a learnable mean-field guide per data point;
    the guide records its draws so that the bound can be recomputed by hand."""

    def __init__(self, n: int = 6, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.W = torch.randn(DIM, LATENT, generator=g).requires_grad_()
        self.mu = torch.randn(DIM, generator=g)
        self.loc = torch.randn(n, LATENT, generator=g).requires_grad_()
        self.log_scale = (0.3 * torch.randn(n, LATENT, generator=g)).requires_grad_()
        self.x = torch.randn(n, DIM, generator=g)
        self.draws: list[torch.Tensor] = []

    @property
    def params(self) -> list[torch.Tensor]:
        return [self.W, self.loc, self.log_scale]

    def model(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            pyro.sample("x", dist.Normal(z @ self.W.T + self.mu, SIGMA).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.loc, self.log_scale.exp()).to_event(1))
        self.draws.append(z)

    def log_weights(self, z: torch.Tensor, detach_guide: bool = False) -> torch.Tensor:
        """``log p(x, z) - log q(z)`` in plain PyTorch, ``[K, N]``."""
        loc, scale = self.loc, self.log_scale.exp()
        if detach_guide:
            loc, scale = loc.detach(), scale.detach()
        log_p = torch.distributions.Normal(z @ self.W.T + self.mu, SIGMA).log_prob(self.x).sum(-1)
        log_p = log_p + torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
        return log_p - torch.distributions.Normal(loc, scale).log_prob(z).sum(-1)

    def fresh_draws(self) -> torch.Tensor:
        """The last draws rebuilt from their noise, with a graph of their own."""
        eps = (self.draws[-1] - self.loc) / self.log_scale.exp()
        eps = eps.detach()
        return self.loc + self.log_scale.exp() * eps


def test_value_and_gradient_are_the_bounds() -> None:
    problem = Problem()
    k = 5
    pyro.set_rng_seed(0)
    loss = IWAE(num_particles=k).differentiable_loss(problem.model, problem.guide, problem.x)
    grads = torch.autograd.grad(loss, problem.params)
    z = problem.fresh_draws()
    assert z.shape == (k, 6, LATENT)
    bound = torch.logsumexp(problem.log_weights(z), 0) - math.log(k)  # per data point
    assert float(loss.detach()) == pytest.approx(-float(bound.sum().detach()), abs=1e-10)
    expected = torch.autograd.grad(-bound.sum(), problem.params)
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)


def test_doubly_reparameterized_gradient() -> None:
    """Model parameters: the IWAE gradient; guide parameters: sum_k w~_k^2 dlog w_k / dphi
    through the draws, with log q's parameters held fixed (Tucker et al. 2018, eq. 5)."""
    problem = Problem()
    k = 5
    pyro.set_rng_seed(1)
    loss = IWAE(k, doubly_reparameterized=True).differentiable_loss(
        problem.model, problem.guide, problem.x
    )
    grads = torch.autograd.grad(loss, problem.params)
    z = problem.fresh_draws()
    bound = torch.logsumexp(problem.log_weights(z), 0) - math.log(k)
    assert float(loss.detach()) == pytest.approx(-float(bound.sum().detach()), abs=1e-10)
    model_grad, *iwae_grads = torch.autograd.grad(-bound.sum(), problem.params)
    torch.testing.assert_close(grads[0], model_grad, atol=1e-10, rtol=1e-10)
    lw = problem.log_weights(problem.fresh_draws(), detach_guide=True)
    weights = torch.softmax(lw.detach(), 0)
    guide_grads = torch.autograd.grad(-(weights**2 * lw).sum(), problem.params[1:])
    for got, want in zip(grads[1:], guide_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-10, rtol=1e-10)
    assert not torch.allclose(grads[1], iwae_grads[0])  # a different estimator


@pytest.mark.filterwarnings("ignore::ppdgm.estimate.ParetoKWarning")  # a random guide
def test_loss_is_minus_the_importance_estimate() -> None:
    """Same seed, same draws: IWAE(K).loss == -LogLikelihood(K).total."""
    problem = Problem(n=9)
    pyro.set_rng_seed(3)
    loss = IWAE(50).loss(problem.model, problem.guide, problem.x)
    pyro.set_rng_seed(3)
    est = LogLikelihood(problem.model, problem.guide, num_samples=50, chunk_size=50)(problem.x)
    assert loss == pytest.approx(-est.total, abs=1e-10)


def test_score_function_term_for_a_discrete_guide() -> None:
    """A categorical guide over a mixture's component: the gradient estimates average to the
    exact gradient of E[bound], computed by enumerating both particles (K = 2)."""
    locs = torch.tensor([-1.0, 0.5, 2.0])
    x0 = torch.tensor(0.8)
    logits = torch.tensor([0.3, -0.2, 0.1], requires_grad=True)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            c = pyro.sample("c", dist.Categorical(torch.tensor([0.2, 0.5, 0.3])))
            pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

    def guide(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Categorical(logits=logits))

    log_q = torch.log_softmax(logits, 0)
    log_w = torch.tensor([0.2, 0.5, 0.3]).log() + dist.Normal(locs, 1.0).log_prob(x0) - log_q
    pairs = torch.cartesian_prod(torch.arange(3), torch.arange(3))
    bound = torch.logaddexp(log_w[pairs[:, 0]], log_w[pairs[:, 1]]) - math.log(2)
    expected = torch.autograd.grad((log_q[pairs].sum(-1).exp() * bound).sum(), [logits])[0]

    n, repeats = 500, 20
    estimates = []
    pyro.set_rng_seed(0)
    loss_fn = IWAE(2)
    for _ in range(repeats):
        loss = loss_fn.differentiable_loss(model, guide, x0.expand(n))
        estimates.append(-torch.autograd.grad(loss, [logits])[0] / n)
    stacked = torch.stack(estimates)
    stderr = stacked.std(0) / math.sqrt(repeats)
    assert bool(((stacked.mean(0) - expected).abs() < 4 * stderr).all())


def test_doubly_reparameterized_needs_local_reparameterized_sites() -> None:
    problem = Problem()

    def global_guide(x: torch.Tensor) -> None:
        pyro.sample("g", dist.Normal(0.0, 1.0))
        problem.guide(x)

    def global_model(x: torch.Tensor) -> None:
        pyro.sample("g", dist.Normal(0.0, 1.0))
        problem.model(x)

    with pytest.raises(ValueError, match="inside plate 'data'; 'g' is global"):
        IWAE(3, doubly_reparameterized=True).differentiable_loss(
            global_model, global_guide, problem.x
        )

    def discrete_model(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(0.5))
            pyro.sample("x", dist.Normal(0.0, 1.0).expand([DIM]).to_event(1), obs=x)

    def discrete_guide(x: torch.Tensor) -> None:
        with pyro.plate("data", len(x)):
            pyro.sample("c", dist.Bernoulli(torch.tensor(0.3, requires_grad=True)))

    with pytest.raises(ValueError, match=r"reparameterized guide sites; 'c' \(Bernoulli\)"):
        IWAE(3, doubly_reparameterized=True).differentiable_loss(
            discrete_model, discrete_guide, problem.x
        )


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_bad_num_particles(bad: object) -> None:
    with pytest.raises(ValueError, match="num_particles must be a positive integer"):
        IWAE(bad)  # type: ignore[arg-type]


def test_bad_program() -> None:
    problem = Problem()
    with pytest.raises(ValueError, match="no plate named 'rows'"):
        IWAE(2, plate="rows").loss(problem.model, problem.guide, problem.x)


# ------------------------------------------------------------------------------ training
def ppca_data(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    W = torch.randn(DIM, LATENT, generator=g)
    mu = torch.randn(DIM, generator=g)
    marginal = dist.MultivariateNormal(mu, W @ W.T + SIGMA**2 * torch.eye(DIM))
    torch.manual_seed(8)
    return W, mu, marginal.sample((n,))


def fixed_ppca(W: torch.Tensor, mu: torch.Tensor):
    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([LATENT]).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + mu, SIGMA).to_event(1), obs=x)

    return model


class Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, 16), nn.Tanh(), nn.Linear(16, 2 * LATENT))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        loc, log_scale = self.net(x).chunk(2, -1)
        return loc, log_scale.exp()


@pytest.mark.filterwarnings("ignore::ppdgm.estimate.ParetoKWarning")  # not the subject here
@pytest.mark.parametrize("kind", ["hand-written", "autoguide", "amortized", "dreg"])
def test_svi_trains_the_guide(kind: str) -> None:
    """200 SVI steps with IWAE(8) bring the IWAE-1000 estimate within reach of the exact
    marginal, from far below it."""
    W, mu, x = ppca_data(40)
    model = fixed_ppca(W, mu)
    exact = dist.MultivariateNormal(mu, W @ W.T + SIGMA**2 * torch.eye(DIM)).log_prob(x).sum()
    if kind == "autoguide":
        guide = AutoNormal(model, init_scale=1.0)
    elif kind == "amortized":
        encoder = Encoder().double()

        def guide(x: torch.Tensor) -> None:
            pyro.module("encoder", encoder)
            loc, scale = encoder(x)
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    else:

        def guide(x: torch.Tensor) -> None:
            loc = pyro.param("loc", torch.zeros(x.shape[0], LATENT))
            scale = pyro.param(
                "scale", torch.ones(x.shape[0], LATENT), constraint=dist.constraints.positive
            )
            with pyro.plate("data", x.shape[0]):
                pyro.sample("z", dist.Normal(loc, scale).to_event(1))

    pyro.set_rng_seed(0)
    loss = IWAE(8, doubly_reparameterized=kind == "dreg")
    before = LogLikelihood(model, guide, method="elbo", num_samples=200)(x).total
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), loss=loss)
    losses = [svi.step(x) for _ in range(200)]
    after = LogLikelihood(model, guide, num_samples=1000)(x)
    assert float(exact) - before > 20
    assert float(exact) - after.total < 1.0
    assert sum(losses[-10:]) / 10 < sum(losses[:10]) / 10
