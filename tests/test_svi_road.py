"""The fast road of SVIObjective (ppdgm.infer.iwae's WeightedELBO and IWAE on the programs'
log weights) against Pyro's own ELBO classes: the same value and the same gradient from the
same draws, on several programs (a plain VAE, flows as guides, nested plates, pyro.param
parameters, labels as a second argument, several particles, KL annealing); and the fall-back,
with a note, for programs the road cannot take."""

from __future__ import annotations

import math
import warnings

import pyro
import pyro.distributions as dist
import pytest
import torch
from own_models import ParamProgram, PlainVAE
from pyro.infer import RenyiELBO, Trace_ELBO
from torch import nn

from ppdgm.models import VAE
from ppdgm.svi import SlowRoadWarning, SVIObjective

pytestmark = pytest.mark.usefixtures("one_thread")


class Nested(nn.Module):
    """A global latent, a per-row latent and a plate of pixels inside the rows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Linear(4, 2)
        self.loc = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def model(self, x: torch.Tensor) -> None:
        pyro.module("net", self.net)
        g = pyro.sample("g", dist.Normal(torch.zeros((), dtype=x.dtype), 1.0))
        with pyro.plate("data", x.shape[0], dim=-2):
            z = pyro.sample("z", dist.Normal(g.unsqueeze(-1).unsqueeze(-1), 1.0))
            with pyro.plate("pixels", x.shape[1], dim=-1):
                pyro.sample("x", dist.Normal(z, 1.0), obs=x)

    def guide(self, x: torch.Tensor) -> None:
        pyro.module("net", self.net)
        pyro.sample("g", dist.Normal(self.loc, 0.5))
        with pyro.plate("data", x.shape[0], dim=-2):
            out = self.net(x)
            pyro.sample("z", dist.Normal(out[:, :1], nn.functional.softplus(out[:, 1:])))


class Labelled(nn.Module):
    """A conditional VAE-like program: ``model(x, y)`` with the label shifting the prior."""

    def __init__(self) -> None:
        super().__init__()
        self.shift = nn.Embedding(3, 2)
        self.encoder = nn.Linear(5, 4)
        self.decoder = nn.Linear(2, 5)

    def model(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.module("m", self)
        with pyro.plate("data", x.shape[0]):
            z = pyro.sample("z", dist.Normal(self.shift(y), 1.0).to_event(1))
            pyro.sample("x", dist.Normal(self.decoder(z), 1.0).to_event(1), obs=x)

    def guide(self, x: torch.Tensor, y: torch.Tensor) -> None:
        pyro.module("m", self)
        with pyro.plate("data", x.shape[0]):
            loc, raw = self.encoder(x).chunk(2, -1)
            pyro.sample("z", dist.Normal(loc, raw.exp()).to_event(1))


def gradients(module: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    module.zero_grad()
    params = {n: p for n, p in module.named_parameters() if p.requires_grad}
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {
        n: g if g is not None else torch.zeros_like(p)
        for (n, p), g in zip(params.items(), grads, strict=True)
    }


def both_roads(
    module: nn.Module, batch, objective: SVIObjective, reference: SVIObjective, step: int = 0
):
    reference(module, batch, step)  # Pyro's classes guess the plate nesting on their first call
    out = []
    for road in (objective, reference):
        pyro.set_rng_seed(7)
        loss = road(module, batch, step)
        out.append((loss, gradients(module, loss)))
    return out


PROGRAMS = {
    "plain-vae": lambda: (
        PlainVAE(6, 2, 5).double(),
        torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64)),
    ),
    "iaf-guide": lambda: (
        VAE(6, 2, [5], guide_flow="iaf", flow_layers=2).double(),
        torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64)),
    ),
    "maf-prior": lambda: (
        VAE(6, 2, [5], prior_flow="maf", flow_layers=2).double(),
        torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64)),
    ),
    "nested-plates": lambda: (Nested().double(), torch.randn(5, 4, dtype=torch.float64)),
    "labels": lambda: (
        Labelled().double(),
        (torch.randn(6, 5, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])),
    ),
}


@pytest.mark.parametrize("name", list(PROGRAMS))
@pytest.mark.parametrize(
    ("loss", "particles", "anneal"),
    [("elbo", 1, 0), ("elbo", 3, 0), ("meanfield", 1, 0), ("elbo", 1, 10)],
)
def test_the_fast_road_is_pyros_elbo_in_value_and_gradient(name, loss, particles, anneal) -> None:
    torch.manual_seed(0)
    module, batch = PROGRAMS[name]()
    fast = SVIObjective(loss, particles, anneal_steps=anneal)
    pyro_road = SVIObjective(loss, particles, anneal_steps=anneal, program=True)
    (ours, our_grads), (theirs, their_grads) = both_roads(module, batch, fast, pyro_road, step=3)
    assert type(fast._elbos[module]).__name__ == "WeightedELBO"
    assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-10, abs=1e-10)
    for key in their_grads:
        torch.testing.assert_close(our_grads[key], their_grads[key], rtol=1e-8, atol=1e-10)


def test_pyro_param_programs_take_the_road_too() -> None:
    pyro.clear_param_store()
    program, x = ParamProgram(), torch.randn(6, dtype=torch.float64)
    pyro.param("mu", torch.tensor(0.2, dtype=torch.float64))
    pyro.param("a", torch.tensor(0.4, dtype=torch.float64))
    pyro.param("b", torch.tensor(0.1, dtype=torch.float64))
    pyro.param("s", torch.tensor(0.9, dtype=torch.float64), constraint=dist.constraints.positive)
    values = []
    for road in (SVIObjective(), SVIObjective(program=True)):
        road(program, x, 0)
        pyro.set_rng_seed(1)
        loss = road(program, x, 0)
        params = [pyro.param(n).unconstrained() for n in ("mu", "a", "b", "s")]
        values.append((float(loss.detach()), torch.autograd.grad(loss, params)))
    assert values[0][0] == pytest.approx(values[1][0], rel=1e-12)
    for ours, theirs in zip(values[0][1], values[1][1], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-12)


def test_the_iwae_road_is_renyi_alpha_zero_on_one_point() -> None:
    """On one data point Pyro's RenyiELBO(alpha=0) is the IWAE bound: same draws, same value."""
    torch.manual_seed(0)
    vae, x = PROGRAMS["plain-vae"]()
    x = x[:1]
    renyi = RenyiELBO(alpha=0, num_particles=6, vectorize_particles=True)
    renyi.loss(vae.model, vae.guide, x)
    iwae = SVIObjective("iwae", 6)
    iwae(vae, x, 0)
    pyro.set_rng_seed(2)
    ours = iwae(vae, x, 0)
    pyro.set_rng_seed(2)
    theirs = renyi.loss(vae.model, vae.guide, x)
    assert float(ours.detach()) == pytest.approx(theirs, rel=1e-10)


