"""Generated Pyro programs and data given to the likelihood estimators: every case ends as the
right number (a sum over the latent states, or the closed-form ELBO) or as a named error.

The programs are mixtures, ``z ~ Categorical(w)`` then ``x | z ~ Normal(mu_z, sigma_z)`` or
``Bernoulli(p_z)`` inside the data plate, so ``log p(x_i) = logsumexp_z [log w_z + log p(x_i |
z)]`` and, with the prior as proposal, ``ELBO_i = sum_z w_z log p(x_i | z)``, both by hand.
The data are drawn with NaN, infinities, no rows, values outside the support and a shape the
plate does not have (a column, ``[N, 1]``, where the plate is over ``[N]``). The suite of a
few hundred cases runs by default; ``-m slow`` runs thousands."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppdgm.infer.estimate import LogLikelihood, UnreliableWeightsWarning
from ppdgm.infer.weights import NaNLogDensity

FAST = settings(
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=150,
    suppress_health_check=[HealthCheck.too_slow],
)
SLOW = settings(FAST, max_examples=2500)

finite = st.floats(-4.0, 4.0, allow_nan=False)
awkward = st.one_of(
    finite,
    st.sampled_from([math.nan, math.inf, -math.inf, 0.0, 1.0, 0.5, -1e6, 1e6]),
)


@st.composite
def mixtures(draw: st.DrawFn) -> dict:
    k = draw(st.integers(1, 4))
    weights = draw(st.lists(st.floats(0.01, 1.0), min_size=k, max_size=k))
    family = draw(st.sampled_from(["normal", "bernoulli"]))
    if family == "normal":
        params = {
            "loc": draw(st.lists(finite, min_size=k, max_size=k)),
            "scale": draw(st.lists(st.floats(0.2, 3.0), min_size=k, max_size=k)),
        }
    else:
        params = {"probs": draw(st.lists(st.floats(0.05, 0.95), min_size=k, max_size=k))}
    return {"weights": torch.tensor(weights, dtype=torch.float64), "family": family, **params}


def likelihood(spec: dict) -> dist.Distribution:
    if spec["family"] == "normal":
        loc = torch.tensor(spec["loc"], dtype=torch.float64)
        return dist.Normal(loc, torch.tensor(spec["scale"], dtype=torch.float64))
    return dist.Bernoulli(probs=torch.tensor(spec["probs"], dtype=torch.float64))


def program(spec: dict):
    w = spec["weights"] / spec["weights"].sum()
    each = likelihood(spec)

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Categorical(w))
            pyro.sample("x", type(each)(**{k: v[z] for k, v in _params(each).items()}), obs=x)

    return model


def _params(d: dist.Distribution) -> dict[str, torch.Tensor]:
    if isinstance(d, dist.Normal):
        return {"loc": d.loc, "scale": d.scale}
    return {"probs": d.probs}


def by_hand(spec: dict, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log p(x_i)`` and the prior-proposal ELBO of each row, summed over the states."""
    w = spec["weights"] / spec["weights"].sum()
    each = likelihood(spec)
    cond = each.log_prob(x[:, None])  # [N, k]
    return torch.logsumexp(w.log() + cond, -1), (w * cond).sum(-1)


def valid_data(spec: dict, x: torch.Tensor) -> bool:
    if x.dim() != 1 and x.shape != (1, 1):  # one row as a column broadcasts to the plate
        return False
    if x.numel() == 0 or not bool(torch.isfinite(x).all()):
        return False
    return spec["family"] == "normal" or bool(((x == 0) | (x == 1)).all())


@st.composite
def data(draw: st.DrawFn) -> torch.Tensor:
    n = draw(st.integers(0, 5))
    shape = draw(st.sampled_from(["rows", "rows", "rows", "column"]))
    values = draw(st.lists(awkward, min_size=n, max_size=n))
    x = torch.tensor(values, dtype=torch.float64)
    return x[:, None] if shape == "column" else x


def outcome(estimator: LogLikelihood, x: torch.Tensor):
    """The estimate, or the error; ``None`` for an estimate flagged as unreliable."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", UnreliableWeightsWarning)
        try:
            return estimator(x)
        except UnreliableWeightsWarning:
            return None
        except (ValueError, NaNLogDensity) as e:
            return e


def check(spec: dict, x: torch.Tensor, method: str, seed: int) -> None:
    pyro.clear_param_store()
    estimator = LogLikelihood(program(spec), method=method, num_samples=400)
    torch.manual_seed(seed)
    found = outcome(estimator, x)
    if not valid_data(spec, x):
        assert isinstance(found, Exception), (x, found)  # never a number for such data
        message = str(found)
        assert any(
            word in message
            for word in ("'x'", "no data points", "plate", "support", "shape", "dim")
        ), message
        return
    assert not isinstance(found, Exception), found
    if found is None:  # flagged: the estimate says it cannot be trusted
        return
    exact, elbo = by_hand(spec, x.reshape(-1))
    assert torch.isfinite(found.log_prob).all()
    if method == "exact":
        torch.testing.assert_close(found.log_prob, exact, rtol=1e-9, atol=1e-9)
    else:
        truth = exact if method == "importance" else elbo
        # within six standard errors; a little more where one draw decides (tiny stderr)
        slack = 6 * found.stderr.nan_to_num(0) + 1e-6 + 0.05 * truth.abs().clamp(max=1)
        assert bool(((found.log_prob - truth).abs() <= slack).all()), (found, truth)
    if method == "importance":  # IWAE with the prior as proposal: never above log p by much
        assert bool((found.log_prob <= exact + 6 * found.stderr.nan_to_num(0) + 1e-6).all())


@FAST
@given(mixtures(), data(), st.sampled_from(["exact", "importance", "elbo"]), st.integers(0, 99))
def test_estimates_equal_the_sums_over_states_or_name_the_bad_input(spec, x, method, seed):
    check(spec, x, method, seed)


@pytest.mark.slow
@SLOW
@given(mixtures(), data(), st.sampled_from(["exact", "importance", "elbo"]), st.integers(0, 99))
def test_estimates_over_thousands_of_generated_programs(spec, x, method, seed):
    check(spec, x, method, seed)
