"""The thread policy (ppdgm.threads): PPDGM_THREADS and --threads fix the count; small work runs
on one thread; large work keeps torch's setting; torch's setting is restored afterwards; the
training loop and the Bayesian-network engine run under it."""

from __future__ import annotations

import os

import pytest
import torch

import ppdgm.bn as pbn
from ppdgm.cli import main
from ppdgm.models import FVSBN
from ppdgm.threads import ENV, SMALL_WORK, chosen_threads, work_threads
from ppdgm.train import fit, maximum_likelihood


@pytest.fixture
def two_threads(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_the_policy(two_threads, monkeypatch) -> None:
    assert chosen_threads(None) == 1 and chosen_threads(SMALL_WORK - 1) == 1
    assert chosen_threads(SMALL_WORK) == 2  # torch's own setting for large work
    monkeypatch.setenv(ENV, "3")
    assert chosen_threads(None) == 3 and chosen_threads(10 * SMALL_WORK) == 3
    with work_threads() as n:
        assert n == 3 == torch.get_num_threads()
    assert torch.get_num_threads() == 2
    for bad in ("0", "-1", "two"):
        monkeypatch.setenv(ENV, bad)
        with pytest.raises(
            ValueError, match=f"PPDGM_THREADS must be a positive integer, got '{bad}'"
        ):
            chosen_threads()


def test_training_and_sampling_run_under_it(two_threads, monkeypatch) -> None:
    seen = []

    def recording(model, batch, step):
        seen.append(torch.get_num_threads())
        return maximum_likelihood(model, batch, step)

    x = torch.bernoulli(torch.full((40, 5), 0.5), generator=torch.Generator().manual_seed(0))
    fit(FVSBN(5), x, epochs=1, batch_size=20, objective=recording, progress=False)
    assert seen == [1, 1] and torch.get_num_threads() == 2
    monkeypatch.setenv(ENV, "2")
    fit(FVSBN(5), x, epochs=1, batch_size=20, objective=recording, progress=False)
    assert seen[2:] == [2, 2]

    monkeypatch.delenv(ENV)
    import ppdgm.bn.sampling as sampling

    inner = sampling.ancestral_sample
    monkeypatch.setattr(
        sampling,
        "ancestral_sample",
        lambda *a, **k: (seen.append(torch.get_num_threads()), inner(*a, **k))[1],
    )
    assert len(pbn.asia().sample(10, seed=0)) == 10
    assert seen[-1] == 1 and torch.get_num_threads() == 2


def test_the_command_line_flag(two_threads, monkeypatch, capsys) -> None:
    import ppdgm.bn.sampling as sampling

    seen = []
    inner = sampling.ancestral_sample
    monkeypatch.setattr(
        sampling,
        "ancestral_sample",
        lambda *a, **k: (seen.append(torch.get_num_threads()), inner(*a, **k))[1],
    )
    assert main(["--threads", "2", "bn", "sample", "asia", "-n", "5"]) == 0
    assert seen == [2]
    assert ENV not in os.environ, "the flag holds for the run only"
    with pytest.raises(SystemExit):
        main(["--threads", "0", "bn", "sample", "asia"])
    assert "expected a positive integer" in capsys.readouterr().err
