"""The VAE side of ``ppdgm fit``, ``ppdgm evaluate`` and ``ppdgm demo``: VAEs of the zoo
(``vae``, ``gmvae``, ``hvae``) trained by SVI, with flows as guide and prior transforms, and
evaluated with the ELBO and importance-weighted bounds."""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppdgm.commands._common import positive_int

if TYPE_CHECKING:
    import torch
    from torch import Tensor

__all__ = [
    "VAE_MODELS",
    "add_fit_arguments",
    "build_vae",
    "demo_section",
    "estimate_table",
    "estimates",
    "format_estimates",
    "objective",
    "parse_sizes",
    "save_pictures",
]

#: The command line's names of the VAEs.
VAE_MODELS = ("vae", "gmvae", "hvae")


def add_fit_arguments(fit: argparse.ArgumentParser) -> None:
    """Adds the VAE flags to the ``ppdgm fit`` parser."""
    group = fit.add_argument_group("VAEs (vae, gmvae, hvae), trained by SVI")
    group.add_argument(
        "--z-dim",
        default="10",
        help="latent size (10); hvae: two sizes, z1,z2",
    )
    group.add_argument("--likelihood", default="bernoulli", help="bernoulli or gaussian")
    group.add_argument("--activation", default="elu", help="elu, relu, tanh or softplus (elu)")
    group.add_argument("--guide-flow", help="iaf, real_nvp, planar or radial (none: mean-field)")
    group.add_argument("--prior-flow", help="maf or real_nvp (none: N(0, I))")
    group.add_argument(
        "--flow-layers", type=positive_int, help="flow layers (2 in a VAE; 4 in a flow model)"
    )
    group.add_argument("--components", type=positive_int, default=10, help="gmvae: mixture (10)")
    group.add_argument(
        "--loss", help="elbo, meanfield or iwae (elbo), for every model with model and guide"
    )
    group.add_argument("--particles", type=positive_int, default=1, help="samples per row (1)")
    group.add_argument(
        "--anneal-steps", type=int, default=0, help="steps of KL warm-up from 0 to 1 (0: none)"
    )


def parse_sizes(text: str, flag: str) -> list[int]:
    """Comma-separated positive integers, e.g. ``--samples 1,10,100``.

    Raises:
        ValueError: naming ``flag``, for anything else.
    """
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise ValueError(f"{flag} takes comma-separated positive integers, got {text!r}")
    return values


def build_vae(name: str, dim: int, args: argparse.Namespace) -> torch.nn.Module:
    """The VAE ``name`` for ``dim``-dimensional data with the command line's settings.

    Raises:
        ValueError: for malformed sizes or settings the model rejects.
    """
    from ppdgm.models import GMVAE, VAE, HierarchicalVAE

    hidden = args.hidden or ("200,200:100,100" if name == "hvae" else "300,300")
    z_dims = parse_sizes(args.z_dim, "--z-dim")
    if name == "hvae":
        parts = hidden.split(":")
        if len(parts) != 2 or len(z_dims) != 2:
            raise ValueError(
                "hvae takes --z-dim z1,z2 and --hidden as two lists, e.g. 200,200:100,100"
            )
        widths = [parse_sizes(part, "--hidden") for part in parts]
        return HierarchicalVAE(
            dim, z_dims, widths, args.likelihood, activation=args.activation or "tanh"
        )
    if len(z_dims) != 1:
        raise ValueError(f"--z-dim takes one size for {name}, got {args.z_dim!r}")
    common: dict[str, Any] = {
        "likelihood": args.likelihood,
        "guide_flow": args.guide_flow,
        "activation": args.activation,
        "flow_layers": args.flow_layers or 2,
    }
    if name == "gmvae":
        if args.prior_flow:
            raise ValueError("gmvae's prior is a mixture of Gaussians; drop --prior-flow")
        return GMVAE(
            dim, z_dims[0], parse_sizes(hidden, "--hidden"), components=args.components, **common
        )
    return VAE(
        dim, z_dims[0], parse_sizes(hidden, "--hidden"), prior_flow=args.prior_flow, **common
    )


def objective(args: argparse.Namespace) -> Any:
    """The :class:`~ppdgm.svi.SVIObjective` of the command line's ``--loss``, ``--particles``
    and ``--anneal-steps``."""
    from ppdgm.infer.svi import SVIObjective

    return SVIObjective(args.loss or "elbo", args.particles, anneal_steps=args.anneal_steps)


