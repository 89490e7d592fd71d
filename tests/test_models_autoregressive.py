"""The autoregressive models (FVSBN, NADE, MADE, RNADE) against independent oracles: brute-force
enumeration of every binary vector, autograd Jacobians, chi-square tests of samples, Pyro's own
log-densities of the programs, Pyro's MADE masks, and numerical integration."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable

import numpy as np
import pytest
import torch
from pyro import poutine
from pyro.nn.auto_reg_nn import create_mask, sample_mask_indices
from scipy import stats

from ppdgm.data import BernoulliMixture
from ppdgm.estimate import LogLikelihood
from ppdgm.inspect import dependency_graph
from ppdgm.models import FVSBN, MADE, NADE, RNADE
from ppdgm.nn import MaskedLinear, made_degrees, made_masks
from ppdgm.train import fit

Factory = Callable[[int], torch.nn.Module]


pytestmark = pytest.mark.usefixtures("one_thread")


BINARY: dict[str, Factory] = {
    "fvsbn": lambda d: FVSBN(d),
    "nade": lambda d: NADE(d, 6),
    "made-natural": lambda d: MADE(d, [10, 8]),
    "made-random": lambda d: MADE(d, [10], ordering="random", seed=3),
    "made-agnostic": lambda d: MADE(d, [10], ordering="agnostic", seed=1),
    "made-natural-3masks": lambda d: MADE(d, [10], 3),
    "made-random-2masks": lambda d: MADE(d, [10, 10], 2, ordering="random", seed=2),
    "made-agnostic-4masks": lambda d: MADE(d, [12], 4, ordering="agnostic", seed=4),
    "made-direct": lambda d: MADE(d, [10], ordering="random", seed=5, direct=True),
    "made-direct-3masks": lambda d: MADE(d, [6], 3, ordering="agnostic", seed=6, direct=True),
}
ENSEMBLES = [name for name in BINARY if name.endswith("masks")]


def make(name: str, dim: int, scale: float = 1.0, seed: int = 0) -> torch.nn.Module:
    """A float64 model with parameters drawn N(0, scale^2), far from the uniform distribution."""
    torch.manual_seed(seed)
    model = BINARY[name](dim).double()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, scale)
    return model


def all_vectors(dim: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)


def orders(model: torch.nn.Module) -> list[torch.Tensor]:
    return list(model.orders) if isinstance(model, MADE) else [model.order]


# ------------------------------------------------------------------------ normalization
@pytest.mark.parametrize("name", BINARY)
def test_sums_to_one_over_all_vectors_untrained_and_trained(name: str) -> None:
    dim = 12
    model = make(name, dim)
    x = all_vectors(dim)
    data = BernoulliMixture(dim, seed=5).sample(300, seed=6).double()
    masks = range(model.num_masks) if isinstance(model, MADE) else []
    for stage in ("untrained", "trained"):
        if stage == "trained":
            before = float(model.log_prob(data).detach().mean())
            fit(model, data, epochs=3, batch_size=50, lr=0.05, progress=False)
            assert float(model.log_prob(data).detach().mean()) > before + 0.5  # it learned
        with torch.no_grad():
            assert abs(float(model.log_prob(x).exp().sum()) - 1.0) < 1e-6, stage
            for k in masks:  # each mask's model, too
                assert abs(float(model.log_prob(x, mask=k).exp().sum()) - 1.0) < 1e-6, stage


# ---------------------------------------------------------------- autoregressive property
@pytest.mark.parametrize("name", BINARY)
def test_logit_jacobian_is_strictly_lower_triangular_in_the_ordering(name: str) -> None:
    dim = 7
    model = make(name, dim, scale=0.7)
    for k, order in enumerate(orders(model)):
        rank = torch.empty(dim, dtype=torch.long)
        rank[order] = torch.arange(dim)
        allowed = rank[None, :] < rank[:, None]  # [i, j]: x_j comes before x_i

        def logits(v: torch.Tensor, k: int = k) -> torch.Tensor:
            args = (v[None],) if not isinstance(model, MADE) else (v[None], k)
            return model.logits(*args)[0]

        nonzero = torch.zeros(dim, dim, dtype=torch.bool)
        for seed in range(5):
            point = torch.rand(dim, generator=torch.Generator().manual_seed(seed)).double()
            nonzero |= torch.autograd.functional.jacobian(logits, point).abs() > 0
        assert not (nonzero & ~allowed).any(), f"mask {k}: x_i's logit depends on later x_j"
        if isinstance(model, MADE):
            assert (nonzero <= model.connectivity(k)).all()
            assert (model.connectivity(k) <= allowed).all()
        assert nonzero.sum() >= 0.5 * allowed.sum()  # the test can see dependencies


@pytest.mark.parametrize("name", BINARY)
def test_conditional_unchanged_when_later_variables_flip(name: str) -> None:
    dim = 6
    model = make(name, dim)
    x = BernoulliMixture(dim, seed=1).sample(50, seed=2).double()
    for k, order in enumerate(orders(model)):
        kwargs = {"mask": k} if isinstance(model, MADE) else {}
        base = model.logits(x, **kwargs)
        for t in range(dim):
            flipped = x.clone()
            later = order[t:]
            flipped[:, later] = 1 - flipped[:, later]
            same = model.logits(flipped, **kwargs)[:, order[: t + 1]]
            torch.testing.assert_close(same, base[:, order[: t + 1]], rtol=0, atol=0)


# ------------------------------------------------------------------------------ sampling
def chi_square_p(samples: torch.Tensor, log_prob: torch.Tensor) -> float:
    """p-value of the samples' cell counts against exp(log_prob), cells under 5 expected lumped."""
    dim = samples.shape[1]
    cells = (samples.long() * 2 ** torch.arange(dim - 1, -1, -1)).sum(-1)
    observed = torch.bincount(cells, minlength=2**dim).double().numpy()
    expected = log_prob.exp().numpy() * len(samples)
    small = expected < 5
    if small.any():
        observed = np.append(observed[~small], observed[small].sum())
        expected = np.append(expected[~small], expected[small].sum())
    return float(stats.chisquare(observed, expected * observed.sum() / expected.sum()).pvalue)


