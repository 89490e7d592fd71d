"""VAEs: the direct log-weights against Pyro's ELBOs on the programs, estimates against
quadrature and closed forms (probabilistic PCA), flows as guides, training and bad input."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from pyro.infer import Trace_ELBO

from ppdgm.checkpoint import load_model
from ppdgm.estimate import LogLikelihood, UnreliableWeightsWarning
from ppdgm.inspect import dependency_graph
from ppdgm.models import GMVAE, VAE, HierarchicalVAE
from ppdgm.svi import SVIObjective
from ppdgm.train import evaluate, fit
from ppdgm.transforms import iaf, planar

pytestmark = pytest.mark.usefixtures("float64", "one_thread")

VARIANTS = {
    "mean-field": lambda: VAE(6, 2, [16]),
    "iaf+maf": lambda: VAE(6, 2, [16], guide_flow="iaf", prior_flow="maf"),
    "real_nvp+real_nvp": lambda: VAE(6, 2, [16], guide_flow="real_nvp", prior_flow="real_nvp"),
    "planar": lambda: VAE(6, 2, [16], guide_flow="planar"),
    "radial": lambda: VAE(6, 3, [16], guide_flow="radial"),
    "gaussian": lambda: VAE(6, 2, [16], likelihood="gaussian", guide_flow="iaf"),
    "gmvae": lambda: GMVAE(6, 2, [16], components=3),
    "hierarchical": lambda: HierarchicalVAE(6, (3, 2), ([16], [8])),
}


def binary(n: int = 7, dim: int = 6, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, dim), 0.4, dtype=torch.float64), generator=generator)


def data_for(vae: torch.nn.Module, n: int = 7) -> torch.Tensor:
    x = binary(n, vae.x_dim)
    return x + 0.3 * torch.randn_like(x) if vae.likelihood_name == "gaussian" else x


@pytest.mark.parametrize("name", list(VARIANTS))
def test_the_training_loss_equals_pyro_trace_elbo_on_the_programs(name: str) -> None:
    torch.manual_seed(0)
    vae = VARIANTS[name]()
    x = data_for(vae)
    torch.manual_seed(1)
    pyro_loss = Trace_ELBO().differentiable_loss(vae.model, vae.guide, x)
    pyro_grads = torch.autograd.grad(pyro_loss, list(vae.parameters()), allow_unused=True)
    objective = SVIObjective()
    torch.manual_seed(1)
    ours = objective(vae, x, 0) * len(x)
    assert type(objective._elbos[vae]).__name__ == "WeightedELBO", "the fast road"
    grads = torch.autograd.grad(ours, list(vae.parameters()), allow_unused=True)
    assert float(ours.detach()) == pytest.approx(float(pyro_loss.detach()), abs=1e-10)
    for a, b in zip(grads, pyro_grads, strict=True):
        if a is None or b is None:
            assert a is None and b is None
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)
    assert all(g is not None for g in grads), "every parameter gets a gradient"


@pytest.mark.parametrize("loss", ["elbo", "meanfield", "iwae"])
@pytest.mark.parametrize("k", [1, 4])
@pytest.mark.parametrize("flow", [None, "iaf"])
def test_objective_equals_pyro_elbos_with_annealing(loss: str, k: int, flow: str | None) -> None:
    torch.manual_seed(0)
    vae = VAE(6, 2, [16], guide_flow=flow)
    x = binary()
    program = SVIObjective(loss, k, anneal_steps=10, program=True)
    program(vae, x, 0)  # the first call probes the programs, drawing from the random stream
    torch.manual_seed(1)
    direct = SVIObjective(loss, k, anneal_steps=10)(vae, x, 3)
    torch.manual_seed(1)
    expected = program(vae, x, 3)
    assert float(direct.detach()) == pytest.approx(float(expected.detach()), abs=1e-10)
    assert SVIObjective(anneal_steps=10).beta(3) == pytest.approx(0.4)


def test_meanfield_uses_the_closed_form_kl() -> None:
    torch.manual_seed(0)
    vae = VAE(6, 2, [16])
    x = binary()
    kl = vae.analytic_kl(x)
    q, p = vae.posterior(vae.check(x)), vae.prior()
    z = q.sample((200_000,))
    monte_carlo = (q.log_prob(z) - p.log_prob(z)).mean(0)
    torch.testing.assert_close(kl, monte_carlo, rtol=0, atol=0.02)
    assert VAE(6, 2, [16], guide_flow="iaf").analytic_kl(x) is None


def test_gmvae_prior_sums_the_components_out() -> None:
    torch.manual_seed(0)
    gmvae = GMVAE(6, 2, [16], components=4)
    z = torch.randn(9, 2)
    loc = gmvae.component_loc
    scale = torch.nn.functional.softplus(gmvae.component_raw_scale) + 1e-6
    per_component = (
        -0.5 * ((z[:, None] - loc) / scale) ** 2 - scale.log() - 0.5 * math.log(2 * math.pi)
    ).sum(-1)
    expected = torch.logsumexp(per_component, -1) - math.log(4)
    torch.testing.assert_close(gmvae.prior().log_prob(z), expected)


def quadrature_log_prob(vae: VAE, x: torch.Tensor) -> torch.Tensor:
    """``log p(x) = log int p(z) p(x | z) dz`` for a one-dimensional ``z``: a fine Riemann sum."""
    z = torch.linspace(-9, 9, 20001).unsqueeze(-1)
    with torch.no_grad():
        joint = vae.prior().log_prob(z)[:, None] + vae.likelihood(z[:, None]).log_prob(x)
    return torch.logsumexp(joint, 0) + math.log(float(z[1, 0] - z[0, 0]))


@pytest.mark.parametrize("flow", [None, "iaf"])
def test_estimates_bracket_the_quadrature_log_likelihood(flow: str | None) -> None:
    torch.manual_seed(3)
    vae = VAE(4, 1, [8], guide_flow=flow, prior_flow="maf" if flow else None)
    for p in vae.decoder.parameters():
        p.data.mul_(3)  # a decoder that matters: a posterior far from the prior
    x = binary(5, 4)
    exact = quadrature_log_prob(vae, x)
    torch.manual_seed(4)
    # the prior as proposal: weights p(x | z) <= 1, so importance sampling is reliable
    prior = LogLikelihood(vae.model, num_samples=20_000)(x)
    assert ((prior.log_prob - exact).abs() < 4 * prior.stderr + 1e-3).all()
    elbo = LogLikelihood(vae.model, vae.guide, method="elbo", num_samples=2_000)(x)
    assert (elbo.log_prob + 4 * elbo.stderr < exact).all()  # a bound, and not a tight one here
    torch.manual_seed(5)
    sampled = LogLikelihood(
        vae.model, vae.guide, method="elbo", num_samples=20_000, analytic_kl=False
    )(x)  # without the closed-form KL: the same expectation, other draws
    tolerance = 6 * float(elbo.stderr.max())
    torch.testing.assert_close(sampled.log_prob, elbo.log_prob, rtol=0, atol=tolerance)


def ppca_data(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows of ``x = W z + mu + eps``, ``z ~ N(0, I_2)``, ``eps ~ N(0, 0.5^2 I_5)``, and the
    probabilistic PCA maximum-likelihood covariance of those rows (Tipping & Bishop 1999)."""
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(5, 2, generator=generator)
    z = torch.randn(n, 2, generator=generator)
    x = z @ w.T + torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0])
    x = x + 0.5 * torch.randn(n, 5, generator=generator)
    centered = x - x.mean(0)
    values, vectors = torch.linalg.eigh(centered.T @ centered / n)
    noise = values[:3].mean()  # the discarded eigenvalues' mean
    loadings = vectors[:, 3:] * (values[3:] - noise).sqrt()
    return x, loadings @ loadings.T + noise * torch.eye(5)


