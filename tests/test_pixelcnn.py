"""PixelCNN: an exact density over all images, causal masks (by autograd), samples that follow
``log_prob``, reproducible draws, named errors, and a run of ``ppdgm fit`` / ``evaluate``."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from ppdgm.cli import main
from ppdgm.models import MODELS, PixelCNN

pytestmark = pytest.mark.usefixtures("one_thread")


def small(height: int = 3, width: int = 3, *, layers: int = 3, scale: float = 2.0) -> PixelCNN:
    """A float64 PixelCNN with random, non-trivial weights (scaled up so that the conditionals
    are far from 1/2)."""
    torch.manual_seed(0)
    model = PixelCNN(height, width, channels=8, layers=layers, kernel_size=3).double()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1).mul_(scale)
    return model


def every_image(dim: int) -> torch.Tensor:
    return torch.tensor(list(itertools.product([0.0, 1.0], repeat=dim)), dtype=torch.float64)


def test_registered_and_sized_from_the_data() -> None:
    assert MODELS["pixelcnn"] is PixelCNN
    model = PixelCNN(dim=64)
    assert (model.height, model.width, model.dim) == (8, 8, 64)
    assert PixelCNN.from_config(model.config).config == model.config
    assert PixelCNN(2, dim=6).width == 3 and PixelCNN(width=2, dim=6).height == 3
    with pytest.raises(ValueError, match="not a square; pass height and width"):
        PixelCNN(dim=10)
    with pytest.raises(ValueError, match="but the data have dim = 10"):
        PixelCNN(3, 3, dim=10)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        PixelCNN(3, 3, kernel_size=4)


def test_the_probabilities_of_every_image_sum_to_one() -> None:
    model = small()
    with torch.no_grad():
        log_p = model.log_prob(every_image(9))
    assert log_p.shape == (512,)
    assert abs(float(log_p.exp().sum()) - 1.0) < 1e-6
    # not a near-uniform distribution, which would sum to 1 for almost any network
    assert float(log_p.max() - log_p.min()) > 2.0


def test_each_logit_depends_only_on_earlier_pixels() -> None:
    model = small(4, 5, layers=4, scale=1.0)
    x = torch.randn(1, 20, dtype=torch.float64, requires_grad=True)
    logits = model.logits(x)[0]
    for i in range(20):
        (grad,) = torch.autograd.grad(logits[i], x, retain_graph=True)
        grad = grad[0]
        assert bool((grad[i:] == 0).all()), f"pixel {i} sees pixels {grad[i:].nonzero()}"
        if i > 0:  # the blind spot: not every earlier pixel, but some
            assert bool((grad[:i] != 0).any()), f"pixel {i} sees no earlier pixel"
    # the pixel just left of i, and the one just above, always reach it
    (grad,) = torch.autograd.grad(logits[2 * 5 + 2], x)
    assert grad[0, 2 * 5 + 1] != 0 and grad[0, 1 * 5 + 2] != 0


def test_samples_follow_log_prob() -> None:
    stats = pytest.importorskip("scipy.stats")
    model = small()
    n = 20_000
    draws = model.sample(n, seed=3)
    assert draws.shape == (n, 9) and bool(((draws == 0) | (draws == 1)).all())
    index = (draws * 2 ** torch.arange(8, -1, -1, dtype=draws.dtype)).sum(-1).long()
    observed = torch.bincount(index, minlength=512).double()
    with torch.no_grad():
        expected = model.log_prob(every_image(9)).exp() * n  # same binary order as index
    # merge the cells expected fewer than 5 times into one
    rare = expected < 5
    obs = torch.cat([observed[~rare], observed[rare].sum()[None]])
    exp = torch.cat([expected[~rare], expected[rare].sum()[None]])
    chi2 = float(((obs - exp) ** 2 / exp).sum())
    dof = len(obs) - 1
    assert chi2 < stats.chi2.ppf(0.999, dof), (chi2, dof)
    # and the test has power: samples of another network fail it
    other = small(scale=1.0).sample(n, seed=3)
    index = (other * 2 ** torch.arange(8, -1, -1, dtype=other.dtype)).sum(-1).long()
    wrong = torch.bincount(index, minlength=512).double()
    wrong = torch.cat([wrong[~rare], wrong[rare].sum()[None]])
    assert float(((wrong - exp) ** 2 / exp).sum()) > stats.chi2.ppf(0.999, dof)


def test_sampling_is_reproducible_and_binary_input_is_checked() -> None:
    model = small()
    assert torch.equal(model.sample(7, seed=5), model.sample(7, seed=5))
    assert not torch.equal(model.sample(50, seed=5), model.sample(50, seed=6))
    with pytest.raises(ValueError, match=r"models binary data, but x\[0, 4\] = 0.5"):
        model.log_prob(torch.tensor([[0, 1, 0, 1, 0.5, 0, 0, 0, 1]]))
    with pytest.raises(ValueError, match=r"expects x of shape \[N, 9\]"):
        model.log_prob(torch.zeros(2, 8))


def test_fit_and_evaluate_from_the_command_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    flags = ["--channels", "8", "--layers", "2", "--kernel", "3", "--seed", "0"]
    assert main(["fit", "pixelcnn", "--data", "digits", "--epochs", "1", "--out", str(out),
                 "--no-progress", *flags]) == 0  # fmt: skip
    assert (out / "best.pt").exists()
    assert main(["evaluate", str(out), "--json"]) == 0
