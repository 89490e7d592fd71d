"""Tests of ppdgm.transforms and the flow density models: every flow, in float64."""

from __future__ import annotations

import io
from collections.abc import Callable

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.transforms import AffineAutoregressive, ComposeTransformModule
from torch.autograd.functional import jacobian

from ppdgm import transforms as flows
from ppdgm.base import seeded
from ppdgm.estimate import LogLikelihood
from ppdgm.inspect import dependency_graph
from ppdgm.models import IAF, MAF, NICE, RealNVP
from ppdgm.models.flows import FlowModel

DIM = 3
FACTORIES: dict[str, Callable[..., ComposeTransformModule]] = {
    "nice": lambda d: flows.nice(d, [8], num_layers=3),
    "real_nvp": lambda d: flows.real_nvp(d, [8], num_layers=3),
    "maf": lambda d: flows.maf(d, [8], num_layers=3),
    "iaf": lambda d: flows.iaf(d, [8], num_layers=3),
    "spline": lambda d: flows.spline(d, [8], num_layers=3),
    "planar": lambda d: flows.planar(d, num_layers=3),
    "radial": lambda d: flows.radial(d, num_layers=3),
}
INVERTIBLE = ["nice", "real_nvp", "maf", "iaf", "spline"]
MODELS = [NICE, RealNVP, MAF, IAF]


def perturb(module: torch.nn.Module, seed: int = 0, scale: float = 0.1) -> torch.nn.Module:
    """``module`` in float64 with every parameter moved by small noise, so that no layer is at
    its (often identity) initialization."""
    torch.manual_seed(seed)
    module = module.double()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def make(name: str, dim: int = DIM) -> ComposeTransformModule:
    torch.manual_seed(1)
    return perturb(FACTORIES[name](dim))


def make_model(cls: type, dim: int = 2) -> torch.nn.Module:
    torch.manual_seed(1)
    return perturb(cls(dim, hidden_dims=[16], num_layers=3))


def data(n: int = 5, dim: int = DIM, seed: int = 2) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_shapes_and_repr(name: str) -> None:
    t = make(name)
    x = data()
    assert t(x).shape == x.shape
    assert t.log_abs_det_jacobian(x, t(x)).shape == (5,)
    assert type(t).__name__ in repr(t) or repr(t)


@pytest.mark.parametrize("name", INVERTIBLE)
def test_inverse_round_trip(name: str) -> None:
    t = make(name)
    x = data()
    y = t(x)
    # a clone defeats the transforms' caches, so that the inverse is really computed
    assert torch.allclose(t.inv(y.clone()), x, atol=1e-10)
    z = t.inv(x.clone())
    assert torch.allclose(t(z.clone()), x, atol=1e-10)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_log_det_matches_autograd_jacobian(name: str) -> None:
    t = make(name)
    x = data()
    full = jacobian(lambda v: t(v), x)  # [N, d, N, d]
    rows = torch.arange(x.shape[0])
    per_sample = full[rows, :, rows, :]
    expected = torch.linalg.slogdet(per_sample).logabsdet
    y = t(x)
    assert torch.allclose(t.log_abs_det_jacobian(x, y), expected, atol=1e-10)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_gradients_reach_every_parameter(name: str) -> None:
    t = make(name)
    x = data()
    y = t(x)
    loss = (y**2).sum() - t.log_abs_det_jacobian(x, y).sum()
    loss.backward()
    for param_name, p in t.named_parameters():
        assert p.grad is not None, param_name
        assert p.grad.abs().sum() > 0, param_name


