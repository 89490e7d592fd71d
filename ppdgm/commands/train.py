"""``ppdgm fit``, ``ppdgm sample``, ``ppdgm evaluate`` and ``ppdgm score``: any model from the
command line.

``MODEL`` is a zoo name (``fvsbn``, ``nade``, ``made`` by maximum likelihood; ``vae``,
``gmvae``, ``hvae`` by SVI; ``nice``, ``realnvp``, ``maf``, ``iaf`` by maximum likelihood on
dequantized data) or ``FILE.py:NAME``, a class or factory of the user's own that returns a
module with ``log_prob`` or with Pyro programs ``model`` and ``guide`` (:mod:`ppdgm.base`),
built with ``--kwargs``. Checkpoints record how to build the model again, so ``evaluate``,
``score`` and ``sample`` take a checkpoint or a run folder and nothing else.

A zoo model's own flags come from its ``Config`` (:mod:`ppdgm.settings`): ``ppdgm`` parses the
flags every model shares, and ``fit`` parses the rest with the named model's flags
(``ppdgm fit made --help`` lists them), so that no flag means one thing for one model and
another for the next, and a new zoo model needs no code here.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import math
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ppdgm.atomic import remove_stale_temporaries
from ppdgm.commands._common import (
    check_folder,
    device,
    finite_float,
    non_negative_int,
    notes_stream,
    positive_int,
    write_text,
)
from ppdgm.settings import add_flags, flags, from_flags, sizes

__all__ = ["Terminated", "register"]

#: ``fit(precision=...)``'s values (kept here so that ``ppdgm --help`` does not import torch)
PRECISIONS = ("32", "bf16-mixed")


def register(subparsers: Any) -> None:
    """Adds ``ppdgm fit``, ``ppdgm sample``, ``ppdgm evaluate`` and ``ppdgm score`` to the
    ``ppdgm`` parser."""
    fit = subparsers.add_parser(
        "fit",
        help="train a model of the zoo or your own (FILE.py:NAME)",
        description="Train a model of the zoo, or your own module (FILE.py:NAME, a class or "
        "function returning a torch module with log_prob, or with Pyro programs model and "
        "guide), with Adam, validating every epoch; checkpoints, metrics.jsonl and pictures "
        "go to --out. Density models train by maximum likelihood, programs by SVI.",
        epilog="Each zoo model has settings of its own: ppdgm fit MODEL --help lists them. "
        "Ctrl-C (exit status 130) or SIGTERM (143) stops a run cleanly: the checkpoint of the "
        "last finished epoch stays in --out, and --resume continues from it.",
        add_help=False,  # --help waits for MODEL, whose settings it lists
        allow_abbrev=False,  # a model's flags are parsed after these: no prefix may take one
    )
    fit.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    fit.add_argument(
        "model",
        metavar="MODEL",
        nargs="?",
        help="fvsbn, nade, made, rnade, pixelcnn, vae, gmvae, hvae, ssvae, cvae, nice, realnvp, "
        "maf, iaf, or FILE.py:NAME",
    )
    fit.add_argument("--kwargs", help="FILE.py:NAME: its keyword arguments as a JSON object ({})")
    fit.add_argument(
        "--data",
        default="digits",
        help="binarized-mnist, mnist, mnist-gray, digits, digits-gray, digits-labelled, or a "
        "data file (.pt .npy .npz .csv .amat) (digits; flows take digits as 17 gray levels; "
        "mnist, mnist-gray and digits-labelled are (x, y) with labels)",
    )
    fit.add_argument(
        "--data-dir", help="the folder of the binarized MNIST .amat files or the MNIST idx files"
    )
    fit.add_argument("--valid-data", help="with a data file: the validation rows' file")
    fit.add_argument(
        "--dynamic-binarization",
        action="store_true",
        help="the rows are intensities in [0, 1] (mnist-gray): train on a fresh Bernoulli draw "
        "each epoch, validate and evaluate on one draw fixed by --seed",
    )
    fit.add_argument("--out", help="the folder of the run (runs/MODEL-DATA)")
    fit.add_argument("--epochs", type=positive_int, default=10, help="epochs (10)")
    fit.add_argument("--batch-size", type=positive_int, default=100, help="minibatch size (100)")
    fit.add_argument(
        "--lr", type=finite_float(greater=0.0), default=1e-3, help="Adam's learning rate (0.001)"
    )
    fit.add_argument(
        "--lr-decay",
        type=finite_float(greater=0.0),
        default=1.0,
        help="lr times this each epoch, in (0, 1] (1)",
    )
    fit.add_argument(
        "--weight-decay", type=finite_float(least=0.0), default=0.0, help="an L2 penalty (0)"
    )
    fit.add_argument(
        "--precision",
        default="32",
        choices=PRECISIONS,
        help="of the training steps; bf16-mixed: bfloat16 matrix products (32)",
    )
    fit.add_argument("--patience", type=positive_int, help="early stopping after N bad epochs")
    fit.add_argument("--seed", type=int, default=0, help="seed of the weights and shuffles (0)")
    fit.add_argument("--train-rows", type=positive_int, help="use only the first N training rows")
    fit.add_argument("--valid-rows", type=positive_int, help="validate on the first N rows")
    fit.add_argument(
        "--labels-per-class",
        type=positive_int,
        help="semi-supervised: keep the labels of N training rows per class (drawn by --seed), "
        "the other rows unlabelled (-1), the labelled ones repeated to as many (ssvae)",
    )
    fit.add_argument(
        "--valid-samples",
        type=positive_int,
        help="programs: also report the IWAE bound with K samples each epoch",
    )
    fit.add_argument(
        "--device", type=device, default="cpu", help="train there: cpu, cuda, cuda:1 (cpu)"
    )
    fit.add_argument("--resume", action="store_true", help="continue the run in --out")
    fit.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    svi = fit.add_argument_group("models with model and guide, trained by SVI")
    svi.add_argument("--loss", help="elbo, meanfield or iwae (elbo)")
    svi.add_argument("--particles", type=positive_int, default=1, help="samples per row (1)")
    svi.add_argument(
        "--anneal-steps",
        type=non_negative_int,
        default=0,
        help="steps of KL warm-up from 0 to 1 (0: none)",
    )
    svi.add_argument(
        "--compile",
        action="store_true",
        help="compile the recorded loss with torch.compile: ~10 s once, faster steps (long runs; "
        "needs a C++ compiler)",
    )
    fit.set_defaults(run=run_fit, parser=fit, takes_settings=True)

    sample = subparsers.add_parser(
        "sample",
        help="draw samples from a checkpoint into a PNG grid",
        description="Rebuild the model saved in CHECKPOINT (a file, or a run folder: its "
        "best.pt) and draw a grid of samples.",
    )
    sample.add_argument("checkpoint", metavar="CHECKPOINT")
    sample.add_argument("-n", type=positive_int, default=64, help="samples (64)")
    sample.add_argument("-o", "--output", default="samples.png", help="PNG file (samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="seed (0)")
    sample.set_defaults(run=run_sample)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="negative log-likelihood of a checkpoint on a data split",
        description="Rebuild the model saved in CHECKPOINT (a file, or a run folder: its "
        "best.pt) and print its mean negative log-likelihood on the split of the data it was "
        "trained on, in nats and bits/dim: exact for an exact density model, a bound for a "
        "dequantized flow, and for a latent-variable model the ELBO and importance-weighted "
        "bounds with --samples.",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT")
    evaluate.add_argument("--split", default="valid", help="train, valid or test (valid)")
    evaluate.add_argument("--data-dir", help="the .amat folder (default: the one of training)")
    evaluate.add_argument("--data", help="score these rows instead (a data file)")
    evaluate.add_argument("--batch-size", type=positive_int, default=100, help="rows per pass")
    evaluate.add_argument(
        "--samples",
        default="1,10,100,1000",
        help="programs: the K of each IWAE bound (1,10,100,1000)",
    )
    evaluate.add_argument("--rows", type=positive_int, help="only the first N rows of the split")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the estimates (0)")
    evaluate.add_argument(
        "--json", action="store_true", help="print the numbers as one JSON object"
    )
    evaluate.add_argument(
        "--device", type=device, default="cpu", help="score there: cpu, cuda, cuda:1 (cpu)"
    )
    evaluate.set_defaults(run=run_evaluate)

    score = subparsers.add_parser(
        "score",
        help="anomaly scores: -log p(x) of each data row under a checkpoint, as CSV",
        description="Rebuild the model saved in CHECKPOINT (a file, or a run folder: its "
        "best.pt) and write one row per data row: row, score (-log p(x) in nats: higher is "
        "more anomalous), stderr (of the score; 0 for exact) and estimate (what the number "
        "is: exact for a density model, 'bound (dequantization)' for a dequantized flow, and "
        "for a latent-variable model 'IWAE K=k upper bound on -log p', by importance sampling "
        "with --samples draws per row, in passes of --batch-size rows seeded by --seed and "
        "the pass, so that a row's number does not depend on the other passes).",
    )
    score.add_argument("checkpoint", metavar="CHECKPOINT")
    score.add_argument(
        "--data",
        required=True,
        help="the rows: a data file (.pt .npy .npz .csv .amat) or a dataset (binarized-mnist, "
        "mnist, mnist-gray, digits, digits-gray, digits-labelled; its --split)",
    )
    score.add_argument("--split", default="test", help="of a dataset: train, valid or test (test)")
    score.add_argument("--data-dir", help="the .amat folder of binarized-mnist")
    score.add_argument("-o", "--output", help="the CSV file (default: standard output)")
    score.add_argument(
        "--samples",
        type=positive_int,
        default=1000,
        help="latent-variable models: importance samples K per row (1000)",
    )
    score.add_argument("--seed", type=int, default=0, help="seed of the estimates (0)")
    score.add_argument("--batch-size", type=positive_int, default=100, help="rows per pass (100)")
    score.add_argument(
        "--device", type=device, default="cpu", help="score there: cpu, cuda, cuda:1 (cpu)"
    )
    score.set_defaults(run=run_score)


def _is_source(model: str) -> bool:
    return ".py:" in model or model.endswith(".py")


def _parse_kwargs(text: str | None) -> dict[str, Any]:
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"--kwargs must be a JSON object, e.g. '{{\"z_dim\": 8}}': {e}") from None
    if not isinstance(value, dict):
        raise ValueError(f"--kwargs must be a JSON object, got {text!r}")
    return value


def _dataset(name: str, split: str, data_dir: str | None) -> Any:
    from ppdgm.data import load

    return load(name, split, data_dir)


def _load_data(args: argparse.Namespace, name: str) -> tuple[Any, Any, dict[str, Any]]:
    """The training and validation rows the command line names, and their description."""
    from ppdgm.batch import select_rows
    from ppdgm.data import DATASETS, FILE_SUFFIXES, load_file

    looks_like_file = Path(name).suffix.lower() in FILE_SUFFIXES or Path(name).exists()
    if name in DATASETS or not looks_like_file:  # an unknown name: load's error lists them
        if args.valid_data:
            raise ValueError(f"--valid-data goes with a data file, not the {name} dataset")
        train = _dataset(name, "train", args.data_dir)
        valid = _dataset(name, "valid", args.data_dir)
        data = {
            "name": name,
            "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
        }
    else:
        train = load_file(name)
        valid = load_file(args.valid_data) if args.valid_data else None
        data = {
            "name": "file",
            "train": str(Path(name).resolve()),
            "valid": str(Path(args.valid_data).resolve()) if args.valid_data else None,
        }
    train = select_rows(train, slice(None, args.train_rows))
    if valid is not None:
        valid = select_rows(valid, slice(None, args.valid_rows))
    if getattr(args, "labels_per_class", None):
        train = _semi_supervised(train, args.labels_per_class, args.seed)
        data["labels_per_class"] = args.labels_per_class
    if args.dynamic_binarization:  # fit draws the training rows; the others one fixed draw
        data["binarization_seed"] = args.seed
        if valid is not None:
            valid = _binarized(valid, data)
    return train, valid, data


def _binarized(rows: Any, data: dict[str, Any]) -> Any:
    """``rows`` as a model trained with dynamic binarization scores them: intensities binarized
    by the draw its seed fixes (binary rows stay as they are); others unchanged."""
    from ppdgm.batch import check_rows, first_tensor, replace_first
    from ppdgm.data import fixed_binarization

    seed = data.get("binarization_seed")
    if seed is None:
        return rows
    rows = check_rows(rows)
    x = first_tensor(rows)
    try:
        return replace_first(
            rows, fixed_binarization(x if x.is_floating_point() else x.float(), int(seed))
        )
    except ValueError as e:
        raise ValueError(f"the model was trained with dynamic binarization: {e}") from None


def _semi_supervised(train: Any, per_class: int, seed: int) -> Any:
    """The training rows with the labels of ``per_class`` rows of each class kept."""
    from ppdgm.batch import as_arguments
    from ppdgm.data import labelled_split, semi_supervised

    args, kwargs = as_arguments(train)
    if len(args) + len(kwargs) != 2 or (args and kwargs):
        raise ValueError(
            "--labels-per-class needs rows with labels, (x, y): a labelled dataset (mnist, "
            "digits-labelled) or a file of two arrays (rows, then labels)"
        )
    x, y = args or kwargs.values()
    rows = semi_supervised(x, y, labelled_split(y, per_class, seed=seed))
    return rows if args else dict(zip(kwargs, rows, strict=True))  # an .npz's names stay


def _split_of(data: dict[str, Any], split: str, data_dir: str | None) -> Any:
    """The rows of ``split`` of the data a checkpoint was trained on."""
    from ppdgm.data import load_file

    if "name" not in data:
        raise ValueError("the checkpoint does not say which data it was trained on; use --data")
    if data["name"] != "file":
        return _dataset(data["name"], split, data_dir or data.get("data_dir"))
    if split not in ("train", "valid") or not data.get(split):
        raise ValueError(
            f"the model was trained on the file {data.get('train')}"
            + (f" and validated on {data['valid']}" if data.get("valid") else "")
            + f"; there is no {split} split: name the rows with --data FILE"
        )
    return load_file(data[split])


def _describe(model: Any) -> str:
    from ppdgm.base import registered_name

    summary = getattr(model, "summary", None)
    if callable(summary):
        return summary()
    count = sum(p.numel() for p in model.parameters())
    own = "" if registered_name(model) else " (your own module)"
    return f"{type(model).__name__}{own}: {count:,} parameters"


def _settings_parser(cls: type, name: str) -> argparse.ArgumentParser:
    """The parser of the zoo model ``cls``'s own flags (from its ``Config``)."""
    parser = argparse.ArgumentParser(prog=f"ppdgm fit {name}", add_help=False, allow_abbrev=False)
    add_flags(parser.add_argument_group(f"{name}'s settings"), cls.Config)
    return parser


