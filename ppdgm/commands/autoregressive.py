"""``ppdgm fit``, ``ppdgm sample`` and ``ppdgm evaluate``: density models of the zoo from the
command line, trained by maximum likelihood and rebuilt from their checkpoints."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch

from ppdgm.commands import vae
from ppdgm.commands._common import device, positive_int
from ppdgm.train import PRECISIONS

__all__ = ["build", "register"]


def register(subparsers: Any) -> None:
    """Adds ``ppdgm fit``, ``ppdgm sample`` and ``ppdgm evaluate`` to the ``ppdgm`` parser."""
    fit = subparsers.add_parser(
        "fit",
        help="train a model: fvsbn, nade, made by maximum likelihood; vae, gmvae, hvae by SVI",
        description="Train a model of the zoo on binarized MNIST or scikit-learn's digits with "
        "Adam, validating every epoch; checkpoints, metrics.jsonl and pictures go to --out.",
    )
    fit.add_argument("model", metavar="MODEL", help="fvsbn, nade, made, vae, gmvae or hvae")
    fit.add_argument("--data", default="digits", help="binarized-mnist or digits (digits)")
    fit.add_argument("--data-dir", help="the folder of the binarized MNIST .amat files")
    fit.add_argument("--out", help="the folder of the run (runs/MODEL-DATA)")
    fit.add_argument("--epochs", type=positive_int, default=10, help="epochs (10)")
    fit.add_argument("--batch-size", type=positive_int, default=100, help="minibatch size (100)")
    fit.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate (0.001)")
    fit.add_argument("--lr-decay", type=float, default=1.0, help="lr times this each epoch (1)")
    fit.add_argument("--weight-decay", type=float, default=0.0, help="an L2 penalty (0)")
    fit.add_argument(
        "--precision",
        default="32",
        choices=PRECISIONS,
        help="of the training steps; bf16-mixed: bfloat16 matrix products (32)",
    )
    fit.add_argument("--patience", type=positive_int, help="early stopping after N bad epochs")
    fit.add_argument(
        "--hidden",
        help="hidden units: NADE's d, MADE's widths as a comma-separated list (500); a VAE's "
        "encoder widths (300,300; hvae: 200,200:100,100)",
    )
    fit.add_argument("--num-masks", type=positive_int, default=1, help="MADE's masks (1)")
    fit.add_argument("--ordering", default="natural", help="MADE: natural, random or agnostic")
    fit.add_argument(
        "--direct", action="store_true", help="MADE: direct input-to-output connections"
    )
    fit.add_argument("--seed", type=int, default=0, help="seed of the weights and shuffles (0)")
    fit.add_argument("--train-rows", type=positive_int, help="use only the first N training rows")
    fit.add_argument("--valid-rows", type=positive_int, help="validate on the first N rows")
    fit.add_argument(
        "--device", type=device, default="cpu", help="train there: cpu, cuda, cuda:1 (cpu)"
    )
    fit.add_argument("--resume", action="store_true", help="continue the run in --out")
    fit.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    fit.add_argument("--no-progress", action="store_true", help="no progress bar")
    vae.add_fit_arguments(fit)
    fit.set_defaults(run=run_fit)

    sample = subparsers.add_parser(
        "sample",
        help="draw samples from a checkpoint into a PNG grid",
        description="Rebuild the model saved in CHECKPOINT and draw a grid of samples.",
    )
    sample.add_argument("checkpoint", metavar="CHECKPOINT")
    sample.add_argument("-n", type=positive_int, default=64, help="samples (64)")
    sample.add_argument("-o", "--output", default="samples.png", help="PNG file (samples.png)")
    sample.add_argument("--seed", type=int, default=0, help="seed (0)")
    sample.set_defaults(run=run_sample)

    evaluate = subparsers.add_parser(
        "evaluate",
        help="negative log-likelihood of a checkpoint on a data split",
        description="Rebuild the model saved in CHECKPOINT and print its exact mean negative "
        "log-likelihood on the split of the data it was trained on, in nats and bits/dim; for "
        "a VAE, the ELBO and the importance-weighted bounds with --samples.",
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT")
    evaluate.add_argument("--split", default="valid", help="train, valid or test (valid)")
    evaluate.add_argument("--data-dir", help="the .amat folder (default: the one of training)")
    evaluate.add_argument("--batch-size", type=positive_int, default=100, help="rows per pass")
    evaluate.add_argument(
        "--samples", default="1,10,100,1000", help="VAEs: the K of each IWAE bound (1,10,100,1000)"
    )
    evaluate.add_argument("--rows", type=positive_int, help="only the first N rows of the split")
    evaluate.add_argument(
        "--device", type=device, default="cpu", help="score there: cpu, cuda, cuda:1 (cpu)"
    )
    evaluate.set_defaults(run=run_evaluate)


def build(
    name: str, dim: int, hidden: str, num_masks: int, ordering: str, direct: bool = False
) -> Any:
    """The zoo model ``name`` for ``dim`` variables with the command line's settings.

    Raises:
        ValueError: for an unknown or non-binary model, or a malformed ``hidden``.
    """
    from ppdgm.models import FVSBN, MADE, NADE, model_class

    cls = model_class(name)
    try:
        widths = [int(h) for h in hidden.split(",")]
    except ValueError:
        raise ValueError(f"--hidden takes comma-separated integers, got {hidden!r}") from None
    if cls is FVSBN:
        return FVSBN(dim)
    if cls is NADE:
        if len(widths) != 1:
            raise ValueError(f"NADE has one hidden layer; --hidden {hidden!r} gives several")
        return NADE(dim, widths[0])
    if cls is MADE:
        return MADE(dim, widths, num_masks, ordering=ordering, direct=direct)
    raise ValueError(
        f"{cls.__name__} models continuous data; ppdgm fit trains the binary models (fvsbn, "
        "nade, made) and the VAEs (vae, gmvae, hvae); train flows with ppdgm.train.fit"
    )


def run_fit(args: argparse.Namespace) -> int:
    """Trains the model and prints where its files went."""
    from ppdgm.data import load
    from ppdgm.models import model_class
    from ppdgm.train import fit, retain_freed_memory

    model_class(args.model)  # an unknown name fails before the data are read
    variational = args.model.lower() in vae.VAE_MODELS
    retain_freed_memory()
    train = load(args.data, "train", args.data_dir)[: args.train_rows]
    valid = load(args.data, "valid", args.data_dir)[: args.valid_rows]
    torch.manual_seed(args.seed)
    if variational:
        model = vae.build_vae(args.model.lower(), train.shape[1], args)
        extra: dict[str, Any] = {"objective": vae.objective(args)}
    else:
        hidden = args.hidden or "500"
        model = build(
            args.model, train.shape[1], hidden, args.num_masks, args.ordering, args.direct
        )
        extra = {}
    model = model.to(args.device)  # fit moves the data there
    print(model.summary())
    out = Path(args.out or f"runs/{args.model.lower()}-{args.data}")
    data = {
        "name": args.data,
        "data_dir": str(Path(args.data_dir).resolve()) if args.data_dir else None,
    }
    print(f"{len(train):,} training rows, {len(valid):,} validation rows; writing into {out}")
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
        out_dir=out,
        resume=args.resume,
        overwrite=args.overwrite,
        progress=not args.no_progress,
        data=data,
        **extra,
    )
    if result.history:
        print(
            f"{len(result.history)} epochs ({result.seconds:.1f} s in this run)"
            + ("; stopped early" if result.stopped_early else "")
        )
    if result.best_valid_nll is not None:
        bits = result.best_valid_nll / (train.shape[1] * math.log(2))
        what = "-ELBO (an NLL bound)" if variational else "NLL"
        print(
            f"best validation {what} {result.best_valid_nll:.4f} nats ({bits:.4f} bits/dim) at "
            f"epoch {result.best_epoch}"
        )
    print(f"checkpoint: {out / 'best.pt'}; metrics: {out / 'metrics.jsonl'}")
    if variational and result.history:
        pictures = vae.save_pictures(model, valid[:2000], out, seed=args.seed)
        print("pictures: " + ", ".join(p.name for p in pictures))
    return 0


def run_sample(args: argparse.Namespace) -> int:
    """Draws ``-n`` samples into a PNG grid."""
    from ppdgm.checkpoint import load_model
    from ppdgm.plots import picture_samples, save_sample_grid

    model, _ = load_model(args.checkpoint)
    samples = picture_samples(model, args.n, seed=args.seed)
    path = save_sample_grid(samples, args.output, title=type(model).__name__)
    print(f"wrote {args.n} samples of {type(model).__name__} to {path}")
    return 0


def run_evaluate(args: argparse.Namespace) -> int:
    """Prints the exact NLL of the checkpoint on a split."""
    from ppdgm.checkpoint import load_model
    from ppdgm.data import load
    from ppdgm.train import evaluate

    model, checkpoint = load_model(args.checkpoint)
    data = checkpoint.get("data") or {}
    if "name" not in data:
        raise ValueError(f"{args.checkpoint} does not say which data it was trained on")
    x = load(data["name"], args.split, args.data_dir or data.get("data_dir"))[: args.rows]
    model, x = model.to(args.device), x.to(args.device)
    if not hasattr(model, "log_prob"):  # a VAE: bounds, not the exact value
        samples = vae.parse_sizes(args.samples, "--samples")
        print(f"{type(model).__name__} on {data['name']} {args.split} ({len(x):,} rows)")
        print(vae.estimate_table(model, x, samples, rows_per_pass=args.batch_size))
        return 0
    scores = evaluate(model, x, batch_size=args.batch_size)
    print(f"{type(model).__name__} on {data['name']} {args.split} ({scores['rows']:,} rows, exact)")
    print(f"  NLL {scores['nll']:.4f} nats per example, {scores['bits_per_dim']:.4f} bits/dim")
    return 0


def demo_section(out_dir: Path) -> str:
    """``ppdgm demo``'s section: a small NADE trained on the 8x8 digits for a few seconds, its
    exact likelihood checked against its Pyro program, and a grid of samples."""
    from ppdgm.data import load_digits
    from ppdgm.estimate import LogLikelihood
    from ppdgm.models import NADE
    from ppdgm.train import evaluate, fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is as fast and never waits on another
    try:
        train, valid = load_digits("train"), load_digits("valid")
        torch.manual_seed(0)
        nade = NADE(64, 32)
        lines = [
            nade.summary(),
            f"{len(train):,} binarized 8x8 digits to train on, {len(valid)} to validate",
        ]
        before = evaluate(nade, valid)["nll"]
        run = out_dir / "nade-digits"
        result = fit(
            nade,
            train,
            valid,
            epochs=30,
            batch_size=50,
            lr=0.01,
            max_seconds=4.0,
            out_dir=run,
            overwrite=True,
            progress=False,
            data={"name": "digits"},
        )
        after = evaluate(nade, valid)
        lines.append(
            f"{len(result.history)} epochs of Adam in {result.seconds:.1f} s: validation NLL "
            f"{before:.2f} -> {after['nll']:.2f} nats per digit ({after['bits_per_dim']:.3f} "
            "bits/pixel), exact"
        )
        exact = NADE(64, 32).double()
        exact.load_state_dict(nade.state_dict())
        rows = valid[:5]
        with torch.no_grad():
            own = exact.log_prob(rows)
            traced = LogLikelihood(lambda x: exact.model(x), method="exact")(rows).log_prob
        lines.append(
            "the same numbers from its Pyro program (64 Bernoulli sites, the chain rule), in "
            f"float64: largest difference {float((own - traced).abs().max()):.1e} over 5 digits"
        )
        lines.append(f"samples: {run / 'samples.png'}; curves: {run / 'learning_curves.png'}")
        lines.append(f"try: ppdgm sample {run / 'best.pt'} -n 64 -o samples.png")
    finally:
        torch.set_num_threads(threads)
    return "\n".join(lines)