@pytest.mark.parametrize("name", list(FACTORIES))
def test_state_dict_round_trip(name: str) -> None:
    t = make(name)
    buffer = io.BytesIO()
    torch.save(t.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = FACTORIES[name](DIM).double()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = data()
    assert torch.equal(fresh(x), t(x))


@pytest.mark.parametrize("name", INVERTIBLE)
def test_density_integrates_to_one(name: str) -> None:
    t = make(name, dim=2)
    with torch.no_grad():  # small weights: the mass inside the box, no spike the grid misses
        for p in t.parameters():
            p.mul_(0.1)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    flow = dist.TransformedDistribution(base, [t])
    grid = torch.linspace(-8.0, 8.0, 400, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    with torch.no_grad():
        density = flow.log_prob(points).exp().reshape(400, 400)
    mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid)
    # Pyro's spline density is only piecewise smooth (kinks at the knots): the trapezoid rule's
    # error there is larger; an unexplained 1.3e-3 remains (see the report of issue 6)
    tolerance = 2e-3 if name == "spline" else 1e-3
    assert abs(float(mass) - 1.0) < tolerance


@pytest.mark.parametrize("name", ["maf", "iaf"])
def test_autoregressive_jacobian_is_triangular_in_stated_order(name: str) -> None:
    t = make(name)
    x = data(1)[0]
    for k, part in enumerate(t.parts):
        # the one-pass direction: z -> x for IAF, x -> z for MAF (the wrapped layer)
        layer = part if name == "iaf" else part.base
        assert isinstance(layer, AffineAutoregressive)
        order = torch.arange(DIM) if k % 2 == 0 else torch.arange(DIM - 1, -1, -1)
        assert torch.equal(layer.arn.permutation, order)
        jac = jacobian(lambda v, layer=layer: layer(v), x)[order][:, order]
        assert torch.all(torch.triu(jac, diagonal=1) == 0)
        assert torch.all(torch.diagonal(jac) > 0)
        assert torch.tril(jac, diagonal=-1).abs().sum() > 0


@pytest.mark.parametrize("cls", MODELS)
def test_model_log_prob_sample_and_exact_estimate(cls: type) -> None:
    model = make_model(cls)
    x = data(dim=2)
    log_p = model.log_prob(x)
    assert log_p.shape == (5,) and log_p.dtype == torch.float64
    trace = poutine.trace(model.model).get_trace(x)
    assert trace.nodes["data"]["type"] == "plate" or "data" in str(
        trace.nodes["x"]["cond_indep_stack"]
    )
    assert torch.allclose(trace.nodes["x"]["fn"].log_prob(x), log_p)
    estimate = LogLikelihood(model.model, method="exact")(x)
    assert torch.allclose(estimate.log_prob, log_p.detach())
    samples = model.sample(7, seed=0)
    assert samples.shape == (7, 2) and torch.equal(samples, model.sample(7, seed=0))


@pytest.mark.parametrize("cls", MODELS)
def test_model_state_dict_round_trip(cls: type) -> None:
    model = make_model(cls)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    fresh = cls(2, hidden_dims=[16], num_layers=3).double()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x = data(dim=2)
    assert torch.equal(fresh.log_prob(x), model.log_prob(x))


@pytest.mark.parametrize("cls", MODELS)
def test_model_rejects_wrong_dimension(cls: type) -> None:
    model = make_model(cls)
    with pytest.raises(ValueError, match=r"shape \[N, 2\], got \(4, 3\)"):
        model.log_prob(torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"shape \[N, 2\], got \(2,\)"):
        model.model(torch.zeros(2))


@pytest.mark.parametrize("name", ["nice", "real_nvp", "spline"])
def test_coupling_flows_need_two_dimensions(name: str) -> None:
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        FACTORIES[name](1)


def test_maf_scores_in_one_pass_and_iaf_samples_in_one_pass() -> None:
    # the wrapped Pyro layer's forward is the one-pass direction: MAF uses it to score data,
    # IAF to draw samples; the other direction is Pyro's sequential inverse
    maf, iaf = make("maf"), make("iaf")
    assert all(isinstance(p, flows.Inverse) for p in maf.parts)
    assert all(isinstance(p, AffineAutoregressive) for p in iaf.parts)


# --- dequantized flow models: data on a grid of levels --------------------------------------


def make_dequantized(cls: type = RealNVP, levels: int = 3, alpha: float | None = 0.1) -> FlowModel:
    torch.manual_seed(3)
    model = perturb(cls(2, hidden_dims=[16], num_layers=3, levels=levels, logit_alpha=alpha), 4)
    return model  # type: ignore[return-value]


def cell_probabilities(model: FlowModel, points_per_level: int = 241) -> torch.Tensor:
    """``P(x) = int_{[x, x+1]} p_V(v) dv`` of every cell of the grid by the trapezoid rule on
    each cell, ``[L, L]``: the oracle of the dequantized model."""
    levels = model.preprocessing.levels
    probs = torch.empty(levels, levels, dtype=torch.float64)
    unit = torch.linspace(0.0, 1.0, points_per_level, dtype=torch.float64)
    for i in range(levels):
        for j in range(levels):
            points = torch.cartesian_prod(unit + i, unit + j)
            with torch.no_grad():
                density = model.distribution().log_prob(points).exp()
            density = density.reshape(points_per_level, points_per_level)
            probs[i, j] = torch.trapezoid(torch.trapezoid(density, unit, dim=1), unit)
    return probs


@pytest.mark.parametrize("cls", MODELS)
def test_dequantized_bound_and_importance_estimates_against_quadrature(cls: type) -> None:
    model = make_dequantized(cls)
    probs = cell_probabilities(model)
    assert float(probs.sum()) < 1.0  # some mass falls off the grid: a defective P
    x = torch.cartesian_prod(torch.arange(3.0), torch.arange(3.0)).double()
    exact = probs.reshape(-1).log()
    pyro.set_rng_seed(0)
    importance = LogLikelihood(model.model, model.guide, num_samples=2000)(x)
    assert torch.all((importance.log_prob - exact).abs() < 4 * importance.stderr + 1e-4)
    elbo = LogLikelihood(model.model, model.guide, method="elbo", num_samples=2000)(x)
    # a lower bound, with Jensen's gap positive unless p_V is constant on a cell
    assert torch.all(elbo.log_prob < exact + 4 * elbo.stderr)
    assert float((exact - elbo.log_prob).sum()) > 4 * float(elbo.stderr.square().sum().sqrt())
    with torch.no_grad():
        draws = torch.stack([model.log_prob(x) for _ in range(400)])
    assert torch.all((draws.mean(0) - elbo.log_prob).abs() < 4 * draws.std(0) / 20 + 0.01)


def test_dequantized_samples_follow_the_normalized_cell_probabilities() -> None:
    model = make_dequantized(MAF, alpha=0.1)
    expected = cell_probabilities(model)
    expected /= expected.sum()
    samples = model.sample(20_000, seed=0)
    assert samples.dtype == torch.float64 and torch.equal(samples, samples.round())
    assert samples.min() >= 0 and samples.max() <= 2
    counts = torch.zeros(3, 3, dtype=torch.float64)
    counts.index_put_(
        (samples[:, 0].long(), samples[:, 1].long()), torch.ones(20_000).double(), True
    )
    frequencies = counts / 20_000
    tolerance = 4 * (expected * (1 - expected) / 20_000).sqrt() + 1e-3
    assert torch.all((frequencies - expected).abs() < tolerance)
    assert torch.equal(samples, model.sample(20_000, seed=0))


@pytest.mark.parametrize("alpha", [None, 0.05])
def test_dequantized_log_prob_is_flow_density_plus_preprocessing_log_det(
    alpha: float | None,
) -> None:
    model = make_dequantized(NICE, levels=17, alpha=alpha)
    x = torch.tensor([[0.0, 16.0], [5.0, 9.0]], dtype=torch.float64)
    with seeded(7):
        log_p = model.log_prob(x)
    with seeded(7):
        t, log_det = model.preprocessing.forward(x)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    flow_density = dist.TransformedDistribution(base, [model.flow]).log_prob(t)
    assert torch.allclose(log_p, flow_density + log_det, atol=1e-10)


@pytest.mark.parametrize("cls", MODELS)
def test_config_rebuilds_the_model(cls: type) -> None:
    model = make_dequantized(cls, levels=17, alpha=0.05)
    assert model.config == {
        "dim": 2,
        "hidden_dims": [16],
        "num_layers": 3,
        "levels": 17,
        "logit_alpha": 0.05,
    }
    fresh = cls(**model.config).double()
    fresh.load_state_dict(model.state_dict())
    x = torch.tensor([[3.0, 4.0]], dtype=torch.float64)
    with seeded(0):
        expected = model.log_prob(x)
    with seeded(0):
        assert torch.equal(fresh.log_prob(x), expected)
    assert "levels=17, logit_alpha=0.05" in repr(fresh)


def test_num_parameters_matches_the_architecture() -> None:
    # NICE(d=4, [h=8], 2 layers): 2 shift nets 2 -> 8 -> 2, then a scaling of 4
    assert NICE(4, [8], 2).num_parameters == 2 * (2 * 8 + 8 + 8 * 2 + 2) + 4
    # RealNVP: nets 2 -> 8 -> (2 + 2)
    assert RealNVP(4, [8], 2).num_parameters == 2 * (2 * 8 + 8 + 8 * 4 + 4)
    model = MAF(3, [8], 2)
    assert model.num_parameters == sum(p.numel() for p in model.parameters())


def test_dequantized_model_rejects_values_off_the_grid() -> None:
    model = make_dequantized(levels=17)
    with pytest.raises(ValueError, match=r"x\[0, 1\] = 17, but dequantized data must be"):
        model.log_prob(torch.tensor([[0.0, 17.0]]))
    with pytest.raises(ValueError, match=r"x\[1, 0\] = 0.5, but"):
        model.model(torch.tensor([[0.0, 1.0], [0.5, 1.0]]))
    with pytest.raises(ValueError, match="needs levels"):
        RealNVP(2, logit_alpha=0.05)
    with pytest.raises(ValueError, match="no latent variable"):
        RealNVP(2).guide(torch.zeros(1, 2))
    with pytest.raises(ValueError, match="no config"):
        FlowModel(2, flows.nice(2)).config


def test_dequantized_model_as_a_pyro_program() -> None:
    model = make_dequantized()
    x = torch.tensor([[0.0, 2.0], [1.0, 1.0]], dtype=torch.float64)
    graph = dependency_graph(model.model, x)
    assert list(graph.edges) == [("v", "x")]
    assert graph.nodes["x"]["observed"] and not graph.nodes["v"]["observed"]


def test_exact_method_refuses_a_dequantized_model() -> None:
    model = NICE(2, [8], 2, levels=4)
    x = torch.tensor([[0.0, 1.0], [3.0, 2.0]])
    with pytest.raises(ValueError, match=r"latent site\(s\) v .* are continuous"):
        LogLikelihood(model.model, method="exact")(x)


@pytest.mark.parametrize("cls", MODELS)
def test_checkpoint_round_trip(cls: type, tmp_path) -> None:
    from ppdgm.checkpoint import load_model, save_checkpoint

    model = make_model(cls)
    save_checkpoint(tmp_path / "flow.pt", model)
    loaded, _ = load_model(tmp_path / "flow.pt", expect=cls)
    x = data(dim=2)
    torch.testing.assert_close(loaded.log_prob(x), model.log_prob(x), rtol=0, atol=0)
