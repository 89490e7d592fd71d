r"""Exact inference one row at a time, each row's evidence shrinking its own problem.

The batched engine (:mod:`ppdgm.bn.elimination`) gives every row the same plan, with the
evidence as indicator factors: one plan, vectorized over rows, which is what makes it fast on
networks whose cliques are small. Where the cliques are wide (water, mildew, barley), every row
then pays for the whole plan, however much it observes. Here each row's observed variables are
instantiated instead: their axes are sliced out of the tables, the variables that are neither
observed, nor queried, nor their ancestors are dropped (barren: they sum to one), and the
remaining unobserved variables are eliminated in a min-fill order of the row's own, much
smaller, interaction graph (as pgmpy and pyAgrum shrink each query). The price is Python work
per row, so :mod:`ppdgm.bn.elimination` takes this road only when the batched plan is wide.

Each step's factor is divided by its largest entry and the logarithm carried, so no product
underflows.

The factors are numpy arrays: a row's problem is hundreds of small products, and numpy's
``einsum`` and indexing cost a fifth of torch's per call on them (6 µs against 35 µs for a
three-factor product of tens of entries, 0.4 µs against 3.4 µs for slicing a table); products
of :data:`TORCH_FROM` entries or more go to torch, whose ``einsum`` uses BLAS there.
"""

from __future__ import annotations

import math
import string
from collections.abc import Sequence
from typing import TYPE_CHECKING

import networkx as nx
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppdgm.bn.evidence import MISSING
from ppdgm.bn.memory import memory_limit, too_large
from ppdgm.bn.ordering import greedy_order

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["reduced_query"]

_LETTERS = string.ascii_letters
#: Rows times variables from which the row-by-row road shows a progress bar (on a terminal).
PROGRESS_FROM = 200_000
#: Entries of a product (all its variables) from which torch's einsum does it, not numpy's.
TORCH_FROM = 4096
#: The most operands numpy's einsum takes (its NPY_MAXARGS is 32; the hub of a star has more).
NUMPY_OPERANDS = 32


def reduced_query(bn: DiscreteBN, codes: Tensor, keep: str | None = None) -> tuple[Tensor, Tensor]:
    """The unnormalized joint of ``keep`` (or of nothing) with each row's evidence.

    Arguments:
        bn: the network.
        codes: ``[N, len(bn.variables)]`` state indices, :data:`~ppdgm.bn.evidence.MISSING`
            where missing (:func:`~ppdgm.bn.evidence.encode`).
        keep: a variable to keep (a posterior), or None (the evidence's probability).

    Returns:
        ``(factor, log_scale)``: ``[N, card of keep]`` (or ``[N]``) and ``[N]`` such that the
        joint is ``factor * exp(log_scale)``, as :func:`~ppdgm.bn.elimination.execute` gives.
    """
    ancestors = bn.derived.get(("ancestors",), lambda: _ancestors(bn))
    tables = bn.derived.get(("numpy tables",), lambda: {v: t.numpy() for v, t in bn.tables.items()})
    limit = memory_limit()
    position = {v: j for j, v in enumerate(bn.variables)}
    rows = codes.tolist()
    factors, scales = [], []
    # a bar where a terminal shows it and the work is long (seconds: munin's rows take 15 ms)
    long = len(rows) * len(bn.variables) >= PROGRESS_FROM
    bar = tqdm(
        rows, desc=f"{bn.name}, row by row", unit="row", disable=None if long else True, leave=False
    )
    # the factors are small, and searching for a contraction path (opt_einsum) costs more than
    # the contraction itself: left to right (set once; the switch costs as much as a product)
    with torch.backends.opt_einsum.flags(enabled=False):
        for row in bar:
            observed = {v: row[j] for v, j in position.items() if row[j] != MISSING}
            f, log_scale = _one_row(bn, tables, observed, keep, ancestors, limit)
            factors.append(f)
            scales.append(log_scale)
    shape = (0, bn.cardinalities[keep]) if keep is not None else (0,)
    factor = (
        torch.from_numpy(np.stack(factors)) if factors else torch.zeros(shape, dtype=torch.float64)
    )
    return factor, torch.tensor(scales, dtype=torch.float64)


