"""``ppdgm fit vae``, ``ppdgm evaluate`` and ``ppdgm sample`` for VAEs, and their bad input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from ppdgm.checkpoint import load_model
from ppdgm.cli import main
from ppdgm.data import load_digits
from ppdgm.estimate import LogLikelihood
from ppdgm.models import VAE, HierarchicalVAE

pytestmark = pytest.mark.usefixtures("one_thread")


def test_fit_evaluate_and_sample_a_vae_with_flows(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["fit", "vae", "--epochs", "2", "--out", str(out), "--no-progress"]
    args += ["--z-dim", "3", "--hidden", "32", "--guide-flow", "iaf", "--prior-flow", "maf"]
    args += ["--loss", "iwae", "--particles", "4", "--anneal-steps", "20", "--train-rows", "200"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "guide: Gaussian + iaf flow; prior: N(0, I) + maf flow" in text
    assert "best validation -ELBO (an NLL bound)" in text
    model, checkpoint = load_model(out / "best.pt", expect=VAE)
    assert checkpoint["settings"]["objective"]["loss"] == "iwae"
    assert checkpoint["settings"]["objective"]["num_particles"] == 4
    pictures = {"samples.png", "learning_curves.png", "reconstructions.png", "latent-map.png"}
    assert pictures <= {p.name for p in out.iterdir()}
    written = re.search(r"^wrote: (.*)$", text, re.M).group(1).split(", ")
    assert len(written) == len(set(written)) and {Path(p).name for p in written} >= pictures

    assert main(["evaluate", str(out / "best.pt"), "--samples", "1,50", "--rows", "40"]) == 0
    table = capsys.readouterr().out
    per_point = {
        label: float(value)
        for label, value in re.findall(
            r"^(ELBO \(50 samples\)|IWAE K=1|IWAE K=50)\s+\S+\s+\S+\s+(\S+)", table, re.M
        )
    }
    assert set(per_point) == {"ELBO (50 samples)", "IWAE K=1", "IWAE K=50"}
    # the table's numbers are LogLikelihood's: the ELBO is below the IWAE bound with K=50
    valid = load_digits("valid")[:40]
    assert per_point["ELBO (50 samples)"] < per_point["IWAE K=50"]
    torch.manual_seed(0)
    elbo = LogLikelihood(model.model, model.guide, method="elbo", num_samples=200)
    direct = float(elbo(valid).log_prob.mean())
    assert direct == pytest.approx(per_point["ELBO (50 samples)"], abs=0.5)

    assert main(["sample", str(out / "best.pt"), "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_hierarchical_and_mixture_vaes(tmp_path: Path, capsys) -> None:
    common = ["--epochs", "1", "--no-progress", "--train-rows", "100"]
    assert (
        main(
            [
                "fit",
                "hvae",
                "--z-dim",
                "6,3",
                "--hidden",
                "16:8",
                "--out",
                str(tmp_path / "h"),
                *common,
            ]
        )
        == 0
    )
    model, _ = load_model(tmp_path / "h" / "best.pt", expect=HierarchicalVAE)
    assert model.z_dims == (6, 3)
    assert (
        main(
            [
                "fit",
                "gmvae",
                "--z-dim",
                "2",
                "--hidden",
                "16",
                "--components",
                "3",
                "--out",
                str(tmp_path / "g"),
                *common,
            ]
        )
        == 0
    )
    assert load_model(tmp_path / "g" / "best.pt")[0].component_loc.shape == (3, 2)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "gmvae", "--prior-flow", "maf"], "--prior-flow is not a setting of gmvae"),
        (["fit", "vae", "--guide-flow", "maf"], "unknown guide_flow 'maf'"),
        (["fit", "vae", "--loss", "kl"], "unknown loss 'kl'"),
        (["fit", "vae", "--z-dim", "2,3"], "--z-dim takes one positive integer, got '2,3' (vae)"),
        (["fit", "hvae", "--z-dim", "4"], "--z-dim takes 2 comma-separated positive integers"),
        (["fit", "hvae", "--hidden", "8,8"], "--hidden takes 2 lists of widths separated by ':'"),
        (["fit", "vae", "--hidden", "a,b"], "--hidden takes comma-separated positive integers"),
        (["fit", "vae", "--components", "3"], "(a setting of gmvae, rnade); drop --components"),
        (["fit", "vae", "--likelihood", "gaussian", "--data", "digits"], None),
    ],
)
def test_bad_vae_settings(tmp_path: Path, capsys, args: list[str], message: str | None) -> None:
    code = main(
        [
            *args,
            "--epochs",
            "1",
            "--train-rows",
            "50",
            "--out",
            str(tmp_path / "r"),
            "--no-progress",
        ]
    )
    if message is None:  # gaussian on binary data is allowed: 0 and 1 are real numbers
        assert code == 0
        return
    assert code == 2
    assert message in capsys.readouterr().err


def test_picture_functions_write_pngs_and_reject_bad_shapes(tmp_path: Path) -> None:
    from ppdgm.training.plots import save_latent_map, save_reconstructions

    x = torch.rand(20, 64)
    assert save_reconstructions(x, x, tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"
    z = torch.randn(30, 5)
    labels = torch.arange(30) % 10
    assert save_latent_map(z, tmp_path / "m.png", labels=labels).read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match=r"data \(20, 64\) and reconstructions \(19, 64\) differ"):
        save_reconstructions(x, x[:19], tmp_path / "bad.png")
    with pytest.raises(ValueError, match=r"needs \[n, k >= 2\] codes, got \(30, 1\)"):
        save_latent_map(z[:, :1], tmp_path / "bad.png")
    with pytest.raises(ValueError, match="29 labels for 30 codes"):
        save_latent_map(z, tmp_path / "bad.png", labels=labels[:29])
