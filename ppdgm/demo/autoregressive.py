"""The tour's section on autoregressive models: a small NADE trained on the 8x8 digits for a few
seconds, its exact likelihood checked against its Pyro program, and a grid of samples."""

from __future__ import annotations

from pathlib import Path

import torch

from ppdgm.data import load_digits
from ppdgm.infer.estimate import LogLikelihood
from ppdgm.models import NADE
from ppdgm.training.loop import evaluate, fit

__all__ = ["demo_section"]


def demo_section(out_dir: Path) -> str:
    """``ppdgm demo``'s section: a small NADE trained on the 8x8 digits for a few seconds, its
    exact likelihood checked against its Pyro program, and a grid of samples."""
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