def _show_help(args: argparse.Namespace) -> int:
    """``ppdgm fit [MODEL] --help``: the shared flags, and MODEL's own when it is a zoo name."""
    from ppdgm.models import model_class

    parser = args.parser
    if args.model and not _is_source(args.model):
        cls = model_class(args.model)
        group = parser.add_argument_group(
            f"{cls.zoo_name}'s settings",
            "its size comes from the data" + ("" if flags(cls.Config) else "; nothing else"),
        )
        add_flags(group, cls.Config)
    parser.print_help()
    return 0


def _model_settings(args: argparse.Namespace, cls: type) -> argparse.Namespace:
    """Parses the flags left over by ``ppdgm``'s parser as the settings of ``cls``.

    Raises:
        ValueError: for a flag the model does not have, naming the models that do.
    """
    from ppdgm.models import MODELS

    name = cls.zoo_name
    mine, rest = _settings_parser(cls, name).parse_known_args(args.extras)
    unknown = [a.split("=")[0] for a in rest if a.startswith("-")]
    if rest:
        flag = unknown[0] if unknown else rest[0]
        others = sorted(n for n, c in MODELS.items() if flag in flags(c.Config).values())
        own = ", ".join(flags(cls.Config).values()) or "none"
        where = f" (a setting of {', '.join(others)})" if others else ""
        raise ValueError(
            f"{flag} is not a setting of {name}{where}; drop {flag}. {name}'s settings: {own}"
            if unknown
            else f"unexpected {' '.join(rest)!r}; {name}'s settings: {own}"
        )
    return mine


