"""VAEs with labels (SSVAE, CVAE): the enumerated bound against brute-force sums over the
labels, enumeration against sampling, estimates against quadrature, training and bad labels."""

from __future__ import annotations

import json
import math
import re
import warnings
from pathlib import Path

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceEnum_ELBO

import ppdgm.data as data_module
from ppdgm.checkpoint import load_model
from ppdgm.cli import main
from ppdgm.data import (
    labelled_split,
    load,
    load_digit_labels,
    load_digits,
    load_mnist,
    semi_supervised,
)
from ppdgm.estimate import LogLikelihood
from ppdgm.models import CVAE, SSVAE, model_class
from ppdgm.svi import SVIObjective
from ppdgm.train import fit

pytestmark = pytest.mark.usefixtures("float64", "one_thread")

D = torch.distributions


def rows(n: int = 6, dim: int = 5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.bernoulli(torch.full((n, dim), 0.4, dtype=torch.float64), generator=generator)


def bound_by_hand(m: SSVAE | CVAE, x: torch.Tensor, k: int, z: torch.Tensor) -> torch.Tensor:
    """``log p(x | k, z) + log p(z) - log q(z | x, k)`` of one row, from the networks."""
    hot = torch.nn.functional.one_hot(torch.tensor(k), m.y_dim).double()
    logits = m.decoder(torch.cat([z, hot]))
    loc, scale, _ = m.encoder(torch.cat([x, hot]))
    return (
        D.Bernoulli(logits=logits).log_prob(x).sum()
        + D.Normal(0.0, 1.0).log_prob(z).sum()
        - D.Normal(loc, scale).log_prob(z).sum()
    )


@pytest.mark.parametrize("training", [True, False])
def test_the_enumerated_bound_is_the_brute_force_sum_over_labels(training: bool) -> None:
    torch.manual_seed(0)
    m = SSVAE(5, 3, 2, [7], class_weight=2.5).train(training)
    x, y = rows(), torch.tensor([0, -1, 2, -1, -1, 1])
    pyro.set_rng_seed(5)
    loss = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, x, y)
    pyro.set_rng_seed(5)  # the same draws of z: one per labelled row, one per label otherwise
    guide = poutine.trace(poutine.enum(m.guide, first_available_dim=-2)).get_trace(x, y)
    z_labelled, z_each = guide.nodes["z"]["value"], guide.nodes["z_unlabelled"]["value"]
    assert z_each.shape == (3, 6, 2)
    total = torch.tensor(0.0)
    log_p_y = math.log(1 / 3)
    for i in range(6):
        log_q = torch.log_softmax(m.classifier(x[i]), -1)
        if y[i] >= 0:
            total = total + bound_by_hand(m, x[i], int(y[i]), z_labelled[i]) + log_p_y
            if training:  # the classification term, labelled rows only, in training
                total = total + 2.5 * log_q[y[i]]
        else:  # U(x) = sum_y q(y|x) [L(x, y) - log q(y|x)]
            for k in range(3):
                term = bound_by_hand(m, x[i], k, z_each[k, i]) + log_p_y - log_q[k]
                total = total + log_q[k].exp() * term
    assert loss.item() == pytest.approx(-total.item(), rel=1e-12)
    grads = torch.autograd.grad(loss, list(m.parameters()), allow_unused=True)
    by_hand = torch.autograd.grad(-total, list(m.parameters()), allow_unused=True)
    for a, b in zip(grads, by_hand, strict=True):
        if a is None or b is None:  # a parameter one side does not reach: zero on the other
            assert all(g is None or g.abs().max() < 1e-12 for g in (a, b))
        else:
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_svi_objective_sums_the_unknown_labels_out_with_trace_enum() -> None:
    torch.manual_seed(0)
    m = SSVAE(5, 3, 2, [7])
    x, y = rows(), torch.tensor([0, -1, 2, -1, -1, 1])
    objective = SVIObjective()
    pyro.set_rng_seed(3)
    ours = objective(m, (x, y), step=0) * len(x)
    assert isinstance(objective._elbos[m], TraceEnum_ELBO)
    pyro.set_rng_seed(3)
    theirs = TraceEnum_ELBO(max_plate_nesting=1).differentiable_loss(m.model, m.guide, x, y)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-12)
    with pytest.raises(ValueError, match=r"enumerates 'y_unlabelled'.*loss 'elbo'"):
        SVIObjective("meanfield")(m, (x, y), step=0)