def test_programs_the_road_cannot_take_fall_back_with_a_note() -> None:
    locs = torch.tensor([-2.0, 0.0, 2.0], dtype=torch.float64)

    class Discrete(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.logits = nn.Parameter(torch.zeros(3, dtype=torch.float64))

        def model(self, x):
            with pyro.plate("data", len(x)):
                c = pyro.sample("c", dist.Categorical(logits=torch.zeros(3, dtype=x.dtype)))
                pyro.sample("x", dist.Normal(locs[c], 1.0), obs=x)

        def guide(self, x):
            with pyro.plate("data", len(x)):
                pyro.sample("c", dist.Categorical(logits=self.logits))

    class Rows(PlainVAE):
        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("rows", x.shape[0]):
                prior = dist.Normal(x.new_zeros(self.z_dim), 1.0).to_event(1)
                z = pyro.sample("z", prior)
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("rows", x.shape[0]):
                loc, log_scale = self.encoder(x).chunk(2, -1)
                pyro.sample("z", dist.Normal(loc, log_scale.exp()).to_event(1))

    x = torch.tensor([0.5, -1.5, 2.5], dtype=torch.float64)
    cases = [
        (Discrete(), x, r"guide site 'c' \(Categorical\) is not reparameterized"),
        (
            Rows(6, 2, 4).double(),
            torch.ones(3, 6, dtype=torch.float64),
            r'no pyro.plate\("data"\) over the rows',
        ),
    ]
    for module, batch, why in cases:
        objective = SVIObjective()
        with pytest.warns(SlowRoadWarning, match=why + r"; training with Pyro's Trace_ELBO"):
            objective(module, batch, 0)
        pyro.set_rng_seed(3)
        ours = objective(module, batch, 0)
        pyro.set_rng_seed(3)
        theirs = Trace_ELBO().differentiable_loss(module.model, module.guide, batch) / len(batch)
        assert float(ours.detach()) == pytest.approx(float(theirs.detach()), rel=1e-12)
    # IWAE forms the score-function term itself: the discrete guide stays on the road
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        SVIObjective("iwae", 4)(Discrete(), x, 0)
    assert math.isfinite(float(SVIObjective("iwae", 4)(Discrete(), x, 0).detach()))
