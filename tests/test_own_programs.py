"""A user's own models (tests/own_models.py: plain Pyro programs and plain density modules)
get what the zoo gets: training by ``fit`` against closed forms, labels in tuple and dict
batches, ``pyro.param`` parameters, checkpoints, interrupted-and-resumed runs equal to
uninterrupted ones, the command line (fit, resume, evaluate --json, sample), and clear errors
for models that break the contract and for checkpoints that cannot be trusted."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from own_models import ClassConditional, DiagonalGaussian, ParamProgram, PlainVAE

from ppdgm.base import ContractError
from ppdgm.checkpoint import load_model, load_weights, read_checkpoint, save_checkpoint
from ppdgm.cli import main
from ppdgm.data import load_digits
from ppdgm.estimate import ParetoKWarning
from ppdgm.models import MAF, NADE
from ppdgm.svi import SlowRoadWarning, SVIObjective
from ppdgm.train import evaluate, fit

pytestmark = pytest.mark.usefixtures("one_thread")

OWN = Path(__file__).resolve().parent / "own_models.py"
PNG = b"\x89PNG\r\n\x1a\n"


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class Interrupt:
    """The default objective of a model, interrupted (Ctrl-C) at a given step."""

    def __init__(self, objective, at_step: int) -> None:
        self.objective, self.at_step = objective, at_step
        self.settings = getattr(objective, "settings", None)
        if self.settings is None:
            del self.settings

    def __call__(self, model, batch, step):
        if step == self.at_step:
            raise KeyboardInterrupt
        return self.objective(model, batch, step)


# ------------------------------------------------------------------------ density models
def test_a_density_model_of_your_own_reaches_the_maximum_likelihood_closed_form() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 3, generator=gen) * torch.tensor([0.5, 1.0, 2.0]) + torch.tensor(
        [1.0, -2.0, 0.5]
    )
    model = DiagonalGaussian(3)
    result = fit(model, x, x, epochs=400, batch_size=400, lr=0.05, progress=False)
    torch.testing.assert_close(model.mean.detach(), x.mean(0), atol=2e-3, rtol=0)
    torch.testing.assert_close(
        model.log_scale.exp().detach(), x.std(0, unbiased=False), atol=2e-3, rtol=0
    )
    exact = -float(
        torch.distributions.Normal(x.mean(0), x.std(0, unbiased=False)).log_prob(x).sum(-1).mean()
    )
    assert result.best_valid_nll == pytest.approx(exact, abs=1e-4)
    assert evaluate(model, x)["bound"] == "exact"


def test_labels_reach_the_model_in_tuple_and_dict_batches() -> None:
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 3, (300,), generator=gen)
    centres = torch.tensor([[0.0, 3.0], [-2.0, 1.0], [4.0, -1.0]])
    x = centres[y] + torch.randn(300, 2, generator=gen)
    runs = []
    for batch in ((x, y), {"x": x, "y": y}):
        torch.manual_seed(0)
        model = ClassConditional(2, 3)
        fit(model, batch, batch, epochs=60, batch_size=50, lr=0.1, progress=False)
        runs.append(model.means.detach().clone())
    assert torch.equal(runs[0], runs[1]), "a dict batch is the same rows as a tuple batch"
    per_class = torch.stack([x[y == k].mean(0) for k in range(3)])
    torch.testing.assert_close(runs[0], per_class, atol=0.05, rtol=0)
    # the rows of x and y stay together when shuffled: the fit is far from unpaired labels'
    assert float((per_class - centres).abs().max()) < 0.3


# ------------------------------------------------------------------------ pyro.param programs
def test_a_program_made_of_pyro_params_learns_the_closed_form_and_is_checkpointed(
    tmp_path: Path,
) -> None:
    gen = torch.Generator().manual_seed(2)
    x = 1.5 + math.sqrt(2.0) * torch.randn(800, generator=gen)
    pyro.clear_param_store()
    program = ParamProgram()
    with pytest.warns(SlowRoadWarning, match=r"not recorded as a graph: .*\(a pyro.param"):
        result = fit(
            program, x, x, epochs=40, batch_size=100, lr=0.05, out_dir=tmp_path, progress=False
        )
    mu, a, b, s = (float(pyro.param(n).detach()) for n in ("mu", "a", "b", "s"))
    assert mu == pytest.approx(float(x.mean()), abs=0.1)
    assert (a, s) == (pytest.approx(0.5, abs=0.05), pytest.approx(math.sqrt(0.5), abs=0.05))
    assert b == pytest.approx(mu / 2, abs=0.1)
    # near the best guide, importance sampling with it is log p(x) to within its small error;
    # the validation ELBO (one draw a row, the lowest of 40 epochs) is near it too
    exact = -float(torch.distributions.Normal(mu, math.sqrt(2.0)).log_prob(x).mean())
    torch.manual_seed(0)
    with warnings.catch_warnings():  # Pareto k is noisy on nearly flat weights
        warnings.simplefilter("ignore", ParetoKWarning)
        iwae = evaluate(program, x, method="importance", num_samples=50)
    assert abs(iwae["nll"] - exact) < 4 * iwae["stderr"] + 1e-3
    assert result.best_valid_nll == pytest.approx(exact, abs=0.1)
    assert result.history[-1]["valid_bound"] == "elbo"
    checkpoint = read_checkpoint(tmp_path / "best.pt")
    assert set(checkpoint["pyro_params"]) == {"mu", "a", "b", "s"}
    # loaded back into a fresh store: the constrained value comes back through its constraint
    best = {n: float(pyro.param(n).detach()) for n in ("mu", "a", "b", "s")}
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"Pyro parameters .* pass a batch of data"):
        load_weights(tmp_path / "best.pt", ParamProgram())
    load_weights(tmp_path / "best.pt", ParamProgram(), example=x[:2])
    assert {n: float(pyro.param(n).detach()) for n in best} == pytest.approx(best, abs=1e-6)


@pytest.mark.filterwarnings("ignore:the loss is not recorded as a graph")  # pyro.param
def test_a_pyro_param_program_interrupted_and_resumed_equals_uninterrupted(
    tmp_path: Path,
) -> None:
    x = 1.0 + torch.randn(300, generator=torch.Generator().manual_seed(3))
    settings = {"epochs": 4, "batch_size": 50, "lr": 0.02, "seed": 5, "progress": False}
    pyro.clear_param_store()
    fit(ParamProgram(), x, x, out_dir=tmp_path / "straight", **settings)
    straight = {n: float(pyro.param(n).detach()) for n in ("mu", "a", "b", "s")}
    pyro.clear_param_store()
    with pytest.raises(KeyboardInterrupt):
        fit(
            ParamProgram(),
            x,
            x,
            out_dir=tmp_path / "resumed",
            objective=Interrupt(SVIObjective(), 2 * 6 + 2),
            **settings,
        )
    pyro.clear_param_store()  # a fresh process
    fit(ParamProgram(), x, x, out_dir=tmp_path / "resumed", resume=True, **settings)
    assert {n: float(pyro.param(n).detach()) for n in straight} == straight


# ------------------------------------------------------------------------ a plain Pyro VAE
def test_a_plain_pyro_vae_interrupted_and_resumed_equals_uninterrupted(tmp_path: Path) -> None:
    train, valid = load_digits("train")[:300], load_digits("valid")[:100]
    settings = {"epochs": 3, "batch_size": 50, "lr": 3e-3, "seed": 1, "progress": False}
    torch.manual_seed(0)
    straight = PlainVAE()
    straight_result = fit(straight, train, valid, out_dir=tmp_path / "straight", **settings)
    assert straight_result.history[-1]["valid_bound"] == "elbo"
    assert {p.name for p in straight_result.files} == {
        "best.pt",
        "last.pt",
        "metrics.jsonl",
        "learning_curves.png",
        "samples.png",
    }
    assert all(p.is_file() for p in straight_result.files)

    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(
            PlainVAE(),
            train,
            valid,
            out_dir=tmp_path / "resumed",
            objective=Interrupt(SVIObjective(), 6 + 3),
            **settings,
        )
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 1
    torch.manual_seed(99)  # other initial weights, which resume replaces
    resumed = PlainVAE()
    result = fit(resumed, train, valid, out_dir=tmp_path / "resumed", resume=True, **settings)
    for name, value in state(straight).items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in straight_result.history]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in result.history] == strip
    # the checkpoint of a module built in Python loads into a module the user builds
    fresh = PlainVAE()
    load_weights(tmp_path / "straight" / "best.pt", fresh)
    for name, value in state(straight).items():
        assert torch.equal(value, fresh.state_dict()[name]), name
    with pytest.raises(ValueError, match=r"built in Python.*load_weights"):
        load_model(tmp_path / "straight" / "best.pt")
    with pytest.raises(ValueError, match=r"holds a PlainVAE checkpoint, not one of a NADE"):
        load_weights(tmp_path / "straight" / "best.pt", NADE(64, 8))


def test_validation_reports_the_iwae_bound_on_request() -> None:
    train = load_digits("train")[:200]
    torch.manual_seed(0)
    model, valid = PlainVAE(), train[:100]
    result = fit(model, train, valid, epochs=2, valid_samples=50, progress=False)
    assert result.best_epoch == 2, "the model holds the last epoch's weights"
    reported = result.history[-1]["valid_iwae_nll"]
    torch.manual_seed(0)
    with warnings.catch_warnings():  # a guide after two epochs: heavy-tailed weights
        warnings.simplefilter("ignore", ParetoKWarning)
        again = evaluate(model, valid, method="importance", num_samples=50)
    assert abs(again["nll"] - reported) < 4 * again["stderr"] + 1e-3
    # IWAE-50 is a tighter bound than the ELBO (here estimated with 500 draws a row)
    elbo = evaluate(model, valid, method="elbo", num_samples=500)
    assert reported < elbo["nll"] - 10 * (elbo["stderr"] + again["stderr"])


# ------------------------------------------------------------------------ the command line
def test_a_plain_pyro_vae_from_the_command_line(tmp_path: Path, capsys) -> None:
    kwargs = ["--kwargs", json.dumps({"x_dim": 64, "z_dim": 2, "hidden": 12})]
    common = ["fit", f"{OWN}:PlainVAE", *kwargs, "--train-rows", "200", "--valid-rows", "80"]
    common += ["--batch-size", "50", "--no-progress"]
    assert main([*common, "--epochs", "3", "--out", str(tmp_path / "straight")]) == 0
    printed = capsys.readouterr().out
    assert "PlainVAE (your own module)" in printed
    assert "best validation -ELBO (an NLL bound)" in printed
    assert re.search(r"wrote: .*best\.pt.*samples\.png", printed)
    assert main([*common, "--epochs", "2", "--out", str(tmp_path / "resumed")]) == 0
    assert main([*common, "--epochs", "3", "--out", str(tmp_path / "resumed"), "--resume"]) == 0
    capsys.readouterr()
    straight, _ = load_model(tmp_path / "straight")  # built again from the file and kwargs
    resumed, _ = load_model(tmp_path / "resumed" / "best.pt")
    assert type(straight).__name__ == "PlainVAE" and straight.encoder[0].out_features == 12
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name

    run = str(tmp_path / "straight")
    assert main(["evaluate", run, "--json", "--samples", "1,20", "--rows", "40"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 40 and report["split"] == "valid" and report["dim"] == 64
    labels = [r["label"] for r in report["results"]]
    assert labels == ["ELBO (20 samples)", "IWAE K=1", "IWAE K=20"]
    by_label = {r["label"]: r for r in report["results"]}
    assert by_label["IWAE K=20"]["nll"] < by_label["ELBO (20 samples)"]["nll"]
    assert report["nll"] == by_label["IWAE K=20"]["nll"]  # the tightest bound
    for entry in report["results"]:
        assert entry["bits_per_dim"] == pytest.approx(entry["nll"] / 64 / math.log(2))
        assert entry["stderr"] is None if entry["num_samples"] == 1 else entry["stderr"] > 0
    # the numbers of the estimator run from Python, to within its error
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ParetoKWarning)
        direct = evaluate(straight, load_digits("valid")[:40], method="importance", num_samples=20)
    assert 0 < direct["stderr"] < 1
    assert abs(direct["nll"] - by_label["IWAE K=20"]["nll"]) < 4 * direct["stderr"]
    assert main(["evaluate", run, "--samples", "1,20", "--rows", "40"]) == 0
    assert "IWAE K=20" in capsys.readouterr().out
    assert main(["sample", run, "-n", "9", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes().startswith(PNG)


def test_a_factory_and_data_files_from_the_command_line(tmp_path: Path, capsys) -> None:
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(120, 3, generator=gen) + torch.tensor([2.0, 0.0, -1.0])
    torch.save(x[:100], tmp_path / "train.pt")
    torch.save(x[100:], tmp_path / "valid.pt")
    args = ["fit", f"{OWN}:DiagonalGaussian", "--kwargs", '{"dim": 3}']
    args += ["--data", str(tmp_path / "train.pt"), "--valid-data", str(tmp_path / "valid.pt")]
    args += ["--epochs", "5", "--lr", "0.05", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main(args) == 0
    assert "100 training rows, 20 validation rows" in capsys.readouterr().out
    assert main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model, _ = load_model(tmp_path / "run")
    assert report["bound"] == "exact" and report["rows"] == 20
    assert report["nll"] == pytest.approx(-float(model.log_prob(x[100:]).detach().mean()), rel=1e-6)
    assert main(["evaluate", str(tmp_path / "run"), "--split", "test"]) == 2
    assert "no test split" in capsys.readouterr().err

    args = ["fit", f"{OWN}:make_vae", "--kwargs", '{"width": 8}', "--epochs", "1"]
    assert main([*args, "--train-rows", "100", "--out", str(tmp_path / "f"), "--no-progress"]) == 0
    capsys.readouterr()
    model, checkpoint = load_model(tmp_path / "f")
    assert checkpoint["model"]["source"]["name"] == "make_vae"
    assert model.encoder[0].out_features == 8


def test_flows_from_the_command_line_report_a_dequantization_bound(tmp_path: Path, capsys) -> None:
    args = ["fit", "maf", "--data", "digits", "--hidden", "64", "--flow-layers", "2"]
    args += ["--epochs", "1", "--train-rows", "200", "--out", str(tmp_path), "--no-progress"]
    assert main(args) == 0
    assert "best validation NLL bound (dequantization)" in capsys.readouterr().out
    model, _ = load_model(tmp_path, expect=MAF)
    assert model.preprocessing.levels == 17 and not model.log_prob_is_exact
    assert main(["evaluate", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bound"] == "dequantization" and report["data"] == "digits-gray"
    assert main(["evaluate", str(tmp_path)]) == 0
    assert "an upper bound: the dequantization bound" in capsys.readouterr().out


# ------------------------------------------------------------------------ errors
def test_models_that_break_the_contract_are_refused_before_training(tmp_path: Path) -> None:
    x = torch.zeros(10, 3)
    with pytest.raises(ContractError, match=r"Linear is neither a density model .* lacks log_prob"):
        fit(torch.nn.Linear(3, 3), x, progress=False)
    with pytest.raises(ContractError, match=r"DiagonalGaussian has no guide and no model"):
        fit(DiagonalGaussian(3), x, objective=SVIObjective(), progress=False)

    class Rowless(DiagonalGaussian):
        def log_prob(self, x):
            return super().log_prob(x).sum()

    with pytest.raises(ValueError, match=r"log_prob returned \(\) for 10 rows"):
        fit(Rowless(3), x, out_dir=tmp_path / "a", progress=False)
    assert not (tmp_path / "a").exists(), "nothing is written for a model that cannot train"

    class NoPlate(PlainVAE):
        def model(self, x):
            pyro.module("decoder", self.decoder)
            with pyro.plate("rows", x.shape[0]):
                z = pyro.sample("z", pyro.distributions.Normal(0.0, 1.0).expand([2]).to_event(1))
                pyro.sample(
                    "x", pyro.distributions.Bernoulli(logits=self.decoder(z)).to_event(1), obs=x
                )

        def guide(self, x):
            pyro.module("encoder", self.encoder)
            with pyro.plate("rows", x.shape[0]):
                loc, log_scale = self.encoder(x).chunk(2, -1)
                pyro.sample("z", pyro.distributions.Normal(loc, log_scale.exp()).to_event(1))

    digits = load_digits("valid")[:20]
    with pytest.raises(ValueError, match=r"plate named 'data'"):
        fit(NoPlate(), digits, digits, out_dir=tmp_path / "b", progress=False)
    assert not (tmp_path / "b").exists()
    with pytest.raises(ValueError, match=r"train\[0, 1\] is nan"):
        fit(DiagonalGaussian(3), torch.tensor([[0.0, float("nan"), 0.0]]), progress=False)
    with pytest.raises(ValueError, match=r"train\[1\] has 2 rows, but train\[0\] has 3"):
        fit(
            ClassConditional(),
            (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long)),
            progress=False,
        )


def test_checkpoints_with_nan_weights_or_absurd_sizes_are_refused(tmp_path: Path, capsys) -> None:
    nade = NADE(64, 8)
    with torch.no_grad():
        nade.W[0, 0] = float("nan")
    save_checkpoint(tmp_path / "nan.pt", nade, data={"name": "digits"})
    assert main(["evaluate", str(tmp_path / "nan.pt")]) == 2
    assert "holds NaN weights (W)" in capsys.readouterr().err
    assert main(["sample", str(tmp_path / "nan.pt")]) == 2
    assert "holds NaN weights" in capsys.readouterr().err

    payload = torch.load(tmp_path / "nan.pt", weights_only=True)
    payload["state_dict"] = NADE(64, 8).state_dict()
    payload["model"]["config"] = {"dim": 784, "hidden_dim": 10**9}  # about 1.6e12 weights
    torch.save(payload, tmp_path / "huge.pt")
    with pytest.raises(ValueError, match=r"declares 1,569,000,001,568 weights"):
        load_model(tmp_path / "huge.pt")
    payload["model"]["config"] = {"dim": 64, "hidden_dim": 9}
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"W is saved with shape \(8, 64\), but nade"):
        load_model(tmp_path / "other.pt")


def test_a_program_file_that_is_gone_or_changed(tmp_path: Path, capsys) -> None:
    source = tmp_path / "mine.py"
    source.write_text(OWN.read_text())
    args = ["fit", f"{source}:DiagonalGaussian", "--kwargs", '{"dim": 64}', "--epochs", "1"]
    assert main([*args, "--train-rows", "50", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    source.write_text(OWN.read_text() + "\n# edited\n")
    with pytest.warns(UserWarning, match="has changed since the checkpoint was written"):
        load_model(tmp_path / "run")
    source.unlink()
    assert main(["evaluate", str(tmp_path / "run")]) == 2
    assert "no longer exists" in capsys.readouterr().err
    for bad, message in (
        (f"{tmp_path}/absent.py:X", "no such Python file"),
        (f"{OWN}:Missing", "has no class or function 'Missing'; its modules: ClassConditional"),
    ):
        assert main(["fit", bad, "--out", str(tmp_path / "x")]) == 2
        assert message in capsys.readouterr().err
    assert main(["fit", f"{OWN}:PlainVAE", "--kwargs", "[1]", "--out", str(tmp_path / "y")]) == 2
    assert "--kwargs must be a JSON object" in capsys.readouterr().err
    assert main(["fit", f"{OWN}:PlainVAE", "--kwargs", '{"depth": 3}']) == 2
    assert "PlainVAE(**{'depth': 3}) failed" in capsys.readouterr().err


def test_a_killed_command_line_run_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    """``python -m ppdgm fit FILE.py:NAME`` killed (SIGKILL) once a checkpoint exists, then
    resumed: the same parameters as a run that was never killed."""
    import os
    import signal
    import subprocess
    import sys
    import time

    kwargs = json.dumps({"x_dim": 64, "z_dim": 2, "hidden": 64})
    common = ["fit", f"{OWN}:PlainVAE", "--kwargs", kwargs, "--batch-size", "20"]
    common += ["--no-progress", "--seed", "3"]
    run = tmp_path / "killed"
    env = {**os.environ, "PPDGM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "ppdgm", *common, "--epochs", "500", "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (run / "last.pt").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within two minutes"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait(timeout=30)
        child.stderr.close()
    done = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= done < 500  # a kill in a write may leave last.pt.tmp; the next write replaces it
    assert main([*common, "--epochs", str(done + 1), "--out", str(run), "--resume"]) == 0
    assert main([*common, "--epochs", str(done + 1), "--out", str(tmp_path / "straight")]) == 0
    resumed, _ = load_model(run / "last.pt")
    straight, _ = load_model(tmp_path / "straight" / "last.pt")
    for name, value in straight.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_labelled_rows_from_a_file_reach_the_model_on_the_command_line(
    tmp_path: Path, capsys
) -> None:
    import numpy as np

    gen = np.random.default_rng(5)
    y = gen.integers(0, 3, 150)
    x = np.array([[0.0, 3.0], [-2.0, 1.0], [4.0, -1.0]])[y] + gen.normal(size=(150, 2))
    np.savez(tmp_path / "train.npz", x=x[:120], y=y[:120])
    np.savez(tmp_path / "valid.npz", x=x[120:], y=y[120:])
    args = ["fit", f"{OWN}:ClassConditional", "--data", str(tmp_path / "train.npz")]
    args += ["--valid-data", str(tmp_path / "valid.npz"), "--epochs", "40", "--lr", "0.1"]
    assert main([*args, "--batch-size", "30", "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    model, _ = load_model(tmp_path / "run")
    rows = (torch.as_tensor(x[120:], dtype=torch.float64), torch.as_tensor(y[120:]))
    with torch.no_grad():
        exact = -float(model.log_prob(rows[0].float(), rows[1]).mean())
    assert report["bound"] == "exact" and report["nll"] == pytest.approx(exact, rel=1e-6)
    per_class = torch.stack([torch.as_tensor(x[:120][y[:120] == k]).mean(0) for k in range(3)])
    torch.testing.assert_close(model.means.detach().double(), per_class, atol=0.1, rtol=0)
    # a model without sample(n) cannot draw pictures: said so, not a traceback
    assert main(["sample", str(tmp_path / "run"), "-o", str(tmp_path / "s.png")]) == 2
    assert "ClassConditional has no sample(n) method" in capsys.readouterr().err
