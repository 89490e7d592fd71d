"""Inpainting with the autoregressive models: completions drawn by ``inpaint`` against the
conditional distribution enumerated from ``log_prob`` on 4x4 binary images (16 pixels)."""

from __future__ import annotations

import itertools
import runpy
from pathlib import Path

import pytest
import torch
from scipy import stats

from ppdgm.models import FVSBN, PixelCNN

DIM = 16


def strong_fvsbn() -> FVSBN:
    torch.manual_seed(3)
    model = FVSBN(DIM).double()
    with torch.no_grad():  # pixels that lean on each other: the conditionals matter
        model.weight.normal_(0.0, 1.5)
        model.bias.normal_(0.0, 0.5)
    return model


def small_pixelcnn() -> PixelCNN:
    torch.manual_seed(4)
    model = PixelCNN(4, 4, channels=8, layers=3, kernel_size=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


def conditional(model, row: torch.Tensor, hidden: list[int]) -> torch.Tensor:
    """``p(x_hidden | the rest of row)`` over the ``2^len(hidden)`` completions, in the order of
    ``itertools.product((0, 1), repeat=len(hidden))``."""
    completions = torch.tensor(list(itertools.product((0.0, 1.0), repeat=len(hidden))))
    rows = row.repeat(len(completions), 1).double()
    rows[:, hidden] = completions.double()
    with torch.no_grad():
        return torch.softmax(model.log_prob(rows), 0)


def histogram(filled: torch.Tensor, hidden: list[int]) -> torch.Tensor:
    codes = (filled[:, hidden].long() * (2 ** torch.arange(len(hidden) - 1, -1, -1))).sum(1)
    return torch.bincount(codes, minlength=2 ** len(hidden)).double()


def chi_square_p(counts: torch.Tensor, probs: torch.Tensor) -> float:
    expected = probs * counts.sum()
    keep = expected >= 5  # merge the rare cells into one
    observed = torch.cat([counts[keep], counts[~keep].sum(0, keepdim=True)])
    expected = torch.cat([expected[keep], expected[~keep].sum(0, keepdim=True)])
    if expected[-1] == 0:
        observed, expected = observed[:-1], expected[:-1]
    return float(stats.chisquare(observed.numpy(), expected.numpy()).pvalue)


@pytest.mark.parametrize(
    ("make", "draws"), [(strong_fvsbn, 20_000), (small_pixelcnn, 6_000)], ids=["fvsbn", "pixelcnn"]
)
def test_completions_of_the_bottom_half_follow_the_exact_conditional(make, draws: int) -> None:
    model = make()
    row = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0] + [0] * 8, dtype=torch.float64)
    hidden = list(range(8, 16))  # raster order: the top half comes first
    x = row.repeat(draws, 1)
    x[:, hidden] = float("nan")
    filled = model.inpaint(x, seed=0)
    assert torch.equal(filled[:, :8], x[:, :8])  # observed pixels never change
    assert bool(((filled == 0) | (filled == 1)).all())
    probs = conditional(model, row, hidden)
    assert chi_square_p(histogram(filled, hidden), probs) > 1e-3
    # the test has power: the model's unconditional draws of those pixels are refused
    free = model.sample(draws, seed=1).double()
    assert chi_square_p(histogram(free, hidden), probs) < 1e-6


def test_observed_pixels_after_the_hidden_ones_are_weighed_in() -> None:
    # the first four pixels hidden, the twelve after them given: clamping alone ignores what
    # the later pixels say about the earlier ones; resampling by their probability does not
    model = strong_fvsbn()
    row = torch.tensor([0] * 4 + [1, 1, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1], dtype=torch.float64)
    hidden = [0, 1, 2, 3]
    observed = torch.ones(DIM, dtype=torch.bool)
    observed[hidden] = False
    x = row.repeat(4000, 1)
    probs = conditional(model, row, hidden)
    distance = {}
    for particles in (1, 400):
        filled = model.inpaint(x, observed, particles=particles, seed=2)
        assert torch.equal(filled[:, 4:], x[:, 4:])
        found = histogram(filled, hidden) / len(x)
        distance[particles] = 0.5 * float((found - probs).abs().sum())
    assert distance[400] < 0.06, distance  # total variation: sampling noise is about 0.02
    assert distance[1] > 0.15, distance  # one particle is clamping alone


def test_inpaint_refuses_what_it_cannot_use() -> None:
    model = FVSBN(4)
    with pytest.raises(ValueError, match=r"x must be \[N, 4\] rows, got shape \(4,\)"):
        model.inpaint(torch.zeros(4))
    with pytest.raises(ValueError, match="binary"):
        model.inpaint(torch.tensor([[0.5, 1.0, float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="particles must be a positive integer"):
        model.inpaint(torch.zeros(1, 4), particles=0)
    # a value where nothing is observed is ignored; every cell given: the row itself
    x = torch.tensor([[1.0, 0.0, 1.0, 1.0]])
    assert torch.equal(model.inpaint(x, seed=0), x)


def test_a_vaes_completions_follow_the_conditional_by_numerical_integration() -> None:
    # one latent dimension: p(x) = integral of p(z) p(x | z) dz on a fine grid is the oracle
    from ppdgm.models import VAE

    torch.manual_seed(5)
    vae = VAE(6, 1, [8]).double()
    with torch.no_grad():
        for p in vae.decoder.parameters():
            p.mul_(3.0)
    row = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=torch.float64)
    hidden = [3, 4, 5]
    completions = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=torch.float64)
    rows = row.repeat(len(completions), 1)
    rows[:, hidden] = completions
    z = torch.linspace(-10, 10, 20_001, dtype=torch.float64)[:, None]
    with torch.no_grad():
        joint = vae.prior().log_prob(z)[:, None] + vae.likelihood(z[:, None]).log_prob(rows)
    probs = torch.softmax(torch.logsumexp(joint, 0), 0)  # the grid's spacing cancels
    x = row.repeat(6000, 1)
    x[:, hidden] = float("nan")
    filled = vae.inpaint(x, steps=100, seed=0)
    assert torch.equal(filled[:, :3], x[:, :3])
    found = histogram(filled, hidden) / len(x)
    assert 0.5 * float((found - probs).abs().sum()) < 0.04, (found, probs)
    assert chi_square_p(histogram(filled, hidden), probs) > 1e-3
    # the test has power: the model's unconditional draws of those pixels are refused
    free = vae.sample(6000, seed=1).double()
    assert chi_square_p(histogram(free, hidden), probs) < 1e-6


def test_the_docs_pictures_of_completions_and_scores_are_drawn(tmp_path: Path) -> None:
    docs = Path(__file__).parent.parent / "docs"
    script = runpy.run_path(str(docs / "make_density_images.py"))
    written = script["make_images"](tmp_path, epochs=1)
    assert sorted(p.name for p in written) == ["anomaly-scores.png", "inpainting.png"]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in written)
    auc = script["auc"]
    assert auc(torch.tensor([3.0, 4.0]), torch.tensor([1.0, 2.0])) == 1.0
    assert auc(torch.tensor([1.0]), torch.tensor([1.0, 2.0])) == 0.25
