r"""Exact inference by variable elimination, batched over rows whose evidence differs.

Evidence enters as indicator factors :math:`\lambda_v(n, s)` (one where row n is missing ``v`` or
has ``v = s``), so one elimination plan serves every row of a batch: each step multiplies the
factors that mention a variable and sums it out. Rows are the last, contiguous axis of every
batched factor; small factors are multiplied pairwise first (in an order fixed when the plan is
made) and the last two meet in a fused multiply-add over the summed variable. The work per row
of a step is the size of its scope; the sum over steps is the plan's :attr:`Plan.cost`, the
arithmetic floor of batched elimination with that order (the cheapest of min-fill and
min-weight, each also with randomized tie-breaks).

When some row's largest entry falls below :data:`RESCALE_BELOW`, the factor is divided by its
largest entry per row and the logarithm of that scale is carried separately, so products of many
small probabilities never underflow.

Posterior marginals of several variables come from one backward pass:
:math:`p(v = s \mid e) = \lambda_v(s) \, \partial \log Z / \partial \lambda_v(s)`
(the differential approach of Darwiche, 2003), and expected counts for EM from the gradient
with respect to the CPTs in the same way (see :mod:`ppdgm.bn.learning`).
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import pandas as pd
import torch
from torch import Tensor

from ppdgm.bn.evidence import as_frame, check_columns, encode, indicators

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = [
    "Plan",
    "Step",
    "ZeroProbabilityEvidence",
    "elimination_plan",
    "execute",
    "greedy_order",
    "log_evidence",
    "posterior",
]

#: The row count assumed when ordering a step's pairwise products.
TYPICAL_ROWS = 1024
#: Randomized tie-breaks tried per criterion when searching for a cheap elimination order.
SEARCH = 6
#: Entries of float64 intermediates a batch may hold at once (64 MiB).
MEMORY_BUDGET = 2**23
#: Entries of the widest step's factors (32 MiB): larger blocks are mapped afresh from the
#: system at each allocation by glibc's malloc, page faults and all, which measurably slows
#: networks with wide cliques (insurance); smaller ones are reused from the heap.
WIDEST = 2**22


class ZeroProbabilityEvidence(ValueError):
    """Raised when a posterior is asked for given evidence of probability zero."""


@dataclass(frozen=True)
class Step:
    """One step of a plan: multiply the ``inputs`` factors and sum out ``variable``.

    Attributes:
        variable: the variable summed out (None for the final product over the kept ones).
        inputs: the factor slots consumed.
        scope: the variables of the new factor, in the order of its axes.
        batched: whether the new factor has a (last) row axis.
        views: for each input, the axis permutation and the indexing (``None`` inserts an axis)
            that align it to the product's axes: ``variable``, then ``scope``, then the row axis
            if batched.
        size: entries per row of the product before summing (the step's work).
        pairs: the order of pairwise products (indices into the list of operands, the product
            appended at its end) that leaves two factors for the fused multiply-add.
    """

    variable: str | None
    inputs: tuple[int, ...]
    scope: tuple[str, ...]
    batched: bool
    views: tuple[tuple[tuple[int, ...], tuple[slice | None, ...]], ...]
    size: int
    pairs: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Plan:
    """An elimination plan: which factors exist and in which order they are combined.

    Slots ``0 .. len(cpt_variables) - 1`` hold CPTs, the next ``len(evidence_variables)`` the
    evidence indicators, and each step appends its result.
    """

    cpt_variables: tuple[str, ...]
    evidence_variables: tuple[str, ...]
    keep: tuple[str, ...]
    steps: tuple[Step, ...]
    peak: int

    @property
    def cost(self) -> int:
        """Entries per row over the batched steps: the arithmetic floor of this plan.

        Steps over CPTs alone are done once per batch, not per row, and are not counted.
        """
        return sum(s.size for s in self.steps if s.batched)

    @property
    def width(self) -> int:
        """The largest batched step's entries per row."""
        return max((s.size for s in self.steps if s.batched), default=1)

    def chunk_size(self, budget: int = MEMORY_BUDGET, *, keep_intermediates: bool = False) -> int:
        """Rows per batch so that the intermediates of a batch fit in ``budget`` entries.

        A forward pass frees each factor once used, so its most entries alive at once
        (:attr:`peak`) bound it; a pass that is differentiated keeps every product for the
        backward pass, which twice the cost bounds. The widest step is also kept under
        :data:`WIDEST` entries.
        """
        need = 2 * self.cost if keep_intermediates else self.peak
        return max(1, min(budget // max(need, 1), WIDEST // self.width))


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

    Arguments:
        graph: an undirected interaction graph (the moral graph of a network).
        eliminate: the variables to order; the others stay in the graph.
        cardinalities: each variable's number of states.
        criterion: ``"min-fill"`` or ``"min-weight"``.
        seed: seed for breaking ties at random (None: by position).
    """
    if criterion not in ("min-fill", "min-weight"):
        raise ValueError(f"unknown elimination criterion {criterion!r}")
    g = {v: set(graph.neighbors(v)) for v in graph.nodes}
    rank = {v: i for i, v in enumerate(eliminate)}
    if seed is not None:
        shuffled = random.Random(seed).sample(list(eliminate), len(eliminate))
        rank = {v: i for i, v in enumerate(shuffled)}
    remaining = set(eliminate)
    order = []
    while remaining:

        def score(v: str) -> tuple[int, int, int]:
            nb = list(g[v])
            fill = sum(1 for i, a in enumerate(nb) for b in nb[i + 1 :] if b not in g[a])
            weight = math.prod(cardinalities[u] for u in nb) * cardinalities[v]
            return (fill, weight, rank[v]) if criterion == "min-fill" else (weight, fill, rank[v])

        v = min(remaining, key=score)
        nb = list(g[v])
        for i, a in enumerate(nb):
            g[a].discard(v)
            for b in nb[i + 1 :]:
                g[a].add(b)
                g[b].add(a)
        del g[v]
        remaining.remove(v)
        order.append(v)
    return order


def elimination_plan(
    bn: DiscreteBN,
    evidence: Sequence[str],
    keep: Sequence[str] = (),
    *,
    prune: bool = True,
    order: Literal["best", "min-fill", "min-weight"] = "best",
) -> Plan:
    """Builds the plan that sums out everything but ``keep`` given indicators on ``evidence``.

    Arguments:
        bn: the network.
        evidence: variables that get an indicator factor (observed in some row, or queried).
        keep: variables left in the result, in this order.
        prune: drop variables that are neither kept, nor evidence, nor ancestors of either:
            they are barren and sum to one. EM needs every CPT and turns this off.
        order: the elimination heuristic; ``"best"`` builds both, each also with ties broken
            at random under a few seeds, and keeps the plan of lowest :attr:`Plan.cost`.
    """
    wanted = set(evidence) | set(keep)
    if prune:
        relevant = set(wanted)
        for v in wanted:
            relevant |= nx.ancestors(bn.dag, v)
    else:
        relevant = set(bn.variables)
    cpt_variables = tuple(v for v in bn.variables if v in relevant)
    evidence_variables = tuple(v for v in bn.variables if v in set(evidence))
    cards = bn.cardinalities
    scopes: list[tuple[str, ...]] = [(*bn.parents(v), v) for v in cpt_variables]
    scopes += [(v,) for v in evidence_variables]
    batched = [False] * len(cpt_variables) + [True] * len(evidence_variables)

    moral = nx.Graph()
    moral.add_nodes_from(cpt_variables)
    for scope in scopes:
        moral.add_edges_from((a, b) for i, a in enumerate(scope) for b in scope[i + 1 :])
    eliminate = [v for v in cpt_variables if v not in set(keep)]
    if order == "best":
        candidates = [
            (c, seed) for c in ("min-fill", "min-weight") for seed in (None, *range(SEARCH))
        ]
    else:
        candidates = [(order, None)]
    plans = [
        Plan(
            cpt_variables,
            evidence_variables,
            tuple(keep),
            *_steps(greedy_order(moral, eliminate, cards, c, seed), scopes, batched, cards, keep),
        )
        for c, seed in candidates
    ]
    return min(plans, key=lambda p: p.cost)


def _steps(
    order: Sequence[str],
    scopes: Sequence[tuple[str, ...]],
    batched: Sequence[bool],
    cards: Mapping[str, int],
    keep: Sequence[str],
) -> tuple[tuple[Step, ...], int]:
    """The steps of eliminating ``order`` from the initial factors, then the final product,
    and the most entries per row alive at once (factors, plus the step's products)."""
    scopes, batched = list(scopes), list(batched)
    alive = list(range(len(scopes)))
    steps = []

    def entries(i: int) -> int:
        return math.prod(cards[u] for u in scopes[i]) if batched[i] else 0

    live = sum(entries(i) for i in alive)
    peak = live

    def combine(variable: str | None, inputs: list[int], out: tuple[str, ...]) -> None:
        axes = out if variable is None else (variable, *out)
        is_batched = any(batched[i] for i in inputs)
        views, shapes = [], []
        for i in inputs:
            scope = scopes[i]
            perm = [scope.index(u) for u in axes if u in scope]
            index: list[slice | None] = [slice(None) if u in scope else None for u in axes]
            if batched[i]:
                perm.append(len(scope))
            if is_batched:
                index.append(slice(None) if batched[i] else None)
            views.append((tuple(perm), tuple(index)))
            shape = [cards[u] if u in scope else 1 for u in axes]
            shapes.append((*shape, TYPICAL_ROWS if batched[i] else 1))
        size = math.prod(cards[u] for u in axes)
        pairs = _pair_order(shapes)
        steps.append(Step(variable, tuple(inputs), out, is_batched, tuple(views), size, pairs))
        scopes.append(out)
        batched.append(is_batched)
        alive.append(len(scopes) - 1)
        nonlocal live, peak
        peak = max(peak, live + (size + entries(len(scopes) - 1)) * is_batched)
        live += entries(len(scopes) - 1) - sum(entries(i) for i in inputs)

    for x in order:
        inputs = [i for i in alive if x in scopes[i]]
        for i in inputs:
            alive.remove(i)
        union = dict.fromkeys(u for i in inputs for u in scopes[i])
        combine(x, inputs, tuple(u for u in union if u != x))
    final = list(alive)
    alive.clear()
    combine(None, final, tuple(keep))
    return tuple(steps), max(peak, 1)


def execute(
    plan: Plan, cpts: Mapping[str, Tensor], evidence: Mapping[str, Tensor], rows: int
) -> tuple[Tensor, Tensor]:
    """Runs a plan on one batch.

    Arguments:
        plan: the plan.
        cpts: a table for each of ``plan.cpt_variables``.
        evidence: indicators ``[card, rows]`` for each of ``plan.evidence_variables`` (see
            :func:`ppdgm.bn.evidence.indicators`).
        rows: the batch's number of rows.

    Returns:
        ``(factor, log_scale)``: a factor ``[rows, *cards of plan.keep]`` and ``[rows]`` such that
        the unnormalized joint of the kept variables with the evidence is
        ``factor * exp(log_scale)``. Differentiable in the CPTs and the indicators.
    """
    slots: list[Tensor | None] = [cpts[v] for v in plan.cpt_variables]
    # rows are the last, contiguous axis of every batched factor: each product and sum then
    # runs over long contiguous vectors, whatever the (small) variable axes are
    slots += [evidence[v] for v in plan.evidence_variables]
    log_scale = torch.zeros(rows, dtype=torch.float64)
    for step in plan.steps:
        operands = []
        for i, (perm, index) in zip(step.inputs, step.views, strict=True):
            operands.append(slots[i].permute(perm)[index])
            slots[i] = None
        t = _contract(operands, step.variable is not None, step.pairs)
        if step.batched:
            t, log_scale = _rescale(t, log_scale)
        slots.append(t)
    result = slots[-1]
    assert result is not None
    if plan.steps[-1].batched:
        result = result.movedim(-1, 0)
    else:
        result = result.expand((rows, *result.shape))
    return result, log_scale


def _pair_order(shapes: Sequence[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    """Greedy order of pairwise products: always the pair whose broadcast product is smallest
    (a CPT meets its indicator, and small messages meet each other, before anything meets a
    wide factor), until two factors are left."""
    shapes = list(shapes)
    pairs = []
    while len(shapes) > 2:
        candidates = [(i, j) for i in range(len(shapes)) for j in range(i + 1, len(shapes))]
        i, j = min(
            candidates,
            key=lambda ij: math.prod(map(max, shapes[ij[0]], shapes[ij[1]])),
        )
        merged = tuple(map(max, shapes[i], shapes[j]))
        shapes = [s for k, s in enumerate(shapes) if k not in (i, j)] + [merged]
        pairs.append((i, j))
    return tuple(pairs)


def _contract(operands: list[Tensor], summed: bool, pairs: Sequence[tuple[int, int]]) -> Tensor:
    """The product of aligned factors, summed over their first axis if ``summed``.

    The pairs of ``pairs`` are multiplied first; the last two factors meet inside a fused
    multiply-add over the summed axis, so the full product is never written out.
    """
    if not operands:
        return torch.ones((), dtype=torch.float64)
    for i, j in pairs:
        product = operands[i] * operands[j]
        operands = [t for k, t in enumerate(operands) if k not in (i, j)]
        operands.append(product)
    if len(operands) == 1:
        return operands[0].sum(0) if summed else operands[0]
    a, b = operands
    if not summed:
        return a * b
    acc = a[0] * b[0]
    for x in range(1, a.shape[0]):
        acc.addcmul_(a[x], b[x])
    return acc


#: A batched factor is rescaled when some row's largest entry falls below this; far above the
#: smallest normal float64 (2.2e-308), so one step's products cannot underflow.
RESCALE_BELOW = 1e-30


def _rescale(t: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Divides each row by its largest entry when it gets small, carrying the log of the scale."""
    top = t.detach().amax(dim=tuple(range(t.dim() - 1))) if t.dim() > 1 else t.detach()
    if not bool((top < RESCALE_BELOW).any()):
        return t, log_scale
    safe = torch.where(top > 0, top, torch.ones_like(top))
    t = t / safe
    return t, log_scale + safe.log().masked_fill(top <= 0, float("-inf"))


def _observed_columns(bn: DiscreteBN, frame: pd.DataFrame) -> list[str]:
    """The variables observed in at least one row (their columns need indicators)."""
    return [v for v in bn.variables if v in frame.columns and bool(frame[v].notna().any())]


def _batches(
    bn: DiscreteBN, frame: pd.DataFrame, plan: Plan, rows: int
) -> Iterator[tuple[int, int, dict[str, Tensor]]]:
    """``(offset, size, indicators)`` for each batch of rows. The rows are encoded once, one
    byte a cell, and each batch's indicators made as it comes, so that memory grows with the
    number of rows only as much as the input and the output do."""
    column = {v: j for j, v in enumerate(bn.variables)}
    cards = bn.cardinalities
    codes = encode(bn, frame, compact=True)
    for start in range(0, codes.shape[0], rows):
        chunk = codes[start : start + rows]
        lam = {v: indicators(chunk[:, column[v]], cards[v]) for v in plan.evidence_variables}
        yield start, chunk.shape[0], lam


def _plan(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str]) -> Plan:
    key = ("plan", frozenset(evidence), tuple(keep))
    return bn.derived.get(key, lambda: elimination_plan(bn, evidence, keep))


def log_evidence(
    bn: DiscreteBN, data: pd.DataFrame | Mapping[str, Any], *, chunk_size: int | None = None
) -> Tensor:
    """``log p(observed cells)`` of each row (see :meth:`DiscreteBN.log_prob`)."""
    frame = as_frame(data)
    check_columns(bn, frame)
    plan = _plan(bn, _observed_columns(bn, frame), ())
    out = [torch.zeros(0, dtype=torch.float64)]
    for _, size, lam in _batches(bn, frame, plan, chunk_size or plan.chunk_size()):
        factor, log_scale = execute(plan, bn.tables, lam, size)
        out.append(factor.log() + log_scale)
    return torch.cat(out)


def posterior(
    bn: DiscreteBN,
    data: pd.DataFrame | Mapping[str, Any],
    variables: Sequence[str] | str,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    """Posterior marginals of each row (see :meth:`DiscreteBN.posterior`)."""
    query = [variables] if isinstance(variables, str) else list(dict.fromkeys(variables))
    if not query:
        raise ValueError("no query variables given")
    for v in query:
        bn._check_variable(v)
    frame = as_frame(data)
    check_columns(bn, frame)
    observed = _observed_columns(bn, frame)
    if len(query) == 1:
        return {query[0]: _posterior_kept(bn, frame, observed, query[0], chunk_size)}
    return _posterior_by_gradient(bn, frame, observed, query, chunk_size)


def _posterior_kept(
    bn: DiscreteBN, frame: pd.DataFrame, observed: list[str], q: str, chunk_size: int | None
) -> Tensor:
    plan = _plan(bn, observed, (q,))
    out = [torch.zeros(0, bn.cardinalities[q], dtype=torch.float64)]
    for offset, size, lam in _batches(bn, frame, plan, chunk_size or plan.chunk_size()):
        factor, _ = execute(plan, bn.tables, lam, size)
        total = factor.sum(-1, keepdim=True)
        _check_positive(total.squeeze(-1), offset)
        out.append(factor / total)
    return torch.cat(out)


def _posterior_by_gradient(
    bn: DiscreteBN,
    frame: pd.DataFrame,
    observed: list[str],
    query: list[str],
    chunk_size: int | None,
) -> dict[str, Tensor]:
    plan = _plan(bn, sorted(set(observed) | set(query), key=bn.variables.index), ())
    cards = bn.cardinalities
    out = {v: [torch.zeros(0, cards[v], dtype=torch.float64)] for v in query}
    rows = chunk_size or plan.chunk_size(keep_intermediates=True)
    for offset, size, lam in _batches(bn, frame, plan, rows):
        leaves = [lam[v].requires_grad_() for v in query]
        with torch.enable_grad():
            factor, _ = execute(plan, bn.tables, lam, size)
            _check_positive(factor.detach(), offset)
            grads = torch.autograd.grad(factor.log().sum(), leaves)
        for v, leaf, grad in zip(query, leaves, grads, strict=True):
            out[v].append((leaf.detach() * grad).clamp(min=0).T)
    return {v: torch.cat(ts) for v, ts in out.items()}


def _check_positive(z: Tensor, offset: int) -> None:
    bad = (z <= 0).nonzero().flatten()
    if bad.numel():
        rows = (bad + offset).tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ZeroProbabilityEvidence(
            f"the evidence of row(s) {shown} has probability zero under the network, "
            f"so the posterior is undefined there"
        )