def gaussian_log_prob(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return torch.distributions.MultivariateNormal(mean, cov).log_prob(x)


def test_linear_gaussian_vae_recovers_the_ppca_likelihood() -> None:
    x, ppca_cov = ppca_data(2000)
    best = float(gaussian_log_prob(x, x.mean(0), ppca_cov).mean())
    torch.manual_seed(0)
    vae = VAE(5, 2, [], likelihood="gaussian")
    for epochs, lr in ((200, 0.03), (100, 0.003)):
        fit(
            vae,
            x,
            epochs=epochs,
            batch_size=200,
            lr=lr,
            objective=SVIObjective("meanfield"),
            progress=False,
            plots=False,
        )
    # the trained model's own marginal: x ~ N(b, W W^T + diag(sigma^2)), in closed form
    vae.requires_grad_(False)
    linear = vae.decoder[0]
    cov = linear.weight @ linear.weight.T + torch.diag(vae.x_log_scale.exp() ** 2)
    learned = float(gaussian_log_prob(x, linear.bias, cov).mean())
    assert learned == pytest.approx(best, abs=0.005)
    torch.manual_seed(1)
    estimate = LogLikelihood(vae.model, vae.guide, num_samples=1000)(x[:50])
    exact = gaussian_log_prob(x[:50], linear.bias, cov)
    assert ((estimate.log_prob - exact).abs() < 4 * estimate.stderr + 1e-3).all()
    # a linear encoder can represent the exact posterior (diagonal once the decoder's columns
    # are rotated to make it so, which training does): the ELBO is nearly tight
    elbo = float(
        LogLikelihood(vae.model, vae.guide, method="elbo", num_samples=200)(x).log_prob.mean()
    )
    assert learned - 0.02 < elbo < learned


def small_digits() -> torch.Tensor:
    from ppdgm.data import load_digits

    return load_digits("train")[:200]


def test_flow_guide_narrows_the_gap_to_iwae() -> None:
    x = small_digits()
    torch.manual_seed(0)
    base = VAE(64, 2, [32])
    fit(base, x, epochs=20, batch_size=50, lr=3e-3, progress=False, plots=False)
    gaps = {}
    for flow in (None, "iaf"):
        torch.manual_seed(1)
        vae = VAE(64, 2, [32], guide_flow=flow, flow_layers=2)
        vae.decoder.load_state_dict(base.decoder.state_dict())
        vae.decoder.requires_grad_(False)
        fit(vae, x, epochs=25, batch_size=50, lr=3e-3, progress=False, plots=False)
        torch.manual_seed(2)
        with warnings.catch_warnings():  # the bounds are compared, not trusted as log p(x)
            warnings.simplefilter("ignore", UnreliableWeightsWarning)
            elbo = float(bound(vae, x, "elbo", 100).mean())
            iwae = float(bound(vae, x, "importance", 5000).mean())
        assert elbo <= iwae
        gaps[flow] = iwae - elbo
    assert gaps["iaf"] < 0.8 * gaps[None], gaps


def test_elbo_below_iwae_bounds_that_tighten() -> None:
    torch.manual_seed(0)
    vae = VAE(6, 2, [16], guide_flow="iaf")
    x = binary(20)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableWeightsWarning)
        bounds = [float(bound(vae, x, "importance", k).mean()) for k in (1, 10, 100, 1000)]
    assert bounds == sorted(bounds)