def test_enumeration_equals_sampling_the_label_in_expectation() -> None:
    # Trace_ELBO draws y from the classifier; TraceEnum_ELBO sums it: the same expectation
    torch.manual_seed(0)
    m = SSVAE(5, 3, 2, [7]).eval()
    x = rows(4)
    pyro.set_rng_seed(0)
    enumerated = TraceEnum_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    sampled = Trace_ELBO(num_particles=4000, vectorize_particles=True, max_plate_nesting=1)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "y_unlabelled", UserWarning)  # "use TraceEnum_ELBO"
        a = torch.tensor([enumerated.loss(m.model, m.guide, x) for _ in range(10)])
        b = torch.tensor([sampled.loss(m.model, m.guide, x) for _ in range(10)])
    stderr = math.sqrt(a.var() / 10 + b.var() / 10)
    assert abs(float(a.mean() - b.mean())) < 5 * stderr + 1e-3
    assert float(b.std()) > float(a.std())  # sampling the label adds noise


def test_classify_is_the_guide_s_most_probable_label() -> None:
    torch.manual_seed(1)
    m = SSVAE(5, 4, 2, [7])
    x = rows(30, seed=2)
    guide = poutine.trace(m.guide).get_trace(x)
    probs = guide.nodes["y_unlabelled"]["fn"].probs
    assert torch.equal(m.classify(x), probs.argmax(-1))
    assert torch.allclose(m.label_posterior(x).probs, probs)


def log_p_by_quadrature(m: SSVAE | CVAE, x: torch.Tensor, k: int) -> torch.Tensor:
    """``log p(x | y=k)`` of each row by the trapezoid rule over a 1-D latent."""
    z = torch.linspace(-9, 9, 6001, dtype=torch.float64)[:, None]
    hot = torch.nn.functional.one_hot(torch.tensor(k), m.y_dim).double().expand(len(z), -1)
    with torch.no_grad():
        logits = m.decoder(torch.cat([z, hot], -1))  # [G, x]
    log_px = D.Bernoulli(logits=logits[:, None, :]).log_prob(x).sum(-1)  # [G, N]
    integrand = (log_px + D.Normal(0.0, 1.0).log_prob(z)).exp()
    return torch.trapezoid(integrand, z[:, 0], dim=0).log()


def test_importance_estimates_equal_quadrature_for_both_models() -> None:
    torch.manual_seed(0)
    ssvae, cvae = SSVAE(4, 3, 1, [6]).eval(), CVAE(4, 3, 1, [6]).eval()
    x, y = rows(5, 4, seed=3), torch.tensor([1, -1, 0, -1, 2])
    pyro.set_rng_seed(0)  # the prior as the proposal: an untrained guide's tails are too light
    est = LogLikelihood(ssvae.model, num_samples=20000)(x, y)
    for i in range(5):
        if y[i] >= 0:  # log p(x, y)
            exact = math.log(1 / 3) + log_p_by_quadrature(ssvae, x[i : i + 1], int(y[i]))[0]
        else:  # log p(x) = log sum_y p(y) p(x | y)
            each = torch.stack([log_p_by_quadrature(ssvae, x[i : i + 1], k)[0] for k in range(3)])
            exact = torch.logsumexp(each, 0) + math.log(1 / 3)
        assert abs(float(est.log_prob[i] - exact)) < 5 * float(est.stderr[i]) + 2e-3
    labels = torch.tensor([1, 0, 0, 2, 2])
    est = LogLikelihood(cvae.model, num_samples=20000)(x, labels)
    for i in range(5):
        exact = log_p_by_quadrature(cvae, x[i : i + 1], int(labels[i]))[0]
        assert abs(float(est.log_prob[i] - exact)) < 5 * float(est.stderr[i]) + 2e-3


def test_gen_weight_zero_trains_the_classifier_alone() -> None:
    torch.manual_seed(0)
    m = SSVAE(5, 3, 2, [7], class_weight=1.0, gen_weight=0.0)
    x, y = rows(), torch.tensor([0, -1, 2, -1, -1, 1])
    loss = SVIObjective()(m, (x, y), step=0) * len(x)
    cross_entropy = torch.nn.functional.cross_entropy(
        m.classifier(x[y >= 0]), y[y >= 0], reduction="sum"
    )
    assert loss.item() == pytest.approx(cross_entropy.item(), rel=1e-12)
    loss.backward()
    assert all(p.grad is None for p in [*m.encoder.parameters(), *m.decoder.parameters()])
    m.eval()  # evaluation sees the whole bound whatever the training weights
    assert "z_unlabelled" in poutine.trace(m.guide).get_trace(x, y).nodes