@pytest.mark.parametrize("name", BINARY)
def test_samples_follow_log_prob(name: str) -> None:
    model = make(name, 4, scale=1.5)
    with torch.no_grad():
        log_p = model.log_prob(all_vectors(4))
    samples = model.sample(20_000, seed=0)
    assert samples.shape == (20_000, 4) and samples.dtype == torch.float64
    assert chi_square_p(samples, log_p) > 1e-3
    assert torch.equal(samples, model.sample(20_000, seed=0))  # seeded
    # the test has power: the samples of another distribution fail it
    with torch.no_grad():
        other = make(name, 4, scale=1.5, seed=1).log_prob(all_vectors(4))
    assert chi_square_p(samples, other) < 1e-6


# ---------------------------------------------------------------- the Pyro program agrees
@pytest.mark.parametrize("name", BINARY)
def test_program_agrees_with_log_prob(name: str) -> None:
    model = make(name, 6)
    x = all_vectors(6)[::3]
    with torch.no_grad():
        log_p = model.log_prob(x)
        # the program's own density, every site summed out by Pyro (enumerating MADE's mask)
        enumerated = LogLikelihood(lambda data: model.model(data), method="exact")(x).log_prob
        torch.testing.assert_close(enumerated, log_p, rtol=0, atol=1e-9)
        if name not in ENSEMBLES:
            trace = poutine.trace(model.model).get_trace(x)
            trace.compute_log_prob()
            per_row = sum(s["log_prob"] for s in trace.nodes.values() if s["type"] == "sample")
            torch.testing.assert_close(per_row, log_p, rtol=0, atol=1e-9)
        own = LogLikelihood(model.model, method="exact")(x)  # the model's own log_prob
        assert own.method == "exact" and torch.equal(own.log_prob, log_p)


@pytest.mark.parametrize("name", BINARY)
def test_dependency_graph_is_the_chain_rule(name: str) -> None:
    dim = 5
    model = make(name, dim)
    graph = dependency_graph(model.model, all_vectors(dim)[:4])
    if name in ENSEMBLES:
        steps = [f"x@{t}" for t in range(dim)]
        expected = {("mask", s) for s in steps}
        expected |= {(steps[s], steps[t]) for t in range(dim) for s in range(t)}
        assert list(graph.nodes) == ["mask", *steps]
        assert not graph.nodes["mask"]["observed"]
    else:
        order = orders(model)[0].tolist()
        assert list(graph.nodes) == [f"x_{i}" for i in order]
        if isinstance(model, MADE):  # MADE's own connectivity, within the chain rule's DAG
            reaches = model.connectivity(0)
            expected = {
                (f"x_{j}", f"x_{i}") for i in range(dim) for j in range(dim) if reaches[i, j]
            }
        else:
            expected = {(f"x_{order[s]}", f"x_{order[t]}") for t in range(dim) for s in range(t)}
        assert all(graph.nodes[n]["observed"] for n in graph.nodes)
        assert all(graph.nodes[n]["distribution"] == "Bernoulli" for n in graph.nodes)
    assert set(graph.edges) == expected
    assert graph.graph["plates"] == {"data": 4}