def bound(vae: torch.nn.Module, x: torch.Tensor, method: str, k: int) -> torch.Tensor:
    """Each row's ELBO or IWAE bound with ``k`` samples, by the estimator of every program."""
    return LogLikelihood(vae.model, vae.guide, method=method, num_samples=k)(x).log_prob


def test_program_shape_and_dependencies() -> None:
    vae = VAE(6, 2, [8])
    graph = dependency_graph(vae.model, binary())
    assert set(graph.edges) == {("z", "x")}
    assert graph.nodes["x"]["observed"] and not graph.nodes["z"]["observed"]
    hvae = HierarchicalVAE(6, (3, 2), ([8], [4]))
    assert set(dependency_graph(hvae.model, binary()).edges) == {("z2", "z1"), ("z1", "x")}


@pytest.mark.parametrize("name", list(VARIANTS))
def test_sample_reconstruct_and_encode(name: str) -> None:
    vae = VARIANTS[name]()
    x = data_for(vae)
    draws = vae.sample(5, seed=0)
    assert draws.shape == (5, 6)
    assert torch.equal(draws, vae.sample(5, seed=0))
    if vae.likelihood_name == "bernoulli":
        assert set(draws.unique().tolist()) <= {0.0, 1.0}
        means = vae.sample(5, seed=0, mean=True)
        assert bool(((means > 0) & (means < 1)).all())
    assert vae.reconstruct(x).shape == x.shape
    assert vae.encode(x).shape[0] == len(x)