def _build_zoo(cls: Any, flags_of_model: argparse.Namespace, dim: int, levels: int | None) -> Any:
    """The zoo model ``cls`` for ``dim`` variables (on ``levels`` levels; None: not
    dequantized) with its settings from the command line (:func:`_model_settings`).

    Raises:
        ValueError: for a setting its parser or the model rejects.
    """
    names = {field.name for field in dataclasses.fields(cls.Config)}
    data: dict[str, Any] = {name: dim for name in ("dim", "x_dim") if name in names}
    if "levels" in names:
        data["levels"] = levels
        if levels is None:  # continuous data: no logit transform
            data["logit_alpha"] = None
    config = from_flags(cls.Config, flags_of_model, cls.zoo_name, **data)
    return cls.from_config(config)


class Terminated(KeyboardInterrupt):
    """SIGTERM during ``ppdgm fit``, raised where the program was so that the run stops as on
    Ctrl-C (``KeyboardInterrupt``): files are closed, no half-written file is left, and the
    command exits with status 143 (128 + SIGTERM) saying what was kept."""

    exit_status = 128 + signal.SIGTERM


@contextlib.contextmanager
def sigterm_stops() -> Iterator[None]:
    """For the duration of the block, SIGTERM raises :class:`Terminated` (a
    ``KeyboardInterrupt``); the previous handler is restored after. Only the main thread can
    set handlers: elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Terminated("by SIGTERM")

    before = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before if before is not None else signal.SIG_DFL)


def run_fit(args: argparse.Namespace) -> int:
    """Trains the model and prints where its files went; under ``torchrun``, as one process of
    a data-parallel run (rank 0 prints and writes). SIGTERM stops it as Ctrl-C does
    (:func:`sigterm_stops`)."""
    if args.help:
        return _show_help(args)
    with sigterm_stops():
        return _as_one_of_the_processes(args, _run_fit)


def _as_one_of_the_processes(args: argparse.Namespace, run: Any) -> int:
    """``run(args, writer)`` in the process group ``torchrun`` describes, if any (see
    :mod:`ppdgm.distributed`); only rank 0 (the writer) prints."""
    from ppdgm.distributed import joined_from_environment

    with joined_from_environment(cuda=str(args.device).startswith("cuda")) as where:
        quiet = contextlib.redirect_stdout(io.StringIO())
        with contextlib.nullcontext() if where.writer else quiet:
            return int(run(args, where.writer))


def _run_fit(args: argparse.Namespace, writer: bool) -> int:
    import torch

    from ppdgm.base import PROGRAM, model_kind
    from ppdgm.batch import first_tensor, num_rows, select_rows
    from ppdgm.infer.svi import SVIObjective
    from ppdgm.models import model_class
    from ppdgm.source import load_source
    from ppdgm.training.loop import fit, retain_freed_memory

    if not args.model:
        raise ValueError("name the MODEL to train (ppdgm fit --help lists them)")
    source = _is_source(args.model)
    family = ""
    cls: Any = None
    if source:
        kwargs = _parse_kwargs(args.kwargs)
        label = Path(args.model.rpartition(":")[0]).stem
        if args.extras:
            raise ValueError(
                f"unexpected {' '.join(args.extras)!r}: your own model takes its arguments as "
                "--kwargs JSON"
            )
    else:
        if args.kwargs is not None:
            raise ValueError("--kwargs is for your own model, FILE.py:NAME")
        cls = model_class(args.model)  # an unknown name fails before the data
        own_flags = _model_settings(args, cls)  # and so does an unknown flag
        family = cls.family
        label = cls.zoo_name
    data_name = args.data
    args.levels = None
    if not source and family == "flow":
        data_name, args.levels = _flow_data(data_name)
    out = Path(args.out or f"runs/{label}-{Path(data_name).stem}")
    check_folder(out)  # a file in the way fails now, not after the data and the model
    retain_freed_memory()
    train, valid, data = _load_data(args, data_name)
    dim = math.prod(first_tensor(train).shape[1:])
    torch.manual_seed(args.seed)
    if source:
        model = load_source(args.model, kwargs)
    else:
        model = _build_zoo(cls, own_flags, dim, args.levels)
    model = model.to(args.device)  # fit moves the data there
    kind = model_kind(model)
    if kind != PROGRAM and args.loss is not None:
        raise ValueError(
            f"--loss is for latent-variable models (model and guide); {type(model).__name__} "
            "has log_prob and trains by maximum likelihood"
        )
    print(_describe(model))
    if writer and (args.resume or args.overwrite or not (out / "last.pt").exists()):
        stale = remove_stale_temporaries(out)  # left by a run killed in a write
        if stale:
            names = ", ".join(p.name for p in stale)
            print(f"removed {len(stale)} temporary file(s) left by an interrupted run: {names}")
    valid_rows = f"{num_rows(valid):,} validation rows" if valid is not None else "no validation"
    print(f"{num_rows(train):,} training rows, {valid_rows}; writing into {out}")
    result = fit(
        model,
        train,
        valid,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_decay=args.lr_decay,
        weight_decay=args.weight_decay,
        precision=args.precision,
        patience=args.patience,
        seed=args.seed,
        objective=SVIObjective(
            args.loss or "elbo",
            args.particles,
            anneal_steps=args.anneal_steps,
            compile=args.compile,
        )
        if kind == PROGRAM
        else None,
        valid_samples=args.valid_samples,
        out_dir=out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        data=data,
        dynamic_binarization=args.dynamic_binarization,
    )
    if result.history:
        print(
            f"{len(result.history)} epochs ({result.seconds:.1f} s in this run)"
            + ("; stopped early" if result.stopped_early else "")
        )
    if result.history and "valid_accuracy" in result.history[-1]:
        print(f"validation accuracy {result.history[-1]['valid_accuracy']:.4f} (last epoch)")
    if result.best_valid_nll is not None:
        bits = result.best_valid_nll / (dim * math.log(2))
        bound = result.history[-1].get("valid_bound")
        what = {
            None: "NLL",
            "elbo": "-ELBO (an NLL bound)",
            "dequantization": "NLL bound (dequantization)",
        }.get(bound, f"NLL ({bound})")
        print(
            f"best validation {what} {result.best_valid_nll:.4f} nats ({bits:.4f} bits/dim) at "
            f"epoch {result.best_epoch}"
        )
    from ppdgm.training.plots import save_vae_pictures

    files = list(result.files)
    if writer and not source and family == "vae" and result.history and valid is not None:
        shown = select_rows(valid, slice(None, 2000))
        files += save_vae_pictures(model, first_tensor(shown), out, seed=args.seed)
    print("wrote: " + ", ".join(dict.fromkeys(str(p) for p in files)))  # once each
    return 0


def _flow_data(name: str) -> tuple[str, int | None]:
    """The data a flow trains on for ``--data name`` and its levels (None: continuous)."""
    if name in ("digits", "digits-gray"):
        return "digits-gray", 17
    if name == "binarized-mnist":
        return name, 2
    return name, None


def run_sample(args: argparse.Namespace) -> int:
    """Draws ``-n`` samples into a PNG grid."""
    from ppdgm.base import can_sample
    from ppdgm.training.checkpoint import load_model
    from ppdgm.training.plots import picture_samples, save_sample_grid

    output = Path(args.output)
    check_folder(output.parent, f"cannot write {output}:")
    model, _ = load_model(args.checkpoint)
    if not can_sample(model):
        raise ValueError(
            f"{type(model).__name__} has no sample(n) method: add one that returns n draws "
            "[n, dim] to draw pictures"
        )
    samples = picture_samples(model, args.n, seed=args.seed)
    path = save_sample_grid(samples, args.output, title=type(model).__name__)
    print(f"wrote {args.n} samples of {type(model).__name__} to {path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Prints the NLL (exact, or bounds) of the checkpoint on a split, or one JSON object;
    under ``torchrun``, the rows are shared out to the processes (rank 0 prints)."""
    return _as_one_of_the_processes(args, _run_evaluate)


