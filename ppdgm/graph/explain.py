"""Independence statements explained in words: d-separated or not, an active trail, a minimal
separator, a Markov blanket split into its parts; for ``ppdgm ci``, ``ppdgm blanket`` and the
tour."""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from typing import Any

from ppdgm.graph.dag import as_dag
from ppdgm.graph.independence import (
    Independence,
    active_trail,
    d_separated,
    format_trail,
    markov_blanket,
    minimal_d_separator,
)

__all__ = ["describe_blanket", "explain"]


def describe_blanket(g: Any, v: Hashable) -> str:
    """A variable's Markov blanket, split into parents, children and co-parents."""
    blanket = markov_blanket(g, v)
    dag = as_dag(g)
    parents = set(dag.predecessors(v))
    children = set(dag.successors(v))
    spouses = blanket - parents - children

    def listed(names: set[Hashable]) -> str:
        return ", ".join(sorted(map(str, names))) or "-"

    return "\n".join(
        [
            f"Markov blanket of {v} ({len(blanket)} variables): {listed(blanket)}",
            f"  parents: {listed(parents)}",
            f"  children: {listed(children)}",
            f"  children's other parents: {listed(spouses)}",
        ]
    )


def explain(g: Any, xs: list[str], ys: list[str], given: list[str]) -> str:
    """The answer to ``xs ⊥ ys | given``: d-separated or not, an active trail if not, and a
    minimal separator of ``xs`` and ``ys``."""
    statement = Independence(xs, ys, given)
    lines = []
    if d_separated(g, xs, ys, given):
        lines.append(f"{statement}: yes, d-separated (holds in every distribution of the graph)")
    else:
        lines.append(f"{statement}: no, d-connected (dependent in some distribution of the graph)")
        for x, y in itertools.product(xs, ys):
            trail = active_trail(g, x, y, given)
            if trail is not None:
                lines.append(f"  active trail: {format_trail(g, trail)}")
                break
    separator = minimal_d_separator(g, xs, ys)
    if separator is None:
        lines.append("  no set separates them: they are adjacent")
    else:
        empty = "" if separator else " (independent without conditioning)"
        lines.append(f"  minimal separator: {{{', '.join(sorted(separator))}}}{empty}")
    return "\n".join(lines)
