"""The fast road's recorded graph (:mod:`ppdgm.infer.traced`): the same loss and gradients as
running the programs, on the same random draws; one graph per batch shape; a note and the
programs where a graph cannot hold them; NaN named as before."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pytest
import torch
from own_models import ParamProgram, PlainVAE
from test_svi_road import PROGRAMS, gradients
from torch import nn

from ppdgm.base import values_checked
from ppdgm.infer.traced import TracedLoss
from ppdgm.infer.weights import NaNLogDensity
from ppdgm.models import GMVAE, HierarchicalVAE
from ppdgm.svi import SlowRoadWarning, SVIObjective

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def checked():
    """As fit runs its steps: on data it checked in full, where graphs are recorded."""
    with values_checked():
        yield


CASES = {
    **PROGRAMS,
    "gmvae": lambda: (
        GMVAE(6, 2, [5], components=3).double(),
        torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64)),
    ),
    "hvae": lambda: (
        HierarchicalVAE(6, (3, 2), ([5], [4])).double(),
        torch.bernoulli(torch.full((7, 6), 0.4, dtype=torch.float64)),
    ),
}


def recorded(objective: SVIObjective, module: nn.Module) -> int:
    return objective._traced.recorded(module)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize(
    ("loss", "particles"), [("elbo", 1), ("elbo", 3), ("meanfield", 1), ("iwae", 3)]
)
@pytest.mark.filterwarnings("ignore:the loss is not recorded as a graph")
def test_the_graph_gives_the_programs_loss_and_gradients(checked, name, loss, particles) -> None:
    if name == "nested-plates" and loss == "iwae":
        pytest.skip("IWAE takes no global latent site (the programs' road refuses it too)")
    torch.manual_seed(0)
    module, batch = CASES[name]()
    graph = SVIObjective(loss, particles, record_after=1)
    program = SVIObjective(loss, particles, record_after=None)
    graph(module, batch, step=0)  # its first call runs the programs
    out = []
    for road in (graph, program, graph):  # the graph once recorded, and again
        pyro.set_rng_seed(7)
        value = road(module, batch, step=0)
        out.append((value, gradients(module, value)))
    # the nested plates' global site: its log-density branches on a value (the ELBO scores it;
    # the mean-field ELBO takes its KL in closed form instead)
    assert recorded(graph, module) == (0 if (name, loss) == ("nested-plates", "elbo") else 1)
    for value, grads in (out[0], out[2]):
        assert float(value.detach()) == float(out[1][0].detach())  # the same draws, exactly
        for key, expected in out[1][1].items():
            torch.testing.assert_close(grads[key], expected, rtol=1e-12, atol=1e-14)


def test_one_graph_per_batch_shape_after_the_warm_up_steps(checked) -> None:
    torch.manual_seed(0)
    vae = PlainVAE(6, 2, 5)
    objective = SVIObjective(record_after=2)
    x = torch.bernoulli(torch.full((10, 6), 0.5))
    for step in range(3):
        objective(vae, x, step)
        assert recorded(objective, vae) == (1 if step == 2 else 0)
    objective(vae, x[:4], 3)  # a shorter last batch: its own warm-up
    assert recorded(objective, vae) == 1
    for step in range(2):
        objective(vae, x[:4], 4 + step)
    assert recorded(objective, vae) == 2
    with torch.no_grad():  # no gradients: the programs themselves
        objective(vae, x, 9)
    assert recorded(objective, vae) == 2


def test_graphs_are_recorded_only_on_data_checked_in_full() -> None:
    torch.manual_seed(0)
    vae = PlainVAE(6, 2, 5)
    objective = SVIObjective(record_after=1)
    x = torch.bernoulli(torch.full((10, 6), 0.5))
    with values_checked():
        objective(vae, x, 0)
    objective(vae, x, 1)  # a caller of its own, outside fit: the programs check the data
    assert recorded(objective, vae) == 0


def test_kl_annealing_runs_the_programs_until_beta_is_one(checked) -> None:
    torch.manual_seed(0)
    vae = PlainVAE(6, 2, 5)
    objective = SVIObjective(anneal_steps=3, record_after=1)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    for step in range(4):  # beta = 1/3, 2/3, 1, 1: recorded at its second step at beta = 1
        objective(vae, x, step)
        assert recorded(objective, vae) == (1 if step == 3 else 0)


class Branchy(PlainVAE):
    """A program that branches on its data's values: no graph can hold it."""

    def model(self, x: torch.Tensor) -> None:
        if x.sum() > 1e6:  # never true; a graph would have to decide it anyway
            x = x * 0
        super().model(x)


def test_a_branch_on_values_runs_the_programs_with_a_note(checked) -> None:
    torch.manual_seed(0)
    vae = Branchy(6, 2, 5)
    objective = SVIObjective(record_after=1)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    objective(vae, x, 0)
    with pytest.warns(SlowRoadWarning, match="not recorded as a graph: it branches on values"):
        objective(vae, x, 0)
    pyro.set_rng_seed(3)
    first = objective(vae, x, 1)  # no second note; the programs' own loss
    pyro.set_rng_seed(3)
    assert float(first.detach()) == float(SVIObjective(record_after=None)(vae, x, 1).detach())
    assert recorded(objective, vae) == 0