def estimates(
    model: torch.nn.Module, x: Any, samples: list[int], rows_per_pass: int = 100
) -> tuple[dict[str, Any], list[str]]:
    """The ELBO (with the largest ``K`` of ``samples``) and the importance-weighted bounds with
    each ``K`` of ``samples`` on the rows ``x`` (a tensor, or a tuple or dict of tensors),
    estimated by :class:`~ppdgm.estimate.LogLikelihood` on the model's programs, by label;
    and the labels whose importance weights were flagged as unreliable."""
    import torch

    from ppdgm.batch import as_arguments, check_rows, split_rows
    from ppdgm.infer.estimate import Estimate, LogLikelihood, UnreliableWeightsWarning

    check = getattr(model, "check", None)
    x = check(x) if check is not None and isinstance(x, torch.Tensor) else check_rows(x, "x")
    found: dict[str, Estimate] = {}
    methods = [("elbo", max(samples))] + [("importance", k) for k in samples]
    notes = []
    for method, k in methods:
        estimator = LogLikelihood(model.model, model.guide, method=method, num_samples=k)
        with torch.no_grad(), warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", UnreliableWeightsWarning)
            parts = []
            for chunk in split_rows(x, rows_per_pass):
                args, kwargs = as_arguments(chunk)
                parts.append(estimator(*args, **kwargs))
        label = f"ELBO ({k} samples)" if method == "elbo" else f"IWAE K={k}"
        found[label] = Estimate.concat(parts)
        if any(issubclass(w.category, UnreliableWeightsWarning) for w in caught):
            notes.append(label)
    return found, notes


def format_estimates(found: dict[str, Any], notes: list[str]) -> str:
    """The estimates of :func:`estimates` as a table (per data point means in nats, with
    standard errors), with a note on unreliable ones."""
    from ppdgm.infer.estimate import comparison_table

    table = comparison_table(found)
    if notes:
        table += (
            f"\nnote: unreliable importance weights (heavy-tailed, Pareto k above the threshold, "
            f"or one sample carrying almost all the weight) for some rows in {', '.join(notes)}: "
            "those estimates are unreliable; the guide's tails are too light for the posterior"
        )
    return table


def estimate_table(
    model: torch.nn.Module, x: Any, samples: list[int], rows_per_pass: int = 100
) -> str:
    """:func:`estimates` as :func:`format_estimates` prints them."""
    return format_estimates(*estimates(model, x, samples, rows_per_pass))


def save_pictures(
    model: torch.nn.Module, x: Tensor, out: Path, labels: Tensor | None = None, seed: int = 0
) -> list[Path]:
    """Samples, reconstructions of the first 32 rows of ``x`` and a 2-D latent map of ``x``
    as PNG files in ``out``; returns their paths."""
    from ppdgm.training.plots import (
        picture_samples,
        save_latent_map,
        save_reconstructions,
        save_sample_grid,
    )

    name = type(model).__name__
    x = model.check(x)
    paths = [
        save_sample_grid(picture_samples(model, 64, seed), out / "samples.png", title=name),
        save_reconstructions(
            x[:32], model.reconstruct(x[:32]), out / "reconstructions.png", title=name
        ),
    ]
    z = model.encode(x)
    if z.shape[1] >= 2:
        paths.append(save_latent_map(z, out / "latent-map.png", labels=labels, title=name))
    return paths


def demo_section(out_dir: Path) -> str:
    """``ppdgm demo``'s section: a small VAE with an IAF guide trained on the 8x8 digits for a
    few seconds, with its ELBO and importance-weighted estimates and pictures."""
    import torch

    from ppdgm.data import load_digit_labels, load_digits
    from ppdgm.infer.svi import SVIObjective
    from ppdgm.models import VAE
    from ppdgm.training.loop import fit

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train, valid = load_digits("train"), load_digits("valid")
        torch.manual_seed(0)
        vae = VAE(64, 2, [64], guide_flow="iaf", flow_layers=2)
        run = out_dir / "vae-digits"
        result = fit(
            vae,
            train,
            valid,
            epochs=40,
            batch_size=50,
            lr=3e-3,
            max_seconds=5.0,
            objective=SVIObjective("elbo"),
            out_dir=run,
            overwrite=True,
            progress=False,
            data={"name": "digits"},
        )
        torch.manual_seed(1)
        table = estimate_table(vae, valid, [1, 100, 1000])
        pictures = save_pictures(vae, valid, run, labels=load_digit_labels("valid"))
        lines = [
            "VAE(64, z_dim=2, hidden [64]) with a two-layer IAF guide on the binarized digits",
            f"{len(result.history)} epochs of SVI in {result.seconds:.1f} s; validation "
            "log-likelihood bounds (nats per digit; ELBO <= IWAE_K <= log p(x)):",
            table,
            "pictures: " + ", ".join(str(p) for p in pictures),
            f"try: ppdgm evaluate {run / 'best.pt'} --samples 1,10,100",
        ]
    finally:
        torch.set_num_threads(threads)
    return "\n".join(lines)
