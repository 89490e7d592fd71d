"""ppdgm.train, ppdgm.checkpoint and the fit/sample/evaluate commands: learning a known density,
interrupted-and-resumed runs against uninterrupted ones, early stopping, checkpoints of other
models or from other sources, and the command line."""

from __future__ import annotations

import contextlib
import json
import math
import pickle
import re
from pathlib import Path

import pytest
import torch

from ppdgm.checkpoint import load_model, read_checkpoint, save_checkpoint
from ppdgm.cli import main
from ppdgm.data import BernoulliMixture, batches, load_digits, write_amat
from ppdgm.demo.autoregressive import demo_section
from ppdgm.estimate import LogLikelihood
from ppdgm.models import FVSBN, MADE, NADE
from ppdgm.train import adam, evaluate, fit, maximum_likelihood

PNG = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic() -> tuple[BernoulliMixture, torch.Tensor, torch.Tensor]:
    truth = BernoulliMixture(dim=10, components=3, seed=0)
    return truth, truth.sample(2000, seed=1), truth.sample(1000, seed=2)


def parameters(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ------------------------------------------------------------------------------ learning
def test_fit_learns_a_known_density(synthetic, tmp_path: Path) -> None:
    truth, train, valid = synthetic
    entropy = -float(truth.log_prob(valid).mean())  # the best any model can do, estimated
    torch.manual_seed(0)
    model = NADE(10, 16)
    result = fit(model, train, valid, epochs=15, lr=0.01, out_dir=tmp_path, progress=False)
    nll = [h["valid_nll"] for h in result.history]
    assert nll[-1] < nll[0] - 0.5
    assert entropy - 0.05 < result.best_valid_nll < entropy + 0.15
    assert result.best_epoch == 1 + min(range(len(nll)), key=nll.__getitem__)
    assert evaluate(model, valid)["nll"] == pytest.approx(result.best_valid_nll, rel=1e-6)
    # files: checkpoints, one metrics line per epoch, pictures
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in lines] == list(range(1, 16))
    assert lines[0].keys() >= {"train_loss", "valid_nll", "valid_bits_per_dim", "seconds", "best"}
    assert lines[3]["valid_bits_per_dim"] == pytest.approx(lines[3]["valid_nll"] / 10 / math.log(2))
    for picture in ("learning_curves.png", "samples.png"):
        assert (tmp_path / picture).read_bytes().startswith(PNG)
    rebuilt, checkpoint = load_model(tmp_path / "best.pt", expect=NADE)
    assert rebuilt.config == {"dim": 10, "hidden_dim": 16}
    assert checkpoint["epoch"] == result.best_epoch
    torch.testing.assert_close(rebuilt.log_prob(valid), model.log_prob(valid), rtol=0, atol=0)
    assert not list(tmp_path.glob("*.tmp*")), "no temporary file is left behind"


def test_seeded_runs_repeat_and_seeds_differ(synthetic) -> None:
    _, train, _ = synthetic
    runs = []
    for seed in (3, 3, 4):
        torch.manual_seed(0)
        model = MADE(10, [12], 2, ordering="agnostic")
        fit(model, train[:300], epochs=2, batch_size=64, seed=seed, progress=False)
        runs.append(parameters(model))
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


# -------------------------------------------------------------------------------- resume
class Interrupt:
    """The maximum-likelihood objective, interrupted (Ctrl-C) at a given step."""

    def __init__(self, at_step: int) -> None:
        self.at_step = at_step

    def __call__(self, model: torch.nn.Module, batch: torch.Tensor, step: int) -> torch.Tensor:
        if step == self.at_step:
            raise KeyboardInterrupt
        return maximum_likelihood(model, batch, step)