# --------------------------------------------------------------------------------- MADE
@pytest.mark.parametrize("ordering", ["natural", "random"])
def test_made_masks_are_pyros_for_pyros_degrees(ordering: str) -> None:
    dim, hidden = 9, [20, 15]
    permutation = torch.arange(dim) if ordering == "natural" else torch.randperm(dim)
    theirs, _ = create_mask(dim, 0, hidden, permutation, 1)
    degrees = made_degrees(permutation, [])
    degrees += [sample_mask_indices(dim - 1, h).long() for h in hidden]
    for mine, pyro_mask in zip(made_masks(degrees), theirs, strict=True):
        assert torch.equal(mine, pyro_mask)


def test_masked_linear_keeps_masks_as_booleans_without_widening() -> None:
    """Boolean masks are kept as they are (32 masks of two layers of 8,000 units are 2.5 GB;
    ``masks != 0`` had widened them to int64 first, 20 GB at once) and float 0/1 masks become
    the same booleans; the map is ``x @ (weight * mask).T + bias`` either way."""
    generator = torch.Generator().manual_seed(0)
    masks = torch.rand(3, 5, 4, generator=generator) < 0.5
    layer = MaskedLinear(4, 5, masks)
    assert layer.masks.dtype == torch.bool
    assert layer.masks.data_ptr() == masks.data_ptr(), "the boolean masks were copied"
    from_floats = MaskedLinear(4, 5, masks.double())
    assert torch.equal(from_floats.masks, masks)
    x = torch.randn(6, 4, generator=generator)
    for k in range(3):
        expected = x @ (layer.weight * masks[k].float()).T + layer.bias
        torch.testing.assert_close(layer(x, k), expected)


def test_made_sampling_masks_each_weight_once_per_mask_drawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sampling multiplies each layer's weight by its mask once per mask that some draw has,
    not once per variable: at two layers of 8,000 units each product is 256 MB, and 784 of
    them for each of 32 masks made drawing 64 pictures take about 20 minutes."""
    model = MADE(12, [10, 8], 32, ordering="agnostic", seed=3, direct=True)
    used: list[tuple[int, int]] = []
    masked_weight = MaskedLinear.masked_weight

    def counted(layer: MaskedLinear, mask: int = 0) -> torch.Tensor:
        used.append((id(layer), mask))
        return masked_weight(layer, mask)

    monkeypatch.setattr(MaskedLinear, "masked_weight", counted)
    torch.manual_seed(0)
    drawn = torch.randint(32, (3,)).unique().tolist()  # the masks that sample(3) draws
    model.sample(3, seed=0)
    layers = [id(layer) for layer in [*model.layers, model.direct]]
    assert sorted(used) == sorted((layer, k) for layer in layers for k in drawn)


def test_made_orderings_and_connectivity_agnostic_masks() -> None:
    natural = MADE(8, [16], 3)
    assert all(torch.equal(o, torch.arange(8)) for o in natural.orders)
    masks = natural.layers[0].masks
    assert not torch.equal(masks[0], masks[1]), "the hidden degrees are drawn per mask"
    shared = MADE(8, [16], 3, ordering="random", seed=5)
    assert all(torch.equal(o, shared.orders[0]) for o in shared.orders)
    assert not torch.equal(shared.orders[0], torch.arange(8))
    agnostic = MADE(8, [16], 3, ordering="agnostic", seed=5)
    assert len({tuple(o.tolist()) for o in agnostic.orders}) == 3
    rebuilt = MADE(**agnostic.config)
    assert torch.equal(rebuilt.orders, agnostic.orders)
    assert torch.equal(rebuilt.layers[0].masks, agnostic.layers[0].masks)


def test_made_ensemble_is_the_mean_of_its_masks_and_training_visits_each() -> None:
    model = make("made-agnostic-4masks", 6)
    x = all_vectors(6)[::5]
    each = torch.stack([model.log_prob(x, mask=k) for k in range(4)])
    torch.testing.assert_close(model.log_prob(x), each.exp().mean(0).log())
    for step in range(8):
        expected = -model.log_prob(x, mask=step % 4).mean()
        torch.testing.assert_close(model.training_loss(x, step), expected)


# ------------------------------------------------------------------- parameter counts
def test_made_direct_connections_are_an_fvsbn_in_each_masks_order() -> None:
    """With the hidden-to-output weights at zero, each mask's logits are the output bias plus
    a linear map of the variables that come earlier in that mask's order, written out here."""
    n = 6
    model = MADE(n, [8], 3, ordering="agnostic", seed=2, direct=True).double()
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
        model.layers[-1].weight.zero_()
    x = all_vectors(n)
    for k, order in enumerate(model.orders.tolist()):
        position = {variable: t for t, variable in enumerate(order)}
        expected = model.layers[-1].bias.expand(len(x), n).clone()
        for i, j in itertools.product(range(n), repeat=2):
            if position[j] < position[i]:
                expected[:, i] += model.direct.weight[i, j] * x[:, j]
        torch.testing.assert_close(model.logits(x, k), expected, rtol=0, atol=1e-12)
    # zero direct weights leave the plain MADE of the same seed: a warm start from one
    plain = MADE(n, [8], 3, ordering="agnostic", seed=2).double()
    plain.load_state_dict(model.state_dict(), strict=False)
    with torch.no_grad():
        plain.layers[-1].weight.normal_()
        model.layers[-1].weight.copy_(plain.layers[-1].weight)
        model.direct.weight.zero_()
    torch.testing.assert_close(model.log_prob(x), plain.log_prob(x), rtol=0, atol=0)
    assert model.config["direct"] is True and plain.config["direct"] is False