def _run_evaluate(args: argparse.Namespace, writer: bool) -> int:
    import torch

    from ppdgm.base import DENSITY, model_kind
    from ppdgm.batch import first_tensor, map_tensors, num_rows, select_rows
    from ppdgm.data import load_file
    from ppdgm.infer.estimate import bounds, bounds_table
    from ppdgm.training.checkpoint import load_model, read_checkpoint
    from ppdgm.training.loop import evaluate, label_accuracy

    path = Path(args.checkpoint)
    path = path / "best.pt" if path.is_dir() else path
    data = read_checkpoint(path).get("data") or {}
    if not isinstance(data, dict) or not isinstance(data.get("name", ""), str):
        if not args.data:
            raise ValueError(
                f"{path}: the checkpoint's description of its data is damaged ({data!r:.60}); "
                "name the rows with --data FILE"
            )
        data = {}
    if args.data:
        x, name, split = load_file(args.data), args.data, "file"
    else:
        x, name, split = _split_of(data, args.split, args.data_dir), data["name"], args.split
    x = _binarized(select_rows(x, slice(None, args.rows)), data)
    torch.manual_seed(args.seed)
    model, _ = load_model(path, example=select_rows(x, slice(0, 2)))
    model = model.to(args.device)
    x = map_tensors(x, lambda t: t.to(args.device))
    dim = math.prod(first_tensor(x).shape[1:])
    title = f"{type(model).__name__} on {name} {split} ({num_rows(x):,} rows"
    report: dict[str, Any] = {
        "checkpoint": os.fspath(path),
        "model": type(model).__name__,
        "data": name,
        "split": split,
        "rows": num_rows(x),
        "dim": dim,
    }
    if model_kind(model) == DENSITY:
        scores = evaluate(model, x, batch_size=args.batch_size)
        report.update(
            nll=scores["nll"],
            bits_per_dim=scores["bits_per_dim"],
            bound=scores["bound"],
            results=[{"method": scores["bound"], **_numbers(scores["nll"], 0.0, dim)}],
        )
        if args.json:
            print(json.dumps(report))
            return 0
        if scores["bound"] == "exact":
            print(f"{title}, exact)")
        else:
            print(
                f"{title}, an upper bound: the dequantization bound, one draw of the noise per row)"
            )
        print(f"  NLL {scores['nll']:.4f} nats per example, {scores['bits_per_dim']:.4f} bits/dim")
        return 0
    try:
        samples = list(sizes(args.samples))
    except ValueError as e:
        raise ValueError(f"--samples {e}") from None
    estimates, notes = bounds(model, x, samples, rows_per_pass=args.batch_size, seed=args.seed)
    results = []
    for label, estimate in estimates.items():
        n = max(len(estimate), 1)
        entry = {
            "label": label,
            "method": estimate.method,
            "num_samples": estimate.num_samples,
            **_numbers(-estimate.total / n, estimate.total_stderr / n, dim),
        }
        if estimate.ess is not None:
            entry["min_ess"] = float(estimate.ess.min())
        results.append(entry)
    best = min(results, key=lambda r: r["nll"])  # every estimate bounds the NLL from above
    report.update(
        nll=best["nll"],
        stderr=best["stderr"],
        bits_per_dim=best["bits_per_dim"],
        bound=best["label"],
        results=results,
        warnings=notes,
    )
    labelled = label_accuracy(model, x, args.batch_size)  # a model that classifies: how well
    report.update(labelled)
    if args.json:
        print(json.dumps(report))
        return 0
    print(f"{title}; upper bounds on the NLL, in nats)")
    print(bounds_table(estimates, notes))
    if labelled:
        print(
            f"  accuracy {labelled['accuracy']:.4f} on the {labelled['labelled']:,} labelled rows"
        )
    return 0