def _ancestors(bn: DiscreteBN) -> dict[str, frozenset[str]]:
    found: dict[str, frozenset[str]] = {}
    for v in nx.topological_sort(bn.dag):
        parents = bn.parents(v)
        found[v] = frozenset(parents).union(*(found[u] for u in parents))
    return found


def _one_row(
    bn: DiscreteBN,
    tables: dict[str, np.ndarray],
    observed: dict[str, int],
    keep: str | None,
    ancestors: dict[str, frozenset[str]],
    limit: int,
) -> tuple[np.ndarray, float]:
    if keep is not None and keep in observed:  # its posterior is its observed value
        observed = dict(observed)
        value = observed.pop(keep)
        result, log_scale = _one_row(bn, tables, observed, keep, ancestors, limit)
        hot = np.zeros_like(result)
        hot[value] = result[value]
        return hot, log_scale
    wanted = set(observed) | ({keep} if keep is not None else set())
    relevant = set(wanted).union(*(ancestors[v] for v in wanted)) if wanted else set()
    log_scale = 0.0
    factors: list[tuple[tuple[str, ...], np.ndarray]] = []
    for v in relevant:
        scope = (*bn.parents(v), v)
        table = tables[v]
        index = tuple(observed.get(u, slice(None)) for u in scope)
        sliced = table[index]
        rest = tuple(u for u in scope if u not in observed)
        if not rest:
            value = float(sliced)
            if value <= 0.0:
                return _zero(bn, keep), -math.inf
            log_scale += math.log(value)
            continue
        factors.append((rest, sliced))
    free = {u for scope, _ in factors for u in scope}
    graph = nx.Graph()
    graph.add_nodes_from(free)
    for scope, _ in factors:
        graph.add_edges_from((a, b) for i, a in enumerate(scope) for b in scope[i + 1 :])
    cards = bn.cardinalities
    order = greedy_order(graph, sorted(free - {keep}), cards, "min-fill")
    alive = dict(enumerate(factors))
    holders: dict[str, dict[int, None]] = {}  # the alive factors mentioning each variable
    for i, (scope, _) in enumerate(factors):
        for u in scope:
            holders.setdefault(u, {})[i] = None
    for x in order:
        inputs = [alive.pop(i) for i in holders.pop(x, {})]
        for scope, _ in inputs:
            for u in scope:
                if u != x:
                    holders[u] = {i: None for i in holders[u] if i in alive}
        out = tuple(dict.fromkeys(u for scope, _ in inputs for u in scope if u != x))
        entries = math.prod(cards[u] for u in (x, *out))
        if 8 * entries > limit:
            raise too_large(f"a row of {bn.name}", 8 * entries, limit, [x, *out], entries)
        product = _einsum(inputs, out, entries)
        top = float(product.max()) if product.size else 0.0
        if top <= 0.0:
            return _zero(bn, keep), -math.inf
        if top < 1e-30 or top > 1e30:
            product = product / top
            log_scale += math.log(top)
        if out:
            alive[len(factors)] = (out, product)
            for u in out:
                holders.setdefault(u, {})[len(factors)] = None
            factors.append((out, product))
        else:
            log_scale += math.log(float(product))
    factors = list(alive.values())
    final = (keep,) if keep is not None else ()
    if not factors:
        return np.ones([cards[keep]] if keep is not None else []), log_scale
    entries = math.prod(cards[u] for u in dict.fromkeys(u for scope, _ in factors for u in scope))
    return _einsum(factors, final, entries), log_scale


def _einsum(
    inputs: Sequence[tuple[tuple[str, ...], np.ndarray]], out: tuple[str, ...], entries: int
) -> np.ndarray:
    letters: dict[str, str] = {}
    for scope, _ in inputs:
        for u in scope:
            letters.setdefault(u, _LETTERS[len(letters)])
    spec = ",".join("".join(letters[u] for u in scope) for scope, _ in inputs)
    spec += "->" + "".join(letters[u] for u in out)
    if entries < TORCH_FROM and len(inputs) <= NUMPY_OPERANDS:
        return np.einsum(spec, *[t for _, t in inputs])
    return torch.einsum(spec, *[torch.from_numpy(np.asarray(t)) for _, t in inputs]).numpy()


def _zero(bn: DiscreteBN, keep: str | None) -> np.ndarray:
    return np.zeros([bn.cardinalities[keep]] if keep is not None else [])