def test_parameter_counts_against_gradients_and_the_joint_table() -> None:
    n, d = 12, 5
    x = BernoulliMixture(n, seed=0).sample(200, seed=0).double()
    counts = [
        (FVSBN(n), n * (n + 1) // 2),
        (NADE(n, d), 2 * n * d + n),
        (MADE(n, [16]), None),
        (MADE(n, [16], direct=True), None),
    ]
    for model, expected in counts:
        model = model.double()
        if isinstance(model, MADE):  # wide Gaussian inputs, so that no ReLU is dead on all
            model.logits(100 * torch.randn(200, n, dtype=torch.float64)).sum().backward()
            expected = sum(int(layer.masks[0].sum()) + layer.out_features for layer in model.layers)
            if model.direct is not None:  # one weight per earlier variable, no bias
                expected += n * (n - 1) // 2
        else:
            model.log_prob(x).sum().backward()
        free = sum(int((p.grad != 0).sum()) for p in model.parameters())
        assert model.num_parameters == expected == free
    rnade = RNADE(3, hidden_dim=4, components=2).double()
    rnade.log_prob(torch.randn(50, 3, dtype=torch.float64)).sum().backward()
    assert rnade.num_parameters == sum(int((p.grad != 0).sum()) for p in rnade.parameters())
    made = MADE(n, [16])
    assert made.num_parameters < sum(p.numel() for p in made.parameters())
    summary = NADE(n, d).summary()
    assert f"{2 * n * d + n:,} parameters" in summary
    assert "2^n - 1 = 4,095" in summary and f"n(n+1)/2 = {n * (n + 1) // 2}" in summary
    assert "≈ 1.0e+236" in FVSBN(784).summary()


@pytest.mark.parametrize("name", BINARY)
def test_gradients_reach_every_parameter_and_state_round_trips(name: str, tmp_path) -> None:
    model = make(name, 5)
    x = all_vectors(5)
    (-model.log_prob(x).mean()).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, pname
    torch.save(model.state_dict(), tmp_path / "m.pt")
    again = type(model)(**model.config).double()
    again.load_state_dict(torch.load(tmp_path / "m.pt", weights_only=True))
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    assert type(model).__name__ in repr(model)


# ------------------------------------------------------------------------------ bad input
@pytest.mark.parametrize("name", ["fvsbn", "nade", "made-natural-3masks"])
def test_bad_data_is_a_clear_error(name: str) -> None:
    model = make(name, 4)
    x = all_vectors(4)[:3]
    cases = {
        "models binary data, but x[1, 2] = 0.5": x.clone().index_put_(
            (torch.tensor(1), torch.tensor(2)), torch.tensor(0.5).double()
        ),
        r"x\[0, 3\] is NaN": x.clone().index_put_(
            (torch.tensor(0), torch.tensor(3)), torch.tensor(math.nan).double()
        ),
        r"expects x of shape \[N, 4\], got \(3, 5\)": torch.zeros(3, 5),
        r"expects x of shape \[N, 4\], got \(4,\)": torch.zeros(4),
    }
    for message, bad in cases.items():
        for call in (model.log_prob, model.model):
            with pytest.raises(
                ValueError, match=message if "\\" in message else re.escape(message)
            ):
                call(bad)
    with pytest.raises(ValueError, match="n must be a non-negative integer"):
        model.sample(-1)


def test_bad_constructor_arguments() -> None:
    for call, message in [
        (lambda: FVSBN(0), "dim must be a positive integer"),
        (lambda: NADE(4, 0), "hidden_dim must be a positive integer"),
        (lambda: MADE(4, []), "hidden_dims must be positive integers"),
        (lambda: MADE(4, [8], 0), "num_masks must be a positive integer"),
        (lambda: MADE(4, [8], ordering="backwards"), "unknown ordering 'backwards'"),
        (lambda: MADE(4, [8], direct="yes"), "direct must be True or False, got 'yes'"),
        (lambda: RNADE(2, components=0), "components must be a positive integer"),
    ]:
        with pytest.raises(ValueError, match=message):
            call()


# ---------------------------------------------------------------------------------- RNADE
def integral(model: RNADE, half_width: float = 30.0) -> float:
    """The integral of exp(log_prob) over a square, by composite Gauss-Legendre quadrature."""
    nodes, weights = np.polynomial.legendre.leggauss(10)
    edges = np.linspace(-half_width, half_width, 81)
    mid, half = (edges[1:] + edges[:-1]) / 2, (edges[1:] - edges[:-1]) / 2
    points = torch.from_numpy((mid[:, None] + half[:, None] * nodes).ravel())
    w = torch.from_numpy((half[:, None] * weights).ravel())
    grid = torch.cartesian_prod(points, points)
    with torch.no_grad():
        density = model.log_prob(grid).exp().reshape(len(points), len(points))
    return float(w @ density @ w)


def test_rnade_integrates_to_one_and_learns_a_known_density() -> None:
    torch.manual_seed(0)
    model = RNADE(2, hidden_dim=8, components=3).double()
    assert abs(integral(model) - 1.0) < 1e-6
    # a correlated Gaussian: its density is known in closed form
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
    truth = torch.distributions.MultivariateNormal(torch.tensor([1.0, -1.0]).double(), cov)
    train, test = truth.sample((3000,)), truth.sample((2000,))
    fit(model, train, epochs=40, batch_size=100, lr=0.02, progress=False)
    assert abs(integral(model) - 1.0) < 1e-6
    with torch.no_grad():
        gap = float(truth.log_prob(test).mean() - model.log_prob(test).mean())  # ~ KL(p || q)
    assert -0.05 < gap < 0.05
    samples = model.sample(20_000, seed=0)
    torch.testing.assert_close(samples.mean(0), truth.mean, atol=0.05, rtol=0)
    torch.testing.assert_close(samples.T.cov(), cov, atol=0.08, rtol=0)


def test_rnade_autoregressive_program_and_bad_input() -> None:
    torch.manual_seed(1)
    model = RNADE(4, hidden_dim=6, components=2).double()
    x = torch.randn(10, 4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda v: model.conditional_log_prob(v[None])[0], x[0])
    below = torch.ones(4, 4, dtype=torch.bool).tril(-1)
    assert (jac.diagonal() != 0).all()
    assert (jac.triu(1) == 0).all() and (jac[below] != 0).all()
    trace = poutine.trace(model.model).get_trace(x)
    trace.compute_log_prob()
    per_row = sum(s["log_prob"] for s in trace.nodes.values() if s["type"] == "sample")
    torch.testing.assert_close(per_row, model.log_prob(x), rtol=0, atol=1e-9)
    graph = dependency_graph(model.model, x)
    assert set(graph.edges) == {(f"x_{j}", f"x_{i}") for i in range(4) for j in range(i)}
    with pytest.raises(ValueError, match=r"x\[0, 1\] = inf; RNADE\(.*\) needs finite values"):
        model.log_prob(torch.tensor([[0.0, math.inf, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="NaN"):
        model.log_prob(torch.tensor([[0.0, math.nan, 0.0, 0.0]]))
