"""The likelihood-estimation part of ``ppdgm demo``: exact, importance sampling and the ELBO side
by side, on a network with hidden nodes and on probabilistic PCA (a closed-form marginal)."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pyro
import pyro.distributions as dist
import torch

from ppdgm.bn import asia
from ppdgm.infer.estimate import Estimate, LogLikelihood, UnreliableWeightsWarning, comparison_table

__all__ = ["demo_section"]


def demo_section(out_dir: Path) -> str:
    """The text of the section (nothing is written into ``out_dir``)."""
    start = time.perf_counter()
    lines: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UnreliableWeightsWarning)
        lines += _network_part()
        lines.append("")
        lines += _ppca_part()
    lines += [f"  note: {w.message}" for w in caught]
    lines.append("  importance K=1 is a one-sample ELBO: the same expectation as the ELBO row")
    lines.append(
        "  in expectation ELBO <= IWAE_K <= IWAE_K' <= log p(x) for K <= K': importance "
        "sampling is a lower bound that tightens with K"
    )
    lines.append(f"  ({time.perf_counter() - start:.1f} s)")
    return "\n".join(lines)


def _network_part() -> list[str]:
    bn = asia()
    rows = bn.sample(200, seed=6).astype(object)
    rows[["tub", "lung", "either"]] = None  # hidden nodes: summed out, or sampled
    pyro.set_rng_seed(0)
    estimates = {
        "exact (bn.log_prob)": LogLikelihood(bn.model, method="exact")(rows),
        "importance K=10": LogLikelihood(bn.model, num_samples=10)(rows),
        "importance K=300": LogLikelihood(bn.model, num_samples=300)(rows),
        "ELBO K=300": LogLikelihood(bn.model, method="elbo", num_samples=300)(rows),
    }
    return [
        "Asia, 200 rows with tub, lung and either hidden; the proposal is the network itself:",
        *("  " + line for line in comparison_table(estimates).splitlines()),
    ]


def ppca_problem(
    dim: int = 5, latent: int = 2, sigma: float = 0.5, seed: int = 0
) -> tuple[dist.MultivariateNormal, Callable[[torch.Tensor], None], Callable[[torch.Tensor], None]]:
    """Probabilistic PCA ``x = W z + mu + eps`` (float64, random ``W`` and ``mu``): its closed-form
    marginal ``N(mu, W W^T + sigma^2 I)``, the Pyro model, and a guide with the exact posterior's
    mean, its marginal scales doubled and correlations dropped."""
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(dim, latent, generator=g, dtype=torch.float64)
    mu = torch.randn(dim, generator=g, dtype=torch.float64)
    marginal = dist.MultivariateNormal(mu, W @ W.T + sigma**2 * torch.eye(dim, dtype=W.dtype))
    post_cov = sigma**2 * torch.linalg.inv(W.T @ W + sigma**2 * torch.eye(latent, dtype=W.dtype))

    def model(x: torch.Tensor) -> None:
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(0.0, 1.0).expand([latent]).to_event(1))
            pyro.sample("x", dist.Normal(z @ W.T + mu, sigma).to_event(1), obs=x)

    def guide(x: torch.Tensor) -> None:
        loc = (x - mu) @ W @ post_cov.T / sigma**2
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(loc, 2 * post_cov.diagonal().sqrt()).to_event(1))

    return marginal, model, guide


def _ppca_part() -> list[str]:
    marginal, model, guide = ppca_problem()
    torch.manual_seed(1)
    x = marginal.sample((200,))
    pyro.set_rng_seed(1)
    closed = Estimate(marginal.log_prob(x), torch.zeros(200), None, "exact", None)
    estimates = {"closed form N(mu, WW^T + s^2 I)": closed}
    for k in (1, 10, 1000):
        estimates[f"importance K={k}"] = LogLikelihood(model, guide, num_samples=k)(x)
    estimates["ELBO K=1000"] = LogLikelihood(model, guide, method="elbo", num_samples=1000)(x)
    return [
        "Probabilistic PCA x = W z + mu + eps (5 dimensions, 2 latent), 200 points; the "
        "proposal is the posterior with doubled scales:",
        *("  " + line for line in comparison_table(estimates).splitlines()),
    ]
