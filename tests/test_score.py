"""``ppdgm score``: per-row anomaly scores, -log p(x), exact for a density model and an IWAE
bound for a latent-variable model, seeded per pass; noise scores above digits; bad input."""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from ppdgm.checkpoint import load_model
from ppdgm.cli import main
from ppdgm.data import load_digits
from ppdgm.estimate import LogLikelihood, UnreliableWeightsWarning

pytestmark = pytest.mark.usefixtures("one_thread")


def read_scores(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def column(rows: list[dict[str, str]], name: str) -> torch.Tensor:
    return torch.tensor([float(r[name]) for r in rows], dtype=torch.float64)


@pytest.fixture(scope="module")
def fvsbn_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fvsbn") / "run"
    argv = ["fit", "fvsbn", "--data", "digits", "--epochs", "1", "--lr", "0.05", "--out", str(out)]
    with torch.random.fork_rng(devices=[]):
        assert main([*argv, "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("vae") / "run"
    argv = ["fit", "vae", "--data", "digits", "--epochs", "5", "--lr", "0.01", "--out", str(out)]
    argv += ["--z-dim", "2", "--hidden", "16", "--train-rows", "400", "--valid-rows", "50"]
    with torch.random.fork_rng(devices=[]):
        assert main([*argv, "--no-progress"]) == 0
    return out


def test_density_scores_are_exact(fvsbn_run: Path, tmp_path: Path, capsys) -> None:
    x = load_digits("valid")[:40]
    data = tmp_path / "rows.csv"
    np.savetxt(data, x.numpy(), delimiter=",", fmt="%g")
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert main(["score", str(fvsbn_run), "--data", str(data), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "40 rows" in printed and "exact" in printed and f"wrote: {out}" in printed
    rows = read_scores(out)
    assert list(rows[0]) == ["row", "score", "stderr", "estimate"]
    assert [int(r["row"]) for r in rows] == list(range(40))
    assert {r["estimate"] for r in rows} == {"exact"}
    assert column(rows, "stderr").eq(0).all()
    model, _ = load_model(fvsbn_run)
    with torch.no_grad():
        expected = -model.log_prob(x).double()
    torch.testing.assert_close(column(rows, "score"), expected, atol=1e-6, rtol=0)
    mean = float(expected.mean())
    assert f"mean score {mean:.4f}" in printed

    # a dataset by name (its --split), and CSV on standard output with the summary on stderr
    assert main(["score", str(fvsbn_run), "--data", "digits", "--split", "valid"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines[0] == "row,score,stderr,estimate" and len(lines) == 1 + len(load_digits("valid"))
    first = [float(line.split(",")[1]) for line in lines[1:41]]
    torch.testing.assert_close(
        torch.tensor(first, dtype=torch.float64), expected, atol=1e-6, rtol=0
    )
    assert "mean score" in captured.err and "wrote" not in captured.err


def seeded_iwae(model, x: torch.Tensor, k: int, rows_per_pass: int, seed: int) -> torch.Tensor:
    """-log p(x) by IWAE with ``k`` samples, pass ``i`` seeded as ``ppdgm score`` says."""
    estimator = LogLikelihood(model.model, model.guide, method="importance", num_samples=k)
    parts = []
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        warnings.simplefilter("ignore", UnreliableWeightsWarning)  # a tiny VAE's light tails
        for i, start in enumerate(range(0, len(x), rows_per_pass)):
            torch.manual_seed((seed * 1_000_003 + 1) * 1_000_003 + i)
            parts.append(estimator(x[start : start + rows_per_pass]).log_prob)
    return -torch.cat(parts)


def test_latent_variable_scores_are_seeded_iwae_bounds(vae_run: Path, tmp_path: Path) -> None:
    x = load_digits("test")[:30]
    data = tmp_path / "rows.npy"
    np.save(data, x.numpy())
    out = tmp_path / "scores.csv"
    argv = ["score", str(vae_run), "--data", str(data), "--samples", "50", "--batch-size", "10"]
    assert main([*argv, "--seed", "3", "-o", str(out)]) == 0
    rows = read_scores(out)
    assert {r["estimate"] for r in rows} == {"IWAE K=50 upper bound on -log p"}
    scores, stderr = column(rows, "score"), column(rows, "stderr")
    assert (stderr > 0).all() and torch.isfinite(scores).all()
    model, _ = load_model(vae_run)
    torch.testing.assert_close(scores, seeded_iwae(model, x, 50, 10, seed=3), atol=1e-6, rtol=0)

    # a row's number depends on its pass alone: the first pass scored by itself is the same
    np.save(data, x[:10].numpy())
    assert main([*argv, "--seed", "3", "-o", str(out)]) == 0
    torch.testing.assert_close(column(read_scores(out), "score"), scores[:10], atol=0, rtol=0)

    # an upper bound on -log p: near a much tighter estimate, and above it on average (plain
    # with one sample, whose bias is KL(q || posterior); a good guide leaves K=50 near exact)
    more = load_digits("test")[:100]
    tight = seeded_iwae(model, more, 2000, 100, seed=11)
    assert ((scores - tight[:30]).abs() < 5 * stderr + 0.2).all()
    np.save(data, more.numpy())
    argv[argv.index("50")] = "1"
    assert main([*argv, "-o", str(out)]) == 0
    loose = read_scores(out)
    assert {r["estimate"] for r in loose} == {"IWAE K=1 upper bound on -log p"}
    gap = column(loose, "score") - tight
    assert float(gap.mean()) > 2 * float(gap.std()) / 10 > 0


def test_noise_scores_above_digits(fvsbn_run: Path, tmp_path: Path) -> None:
    digits = load_digits("test")[:100]
    noise = torch.bernoulli(torch.full((100, 64), 0.5), generator=torch.Generator().manual_seed(0))
    data = tmp_path / "mixed.pt"
    torch.save(torch.cat([digits, noise]), data)
    out = tmp_path / "scores.csv"
    assert main(["score", str(fvsbn_run), "--data", str(data), "-o", str(out)]) == 0
    scores = column(read_scores(out), "score")
    on_digits, on_noise = scores[:100], scores[100:]
    assert float(on_noise.mean()) > float(on_digits.mean()) + 5
    # the ranking: a noise row above a digit row in nearly every pair (the AUC)
    auc = float((on_noise[:, None] > on_digits[None, :]).double().mean())
    assert auc > 0.95
    assert float(on_noise.mean()) > 64 * math.log(2) - 5  # noise is no likelier than uniform


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ppdgm score: error: "), err
    return err


def test_bad_input_is_one_line_and_exit_2(fvsbn_run: Path, vae_run: Path, tmp_path, capsys) -> None:
    narrow = tmp_path / "narrow.csv"
    np.savetxt(narrow, np.ones((3, 10)), delimiter=",", fmt="%g")
    out = tmp_path / "scores.csv"
    for run in (fvsbn_run, vae_run):
        capsys.readouterr()
        assert main(["score", str(run), "--data", str(narrow), "-o", str(out)]) == 2
        assert "[N, 64]" in one_line_error(capsys)
    assert not out.exists()
    assert main(["score", str(tmp_path / "missing.pt"), "--data", "digits"]) == 2
    assert "no such checkpoint" in one_line_error(capsys)
    assert main(["score", str(fvsbn_run), "--data", "nonsense"]) == 2
    assert "unknown dataset" in one_line_error(capsys)