def test_a_pyro_param_program_runs_the_programs_with_a_note(checked) -> None:
    pyro.clear_param_store()
    program = ParamProgram()
    objective = SVIObjective(record_after=1)
    x = torch.randn(8)
    objective(program, x, 0)  # the first call probes the road; the param store fills
    with pytest.warns(SlowRoadWarning, match=r"pyro.param"):
        objective(program, x, 1)
    assert recorded(objective, program) == 0


def test_nan_in_a_recorded_graph_is_named_as_on_the_programs_road(checked) -> None:
    torch.manual_seed(0)
    vae = PlainVAE(6, 2, 5)
    objective = SVIObjective(record_after=1)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    objective(vae, x, 0)
    objective(vae, x, 0)
    assert recorded(objective, vae) == 1
    with torch.no_grad():
        vae.decoder[0].weight[0, 0] = float("nan")
    with pytest.raises(NaNLogDensity, match="site 'x'"):
        objective(vae, x, 1)


def test_traced_loss_counts_calls_before_recording() -> None:
    module = nn.Linear(2, 1)
    calls = []

    def loss(m: nn.Module, args, kwargs) -> torch.Tensor:
        calls.append(1)
        return m(args[0]).sum() * kwargs["scale"]

    traced = TracedLoss(loss, after=2)
    x = torch.ones(3, 2)
    values = [traced(module, (x,), {"scale": 2.0}) for _ in range(5)]
    assert traced.recorded(module) == 1 and len(calls) == 3  # two calls, then the recording
    assert len({float(v.detach()) for v in values}) == 1
    traced(module, (x,), {"scale": 3.0})  # another fixed value: another signature
    assert traced.recorded(module) == 1 and len(calls) == 4
    with pytest.raises(ValueError, match="after"):
        TracedLoss(loss, after=0)


def test_a_program_training_on_the_graph_learns_as_on_the_programs() -> None:
    from ppdgm.data import load_digits
    from ppdgm.train import fit

    x = load_digits("train")[:200]
    results = []
    for record_after in (1, None):
        torch.manual_seed(0)
        vae = PlainVAE(64, 2, 16)
        objective = SVIObjective(record_after=record_after)
        fit(vae, x, epochs=2, batch_size=50, seed=0, objective=objective, progress=False)
        results.append([p.detach().clone() for p in vae.parameters()])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_tensor_arguments_are_inputs_of_the_graph_not_constants(checked) -> None:
    class Scaled(PlainVAE):
        def model(self, x: torch.Tensor, temperature: float = 1.0) -> None:
            pyro.module("decoder", self.decoder)
            with pyro.plate("data", x.shape[0]):
                prior = dist.Normal(x.new_zeros(self.z_dim), temperature).to_event(1)
                z = pyro.sample("z", prior)
                pyro.sample("x", dist.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x)

        def guide(self, x: torch.Tensor, temperature: float = 1.0) -> None:
            super().guide(x)

    torch.manual_seed(0)
    vae = Scaled(6, 2, 5)
    objective = SVIObjective(record_after=1)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    objective(vae, {"x": x, "temperature": torch.tensor(1.0)}, 0)
    for temperature in (1.0, 2.0):
        pyro.set_rng_seed(1)
        ours = objective(vae, {"x": x, "temperature": torch.tensor(temperature)}, 0)
        pyro.set_rng_seed(1)
        theirs = SVIObjective(record_after=None)(
            vae, {"x": x, "temperature": torch.tensor(temperature)}, 0
        )
        assert float(ours.detach()) == float(theirs.detach())
    assert recorded(objective, vae) == 1  # one graph for both temperatures


def test_a_compiled_graph_gives_the_same_loss_or_says_why_not(checked) -> None:
    import warnings

    torch.manual_seed(0)
    vae = PlainVAE(6, 2, 5)
    compiled = SVIObjective(record_after=1, compile=True)
    x = torch.bernoulli(torch.full((5, 6), 0.5))
    compiled(vae, x, 0)
    values = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SlowRoadWarning)
        for road in (compiled, SVIObjective(record_after=None), compiled):
            pyro.set_rng_seed(4)
            values.append(road(vae, x, 1))
    notes = [str(w.message) for w in caught if issubclass(w.category, SlowRoadWarning)]
    if compiled._traced.compiled(vae):  # Inductor's kernels, PyTorch's random stream
        assert not notes
    else:  # no C++ compiler here: the recorded graph, with a note
        assert len(notes) == 1 and "the graph is not compiled" in notes[0]
    for value in (values[0], values[2]):
        assert float(value.detach()) == pytest.approx(float(values[1].detach()), rel=1e-5)
    with pytest.raises(ValueError, match="needs record_after"):
        SVIObjective(record_after=None, compile=True)
