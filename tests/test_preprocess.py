"""Tests of ppdgm.preprocess: dequantization, the logit transform and bits per dimension."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import integrate
from scipy.stats import norm
from torch.autograd.functional import jacobian

from ppdgm.preprocess import Dequantization, Floor, bits_per_dim

ALPHAS = [None, 0.05]


def closed_form_t(v: torch.Tensor, levels: int, alpha: float | None) -> torch.Tensor:
    """The map of the module's description, written out: ``logit(alpha + (1 - 2 alpha) v / L)``
    (or ``v / L`` without the logit)."""
    y = v / levels
    return y if alpha is None else torch.logit(alpha + (1 - 2 * alpha) * y)


def standard_normal_log_density(pre: Dequantization, v: torch.Tensor) -> torch.Tensor:
    """``log p_V(v)`` for a standard Normal in the flow's space, through ``to_flow_space``."""
    t, log_det = pre.to_flow_space(v)
    return torch.distributions.Normal(0.0, 1.0).log_prob(t).sum(-1) + log_det


@pytest.mark.parametrize("alpha", ALPHAS)
def test_map_and_log_det_match_closed_form_and_autograd_jacobian(alpha: float | None) -> None:
    pre = Dequantization(17, logit_alpha=alpha)
    x = torch.tensor([[0.0, 7.0, 16.0], [16.0, 3.0, 0.0]], dtype=torch.float64)
    t, log_det = pre.forward(x, torch.Generator().manual_seed(0))
    v = pre.transform(t)  # back to the dequantized data
    assert torch.all((v >= x) & (v < x + 1))
    assert torch.allclose(t, closed_form_t(v, 17, alpha), atol=1e-12)
    for row in range(2):
        jac = jacobian(lambda w: closed_form_t(w, 17, alpha), v[row])
        assert torch.allclose(log_det[row], torch.linalg.slogdet(jac).logabsdet, atol=1e-10)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_density_on_the_grid_integrates_to_the_normal_mass_of_the_box_1d(
    alpha: float | None,
) -> None:
    # v in [0, L] maps onto t in [a, b]: the mass there is Phi(b) - Phi(a)
    pre = Dequantization(5, logit_alpha=alpha)
    a, b = (
        (0.0, 1.0)
        if alpha is None
        else (math.log(alpha / (1 - alpha)), -math.log(alpha / (1 - alpha)))
    )

    def density(v: float) -> float:
        return math.exp(
            float(standard_normal_log_density(pre, torch.tensor([[v]], dtype=torch.float64)))
        )

    mass, error = integrate.quad(density, 0.0, 5.0, points=[1, 2, 3, 4], epsabs=1e-12)
    assert abs(mass - (norm.cdf(b) - norm.cdf(a))) < 1e-8 + error


def test_density_on_the_grid_integrates_to_the_normal_mass_of_the_box_2d() -> None:
    pre = Dequantization(3, logit_alpha=0.1)
    grid = torch.linspace(0.0, 3.0, 1201, dtype=torch.float64)
    points = torch.cartesian_prod(grid, grid)
    density = standard_normal_log_density(pre, points).exp().reshape(1201, 1201)
    mass = torch.trapezoid(torch.trapezoid(density, grid, dim=1), grid)
    box = norm.cdf(math.log(9.0)) - norm.cdf(-math.log(9.0))  # logit(0.9) = log 9
    assert abs(float(mass) - box**2) < 1e-6


@pytest.mark.parametrize("alpha", ALPHAS)
def test_bound_is_exact_for_a_density_constant_on_the_bins(alpha: float | None) -> None:
    # a flow density p(t) that makes p_V constant on each bin: p_V(v) = P(floor(v)), so
    # log p(t) + log |det dt/dv| = log P(x) for every draw of the noise
    levels = 5
    probs = torch.tensor([0.1, 0.4, 0.05, 0.25, 0.2], dtype=torch.float64)
    pre = Dequantization(levels, logit_alpha=alpha)
    x = torch.arange(levels, dtype=torch.float64).repeat(40)[:, None]
    t, log_det = pre.forward(x, torch.Generator().manual_seed(1))
    v = pre.transform(t).detach().requires_grad_()
    # |dv/dt| by autograd, independently of the transform's own log-Jacobian
    t_again = closed_form_t(v, levels, alpha)
    (dt_dv,) = torch.autograd.grad(t_again.sum(), v)
    log_p_t = probs[x[:, 0].long()].log() - dt_dv[:, 0].abs().log()
    assert torch.allclose(log_p_t + log_det, probs[x[:, 0].long()].log(), atol=1e-12)


def test_bits_per_dim_of_the_uniform_distribution_over_the_levels() -> None:
    # y = v / L uniform on the unit cube: log p(y) = 0, and the bound is -D log L exactly
    pre = Dequantization(17)
    x = torch.randint(0, 17, (6, 64), generator=torch.Generator().manual_seed(0)).double()
    _, log_det = pre.forward(x, torch.Generator().manual_seed(0))
    assert torch.allclose(log_det, torch.full((6,), -64 * math.log(17), dtype=torch.float64))
    assert torch.allclose(bits_per_dim(log_det, 64), torch.full((6,), math.log2(17)).double())
    assert bits_per_dim(-math.log(2), 1) == pytest.approx(1.0)


def test_quantize_inverts_dequantize() -> None:
    pre = Dequantization(256, logit_alpha=0.05)
    x = torch.randint(0, 256, (50, 4), generator=torch.Generator().manual_seed(0)).float()
    t, _ = pre.forward(x, torch.Generator().manual_seed(1))
    assert torch.equal(pre.quantize(pre.transform(t.clone())), x)
    assert torch.equal(pre.quantize(torch.tensor([-0.5, 256.5])), torch.tensor([0.0, 255.0]))


def test_floor_likelihood_is_the_indicator_of_the_closed_bin() -> None:
    v = torch.tensor([[0.5, 2.0], [1.0, 1.5]])
    x = torch.tensor([[0.0, 2.0], [0.0, 1.0]])
    assert torch.equal(Floor(v).log_prob(x), torch.tensor([0.0, 0.0]))
    assert torch.equal(Floor(v).log_prob(x + 1), torch.tensor([-math.inf, -math.inf]))
    assert torch.equal(Floor(v).sample(), torch.tensor([[0.0, 2.0], [1.0, 1.0]]))
    assert Floor(v).expand(torch.Size([3, 2])).batch_shape == (3, 2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (17.0, r"x\[1, 2\] = 17, but dequantized data must be integers in 0\.\.16"),
        (-1.0, r"x\[1, 2\] = -1, but"),
        (2.5, r"x\[1, 2\] = 2\.5, but"),
        (math.nan, r"x\[1, 2\] is NaN"),
    ],
)
def test_rejects_values_off_the_grid(value: float, message: str) -> None:
    x = torch.zeros(2, 3)
    x[1, 2] = value
    with pytest.raises(ValueError, match=message):
        Dequantization(17, logit_alpha=0.05).forward(x)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"levels": 1}, "levels must be an integer >= 2, got 1"),
        ({"levels": 2.0}, "levels must be an integer >= 2, got 2.0"),
        ({"levels": 17, "logit_alpha": 0.5}, r"logit_alpha must be in \(0, 0.5\) or None, got 0.5"),
        ({"levels": 17, "logit_alpha": 0.0}, "logit_alpha must be in"),
        ({"levels": 17, "logit_alpha": True}, "logit_alpha must be in"),
    ],
)
def test_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dequantization(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        bits_per_dim(torch.zeros(1), 0)
