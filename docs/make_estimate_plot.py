"""Draws docs/img/estimates-vs-k.png: estimates of log p(x) against the number of samples K.

Probabilistic PCA (x = W z + mu + eps, 5 dimensions, 2 latent) has a closed-form marginal, so
each estimator's error can be measured. For 40 data points and 25 repetitions each, the plot shows
the mean error per data point (estimate - log p(x)) of

- naive Monte Carlo (importance sampling with the prior as proposal),
- importance sampling with a Gaussian guide (the posterior's mean, scales doubled),
- the ELBO with that guide,

against K, with a band of +-2 standard deviations over the repetitions.

Usage: ``python docs/make_estimate_plot.py`` (about half a minute on two cores).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pyro
import torch

from ppdgm.demo.estimators import ppca_problem
from ppdgm.estimate import LogLikelihood, ParetoKWarning

OUT = Path(__file__).parent / "img" / "estimates-vs-k.png"
POINTS, REPEATS = 40, 25
KS = [1, 3, 10, 30, 100, 300, 1000, 3000, 10_000]


def main() -> None:
    torch.set_default_dtype(torch.float64)
    marginal, model, guide = ppca_problem()

    torch.manual_seed(1)
    x = marginal.sample((POINTS,))
    exact = marginal.log_prob(x)
    repeated = x.repeat(REPEATS, 1)  # each copy of a point gets its own samples
    curves = {"naive Monte Carlo (prior proposal)": (None, "importance", "tab:red")}
    curves["importance sampling (guide)"] = (guide, "importance", "tab:blue")
    curves["ELBO (guide)"] = (guide, "elbo", "tab:green")

    fig, ax = plt.subplots(figsize=(7, 4.8))
    pyro.set_rng_seed(0)
    for label, (proposal, method, color) in curves.items():
        means, spreads = [], []
        for k in KS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ParetoKWarning)  # naive MC: expected
                est = LogLikelihood(model, proposal, method=method, num_samples=k)(repeated)
            error = (est.log_prob.reshape(REPEATS, POINTS) - exact).mean(1)  # per repetition
            means.append(float(error.mean()))
            spreads.append(float(error.std()))
        lo = [m - 2 * s for m, s in zip(means, spreads, strict=True)]
        hi = [m + 2 * s for m, s in zip(means, spreads, strict=True)]
        ax.plot(KS, means, marker="o", color=color, label=label)
        ax.fill_between(KS, lo, hi, color=color, alpha=0.15)
        print(f"{label}: " + ", ".join(f"K={k}: {m:.3f}" for k, m in zip(KS, means, strict=True)))
    ax.axhline(0.0, color="black", linewidth=1, label="exact log p(x)")
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=0.1)
    ax.set_xlabel("samples per data point K")
    ax.set_ylabel("estimate - log p(x), nats per point")
    ax.set_title("Probabilistic PCA: estimates of log p(x) against K")
    ax.set_ylim(top=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, fontsize=9, frameon=False)
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
