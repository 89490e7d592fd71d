"""The model contract over every zoo model (zuko style): each is registered under its name, is
of one kind, scores rows with the right shape and finite values, samples, survives a save and
load, and prints; and the contract check refuses what breaks it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ppdgm.base import (
    DENSITY,
    PROGRAM,
    ContractError,
    log_prob_is_exact,
    model_kind,
    registered_models,
    registered_name,
)
from ppdgm.checkpoint import load_model, save_checkpoint
from ppdgm.estimate import LogLikelihood
from ppdgm.models import MODELS

pytestmark = pytest.mark.usefixtures("one_thread")

DIM = 6
#: a small instance of every zoo model, and whether it models binary rows
SMALL = {
    "fvsbn": (lambda cls: cls(DIM), True),
    "nade": (lambda cls: cls(DIM, 8), True),
    "made": (lambda cls: cls(DIM, [12], 2, ordering="agnostic"), True),
    "rnade": (lambda cls: cls(DIM, hidden_dim=8, components=2), False),
    "pixelcnn": (lambda cls: cls(2, 3, channels=4, layers=2, kernel_size=3), True),
    "vae": (lambda cls: cls(DIM, 2, [8]), True),
    "gmvae": (lambda cls: cls(DIM, 2, [8], components=3), True),
    "hvae": (lambda cls: cls(DIM, (3, 2), ([8], [4])), True),
    "ssvae": (lambda cls: cls(DIM, 3, 2, [8]), True),
    "cvae": (lambda cls: cls(DIM, 3, 2, [8]), True),
    "nice": (lambda cls: cls(DIM, [8], 2), False),
    "realnvp": (lambda cls: cls(DIM, [8], 2), False),
    "maf": (lambda cls: cls(DIM, [8], 2), False),
    "iaf": (lambda cls: cls(DIM, [8], 2), False),
}
#: what a model takes beside the rows: a CVAE models rows given their labels
LABELS = {"cvae": (torch.tensor([0, 1, 2, 0, 1]),)}


def test_every_registered_model_is_covered() -> None:
    assert set(MODELS) == set(SMALL) == set(registered_models())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_the_contract(name: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    make, binary = SMALL[name]
    model = make(MODELS[name])
    assert registered_name(model) == name and model.family in ("autoregressive", "vae", "flow")
    x = torch.bernoulli(torch.full((5, DIM), 0.5)) if binary else torch.randn(5, DIM)
    kind = model_kind(model)
    with torch.no_grad():
        if kind == DENSITY:
            log_p = model.log_prob(x)
            assert log_prob_is_exact(model)
        else:
            assert kind == PROGRAM
            log_p = LogLikelihood(model.model, model.guide, method="elbo", num_samples=3)(
                x, *LABELS.get(name, ())
            ).log_prob
    assert log_p.shape == (5,) and bool(torch.isfinite(log_p).all())
    draws = model.sample(4, seed=1)
    assert draws.shape == (4, DIM) and torch.equal(draws, model.sample(4, seed=1))
    save_checkpoint(tmp_path / "m.pt", model)
    again, _ = load_model(tmp_path / "m.pt", expect=type(model))
    assert again.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    if kind == DENSITY:
        torch.testing.assert_close(again.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    assert type(model).__name__ in repr(model)


def test_a_subclass_of_a_zoo_model_is_the_users_own() -> None:
    class Mine(MODELS["nade"]):
        pass

    assert registered_name(Mine(DIM, 4)) is None
    with pytest.raises(ContractError, match=r"Tensor is not a torch\.nn\.Module"):
        model_kind(torch.zeros(3))
