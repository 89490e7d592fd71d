"""Conditional flows (guide transforms): each kind, in float64, at several contexts."""

from __future__ import annotations

import io

import pyro.distributions as dist
import pytest
import torch
from torch.autograd.functional import jacobian

from ppdgm.transforms import CONDITIONAL, FLOWS, ConditionalFlow, maf

DIM, CONTEXT = 3, 4
KINDS = list(CONDITIONAL)
INVERTIBLE = ["iaf", "real_nvp"]


def make(kind: str, dim: int = DIM, seed: int = 1) -> ConditionalFlow:
    torch.manual_seed(seed)
    flow = FLOWS[kind](dim, hidden_dims=[8], num_layers=3, context_dim=CONTEXT).double()
    with torch.no_grad():  # away from the (often identity) initialization
        for p in flow.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return flow


def inputs(n: int = 5, dim: int = DIM, seed: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, dim, generator=generator, dtype=torch.float64)
    context = torch.randn(n, CONTEXT, generator=generator, dtype=torch.float64)
    return x, context


@pytest.mark.parametrize("kind", KINDS)
def test_log_det_matches_autograd_jacobian_per_context(kind: str) -> None:
    flow = make(kind)
    x, context = inputs()
    for i in range(len(x)):  # each row has its own context, hence its own transform
        t = flow.condition(context[i])
        full = jacobian(lambda v, t=t: t(v), x[i])
        y = t(x[i])
        expected = torch.linalg.slogdet(full).logabsdet
        torch.testing.assert_close(t.log_abs_det_jacobian(x[i], y), expected, atol=1e-10, rtol=0)
    # batched: row i transformed at context i, as in a guide
    t = flow.condition(context)
    rows = torch.stack([flow.condition(context[i])(x[i]) for i in range(len(x))])
    torch.testing.assert_close(t(x), rows, atol=1e-12, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_the_context_changes_the_transform(kind: str) -> None:
    flow = make(kind)
    x, context = inputs()
    assert not torch.allclose(flow.condition(context)(x), flow.condition(context.flip(0))(x))


@pytest.mark.parametrize("kind", INVERTIBLE)
def test_inverse_round_trip(kind: str) -> None:
    flow = make(kind)
    x, context = inputs()
    t = flow.condition(context)
    y = t(x)
    torch.testing.assert_close(t.inv(y.clone()), x, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_reach_every_parameter(kind: str) -> None:
    flow = make(kind)
    _, context = inputs()
    base = dist.Normal(torch.zeros(DIM, dtype=torch.float64), 1.0).to_event(1)
    q = dist.TransformedDistribution(base.expand([5]), [flow.condition(context)])
    z = q.rsample()
    (z.pow(2).sum() + q.log_prob(z).sum()).backward()
    for name, p in flow.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("kind", KINDS)
def test_state_dict_round_trip(kind: str) -> None:
    flow = make(kind)
    buffer = io.BytesIO()
    torch.save(flow.state_dict(), buffer)
    buffer.seek(0)
    fresh = FLOWS[kind](DIM, hidden_dims=[8], num_layers=3, context_dim=CONTEXT).double()
    fresh.load_state_dict(torch.load(buffer, weights_only=True))
    x, context = inputs()
    assert torch.equal(fresh.condition(context)(x), flow.condition(context)(x))


@pytest.mark.parametrize("kind", INVERTIBLE)
def test_conditional_density_integrates_to_one(kind: str) -> None:
    flow = make(kind, dim=2)
    with torch.no_grad():
        for p in flow.parameters():
            p.mul_(0.3)
    base = dist.Normal(torch.zeros(2, dtype=torch.float64), 1.0).to_event(1)
    grid = torch.linspace(-8.0, 8.0, 400, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    for context in torch.randn(2, CONTEXT, dtype=torch.float64):
        q = dist.TransformedDistribution(base, [flow.condition(context)])
        with torch.no_grad():
            density = q.log_prob(points).exp().reshape(400, 400)
        mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid)
        assert abs(float(mass) - 1.0) < 1e-3


def test_iaf_jacobian_is_triangular_in_each_layers_order() -> None:
    flow = make("iaf")
    x, context = inputs(1)
    for k, layer in enumerate(flow.layers):
        t = layer.condition(context[0])
        order = torch.arange(DIM) if k % 2 == 0 else torch.arange(DIM - 1, -1, -1)
        jac = jacobian(lambda v, t=t: t(v), x[0])[order][:, order]
        assert torch.all(torch.triu(jac, diagonal=1) == 0)
        assert torch.all(torch.diagonal(jac) > 0)


def test_bad_settings() -> None:
    assert "maf" not in CONDITIONAL  # MAF's one-pass direction is scoring, not sampling
    with pytest.raises(TypeError, match="context_dim"):
        maf(2, context_dim=4)
    with pytest.raises(ValueError, match="context_dim must be a positive integer"):
        FLOWS["iaf"](2, context_dim=0)
    with pytest.raises(ValueError, match="dim must be an integer >= 2"):
        FLOWS["real_nvp"](1, context_dim=4)
    with pytest.raises(ValueError, match="no stable parametrization"):
        FLOWS["iaf"](2, stable=True, context_dim=4)
