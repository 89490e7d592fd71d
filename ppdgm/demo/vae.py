"""The tour's section on VAEs: a small VAE with an IAF guide trained by SVI on the 8x8 digits for
a few seconds, with its ELBO and importance-weighted bounds and its pictures."""

from __future__ import annotations

from pathlib import Path

import torch

from ppdgm.data import load_digit_labels, load_digits
from ppdgm.infer.estimate import bounds, bounds_table
from ppdgm.infer.svi import SVIObjective
from ppdgm.models import VAE
from ppdgm.training.loop import fit
from ppdgm.training.plots import save_vae_pictures

__all__ = ["demo_section"]


def demo_section(out_dir: Path) -> str:
    """``ppdgm demo``'s section: a small VAE with an IAF guide trained on the 8x8 digits for a
    few seconds, with its ELBO and importance-weighted estimates and pictures."""
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
        table = bounds_table(*bounds(vae, valid, [1, 100, 1000]))
        pictures = save_vae_pictures(vae, valid, run, labels=load_digit_labels("valid"))
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
