"""Draws the pictures of docs/independence.md into docs/img/ (needs graphviz's ``dot``).

Run from the repository's root: ``.venv/bin/python docs/make_images.py``.
"""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import pyro
import pyro.distributions as dist
import torch

from ppdgm.bn import asia
from ppdgm.independence import active_trail, markov_blanket
from ppdgm.inspect import dependency_graph, render

__all__ = ["IMAGES", "make_images", "mixture"]

IMAGES = Path(__file__).parent / "img"


def mixture(x: torch.Tensor) -> None:
    """The Pyro program of docs/independence.md: a two-component Gaussian mixture."""
    weight = pyro.sample("weight", dist.Beta(1.0, 1.0))
    loc = pyro.sample("loc", dist.Normal(torch.zeros(2), 5.0).to_event(1))
    with pyro.plate("data", len(x)):
        z = pyro.sample("z", dist.Bernoulli(weight))
        pyro.sample("x", dist.Normal(loc[z.long()], 1.0), obs=x)


def make_images(out_dir: Path = IMAGES) -> list[Path]:
    """Writes every picture as SVG into ``out_dir``; returns the files written."""
    small = {
        "chain": ([("a", "b"), ("b", "c")], {"x": "a", "y": "c", "given": "b"}),
        "fork": ([("b", "a"), ("b", "c")], {"x": "a", "y": "c", "given": "b"}),
        "collider": ([("a", "b"), ("c", "b")], {"x": "a", "y": "c"}),
        "collider-descendant": (
            [("a", "b"), ("c", "b"), ("b", "d")],
            {"x": "a", "y": "c", "given": "d", "trail": ["a", "b", "c"]},
        ),
    }
    written = []
    for name, (edges, highlight) in small.items():
        graph = nx.DiGraph(edges, name=name)
        written.append(render(graph, out_dir / f"{name}.svg", highlight=highlight))
    bn = asia()
    trail = active_trail(bn, "smoke", "dysp", ["bronc"])
    query = {"x": "smoke", "y": "dysp", "given": ["bronc"], "trail": trail}
    written.append(render(bn, out_dir / "asia-query.svg", highlight=query))
    blanket = {"x": "either", "blanket": sorted(markov_blanket(bn, "either"))}
    written.append(render(bn, out_dir / "asia-blanket.svg", highlight=blanket))
    program = dependency_graph(mixture, torch.zeros(10))
    written.append(render(program, out_dir / "mixture.svg"))
    return written


if __name__ == "__main__":
    for path in make_images():
        print(f"wrote {path}")