def test_fit_checkpoint_resume_and_validation_bound(tmp_path: Path) -> None:
    x = binary(60, 6)
    objective = SVIObjective("iwae", 3, anneal_steps=5)

    def run(epochs: int, resume: bool = False, out: Path = tmp_path / "run"):
        torch.manual_seed(0)
        vae = VAE(6, 2, [8], guide_flow="iaf")
        result = fit(
            vae,
            x[:40],
            x[40:],
            epochs=epochs,
            batch_size=10,
            objective=objective,
            out_dir=out,
            resume=resume,
            progress=False,
            plots=False,
        )
        return vae, result

    straight, _ = run(4, out=tmp_path / "straight")
    run(2)
    resumed, result = run(4, resume=True)
    assert result.history[-1]["valid_bound"] == "elbo"
    best = result.best_epoch
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    loaded, checkpoint = load_model(tmp_path / "run" / "best.pt", expect=VAE)
    assert checkpoint["epoch"] == best
    assert checkpoint["settings"]["objective"] == objective.settings
    torch.manual_seed(3)
    a = evaluate(loaded, x[40:])
    torch.manual_seed(3)
    b = evaluate(resumed, x[40:])
    assert a == b and a["bound"] == "elbo"
    with pytest.raises(ValueError, match="objective"):
        torch.manual_seed(0)
        fit(
            VAE(6, 2, [8], guide_flow="iaf"),
            x[:40],
            epochs=5,
            batch_size=10,
            out_dir=tmp_path / "run",
            resume=True,
            progress=False,
        )


def test_nan_during_training_stops_and_keeps_the_last_good_checkpoint(tmp_path: Path) -> None:
    x = binary(40, 6)
    torch.manual_seed(0)
    vae = VAE(6, 2, [8])
    fit(vae, x, epochs=1, batch_size=10, out_dir=tmp_path, progress=False, plots=False)
    saved = (tmp_path / "last.pt").read_bytes()

    def poisoned(model, batch, step):
        loss = SVIObjective()(model, batch, step)
        return loss * float("nan") if step >= 5 else loss

    poisoned.settings = SVIObjective().settings  # the default objective's: the run resumes
    with pytest.raises(ValueError, match=r"loss is nan at epoch 2.*last good checkpoint"):
        fit(
            vae,
            x,
            epochs=3,
            batch_size=10,
            objective=poisoned,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    assert (tmp_path / "last.pt").read_bytes() == saved
    assert all(torch.isfinite(p).all() for p in load_model(tmp_path / "last.pt")[0].parameters())


def test_bad_input_gets_clear_errors() -> None:
    vae = VAE(6, 2, [8])
    with pytest.raises(ValueError, match=r"binary data, but x\[0, 1\] = 0.5"):
        vae.model(torch.tensor([[0, 0.5, 0, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"shape \[N, 6\], got \(2, 5\)"):
        vae.model(torch.zeros(2, 5))
    with pytest.raises(ValueError, match="NaN"):
        VAE(2, 1, [4], likelihood="gaussian").guide(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="unknown likelihood 'poisson'"):
        VAE(6, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="unknown guide_flow 'maf'"):
        VAE(6, 2, guide_flow="maf")
    with pytest.raises(ValueError, match="unknown prior_flow 'planar'"):
        VAE(6, 2, prior_flow="planar")
    with pytest.raises(ValueError, match="guide flow transforms 3-dimensional vectors, but z_dim"):
        VAE(6, 2, guide_flow=iaf(3, [8], context_dim=4))
    from ppdgm.transforms import maf

    with pytest.raises(ValueError, match="prior flow does not accept z of dimension 2"):
        VAE(6, 2, prior_flow=maf(3, [8]))
    with pytest.raises(ValueError, match="needs a context of size 4"):
        iaf(2, [8], context_dim=4).condition(None)
    with pytest.raises(ValueError, match="context must have size 4"):
        planar(2, context_dim=4, hidden_dims=[8]).condition(torch.zeros(3, 5))
    with pytest.raises(ValueError, match=r"a ppdgm\.transforms\.ConditionalFlow"):
        VAE(6, 2, guide_flow=maf(2, [8]))
    with pytest.raises(ValueError, match="cannot be rebuilt from its config"):
        _ = VAE(6, 2, guide_flow=iaf(2, [8], context_dim=4)).config
    with pytest.raises(ValueError, match="takes no prior_flow"):
        GMVAE(6, 2, prior_flow="maf")
    with pytest.raises(ValueError, match="two latent sizes"):
        HierarchicalVAE(6, (3,), ([8],))
    with pytest.raises(ValueError, match="unknown loss 'kl'"):
        SVIObjective("kl")
    with pytest.raises(ValueError, match="num_particles"):
        SVIObjective("iwae", 0)
    with pytest.raises(ValueError, match="doubly_reparameterized needs"):
        SVIObjective("elbo", doubly_reparameterized=True)