def _numbers(nll: float, stderr: float, dim: int) -> dict[str, float | None]:
    # one draw has no spread to measure: JSON has no NaN, so None
    spread = stderr if math.isfinite(stderr) else None
    return {"nll": nll, "stderr": spread, "bits_per_dim": nll / (dim * math.log(2))}


def run_score(args: argparse.Namespace) -> int:
    """Writes each data row's anomaly score, ``-log p(x)``, as CSV (a file, or standard output)
    and prints a summary; under ``torchrun``, the passes are shared out (rank 0 writes)."""
    return _as_one_of_the_processes(args, _run_score)


#: the ``estimate`` column of ``ppdgm score`` for a latent-variable model, by ``K``
IWAE_SCORE = "IWAE K={} upper bound on -log p"


def _score_rows(args: argparse.Namespace, checkpoint: dict[str, Any]) -> tuple[Any, str]:
    """The rows ``--data`` names (a file, or a dataset's ``--split``) and their description."""
    from ppdgm.data import DATASETS, FILE_SUFFIXES, load_file

    name = args.data
    looks_like_file = Path(name).suffix.lower() in FILE_SUFFIXES or Path(name).exists()
    if name in DATASETS or not looks_like_file:  # an unknown name: load's error lists them
        trained = checkpoint.get("data")
        trained = trained.get("name") if isinstance(trained, dict) else None
        if name == "digits" and trained == "digits-gray":  # a flow's digits are gray levels
            name = "digits-gray"
        data_dir = args.data_dir
        if data_dir is None and isinstance(checkpoint.get("data"), dict):
            data_dir = checkpoint["data"].get("data_dir")
        return _dataset(name, args.split, data_dir), f"{name} {args.split}"
    return load_file(name), name