def test_samples_are_the_decoder_s_at_prior_draws() -> None:
    torch.manual_seed(0)
    cvae = CVAE(5, 3, 2, [7])
    means = cvae.sample(6, y=2, seed=4, mean=True)
    torch.manual_seed(4)
    z = torch.randn(6, 2)
    hot = torch.nn.functional.one_hot(torch.full((6,), 2), 3).double()
    expected = torch.sigmoid(cvae.decoder(torch.cat([z, hot], -1)))
    torch.testing.assert_close(means, expected.detach())
    draws = cvae.sample(9, seed=1)  # no label: the classes in turn
    assert draws.shape == (9, 5) and set(draws.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(cvae.sample(3, y=torch.tensor([0, 1, 2]), seed=1), cvae.sample(3, seed=1))
    assert SSVAE(5, 3, 2, [7]).sample(4, seed=0).shape == (4, 5)


@pytest.mark.parametrize(
    ("make", "y", "error"),
    [
        (CVAE, None, "models x given its label: pass y"),
        (CVAE, torch.tensor([0, -1, 1]), "label -1 of row 1 is out of range; labels are 0 .. 2"),
        (SSVAE, torch.tensor([0, 3, 1]), r"label 3 of row 1.*-1 \(unknown\) or 0 .. 2"),
        (SSVAE, torch.tensor([0.0, 1.5, 1.0]), "labels must be whole numbers"),
        (SSVAE, torch.tensor([0.0, float("nan"), 1.0]), "labels must be whole numbers"),
        (SSVAE, torch.tensor([0, 1]), r"one label per row, \[3\], got \[2\]"),
    ],
)
def test_bad_labels_are_named(make: type, y: torch.Tensor | None, error: str) -> None:
    m = make(5, 3, 2, [7])
    with pytest.raises(ValueError, match=error):
        m.model(rows(3), y)


def test_rows_come_as_a_tuple_or_a_dict_of_x_and_y() -> None:
    m, x, y = SSVAE(5, 3, 2, [7]), rows(3), torch.tensor([0, -1, 2])
    as_tuple, as_dict = m.check_batch((x, y)), m.check_batch({"x": x, "y": y})
    assert torch.equal(as_tuple[1], as_dict["y"]) and torch.equal(as_tuple[0], as_dict["x"])
    assert torch.equal(m.check_batch({"x": x})["y"], torch.full((3,), -1))
    with pytest.raises(ValueError, match=r'takes rows x, \(x, y\) or \{"x": x, "y": y\}'):
        m.check_batch({"x": x, "label": y})


def test_bad_settings_are_named() -> None:
    with pytest.raises(ValueError, match="class_weight must be a finite number >= 0"):
        SSVAE(5, 3, class_weight=float("nan"))
    with pytest.raises(ValueError, match="y_dim"):
        CVAE(5, 1)


def test_semi_supervised_rows_train_through_fit_and_the_checkpoint(tmp_path: Path) -> None:
    x, labels = load_digits("train")[:300].double(), load_digit_labels("train")[:300]
    train = semi_supervised(x, labels, labelled_split(labels, 2, seed=0))
    assert len(train[0]) == 300 + 20 * 15 and int((train[1] >= 0).sum()) == 300
    valid = (load_digits("valid")[:50].double(), torch.full((50,), -1))
    torch.manual_seed(0)
    m = SSVAE(64, 10, 4, [32])
    result = fit(
        m, train, valid, epochs=2, batch_size=50, lr=3e-3, progress=False, out_dir=tmp_path
    )
    assert len(result.history) == 2 and math.isfinite(result.best_valid_nll)
    assert result.history[-1]["valid_nll"] < result.history[0]["valid_nll"]
    again, _ = load_model(tmp_path / "last.pt", expect=SSVAE)
    assert torch.equal(again.classify(valid[0]), m.classify(valid[0]))
    assert model_class("ssvae") is SSVAE and model_class("cvae") is CVAE


def test_fit_and_evaluate_semi_supervised_from_the_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    args = ["fit", "ssvae", "--data", "digits-labelled", "--labels-per-class", "3"]
    args += ["--epochs", "1", "--z-dim", "4", "--hidden", "32", "--train-rows", "300"]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    model, checkpoint = load_model(out / "last.pt", expect=SSVAE)
    assert checkpoint["data"]["labels_per_class"] == 3
    x, y = load_digits("valid"), load_digit_labels("valid")
    by_hand = float((model.classify(x) == y).double().mean())  # the classifier, row by row
    metrics = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["valid_accuracy"] == pytest.approx(by_hand, abs=1e-12)
    assert f"validation accuracy {by_hand:.4f}" in text
    written = re.search(r"^wrote: (.*)$", text, re.M).group(1).split(", ")
    assert str(out / "samples-by-class.png") in written
    assert (out / "samples-by-class.png").read_bytes()[:4] == b"\x89PNG"
    assert main(["evaluate", str(out / "last.pt"), "--json", "--rows", "50"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert report["labelled"] == 50
    assert report["accuracy"] == pytest.approx(
        float((model.classify(x[:50]) == y[:50]).double().mean())
    )


def test_a_cvae_trains_on_labelled_digits_and_labels_are_required(tmp_path: Path, capsys) -> None:
    args = ["fit", "cvae", "--epochs", "1", "--z-dim", "2", "--hidden", "16", "--no-progress"]
    assert main([*args, "--data", "digits-labelled", "--out", str(tmp_path / "a")]) == 0
    capsys.readouterr()
    assert main([*args, "--data", "digits", "--out", str(tmp_path / "b")]) == 2
    assert "models x given its label: pass y" in capsys.readouterr().err
    ssvae = ["fit", "ssvae", "--data", "digits", "--labels-per-class", "2"]
    assert main([*ssvae, "--out", str(tmp_path / "c")]) == 2
    assert "--labels-per-class needs rows with labels" in capsys.readouterr().err


def test_labelled_mnist_by_name_splits_the_training_files(tmp_path: Path, monkeypatch) -> None:
    from test_idx import fake_mnist

    folder = fake_mnist(tmp_path / "m")
    monkeypatch.setattr(data_module, "MNIST_VALID_ROWS", 5)
    (x, y), (vx, vy) = load("mnist", "train", folder), load("mnist", "valid", folder)
    all_x, all_y = load_mnist(folder, binarize="bernoulli", seed=0)
    assert torch.equal(torch.cat([x, vx]), all_x) and torch.equal(torch.cat([y, vy]), all_y)
    assert len(vx) == 5 and set(x.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="mnist needs the folder"):
        load("mnist", "train")


def test_dynamic_binarization_from_the_command_line(tmp_path: Path, monkeypatch, capsys) -> None:
    from test_idx import fake_mnist

    from ppdgm.data import dynamic_binarization, fixed_binarization

    folder = fake_mnist(tmp_path / "m")
    monkeypatch.setattr(data_module, "MNIST_VALID_ROWS", 5)
    (gray, _), (valid_gray, valid_labels) = (
        load("mnist-gray", split, folder) for split in ("train", "valid")
    )
    assert torch.equal(dynamic_binarization(gray, 0, 0).unique(), torch.tensor([0.0, 1.0]))
    assert len(gray) == 15 and not torch.equal(gray, gray.round())
    out = tmp_path / "run"
    args = ["fit", "ssvae", "--data", "mnist-gray", "--data-dir", str(folder), "--seed", "3"]
    args += ["--dynamic-binarization", "--labels-per-class", "1", "--epochs", "2"]
    args += ["--z-dim", "2", "--hidden", "8", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    model, checkpoint = load_model(out / "last.pt", expect=SSVAE)
    assert checkpoint["settings"]["dynamic_binarization"] is True
    assert checkpoint["data"]["binarization_seed"] == 3
    # evaluate and score see the validation rows as training saw them: one draw fixed by the seed
    drawn = fixed_binarization(valid_gray, 3)
    assert main(["evaluate", str(out / "last.pt"), "--json", "--samples", "1"]) == 0
    report = json.loads(capsys.readouterr().out.splitlines()[-1])
    by_hand = float((model.classify(drawn.double()) == valid_labels).double().mean())
    assert report["accuracy"] == pytest.approx(by_hand)
    torch.save((drawn, valid_labels), tmp_path / "drawn.pt")
    torch.save((drawn.long(), valid_labels), tmp_path / "integers.pt")  # binary, as integers
    for data, csv in (
        ("mnist-gray", "a"),
        (tmp_path / "drawn.pt", "b"),
        (tmp_path / "integers.pt", "c"),
    ):
        score = ["score", str(out / "last.pt"), "--data", str(data), "--split", "valid"]
        assert main([*score, "--samples", "4", "-o", str(tmp_path / f"{csv}.csv")]) == 0
    texts = {(tmp_path / f"{csv}.csv").read_text() for csv in "abc"}
    assert len(texts) == 1
    # pixel values 0..255 are not intensities: the message says how to fix them
    torch.save(valid_gray * 255, tmp_path / "pixels.pt")
    assert main(["score", str(out / "last.pt"), "--data", str(tmp_path / "pixels.pt")]) == 2
    assert "trained with dynamic binarization" in capsys.readouterr().err