@pytest.mark.parametrize(
    "make", [lambda: NADE(10, 8), lambda: MADE(10, [16], 3)], ids=["nade", "made-3masks"]
)
def test_interrupted_and_resumed_equals_uninterrupted(synthetic, tmp_path: Path, make) -> None:
    _, train, valid = synthetic
    train, valid = train[:500], valid[:200]
    settings = {"epochs": 4, "batch_size": 64, "lr": 0.01, "seed": 7, "progress": False}
    torch.manual_seed(0)
    straight = make()
    straight_result = fit(straight, train, valid, out_dir=tmp_path / "straight", **settings)

    torch.manual_seed(0)
    first = make()
    steps_per_epoch = math.ceil(500 / 64)
    with pytest.raises(KeyboardInterrupt):  # in the middle of the third epoch
        fit(
            first,
            train,
            valid,
            out_dir=tmp_path / "resumed",
            objective=Interrupt(2 * steps_per_epoch + 3),
            **settings,
        )
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["epoch"] == 2
    torch.manual_seed(123)  # a fresh process: other initial weights, which resume replaces
    second = make()
    result = fit(second, train, valid, out_dir=tmp_path / "resumed", resume=True, **settings)
    for name, value in parameters(straight).items():
        assert torch.equal(value, second.state_dict()[name]), name
    strip = [{k: v for k, v in e.items() if k != "seconds"} for e in straight_result.history]
    assert [{k: v for k, v in e.items() if k != "seconds"} for e in result.history] == strip
    lines = (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
    # resuming a finished run does nothing more
    again = fit(second, train, valid, out_dir=tmp_path / "resumed", resume=True, **settings)
    assert len(again.history) == 4 and again.seconds < 1.0


def test_resume_refuses_another_model_or_other_settings(synthetic, tmp_path: Path) -> None:
    _, train, _ = synthetic
    fit(NADE(10, 8), train[:100], epochs=1, out_dir=tmp_path, progress=False, plots=False)
    with pytest.raises(ValueError, match=r"is a checkpoint of nade .* not of the made"):
        fit(MADE(10, [8]), train[:100], epochs=2, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match=r"is a checkpoint of nade \{'dim': 10, 'hidden_dim': 8"):
        fit(NADE(10, 9), train[:100], epochs=2, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="resume with the same seed, batch size, learning rate"):
        fit(
            NADE(10, 8),
            train[:100],
            epochs=2,
            lr=0.1,
            out_dir=tmp_path,
            resume=True,
            progress=False,
        )
    with pytest.raises(ValueError, match="holds a run already"):
        fit(NADE(10, 8), train[:100], epochs=2, out_dir=tmp_path, progress=False)
    fit(
        NADE(10, 8),
        train[:100],
        epochs=1,
        out_dir=tmp_path,
        overwrite=True,
        progress=False,
        plots=False,
    )
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        fit(NADE(10, 8), train[:100], out_dir=tmp_path / "empty", resume=True, progress=False)


# ------------------------------------------------------------------------ early stopping
def test_early_stopping_keeps_the_best_epoch(synthetic, tmp_path: Path) -> None:
    _, train, valid = synthetic

    def unlearn(model: torch.nn.Module, batch: torch.Tensor, step: int) -> torch.Tensor:
        return model.log_prob(batch).mean()  # a custom objective: here, the wrong way

    torch.manual_seed(0)
    model = FVSBN(10)
    result = fit(
        model,
        train[:500],
        valid,
        epochs=20,
        patience=2,
        objective=unlearn,
        out_dir=tmp_path,
        progress=False,
        plots=False,
    )
    assert result.stopped_early and len(result.history) == 3 and result.best_epoch == 1
    best, _ = load_model(tmp_path / "best.pt")
    torch.testing.assert_close(model.log_prob(valid), best.log_prob(valid), rtol=0, atol=0)
    assert evaluate(model, valid)["nll"] == pytest.approx(result.history[0]["valid_nll"])


# ---------------------------------------------------------------------------- bad input
def test_bad_settings_and_data(synthetic) -> None:
    _, train, _valid = synthetic
    model = FVSBN(10)
    cases = [
        (lambda: fit(model, train * 0.5, progress=False), r"x\[\d+, \d+\] = 0.5"),
        (lambda: fit(model, train[:, :9], progress=False), r"expects x of shape \[N, 10\]"),
        (lambda: fit(model, train, epochs=0), "epochs must be a positive integer"),
        (lambda: fit(model, train, patience=2), "early stopping .* needs validation data"),
        (lambda: fit(model, train, resume=True, progress=False), "resume needs out_dir"),
        (
            lambda: fit(
                model,
                train,
                objective=lambda m, b, s: torch.tensor(math.nan, requires_grad=True),
                progress=False,
            ),
            "the loss is nan at epoch 1",
        ),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_foreign_and_untrusted_checkpoints(tmp_path: Path) -> None:
    torch.save(FVSBN(4).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="is not a ppdgm checkpoint"):
        load_model(tmp_path / "weights.pt")
    with (tmp_path / "evil.pt").open("wb") as f:
        pickle.dump({"format": "ppdgm-checkpoint/1", "payload": Interrupt(3)}, f)
    with pytest.raises(ValueError, match="which weights_only loading refuses"):
        load_model(tmp_path / "evil.pt")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match="is not a PyTorch checkpoint"):
        load_model(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        load_model(tmp_path / "missing.pt")
    save_checkpoint(tmp_path / "made.pt", MADE(4, [8]))
    with pytest.raises(ValueError, match="holds a MADE checkpoint, not a NADE one"):
        load_model(tmp_path / "made.pt", expect=NADE)
    checkpoint = read_checkpoint(tmp_path / "made.pt")
    checkpoint["model"]["config"]["hidden_dims"] = [9]
    torch.save(checkpoint, tmp_path / "damaged.pt")
    with pytest.raises(ValueError, match="the saved weights do not fit the model"):
        load_model(tmp_path / "damaged.pt")
    checkpoint["model"]["name"] = "gpt"
    torch.save(checkpoint, tmp_path / "unknown.pt")
    with pytest.raises(ValueError, match="unknown model 'gpt'"):
        load_model(tmp_path / "unknown.pt")


def test_made_checkpoints_keep_the_degrees_not_the_masks_and_check_them(tmp_path: Path) -> None:
    model = MADE(6, [16, 12], 3, ordering="agnostic", seed=5, direct=True)
    x = BernoulliMixture(6, seed=0).sample(20, seed=0)
    save_checkpoint(tmp_path / "made.pt", model)
    saved = read_checkpoint(tmp_path / "made.pt")["state_dict"]
    assert not [k for k in saved if k.endswith("masks")]
    assert saved["hidden_degrees"].shape == (3, 28)
    again, _ = load_model(tmp_path / "made.pt", expect=MADE)
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    # a checkpoint written when the masks were saved themselves still loads, and is checked
    old = dict(saved)
    del old["hidden_degrees"]
    old.update({f"{name}.masks": layer.masks for name, layer in model.named_modules()
                if name.startswith(("layers.", "direct"))})  # fmt: skip
    torch.save({**read_checkpoint(tmp_path / "made.pt"), "state_dict": old}, tmp_path / "old.pt")
    again, _ = load_model(tmp_path / "old.pt", expect=MADE)
    torch.testing.assert_close(again.log_prob(x), model.log_prob(x), rtol=0, atol=0)
    old["layers.1.masks"] = ~old["layers.1.masks"]
    torch.save({**read_checkpoint(tmp_path / "made.pt"), "state_dict": old}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match=r"layers\.1\.masks: the saved masks differ"):
        load_model(tmp_path / "bad.pt")
    # degrees that the seed does not draw (another seed, or another random stream)
    other = MADE(6, [16, 12], 3, ordering="agnostic", seed=6, direct=True).state_dict()
    for name in ("orders", "hidden_degrees"):
        with pytest.raises(
            RuntimeError, match=f"{name}: the saved masks are not those that seed 5"
        ):
            MADE(6, [16, 12], 3, ordering="agnostic", seed=5, direct=True).load_state_dict(
                {**saved, name: other[name]}
            )


# ------------------------------------------------------------------------ command line
def test_fit_sample_evaluate_from_the_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = [
        "fit",
        "made",
        "--data",
        "digits",
        "--hidden",
        "24,24",
        "--num-masks",
        "2",
        "--ordering",
        "agnostic",
        "--direct",
        "--epochs",
        "2",
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "MADE(dim=64, hidden_dims=[24, 24], num_masks=2" in printed
    assert "direct=True" in printed
    assert "2^n - 1 ≈ 1.8e+19" in printed and "best validation NLL" in printed
    assert main([*args[:-5], "--epochs", "3", "--out", str(out), "--no-progress", "--resume"]) == 0
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    capsys.readouterr()
    assert main(["sample", str(out / "best.pt"), "-n", "16", "-o", str(tmp_path / "s.png")]) == 0
    assert (tmp_path / "s.png").read_bytes().startswith(PNG)
    assert "wrote 16 samples of MADE" in capsys.readouterr().out
    assert main(["evaluate", str(out / "best.pt"), "--split", "valid"]) == 0
    printed = capsys.readouterr().out
    nats, bits = (
        float(v) for v in re.search(r"NLL (\S+) nats .*, (\S+) bits/dim", printed).groups()
    )
    model, _ = load_model(out / "best.pt")
    exact = LogLikelihood(lambda x: model.model(x), method="exact")(load_digits("valid")[:20])
    assert -float(exact.log_prob.mean()) == pytest.approx(
        evaluate(model, load_digits("valid")[:20])["nll"], abs=1e-3
    )
    assert nats == pytest.approx(evaluate(model, load_digits("valid"))["nll"], abs=1e-4)
    assert bits == pytest.approx(nats / 64 / math.log(2), abs=1e-4)


def test_command_line_on_binarized_mnist_files(tmp_path: Path, capsys) -> None:
    gen = torch.Generator().manual_seed(0)
    for split, n in (("train", 30), ("valid", 10)):
        write_amat(
            tmp_path / f"binarized_mnist_{split}.amat",
            torch.bernoulli(torch.full((n, 784), 0.2), generator=gen),
        )
    out = tmp_path / "run"
    assert (
        main(
            [
                "fit",
                "fvsbn",
                "--data",
                "binarized-mnist",
                "--data-dir",
                str(tmp_path),
                "--epochs",
                "1",
                "--out",
                str(out),
                "--no-progress",
            ]
        )
        == 0
    )
    assert "30 training rows, 10 validation rows" in capsys.readouterr().out
    (tmp_path / "elsewhere").mkdir()
    for name in ("train", "valid"):
        (tmp_path / f"binarized_mnist_{name}.amat").rename(
            tmp_path / "elsewhere" / f"binarized_mnist_{name}.amat"
        )
    assert main(["evaluate", str(out / "best.pt")]) == 2
    assert "no binarized MNIST valid split" in capsys.readouterr().err
    assert main(["evaluate", str(out / "best.pt"), "--data-dir", str(tmp_path / "elsewhere")]) == 0
    assert "FVSBN on binarized-mnist valid (10 rows, exact)" in capsys.readouterr().out


def test_command_line_bad_input(tmp_path: Path, capsys) -> None:
    assert main(["fit", "pixelsnail", "--epochs", "1", "--out", str(tmp_path / "a")]) == 2
    assert (
        "unknown model 'pixelsnail'; choose one of cvae, fvsbn, gmvae, hvae, iaf, made, maf, "
        "nade, nice, pixelcnn, realnvp, rnade, ssvae, vae" in capsys.readouterr().err
    )
    assert main(["fit", "rnade", "--num-masks", "2", "--out", str(tmp_path / "b")]) == 2
    assert "--num-masks is not a setting of rnade (a setting of made)" in capsys.readouterr().err
    assert main(["fit", "nade", "--hidden", "8,8", "--out", str(tmp_path / "c")]) == 2
    assert "--hidden takes one positive integer, got '8,8' (nade)" in capsys.readouterr().err
    assert main(["fit", "nade", "--data", "emnist", "--out", str(tmp_path / "d")]) == 2
    assert "unknown dataset 'emnist'" in capsys.readouterr().err
    assert main(["fit", "nade", "--data", "mnist", "--out", str(tmp_path / "e")]) == 2
    assert "mnist needs the folder of its files (--data-dir)" in capsys.readouterr().err
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.pt")
    for command in (
        ["sample", str(tmp_path / "foreign.pt")],
        ["evaluate", str(tmp_path / "foreign.pt")],
    ):
        assert main(command) == 2
        assert "is not a ppdgm checkpoint" in capsys.readouterr().err


def test_demo_section(tmp_path: Path) -> None:
    text = demo_section(tmp_path)
    before, after = (float(v) for v in re.search(r"NLL (\S+) -> (\S+) nats", text).groups())
    assert after < before - 10
    difference = float(re.search(r"largest difference (\S+) over", text).group(1))
    assert difference < 1e-9
    assert (tmp_path / "nade-digits" / "samples.png").read_bytes().startswith(PNG)


def test_weight_decay_shrinks_the_weights_and_is_kept_for_resume(synthetic, tmp_path: Path) -> None:
    _, train, _ = synthetic
    norms = {}
    for decay in (0.0, 1.0):
        torch.manual_seed(0)
        model = FVSBN(10)
        out = tmp_path / str(decay)
        fit(model, train[:200], epochs=3, lr=0.05, weight_decay=decay, out_dir=out,
            progress=False, plots=False)  # fmt: skip
        norms[decay] = float(model.weight.detach().tril(-1).norm())
    assert norms[1.0] < 0.7 * norms[0.0]
    with pytest.raises(ValueError, match=r"'weight_decay': 1\.0"):
        fit(FVSBN(10), train[:200], epochs=4, lr=0.05, out_dir=tmp_path / "1.0", resume=True,
            progress=False)  # fmt: skip
    with pytest.raises(ValueError, match="weight_decay must be a non-negative"):
        fit(FVSBN(10), train[:200], weight_decay=-1.0, progress=False)


# ------------------------------------------------------------- schedules and precision
def test_lr_decay_is_the_hand_written_schedule(synthetic) -> None:
    """``lr_decay`` gives epoch ``e`` the rate ``lr * lr_decay**e``: the same parameters as a
    loop written out with Adam over the same minibatches."""
    _, train, _ = synthetic
    train, lr, decay, seed = train[:300], 0.05, 0.3, 5
    torch.manual_seed(0)
    model = FVSBN(10)
    by_hand = FVSBN(10)
    by_hand.load_state_dict(model.state_dict())
    fit(model, train, epochs=3, batch_size=64, lr=lr, lr_decay=decay, seed=seed, progress=False)
    optimizer = torch.optim.Adam(by_hand.parameters(), lr=lr)
    step = 0
    for epoch in range(3):
        optimizer.param_groups[0]["lr"] = lr * decay**epoch
        for batch in batches(train, 64, seed=seed, epoch=epoch):
            optimizer.zero_grad()
            maximum_likelihood(by_hand, batch, step).backward()
            optimizer.step()
            step += 1
    for name, value in parameters(by_hand).items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=0, atol=1e-6)
    # and a constant rate is another run
    torch.manual_seed(0)
    constant = FVSBN(10)
    fit(constant, train, epochs=3, batch_size=64, lr=lr, seed=seed, progress=False)
    assert not torch.allclose(constant.weight, model.weight, atol=1e-3)


def test_adam_takes_the_fused_kernel_and_makes_torchs_default_update() -> None:
    """``adam`` on CPU parameters is torch's Adam with ``fused=True``: the same steps as the
    default kernel (the oracle) up to rounding. A parameter the fused kernel cannot take (an
    integer one) leaves it to the default."""
    torch.manual_seed(0)
    start = [torch.randn(30, 20), torch.randn(20, dtype=torch.float64)]
    fused = [torch.nn.Parameter(t.clone()) for t in start]
    plain = [torch.nn.Parameter(t.clone()) for t in start]
    optimizer, oracle = (
        adam(fused, lr=0.05, weight_decay=0.01),
        torch.optim.Adam(plain, lr=0.05, weight_decay=0.01),
    )
    assert optimizer.param_groups[0]["fused"] is True
    assert oracle.param_groups[0]["fused"] is None
    for _ in range(40):
        for p, q in zip(fused, plain, strict=True):
            p.grad = torch.randn_like(p)
            q.grad = p.grad.clone()
        optimizer.step()
        oracle.step()
    for p, q in zip(fused, plain, strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6 if p.dtype == torch.float32 else 1e-12)
        assert not torch.equal(p, start[0] if p.dim() == 2 else start[1])
    counts = torch.nn.Parameter(torch.zeros(3, dtype=torch.long), requires_grad=False)
    assert not adam([fused[0], counts], lr=0.1).param_groups[0]["fused"]


def test_resume_from_a_run_saved_by_the_default_kernel_continues_fused(
    synthetic, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ``last.pt`` whose optimizer state names the default kernel (a run saved before
    ``fit`` used the fused one) resumes with the fused kernel and the saved moments."""
    _, train, valid = synthetic
    train, valid = train[:300], valid[:100]
    settings = {"batch_size": 64, "lr": 0.01, "seed": 3, "progress": False, "plots": False}
    torch.manual_seed(0)
    straight = MADE(10, [16], 3)
    fit(straight, train, valid, epochs=3, **settings)
    torch.manual_seed(0)
    first = MADE(10, [16], 3)
    fit(first, train, valid, epochs=2, out_dir=tmp_path, **settings)
    checkpoint = read_checkpoint(tmp_path / "last.pt")
    for group in checkpoint["optimizer"]["param_groups"]:
        assert group["fused"] is True
        group["fused"] = None
    torch.save(checkpoint, tmp_path / "last.pt")
    calls = []
    kernel = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(1) or kernel(*a, **k))
    second = MADE(10, [16], 3)
    fit(second, train, valid, epochs=3, out_dir=tmp_path, resume=True, **settings)
    assert len(calls) == math.ceil(300 / 64)  # the third epoch's steps, each fused
    for name, value in parameters(straight).items():
        torch.testing.assert_close(second.state_dict()[name], value, rtol=0, atol=1e-6)


@pytest.mark.parametrize("make", [lambda: NADE(10, 8), lambda: MADE(10, [16], 3)],
                         ids=["nade", "made-3masks"])  # fmt: skip
def test_bf16_mixed_runs_the_products_in_bfloat16_and_validates_exactly(
    synthetic, tmp_path: Path, make
) -> None:
    truth, train, valid = synthetic
    seen = []

    def recording(model: torch.nn.Module, batch: torch.Tensor, step: int) -> torch.Tensor:
        seen.append(torch.nn.functional.linear(batch, torch.ones(2, 10)).dtype)
        loss = maximum_likelihood(model, batch, step)
        seen.append(loss.dtype)
        return loss

    torch.manual_seed(0)
    model = make()
    result = fit(model, train, valid, epochs=12, lr=0.01, precision="bf16-mixed",
                 objective=recording, out_dir=tmp_path, progress=False, plots=False)  # fmt: skip
    assert set(seen[0::2]) == {torch.bfloat16} and set(seen[1::2]) == {torch.float32}
    # the validation NLL is that of float32 arithmetic, not rounded to bfloat16
    assert evaluate(model, valid)["nll"] == pytest.approx(result.best_valid_nll, rel=1e-7)
    entropy = -float(truth.log_prob(valid).mean())
    assert entropy - 0.05 < result.best_valid_nll < entropy + 0.25
    # the training loss of a bfloat16 pass is close to the exact one
    with torch.no_grad():
        exact = float(maximum_likelihood(model, train, 0))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            rounded = float(maximum_likelihood(model, train, 0))
    assert rounded == pytest.approx(exact, rel=5e-3)
    assert read_checkpoint(tmp_path / "last.pt")["settings"]["precision"] == "bf16-mixed"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_model_on_a_gpu_trains_and_scores_there_from_data_in_memory(
    synthetic, tmp_path: Path
) -> None:
    truth, train, valid = synthetic  # in host memory: fit and evaluate move them
    torch.manual_seed(0)
    model = MADE(10, [32], 3, ordering="agnostic", direct=True).cuda()
    result = fit(model, train, valid, epochs=12, lr=0.01, precision="bf16-mixed",
                 out_dir=tmp_path, progress=False)  # fmt: skip
    entropy = -float(truth.log_prob(valid).mean())
    assert entropy - 0.05 < result.best_valid_nll < entropy + 0.25
    assert evaluate(model, valid)["nll"] == pytest.approx(result.best_valid_nll, rel=1e-6)
    host = load_model(tmp_path / "best.pt", expect=MADE)[0]  # read back on the host
    torch.testing.assert_close(
        host.log_prob(valid), model.log_prob(valid.cuda()).cpu(), rtol=1e-5, atol=1e-4
    )
    assert (tmp_path / "samples.png").read_bytes().startswith(PNG)


def test_schedule_and_precision_are_checked_and_kept_for_resume(synthetic, tmp_path: Path) -> None:
    _, train, _ = synthetic
    run = {"epochs": 1, "out_dir": tmp_path, "progress": False, "plots": False}
    fit(NADE(10, 8), train[:100], lr_decay=0.9, precision="bf16-mixed", **run)
    settings = read_checkpoint(tmp_path / "last.pt")["settings"]
    assert settings["lr_decay"] == 0.9 and settings["precision"] == "bf16-mixed"
    run.update(epochs=2, resume=True)
    for other in ({"precision": "bf16-mixed"}, {"lr_decay": 0.9}, {"lr_decay": 0.8}):
        with pytest.raises(ValueError, match="resume with the same seed"):
            fit(NADE(10, 8), train[:100], **other, **run)
    fit(NADE(10, 8), train[:100], lr_decay=0.9, precision="bf16-mixed", **run)
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2
    for bad, message in (
        ({"lr_decay": 0.0}, r"lr_decay must be in \(0, 1\], got 0.0"),
        ({"lr_decay": 1.5}, r"lr_decay must be in \(0, 1\], got 1.5"),
        ({"lr_decay": float("nan")}, r"lr_decay must be in \(0, 1\], got nan"),
        ({"precision": "16"}, r"precision must be one of 32, bf16-mixed, got '16'"),
    ):
        with pytest.raises(ValueError, match=message):
            fit(NADE(10, 8), train[:100], progress=False, **bad)


def test_command_line_schedule_and_precision(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["fit", "nade", "--hidden", "8", "--epochs", "2", "--out", str(out), "--no-progress",
            "--train-rows", "200", "--valid-rows", "50"]  # fmt: skip
    extra = ["--lr-decay", "0.5", "--weight-decay", "1e-4", "--precision", "bf16-mixed",
             "--device", "cpu"]  # fmt: skip
    assert main([*args, *extra]) == 0
    settings = read_checkpoint(out / "last.pt")["settings"]
    assert settings == {"seed": 0, "batch_size": 100, "lr": 1e-3, "lr_decay": 0.5,
                        "weight_decay": 1e-4, "precision": "bf16-mixed"}  # fmt: skip
    capsys.readouterr()
    assert main([*args, "--lr-decay", "2", "--overwrite"]) == 2
    assert "lr_decay must be in (0, 1], got 2.0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("tpu", "unknown device 'tpu'; expected e.g. cpu, cuda or cuda:1"),
        ("mps", "device 'mps': expected cpu or cuda[:N]"),
        ("cuda:64", "device 'cuda:64': this machine has"),
    ],
)
def test_command_line_refuses_a_device_it_cannot_use(device: str, message: str, capsys) -> None:
    for command in (["fit", "nade", "--device", device], ["evaluate", "x.pt", "--device", device]):
        with pytest.raises(SystemExit) as exit_:
            main(command)
        assert exit_.value.code == 2
        assert message in capsys.readouterr().err


# ------------------------------------------------------------------ dynamic binarization
class Indexed(torch.nn.Module):
    """FVSBN scoring ``(x, index)`` rows, so that a test can see which rows a step took."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.inner = FVSBN(dim)

    def log_prob(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.inner.log_prob(x)


class Recording:
    """The maximum-likelihood objective, keeping each step's rows; Ctrl-C at ``stop``."""

    def __init__(self, stop: int | None = None) -> None:
        self.seen: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.stop = stop

    def __call__(self, model: torch.nn.Module, batch: tuple, step: int) -> torch.Tensor:
        if step == self.stop:
            raise KeyboardInterrupt
        self.seen[step] = (batch[0].clone(), batch[1].clone())
        return maximum_likelihood(model, batch, step)


def test_dynamic_binarization_draws_each_epoch_afresh_and_resumes_exactly(tmp_path: Path) -> None:
    from ppdgm.data import dynamic_binarization, fixed_binarization

    gray = torch.rand(90, 10, generator=torch.Generator().manual_seed(0))
    train, valid = (gray, torch.arange(90)), (gray[:30], torch.arange(30))
    settings = {"epochs": 3, "batch_size": 32, "lr": 0.05, "seed": 5, "progress": False}
    settings["dynamic_binarization"] = True
    torch.manual_seed(0)
    straight, recording = Indexed(10), Recording()
    result = fit(straight, train, valid, objective=recording, **settings)
    steps = math.ceil(90 / 32)
    assert len(recording.seen) == 3 * steps
    for step, (x, index) in recording.seen.items():  # each epoch's rows: that epoch's draw
        assert torch.equal(x, dynamic_binarization(gray, 5, step // steps)[index]), step
    drawn = [dynamic_binarization(gray, 5, e) for e in range(3)]
    assert not torch.equal(drawn[0], drawn[1])  # the draws differ from epoch to epoch
    assert {0.0, 1.0} == set(torch.cat(drawn).unique().tolist())
    # the validation rows: one draw fixed by the seed, the same every epoch
    scored = evaluate(straight, (fixed_binarization(gray[:30], 5), valid[1]))["nll"]
    assert result.history[result.best_epoch - 1]["valid_nll"] == pytest.approx(scored, rel=1e-9)
    # interrupted in the second epoch and resumed: the same draws, the same weights
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        fit(Indexed(10), train, valid, objective=Recording(steps + 1),
            out_dir=tmp_path, **settings)  # fmt: skip
    torch.manual_seed(1)
    resumed, again = Indexed(10), Recording()
    fit(resumed, train, valid, objective=again, out_dir=tmp_path, resume=True, **settings)
    for step, (x, index) in again.seen.items():
        assert torch.equal(x, recording.seen[step][0]) and torch.equal(
            index, recording.seen[step][1]
        )
    for name, value in parameters(straight).items():
        assert torch.equal(value, resumed.state_dict()[name]), name
    # a resume must keep the setting
    with pytest.raises(ValueError, match="dynamic_binarization"):
        fit(Indexed(10), train, valid, out_dir=tmp_path, resume=True,
            **{**settings, "epochs": 4, "dynamic_binarization": False})  # fmt: skip


def test_dynamic_binarization_names_bad_intensities_and_gray_rows_name_it() -> None:
    gray = torch.rand(20, 6, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match=r"needs intensities in \[0, 1\] \(divide pixels by 255"):
        fit(FVSBN(6), gray * 255, epochs=1, progress=False, dynamic_binarization=True)
    with pytest.raises(ValueError, match=r"valid\[1, 0\] is nan: data must be finite"):
        bad = gray.clone()
        bad[1, 0] = math.nan
        fit(FVSBN(6), gray, bad, epochs=1, progress=False, dynamic_binarization=True)
    with pytest.raises(ValueError, match=r"fit\(\.\.\., dynamic_binarization=True\)"):
        fit(FVSBN(6), gray, epochs=1, progress=False)


# ------------------------------------------------- damaged checkpoints, OS errors, SIGTERM
SMALL_FIT = ["fit", "fvsbn", "--data", "digits", "--train-rows", "100", "--valid-rows", "50",
             "--no-progress"]  # fmt: skip


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("small") / "run"
    assert main([*SMALL_FIT, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _error_line(capsys, command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ppdgm {command}: error: "), lines[0]
    return lines[0]


def test_evaluate_refuses_non_finite_weights(small_run: Path, tmp_path: Path, capsys) -> None:
    checkpoint = torch.load(small_run / "best.pt", weights_only=True)
    for value, word in ((math.nan, "NaN"), (math.inf, "infinite")):
        checkpoint["state_dict"]["bias"][3] = value
        torch.save(checkpoint, tmp_path / "bad.pt")
        for command in (["evaluate"], ["sample", "-o", str(tmp_path / "s.png")]):
            assert main([command[0], str(tmp_path / "bad.pt"), *command[1:]]) == 2
            line = _error_line(capsys, command[0])
            assert f"{tmp_path / 'bad.pt'} holds {word} weights (bias)" in line
    assert not (tmp_path / "s.png").exists()


def test_resume_names_a_tensor_of_another_shape(small_run: Path, tmp_path: Path, capsys) -> None:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(small_run, out)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    checkpoint["state_dict"]["weight"] = torch.zeros(3, 5)
    torch.save(checkpoint, out / "last.pt")
    assert main([*SMALL_FIT, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    line = _error_line(capsys, "fit")
    assert "weight has shape (3, 5), expected (64, 64)" in line
    assert "start over with --overwrite or point --out elsewhere" in line
    # another model's last.pt (a NADE's) in the folder: named too, never a RuntimeError
    torch.manual_seed(0)
    save_checkpoint(out / "last.pt", NADE(64, 4), optimizer={}, history=[], state={})
    assert main([*SMALL_FIT, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    assert "start over with --overwrite or point --out elsewhere" in _error_line(capsys, "fit")
    # the optimizer's moments of another shape: a step would fail on them
    shutil.rmtree(out)
    shutil.copytree(small_run, out)
    checkpoint = torch.load(out / "last.pt", weights_only=True)
    checkpoint["optimizer"]["state"][0]["exp_avg"] = torch.zeros(2)
    torch.save(checkpoint, out / "last.pt")
    assert main([*SMALL_FIT, "--epochs", "2", "--out", str(out), "--resume"]) == 2
    assert "exp_avg of weight has shape (2,), expected (64, 64)" in _error_line(capsys, "fit")
    assert main([*SMALL_FIT, "--epochs", "2", "--out", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"name": "fvsbn", "config": {"dim": 10**12}}, "dim=1000000000000 of fvsbn must hold"),
        ({"name": "fvsbn", "config": {"dim": -3}}, "dim=-3 of fvsbn must hold positive"),
        ({"name": "fvsbn", "config": {"dim": "64"}}, "dim='64' of fvsbn is not of type int"),
        ({"name": "nade", "config": {"dim": 64, "hidden_dim": 10**8}}, "an estimated 48.1 GiB"),
        ({"name": "made", "config": {"dim": 64, "hidden_dims": [10**6, 10**6]}}, "3.6 TiB"),
        ({"name": "made", "config": {"dim": 64, "hidden_dims": [8, "x"]}}, "is not of type"),
        ({"name": "realnvp", "config": {"dim": 64, "logit_alpha": math.nan}}, "finite"),
        ({"name": "nade", "config": {"dim": 64, "hidden_dim": True}}, "is not of type int"),
    ],
)
def test_absurd_saved_settings_are_refused_before_allocating(
    small_run: Path, tmp_path: Path, capsys, spec: dict, message: str
) -> None:
    checkpoint = torch.load(small_run / "best.pt", weights_only=True)
    checkpoint["model"] = {**spec, "dtype": "float32"}
    torch.save(checkpoint, tmp_path / "absurd.pt")
    assert main(["evaluate", str(tmp_path / "absurd.pt")]) == 2
    line = _error_line(capsys, "evaluate")
    assert line.startswith(f"ppdgm evaluate: error: {tmp_path / 'absurd.pt'}: ")
    assert message in line
    if "GiB" in message or "TiB" in message:
        assert "hidden_dim" in line and "refused before allocating" in line


def test_out_is_a_file_or_under_a_file(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("mine")
    assert main([*SMALL_FIT, "--out", str(blocker)]) == 2
    assert f"--out {blocker} is a file, not a folder" in _error_line(capsys, "fit")
    assert main([*SMALL_FIT, "--out", str(blocker / "a" / "b")]) == 2
    assert f"lies under {blocker}, a file, not a folder" in _error_line(capsys, "fit")
    assert blocker.read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 4480 vs 4372"),
        OSError(28, "No space left on device"),
    ],
    ids=["torch-short-write", "enospc"],
)
def test_a_full_disk_stops_fit_with_a_whole_checkpoint(tmp_path: Path, capsys, error) -> None:
    from unittest import mock

    out = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):  # epoch 1 saves best.pt and last.pt; then the disk fills
        calls.append(f)
        if len(calls) <= 2:
            return real_save(obj, f, *args, **kwargs)
        Path(f).write_bytes(b"PK\x03\x04 half a zip")
        raise error

    with mock.patch("torch.save", save):
        assert main([*SMALL_FIT, "--epochs", "3", "--out", str(out)]) == 2
    line = _error_line(capsys, "fit")
    assert re.search(rf"{re.escape(str(out))}/(best|last)\.pt: disk full", line), line
    assert not list(out.glob("*.tmp*")), "no temporary file is left behind"
    assert read_checkpoint(out / "last.pt")["epoch"] == 1  # whole, the last finished epoch
    assert main([*SMALL_FIT, "--epochs", "2", "--out", str(out), "--resume"]) == 0


def test_a_read_only_run_folder_is_one_line(tmp_path: Path, capsys) -> None:
    """Root ignores chmod: the folder's refusals are simulated, for mkdir, for every write of a
    file there (the atomic writer's clean-up is refused too, and must not hide the first
    error), and for a rename refused after the temporary file was written."""
    from unittest import mock

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    out = tmp_path / "ro" / "run"
    refused = PermissionError(13, "Permission denied", str(out))
    with mock.patch("pathlib.Path.mkdir", side_effect=refused):
        assert main([*SMALL_FIT, "--epochs", "1", "--out", str(out)]) == 2
    assert f"{out}: permission denied" in _error_line(capsys, "fit")
    out.mkdir(parents=True)
    writes = ("pathlib.Path.write_text", "pathlib.Path.write_bytes", "torch.save")
    with contextlib.ExitStack() as stack:
        for name in (*writes, "pathlib.Path.unlink"):
            stack.enter_context(mock.patch(name, denied))
        assert main([*SMALL_FIT, "--epochs", "1", "--out", str(out)]) == 2
    line = _error_line(capsys, "fit")
    assert re.search(rf"{re.escape(str(out))}/\S+: permission denied", line), line
    assert not list(out.iterdir())
    with mock.patch("os.replace", denied):
        assert main([*SMALL_FIT, "--epochs", "1", "--out", str(out)]) == 2
    assert re.search(rf"{re.escape(str(out))}/\S+: permission denied", _error_line(capsys, "fit"))
    assert not list(out.iterdir()), "neither a partial file nor a temporary one"


def test_stale_temporary_files_go_at_the_next_start(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in ("last.pt.tmp", "samples.png.tmp.png", "metrics.jsonl.tmp"):
        (out / name).write_bytes(b"half")
    (out / "notes.txt").write_text("kept")
    assert main([*SMALL_FIT, "--epochs", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert (
        "removed 3 temporary file(s) left by an interrupted run: last.pt.tmp, "
        "metrics.jsonl.tmp, samples.png.tmp.png" in printed
    )
    assert not list(out.glob("*.tmp*")) and (out / "notes.txt").read_text() == "kept"


def test_sigterm_stops_fit_cleanly_and_the_run_resumes(tmp_path: Path) -> None:
    """``ppdgm fit`` sent SIGTERM once its first checkpoint exists: exit status 143, one line
    saying it was interrupted and what was kept; ``last.pt`` loads and --resume continues."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "run"
    env = {**os.environ, "PPDGM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    child = subprocess.Popen(
        [sys.executable, "-m", "ppdgm", *SMALL_FIT, "--epochs", "100000", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 120
        while not (out / "last.pt").exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "no checkpoint within two minutes"
            time.sleep(0.02)
        child.send_signal(signal.SIGTERM)
        _, err = child.communicate(timeout=60)
    finally:
        child.kill()
        child.wait(timeout=30)
    assert child.returncode == 143, err.decode()
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines
    done = read_checkpoint(out / "last.pt")["epoch"]
    assert lines[0].startswith("ppdgm fit: interrupted by SIGTERM; ")
    assert f"kept {out / 'last.pt'}, the checkpoint of epoch {done}" in lines[0]
    assert "--resume continues from it" in lines[0]
    assert not list(out.glob("*.tmp*"))
    load_model(out / "last.pt")
    assert main([*SMALL_FIT, "--epochs", str(done + 1), "--out", str(out), "--resume"]) == 0
    assert read_checkpoint(out / "last.pt")["epoch"] == done + 1


def test_sigterm_handler_is_restored_after_fit(tmp_path: Path) -> None:
    import signal

    before = signal.getsignal(signal.SIGTERM)
    assert main([*SMALL_FIT, "--epochs", "1", "--out", str(tmp_path / "run")]) == 0
    assert signal.getsignal(signal.SIGTERM) is before
