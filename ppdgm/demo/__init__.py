"""The tour ``ppdgm demo`` runs: a list of sections, each printing as it goes.

A section is a function of the output folder that returns nothing; its docstring's first line
is the heading :func:`run` prints before it. Later capabilities add theirs to :data:`SECTIONS`.
Everything runs on embedded defaults (the Asia network); nothing is downloaded.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import graphviz
import pandas as pd
import torch

from ppdgm.atomic import write_bytes_atomic, write_csv_atomic
from ppdgm.bn import DiscreteBN, asia
from ppdgm.bn.sampling import blank_cells
from ppdgm.counting import network_summary

__all__ = [
    "SECTIONS",
    "autoregressive_section",
    "estimators_section",
    "graph_section",
    "independence_section",
    "learning_section",
    "likelihood_section",
    "network_section",
    "query_section",
    "run",
    "sampling_section",
    "vae_section",
]

Section = Callable[[Path], None]


def network_section(out_dir: Path) -> None:
    """The Asia network: structure and parameter counts."""
    print(network_summary(asia()))


def sampling_section(out_dir: Path) -> None:
    """Ancestral sampling: a few rows, then frequencies against exact probabilities."""
    bn = asia()
    print("5 rows (seed 0):")
    print(_indent(bn.sample(5, seed=0).to_string()))
    n = 10_000
    rows = bn.sample(n, seed=1)
    exact = bn.posterior(pd.DataFrame(index=range(1)), list(bn.variables))
    print(f"\n{n:,} rows (seed 1): the frequency of each 'yes' against its exact probability")
    print(f"  {'':<12}{'frequency':>10}{'p exact':>10}{'z':>7}")
    worst = 0.0
    for v in bn.variables:
        p = float(exact[v][0, 0])
        freq = float((rows[v] == "yes").mean())
        z = (freq - p) / math.sqrt(p * (1 - p) / n)
        worst = max(worst, abs(z))
        print(f"  {v + '=yes':<12}{freq:>10.4f}{p:>10.4f}{z:>7.2f}")
    verdict = "as sampling noise should be" if worst < 4 else "TOO FAR: something is wrong"
    print(f"  z = (frequency - p) / standard error; the largest |z| is {worst:.2f}, {verdict}")


def query_section(out_dir: Path) -> None:
    """Exact posterior queries, one batched call for several evidence rows."""
    bn = asia()
    evidence = pd.DataFrame(
        [
            {},
            {"smoke": "yes", "xray": "yes", "dysp": "yes"},
            {"asia": "yes", "xray": "yes"},
            {"asia": "yes", "xray": "yes", "lung": "yes"},
        ],
        columns=list(bn.variables),
    )
    post = bn.posterior(evidence, ["lung", "tub"])
    table = evidence.dropna(axis=1, how="all").fillna("-")
    table["p(lung=yes)"] = post["lung"][:, 0].numpy().round(4)
    table["p(tub=yes)"] = post["tub"][:, 0].numpy().round(4)
    print("p(lung = yes | evidence) and p(tub = yes | evidence), '-' where unobserved:")
    print(_indent(table.to_string(index=False)))
    print(
        "  row 1 is the prior; in row 4 a lung cancer explains the x-ray away, so "
        "tuberculosis drops back"
    )


def likelihood_section(out_dir: Path) -> None:
    """Exact log-probabilities of rows with missing cells (summed out)."""
    bn = asia()
    rows = blank_cells(bn.sample(4, seed=2), 0.4, seed=2)
    log_p = bn.log_prob(rows)
    table = rows.fillna("?")
    table["log p"] = log_p.numpy().round(4)
    print("'?' marks a missing cell:")
    print(_indent(table.to_string(index=False)))
    # the same number by brute force: the joint summed over every completion of the first row
    first = rows.iloc[0]
    hidden = [v for v in bn.variables if pd.isna(first[v])]
    completions = pd.DataFrame(
        [
            {**first.to_dict(), **dict(zip(hidden, states, strict=True))}
            for states in itertools.product(*(bn.states[v] for v in hidden))
        ],
        columns=list(bn.variables),
    )
    brute = float(torch.logsumexp(bn.log_prob(completions), 0))
    print(
        f"  check, row 1: log of the joint summed over its {len(completions)} completions = "
        f"{brute:.4f}"
    )


def learning_section(out_dir: Path) -> None:
    """Learning the tables back by EM from rows with 30% of the cells missing."""
    truth = asia()
    rows = blank_cells(truth.sample(5_000, seed=3), 0.3, seed=4)
    data_path = out_dir / "asia-missing.csv"
    write_csv_atomic(rows, data_path)
    start = time.perf_counter()
    result = truth.fit(rows)
    seconds = time.perf_counter() - start
    learned = result.network
    history = result.log_likelihood
    state = "converged" if result.converged else "not converged"
    print(
        f"5,000 rows, 30% of cells blanked at random; EM {state} after {result.iterations} "
        f"iterations in {seconds:.2f} s"
    )
    print(
        f"  log-likelihood per row: {history[0] / len(rows):.5f} (start) -> "
        f"{history[-1] / len(rows):.5f}"
    )
    entries = [
        ("smoke", "yes", {}),
        ("lung", "yes", {"smoke": "yes"}),
        ("bronc", "yes", {"smoke": "no"}),
        ("xray", "yes", {"either": "no"}),
        ("dysp", "yes", {"bronc": "yes", "either": "no"}),
        ("tub", "yes", {"asia": "no"}),
    ]
    print(f"  {'entry':<34}{'true':>8}{'learned':>9}")
    for v, s, given in entries:
        label = f"p({v}={s}" + (" | " + ", ".join(f"{u}={x}" for u, x in given.items())) + ")"
        label = label.replace(" | )", ")")
        print(
            f"  {label:<34}{_entry(truth, v, s, given):>8.4f}{_entry(learned, v, s, given):>9.4f}"
        )
    fresh = truth.sample(10_000, seed=5)
    gap = float(truth.log_prob(fresh).mean() - learned.log_prob(fresh).mean())
    print(f"  on 10,000 fresh rows the learned network is {gap:.4f} nats per row below the truth")
    learned.write_bif(out_dir / "asia-learned.bif")
    print(
        f"  try: ppdgm bn fit asia --data {data_path} -o learned.bif  "
        "(the same fit from the command line)"
    )


def graph_section(out_dir: Path) -> None:
    """The network drawn with graphviz."""
    bn = asia()
    graph = graphviz.Digraph(name=bn.name, graph_attr={"rankdir": "TB"})
    for v in bn.variables:
        graph.node(v, f"{v}\n{'/'.join(map(str, bn.states[v]))}", shape="ellipse")
    for u, v in bn.dag.edges:
        graph.edge(u, v)
    if shutil.which("dot") is not None:
        try:
            svg = graph.pipe(format="svg")
        except (graphviz.ExecutableNotFound, subprocess.CalledProcessError) as e:
            print(f"  graphviz failed ({e}); writing the DOT source instead")
        else:
            path = out_dir / "asia.svg"
            _write_bytes(path, svg)
            print(f"  {path}")
            return
    path = out_dir / "asia.dot"
    _write_bytes(path, graph.source.encode())
    print(f"  {path} (DOT source: Graphviz's 'dot' program is not installed)")
    print(
        "  install Graphviz with your package manager ('sudo apt-get install graphviz', "
        "'brew install graphviz'), then: dot -Tsvg asia.dot -o asia.svg"
    )


def independence_section(out_dir: Path) -> None:
    """Conditional independence: d-separation, a Markov blanket, and an empirical check."""
    from ppdgm.demo.independence import demo_section

    print(demo_section(out_dir))


def estimators_section(out_dir: Path) -> None:
    """Estimating log p(x): exact, importance sampling and the ELBO, side by side."""
    from ppdgm.demo.estimators import demo_section

    print(demo_section(out_dir))


def autoregressive_section(out_dir: Path) -> None:
    """An autoregressive model: NADE trained on 8x8 digits for a few seconds, exact log p(x)."""
    from ppdgm.demo.autoregressive import demo_section

    print(demo_section(out_dir))


def vae_section(out_dir: Path) -> None:
    """A VAE with an IAF guide trained by SVI on 8x8 digits for a few seconds, with its bounds."""
    from ppdgm.demo.vae import demo_section

    print(demo_section(out_dir))


SECTIONS: list[Section] = [
    network_section,
    sampling_section,
    query_section,
    likelihood_section,
    learning_section,
    graph_section,
    independence_section,
    estimators_section,
    autoregressive_section,
    vae_section,
]
"""The sections :func:`run` runs, in order."""


def run(out_dir: str | os.PathLike[str], sections: Sequence[Section] = SECTIONS) -> None:
    """Runs the sections in order, writing their files into ``out_dir`` (created if needed).

    Raises:
        ValueError: if ``out_dir`` exists and is not a folder.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for i, section in enumerate(sections, 1):
        title = (section.__doc__ or section.__name__).strip().splitlines()[0].rstrip(".")
        print(f"\n== {i}. {title} ==")
        section(out_dir)
    seconds = time.perf_counter() - start
    files = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*") if p.is_file())
    print(f"\ndone in {seconds:.1f} s; wrote into {out_dir.resolve()}: {', '.join(files)}")


def _entry(bn: DiscreteBN, variable: str, state: str, given: dict[str, str]) -> float:
    index = tuple(bn.states[u].index(given[u]) for u in bn.parents(variable))
    return float(bn.cpt(variable)[(*index, bn.states[variable].index(state))])


def _indent(text: str, prefix: str = "  ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _write_bytes(path: Path, data: bytes) -> None:
    write_bytes_atomic(path, data)
