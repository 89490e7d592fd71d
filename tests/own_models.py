"""Models as a user writes them, outside the zoo: plain Pyro programs and plain density modules
with nothing of ppdgm in them. The tests train them from Python and from the command line
(``ppdgm fit tests/own_models.py:NAME``)."""

from __future__ import annotations

import math

import pyro
import pyro.distributions as dist
import torch
from pyro.distributions import constraints
from torch import nn


class PlainVAE(nn.Module):
    """A VAE for binary data written as two Pyro programs, as in Pyro's tutorial."""

    def __init__(self, x_dim: int = 64, z_dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        self.z_dim = z_dim
        self.encoder = nn.Sequential(
            nn.Linear(x_dim, hidden), nn.Tanh(), nn.Linear(hidden, 2 * z_dim)
        )
        self.decoder = nn.Sequential(nn.Linear(z_dim, hidden), nn.Tanh(), nn.Linear(hidden, x_dim))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("decoder", self.decoder)
        with pyro.plate("data", x.shape[0]):
            prior = dist.Normal(x.new_zeros(self.z_dim), x.new_ones(self.z_dim)).to_event(1)
            z = pyro.sample("z", prior)
            pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("encoder", self.encoder)
        with pyro.plate("data", x.shape[0]):
            loc, log_scale = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed or 0)
        z = torch.randn(n, self.z_dim, generator=generator)
        with torch.no_grad():
            return torch.sigmoid(self.decoder(z))


def make_vae(width: int = 16) -> PlainVAE:
    """A factory: ``ppdgm fit own_models.py:make_vae --kwargs '{"width": 8}'``."""
    return PlainVAE(64, 2, width)


class ParamProgram(nn.Module):
    """``z_i ~ N(mu, 1)``, ``x_i ~ N(z_i, 1)`` with ``mu`` and the guide
    ``q(z_i | x_i) = N(a x_i + b, s)`` made by ``pyro.param`` (no module parameters at all).

    Closed forms: ``x_i ~ N(mu, 2)``, so maximum likelihood puts ``mu`` at the data's mean; the
    posterior is ``N((x_i + mu) / 2, 1 / 2)``, so the best guide has ``a = 1/2``, ``b = mu / 2``,
    ``s = sqrt(1/2)``, and then the ELBO is ``log p(x)``."""

    def model(self, x: torch.Tensor) -> None:
        mu = pyro.param("mu", torch.tensor(0.0))
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(mu, 1.0))
            pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        a = pyro.param("a", torch.tensor(0.0))
        b = pyro.param("b", torch.tensor(0.0))
        s = pyro.param("s", torch.tensor(1.0), constraint=constraints.positive)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("z", dist.Normal(a * x + b, s))


class DiagonalGaussian(nn.Module):
    """A density model: ``N(mean, diag(exp(log_scale))^2)``; maximum likelihood gives the data's
    mean and (biased) standard deviation."""

    def __init__(self, dim: int = 3) -> None:
        super().__init__()
        self.mean = nn.Parameter(torch.zeros(dim))
        self.log_scale = nn.Parameter(torch.zeros(dim))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return dist.Normal(self.mean, self.log_scale.exp()).log_prob(x).sum(-1)

    def sample(self, n: int, seed: int | None = None) -> torch.Tensor:
        generator = torch.Generator().manual_seed(seed or 0)
        noise = torch.randn(n, len(self.mean), generator=generator)
        with torch.no_grad():
            return self.mean + self.log_scale.exp() * noise


class ClassConditional(nn.Module):
    """A density of ``x`` given its label ``y``: ``N(mean[y], I)``; maximum likelihood gives
    each class's mean."""

    def __init__(self, dim: int = 2, classes: int = 3) -> None:
        super().__init__()
        self.means = nn.Parameter(torch.zeros(classes, dim))

    def log_prob(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        d = x.shape[-1]
        return -0.5 * ((x - self.means[y]) ** 2).sum(-1) - 0.5 * d * math.log(2 * math.pi)
