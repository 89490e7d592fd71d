"""Greedy elimination orders (min-fill, min-weight) of an interaction graph, from a heap."""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Mapping, Sequence
from typing import Literal

import networkx as nx

__all__ = ["greedy_order"]


def greedy_order(
    graph: nx.Graph,
    eliminate: Sequence[str],
    cardinalities: Mapping[str, int],
    criterion: Literal["min-fill", "min-weight"] = "min-fill",
    seed: int | None = None,
) -> list[str]:
    """A greedy elimination order.

    ``min-fill`` eliminates next the variable whose elimination adds the fewest edges (ties by
    weight); ``min-weight`` the one whose clique has the fewest joint states (ties by fill).
    Remaining ties go to the earlier variable in ``eliminate``, or are broken at random with
    ``seed``.

    The scores live in a heap and only the variables an elimination touches are scored again:
    the eliminated variable's neighbours, and the common neighbours of each edge it adds (whose
    fill drops). A variable's fill is ``C(d, 2)`` minus the edges among its ``d`` neighbours,
    counted by set intersections, so a hub of a star is scored in time linear in its degree.

    Arguments:
        graph: an undirected interaction graph (the moral graph of a network).
        eliminate: the variables to order; the others stay in the graph.
        cardinalities: each variable's number of states.
        criterion: ``"min-fill"`` or ``"min-weight"``.
        seed: seed for breaking ties at random (None: by position).

    Example:
        >>> g = nx.Graph([("a", "b"), ("b", "c"), ("c", "d"), ("d", "a")])  # a 4-cycle
        >>> greedy_order(g, ["a", "b", "c", "d"], dict.fromkeys("abcd", 2))
        ['a', 'b', 'c', 'd']
    """
    if criterion not in ("min-fill", "min-weight"):
        raise ValueError(f"unknown elimination criterion {criterion!r}")
    g = {v: set(graph.neighbors(v)) for v in graph.nodes}
    rank = {v: i for i, v in enumerate(eliminate)}
    if seed is not None:
        shuffled = random.Random(seed).sample(list(eliminate), len(eliminate))
        rank = {v: i for i, v in enumerate(shuffled)}
    log_card = {v: math.log(cardinalities[v]) for v in g}
    remaining = set(eliminate)

    def score(v: str) -> tuple[float, float, int]:
        nb = g[v]
        d = len(nb)
        edges = sum(len(g[a] & nb) for a in nb) // 2
        fill = d * (d - 1) // 2 - edges
        weight = log_card[v] + sum(log_card[u] for u in nb)
        weight = round(weight, 9)  # equal products tie, whatever the order of the sum
        return (fill, weight, rank[v]) if criterion == "min-fill" else (weight, fill, rank[v])

    current = {v: score(v) for v in remaining}
    heap = [(key, v) for v, key in current.items()]
    heapq.heapify(heap)
    order = []
    while heap:
        key, v = heapq.heappop(heap)
        if v not in remaining or current[v] != key:
            continue  # scored again since it was pushed
        nb = g.pop(v)
        touched = set(nb)
        for a in nb:
            g[a].discard(v)
        for a in nb:
            missing = nb - g[a] - {a}
            for b in missing:  # a new edge (once: b then knows a)
                touched |= g[a] & g[b]
            g[a] |= missing
            for b in missing:
                g[b].add(a)
        remaining.remove(v)
        order.append(v)
        for u in touched & remaining:
            key = score(u)
            if key != current[u]:
                current[u] = key
                heapq.heappush(heap, (key, u))
    return order