def _run_score(args: argparse.Namespace, writer: bool) -> int:
    import warnings

    import torch

    from ppdgm.base import DENSITY, log_prob_is_exact, model_kind
    from ppdgm.batch import as_arguments, check_rows, map_tensors, num_rows, select_rows
    from ppdgm.distributed import deal_out
    from ppdgm.infer.estimate import Estimate, LogLikelihood, UnreliableWeightsWarning
    from ppdgm.training.checkpoint import load_model, read_checkpoint

    output = args.output
    if output is not None:
        check_folder(Path(output).parent, f"cannot write {output}:")
    path = Path(args.checkpoint)
    path = path / "best.pt" if path.is_dir() else path
    checkpoint = read_checkpoint(path)  # a missing or foreign file fails before the data
    x, name = _score_rows(args, checkpoint)
    x = check_rows(x, "--data")
    trained = checkpoint.get("data")
    x = _binarized(x, trained if isinstance(trained, dict) else {})
    if num_rows(x) == 0:
        raise ValueError(f"{args.data} has no rows to score")
    torch.manual_seed(args.seed)
    model, _ = load_model(path, example=select_rows(x, slice(0, 2)))
    model = model.to(args.device)
    x = map_tensors(x, lambda t: t.to(args.device))
    check = getattr(model, "check", None)
    if check is not None and isinstance(x, torch.Tensor):
        try:
            x = check(x)
        except ValueError as e:
            raise ValueError(f"{args.data} does not fit the model of {path}: {e}") from None
    n = num_rows(x)
    notes: list[str] = []
    if model_kind(model) == DENSITY:
        exact = log_prob_is_exact(model)
        what = "exact" if exact else "bound (dequantization)"

        def density(start: int, stop: int) -> Estimate:
            args_, kwargs = as_arguments(select_rows(x, slice(start, stop)))
            with torch.no_grad():
                log_p = model.log_prob(*args_, **kwargs).detach().double().cpu()
            if tuple(log_p.shape) != (stop - start,):
                raise ValueError(
                    f"{type(model).__name__}.log_prob returned shape {tuple(log_p.shape)} for "
                    f"{stop - start} rows; it must return one log-density per row"
                )
            return Estimate(log_p, torch.zeros_like(log_p), None, "exact", None)

        estimate = Estimate.concat(deal_out(n, args.batch_size, density, seed=args.seed))
    else:
        what = IWAE_SCORE.format(args.samples)
        estimator = LogLikelihood(
            model.model, model.guide, method="importance", num_samples=args.samples
        )

        def importance(start: int, stop: int) -> Estimate:
            args_, kwargs = as_arguments(select_rows(x, slice(start, stop)))
            return estimator(*args_, **kwargs)

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnreliableWeightsWarning)
            # stream 1: the passes draw as ppdgm evaluate's (bounds') IWAE K=k does
            parts = deal_out(n, args.batch_size, importance, seed=args.seed, stream=1)
        estimate = Estimate.concat(parts)
        if any(issubclass(w.category, UnreliableWeightsWarning) for w in caught):
            notes.append(
                "note: unreliable importance weights for some rows (heavy-tailed, or one sample "
                "carrying almost all the weight): their scores are unreliable"
            )
    scores = (-estimate.log_prob).tolist()
    errors = estimate.stderr.tolist()
    lines = ["row,score,stderr,estimate"]
    for i, (s, e) in enumerate(zip(scores, errors, strict=True)):
        lines.append(f"{i},{s!r},{e!r},{what}")
    if not writer:
        return 0
    write_text("\n".join(lines) + "\n", output)
    finite = [s for s in scores if math.isfinite(s)]
    mean = sum(scores) / len(scores)
    say = notes_stream(output)
    print(
        f"{type(model).__name__} on {name}: {n:,} rows, mean score {mean:.4f} nats "
        f"(-log p(x): {what})"
        + ("" if len(finite) == n else f"; {n - len(finite)} rows of probability 0 (inf)"),
        file=say,
    )
    for note in notes:
        print(note, file=say)
    if output is not None:
        print(f"wrote: {output}", file=say)
    return 0
