"""The VAE side of ``ppdgm fit``, ``ppdgm evaluate`` and ``ppdgm demo``: VAEs of the zoo
(``vae``, ``gmvae``, ``hvae``) trained by SVI, with flows as guide and prior transforms, and
evaluated with the ELBO and importance-weighted bounds."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from ppdgm.commands._common import positive_int

if TYPE_CHECKING:
    import torch

__all__ = [
    "add_fit_arguments",
    "build_vae",
    "objective",
    "parse_sizes",
]


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
