"""Parameter counts of a factorized distribution against the full joint table."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import networkx as nx

__all__ = [
    "ParameterCounts",
    "count_parameters",
    "format_count",
    "network_summary",
    "parameter_summary",
]


@dataclass(frozen=True)
class ParameterCounts:
    """Free parameters of a discrete distribution under three assumptions.

    Attributes:
        factorized: ``sum_v (|v| - 1) * prod_{u in pa(v)} |u|``, the network's own count.
        full_joint: ``prod_v |v| - 1``, a table over every joint configuration
            (``2^n - 1`` for ``n`` binary variables).
        independent: ``sum_v (|v| - 1)``, every variable independent of the others.
    """

    factorized: int
    full_joint: int
    independent: int

    def __str__(self) -> str:
        return (
            f"free parameters: {format_count(self.factorized)} (factorized) vs "
            f"{format_count(self.full_joint)} (full joint table) vs "
            f"{format_count(self.independent)} (fully independent)"
        )


def format_count(n: int) -> str:
    """An integer with thousands separators, or in scientific notation past 10^15.

    Example:
        >>> format_count(255), format_count(2**100 - 1)
        ('255', '~1.27e+30')
    """
    if n < 10**15:
        return f"{n:,}"
    digits = str(n)
    return f"~{digits[0]}.{digits[1:3]}e+{len(digits) - 1}"


def count_parameters(dag: nx.DiGraph, cardinalities: Mapping[str, int]) -> ParameterCounts:
    """Counts the free parameters a DAG with given cardinalities needs.

    Arguments:
        dag: the structure; each node's parents are its predecessors.
        cardinalities: the number of states of each node.

    Returns:
        The factorized, full-joint and fully-independent counts (exact Python integers).

    Example:
        >>> import networkx as nx
        >>> chain = nx.DiGraph([("x1", "x2"), ("x2", "x3"), ("x3", "x4")])
        >>> count_parameters(chain, {v: 2 for v in chain})
        ParameterCounts(factorized=7, full_joint=15, independent=4)
    """
    missing = [v for v in dag.nodes if v not in cardinalities]
    if missing:
        raise ValueError(f"no cardinality given for variable(s) {missing}")
    factorized = sum(
        (cardinalities[v] - 1) * math.prod(cardinalities[u] for u in dag.predecessors(v))
        for v in dag.nodes
    )
    full_joint = math.prod(cardinalities[v] for v in dag.nodes) - 1
    independent = sum(cardinalities[v] - 1 for v in dag.nodes)
    return ParameterCounts(factorized, full_joint, independent)


def network_summary(bn: Any) -> str:
    """``bn.describe()`` with the parameter counts spelled out by :func:`parameter_summary`."""
    return bn.describe(counts=False) + "\n" + parameter_summary(bn)


def parameter_summary(bn: Any) -> str:
    """The three parameter counts with the formula behind each, aligned."""
    counts = bn.parameter_counts()
    cards = bn.cardinalities.values()
    n = len(bn.variables)
    joint_formula = (
        f"2^{n} - 1 ({n} binary variables)"
        if all(c == 2 for c in cards)
        else "product of the state counts, less one"
    )
    rows = [
        ("full joint table", counts.full_joint, joint_formula),
        (
            "this network",
            counts.factorized,
            "sum over variables of (states - 1) x parent configurations",
        ),
        ("fully independent", counts.independent, "sum over variables of (states - 1)"),
    ]
    shown = [format_count(count) for _, count, _ in rows]
    width = max(map(len, shown))
    lines = ["free parameters (numbers needed to specify the distribution):"]
    for (label, _, formula), text in zip(rows, shown, strict=True):
        lines.append(f"  {label:<17} {text:>{width}}  = {formula}")
    if counts.factorized and counts.full_joint > counts.factorized:
        ratio = format_count(
            round(counts.full_joint / counts.factorized)
            if counts.full_joint < 10**300
            else counts.full_joint // counts.factorized
        )
        lines.append(f"the factorization needs {ratio} times fewer than the full table")
    return "\n".join(lines)
