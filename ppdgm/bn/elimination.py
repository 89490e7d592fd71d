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
small probabilities never underflow. A network with tiny entries (some positive entry below
:data:`LOG_SPACE_BELOW` and a product of the tables' smallest positive entries that could leave
the normal range of float64) is run in log space instead (:func:`execute_log`): products
become sums and sums ``logsumexp``, so entries down to the smallest denormal (5e-324) and
products of them far below it keep full relative precision.

Posterior marginals of several variables come from one backward pass:
:math:`p(v = s \mid e) = \lambda_v(s) \, \partial \log Z / \partial \lambda_v(s)`
(the differential approach of Darwiche, 2003), and expected counts for EM from the gradient
with respect to the CPTs in the same way (see :mod:`ppdgm.bn.learning`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import networkx as nx
import pandas as pd
import torch
from torch import Tensor

from ppdgm.bn.evidence import as_frame, check_columns, encode, indicators, query_variables
from ppdgm.bn.memory import memory_limit, too_large
from ppdgm.bn.ordering import greedy_order
from ppdgm.bn.reduced import reduced_query
from ppdgm.distributed import current_group, split_work

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

T = TypeVar("T")

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
#: The most variables to eliminate for which the randomized tie-breaks are tried.
SEARCH_UP_TO = 120
#: Rows times plan cost (entries) from which a query also tries the min-weight order (a few
#: milliseconds of arithmetic, against as much planning again).
BOTH_WORK = 5_000_000
#: Rows times plan cost (entries) from which a query searches for a cheaper plan: a few tenths
#: of a second of arithmetic, against the search's few hundredths.
SEARCH_WORK = 50_000_000
#: Factors of one step beyond which those of equal shape are multiplied first (see
#: :func:`_pair_order`).
GREEDY_PAIRS = 8
#: Batched entries per row that cost as much as one variable's work on the reduced road (about
#: 3 ns an entry against 10-25 us a variable, measured on the bnlearn networks: from andes, 2,700
#: entries a variable, batched is 2.4x faster, to diabetes, 27,000, where the roads tie).
REDUCE_PER_VARIABLE = 10_000
#: Entries per row of a batched step from which its factors leave the caches and each entry
#: costs several times more (munin: 4-5 ns an entry against 1-3): the reduced road then wins.
REDUCE_WIDTH = 500_000
#: The cost of a forward and backward pass relative to a forward pass alone (measured on the
#: bnlearn networks: 3-4), to choose between one backward pass and one pass per query variable.
BACKWARD_FACTOR = 4
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

    @property
    def least_memory(self) -> int:
        """Bytes a pass over one row needs at the least: the most float64 entries per row alive
        at once, plus the widest step over the tables alone (done once per batch)."""
        fixed = max((s.size for s in self.steps if not s.batched), default=0)
        return 8 * (self.peak + fixed)

    def check_memory(self, limit: int | None = None, *, what: str = "this query") -> None:
        """Refuses, before anything is allocated, a plan that cannot run within ``limit`` bytes
        (default: :func:`memory_limit`).

        Raises:
            TooLargeForExactInference: naming the widest step's variables, its entries, the
                memory needed and the ways out.
        """
        limit = memory_limit() if limit is None else limit
        need = self.least_memory
        if need <= limit:
            return
        widest = max(self.steps, key=lambda s: s.size)
        scope = [*([widest.variable] if widest.variable else []), *widest.scope]
        raise too_large(what, need, limit, scope, widest.size)

    def chunk_size(self, budget: int = MEMORY_BUDGET, *, keep_intermediates: bool = False) -> int:
        """Rows per batch so that the intermediates of a batch fit in ``budget`` entries.

        A forward pass frees each factor once used, so its most entries alive at once
        (:attr:`peak`) bound it; a pass that is differentiated keeps every product for the
        backward pass, which twice the cost bounds. The widest step is also kept under
        :data:`WIDEST` entries.
        """
        need = 2 * self.cost if keep_intermediates else self.peak
        return max(1, min(budget // max(need, 1), WIDEST // self.width))


def elimination_plan(
    bn: DiscreteBN,
    evidence: Sequence[str],
    keep: Sequence[str] = (),
    *,
    prune: bool = True,
    order: Literal["best", "min-fill", "min-weight"] = "best",
    search: bool = True,
) -> Plan:
    """Builds the plan that sums out everything but ``keep`` given indicators on ``evidence``.

    Arguments:
        bn: the network.
        evidence: variables that get an indicator factor (observed in some row, or queried).
        keep: variables left in the result, in this order.
        prune: drop variables that are neither kept, nor evidence, nor ancestors of either:
            they are barren and sum to one. EM needs every CPT and turns this off.
        order: the elimination heuristic; ``"best"`` builds both, each also with ties broken
            at random under a few seeds (with ``search``), and keeps the plan of lowest
            :attr:`Plan.cost`.
        search: with ``"best"``, also try the random tie-breaks (a few times the planning
            time, for plans up to a tenth cheaper; worth it for many rows).
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
        # ties broken at random too, while that is cheap: the search costs a few times the
        # deterministic orders, which on networks of hundreds of variables dominate a query
        seeds = range(SEARCH) if search and len(eliminate) <= SEARCH_UP_TO else ()
        candidates = [(c, seed) for c in ("min-fill", "min-weight") for seed in (None, *seeds)]
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
    alive = dict.fromkeys(range(len(scopes)))  # in creation order
    holders: dict[str, dict[int, None]] = {}  # the alive factors mentioning each variable
    for i, scope in enumerate(scopes):
        for u in scope:
            holders.setdefault(u, {})[i] = None
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
        alive[len(scopes) - 1] = None
        for u in out:
            holders.setdefault(u, {})[len(scopes) - 1] = None
        nonlocal live, peak
        peak = max(peak, live + (size + entries(len(scopes) - 1)) * is_batched)
        live += entries(len(scopes) - 1) - sum(entries(i) for i in inputs)

    for x in order:
        inputs = sorted(holders.pop(x, {}))
        for i in inputs:
            del alive[i]
            for u in scopes[i]:
                if u != x:
                    del holders[u][i]
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
        if step.batched:
            t, log_scale = _contract(operands, step.variable is not None, step.pairs, log_scale)
            t, log_scale = _rescale(t, log_scale)
        else:
            t, _ = _contract(operands, step.variable is not None, step.pairs)
        slots.append(t)
    return _rows_first(slots[-1], plan, rows), log_scale


#: A network whose tables have a positive entry below this, and whose tables' smallest
#: positive entries multiply to less than :data:`LOG_SPACE_PRODUCT`, is run in log space: a
#: product of its entries could leave the normal range of float64 (or start in the denormal
#: one) before a factor is rescaled, and the linear engine would lose it or its precision.
LOG_SPACE_BELOW = 1e-30
#: See :data:`LOG_SPACE_BELOW`: far above the smallest normal float64 (2.2e-308), so that
#: every product of entries on the linear road keeps its full relative precision.
LOG_SPACE_PRODUCT = 1e-290


def in_log_space(bn: DiscreteBN) -> bool:
    """Whether queries on ``bn`` run in log space (see :data:`LOG_SPACE_BELOW`); decided once
    per network.

    Every entry of every factor on the linear road is a sum of products of at most one entry
    of each table, so none is below the product of the tables' smallest positive entries: when
    that product is a normal float64 the linear road is exact to rounding. Networks whose
    entries are all at least :data:`LOG_SPACE_BELOW` stay on the linear road whatever their
    size (the per-row rescaling keeps their products in range in practice).
    """

    def decide() -> bool:
        smallest = [
            float(t[t > 0].min()) if bool((t > 0).any()) else 1.0 for t in bn.tables.values()
        ]
        if min(smallest, default=1.0) >= LOG_SPACE_BELOW:
            return False
        return math.fsum(math.log(x) for x in smallest) < math.log(LOG_SPACE_PRODUCT)

    return bn.derived.get(("log_space",), decide)


def execute_log(
    plan: Plan, log_cpts: Mapping[str, Tensor], log_evidence: Mapping[str, Tensor], rows: int
) -> Tensor:
    """Runs a plan on one batch in log space: as :func:`execute`, with the logarithms of the
    tables and of the indicators (0 or ``-inf``), products made sums and sums ``logsumexp``.

    Returns:
        The log of the unnormalized joint of ``plan.keep`` with the evidence,
        ``[rows, *cards of plan.keep]`` (``-inf`` where it is zero).
    """
    slots: list[Tensor | None] = [log_cpts[v] for v in plan.cpt_variables]
    slots += [log_evidence[v] for v in plan.evidence_variables]
    for step in plan.steps:
        t: Tensor | None = None
        for i, (perm, index) in zip(step.inputs, step.views, strict=True):
            operand = slots[i].permute(perm)[index]
            slots[i] = None
            t = operand if t is None else t + operand
        if t is None:
            t = torch.zeros((), dtype=torch.float64)
        elif step.variable is not None:
            t = torch.logsumexp(t, 0)
        slots.append(t)
    return _rows_first(slots[-1], plan, rows)


def _rows_first(result: Tensor | None, plan: Plan, rows: int) -> Tensor:
    """The plan's last factor with the rows first (expanded when it does not depend on them)."""
    assert result is not None
    if plan.steps[-1].batched:
        return result.movedim(-1, 0)
    return result.expand((rows, *result.shape))


def _log_tables(bn: DiscreteBN) -> dict[str, Tensor]:
    return bn.derived.get(("log_tables",), lambda: {v: t.log() for v, t in bn.tables.items()})


def _log_batches(
    bn: DiscreteBN, frame: pd.DataFrame, plan: Plan, rows: int
) -> Iterator[tuple[int, int, Tensor]]:
    """``(offset, size, log factor)`` of each batch of rows on the log road."""
    tables = _log_tables(bn)
    for offset, size, lam in _batches(bn, frame, plan, rows):
        log_lam = {v: x.log() for v, x in lam.items()}
        yield offset, size, execute_log(plan, tables, log_lam, size)


def _pair_order(shapes: Sequence[tuple[int, ...]]) -> tuple[tuple[int, int], ...]:
    """Greedy order of pairwise products: always the pair whose broadcast product is smallest
    (a CPT meets its indicator, and small messages meet each other, before anything meets a
    wide factor), until two factors are left.

    Many factors of one shape (the messages of a star's leaves to its hub) are first multiplied
    together in a balanced tree, so that the greedy search, quadratic in the number of factors
    at each product, only ever sees a few.
    """
    shapes = list(shapes)
    pairs: list[tuple[int, int]] = []

    def merge(i: int, j: int) -> None:
        merged = tuple(map(max, shapes[i], shapes[j]))
        del shapes[j], shapes[i]  # j > i
        shapes.append(merged)
        pairs.append((i, j))

    while len(shapes) > GREEDY_PAIRS:
        first: dict[tuple[int, ...], int] = {}
        for k, shape in enumerate(shapes):
            if shape in first:  # two of one shape: their product has that shape too
                merge(first[shape], k)
                break
            first[shape] = k
        else:
            break
    while len(shapes) > 2:
        i, j = min(
            ((i, j) for i in range(len(shapes)) for j in range(i + 1, len(shapes))),
            key=lambda ij: math.prod(map(max, shapes[ij[0]], shapes[ij[1]])),
        )
        merge(i, j)
    return tuple(pairs)


def _contract(
    operands: list[Tensor],
    summed: bool,
    pairs: Sequence[tuple[int, int]],
    log_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The product of aligned factors, summed over their first axis if ``summed``.

    The pairs of ``pairs`` are multiplied first; the last two factors meet inside a fused
    multiply-add over the summed axis, so the full product is never written out. With
    ``log_scale`` (a batched step, rows last), each pairwise product is rescaled when it gets
    small (:func:`_rescale`), so that a step with many factors (the hub of a star with hundreds
    of observed leaves) cannot underflow before the step ends; returns the new ``log_scale``.
    """
    if not operands:
        return torch.ones((), dtype=torch.float64), log_scale
    for i, j in pairs:
        product = operands[i] * operands[j]
        if log_scale is not None:
            product, log_scale = _rescale(product, log_scale)
        operands = [t for k, t in enumerate(operands) if k not in (i, j)]
        operands.append(product)
    if len(operands) == 1:
        return (operands[0].sum(0) if summed else operands[0]), log_scale
    a, b = operands
    if not summed:
        return a * b, log_scale
    acc = a[0] * b[0]
    for x in range(1, a.shape[0]):
        acc.addcmul_(a[x], b[x])
    return acc, log_scale


#: A batched factor is rescaled when some row's largest entry falls below this; far above the
#: smallest normal float64 (2.2e-308), so one step's products cannot underflow.
RESCALE_BELOW = 1e-30


def _rescale(t: Tensor, log_scale: Tensor) -> tuple[Tensor, Tensor]:
    """Divides each row by its largest entry when it gets small, carrying the log of the scale."""
    top = t.detach().amax(dim=tuple(range(t.dim() - 1))) if t.dim() > 1 else t.detach()
    if not bool((top < RESCALE_BELOW).any()):
        return t, log_scale
    top = top.reshape(-1)  # [rows], or [1] for a factor all rows share
    safe = torch.where(top > 0, top, torch.ones_like(top))
    t = t / safe
    return t, log_scale + safe.log().masked_fill(top <= 0, float("-inf"))


def _observed_columns(bn: DiscreteBN, frame: pd.DataFrame) -> list[str]:
    """The variables observed in at least one row (their columns need indicators)."""
    seen = frame.notna().any()  # one pass over the frame, not a Series per column
    return [v for v in bn.variables if v in seen.index and bool(seen[v])]


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


def _quick_plan(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str]) -> Plan:
    """The min-fill plan of the query, made once per network: what a few rows need."""
    key = ("plan", frozenset(evidence), tuple(keep))
    return bn.derived.get(key, lambda: elimination_plan(bn, evidence, keep, order="min-fill"))


def _reduce(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str], rows: int) -> bool:
    """Whether the query takes the road of one reduced problem per row
    (:mod:`ppdgm.bn.reduced`): when the batched plan's arithmetic per row exceeds, by the
    measured rates, the Python work of reducing and solving each row on its own."""
    plan = _better_plan(bn, evidence, keep, rows)
    return plan.cost > REDUCE_PER_VARIABLE * len(bn.variables) or plan.width >= REDUCE_WIDTH


def _plan(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str], rows: int = 0) -> Plan:
    """:func:`_better_plan`, checked against the memory limit."""
    plan = _better_plan(bn, evidence, keep, rows)
    plan.check_memory(what=f"{bn.name}")
    return plan


def _better_plan(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str], rows: int) -> Plan:
    """The network's plan for this query, made once and improved as the rows make it pay: the
    min-fill order; the better of min-fill and min-weight once ``rows`` times its cost reaches
    :data:`BOTH_WORK`; the random tie-breaks too from :data:`SEARCH_WORK`."""
    key = (frozenset(evidence), tuple(keep))
    plan = _quick_plan(bn, evidence, keep)
    if rows * plan.cost >= BOTH_WORK:
        plan = bn.derived.get(
            ("both", key), lambda: elimination_plan(bn, evidence, keep, search=False)
        )
    if rows * plan.cost >= SEARCH_WORK:
        plan = bn.derived.get(("searched", key), lambda: elimination_plan(bn, evidence, keep))
    return plan


def log_evidence(
    bn: DiscreteBN, data: pd.DataFrame | Mapping[str, Any], *, chunk_size: int | None = None
) -> Tensor:
    """``log p(observed cells)`` of each row (see :meth:`DiscreteBN.log_prob`)."""
    frame = as_frame(data)
    check_columns(bn, frame)
    observed = _observed_columns(bn, frame)
    return torch.cat(
        by_rows(bn, frame, lambda rows, _: _log_evidence_rows(bn, rows, observed, chunk_size))
    )


def _log_evidence_rows(
    bn: DiscreteBN, frame: pd.DataFrame, observed: list[str], chunk_size: int | None
) -> Tensor:
    if in_log_space(bn):
        plan = _plan(bn, observed, (), len(frame))
        chunks = _log_batches(bn, frame, plan, chunk_size or plan.chunk_size())
        return torch.cat([torch.zeros(0, dtype=torch.float64), *(f for _, _, f in chunks)])
    if _reduce(bn, observed, (), len(frame)):
        factor, log_scale = reduced_query(bn, encode(bn, frame))
        return factor.log() + log_scale
    plan = _plan(bn, observed, (), len(frame))
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
    query = query_variables(bn, variables)
    frame = as_frame(data)
    check_columns(bn, frame)
    observed = _observed_columns(bn, frame)
    parts = by_rows(
        bn, frame, lambda rows, first: _posterior_rows(bn, rows, observed, query, chunk_size, first)
    )
    return {q: torch.cat([part[q] for part in parts]) for q in query}


def _posterior_rows(
    bn: DiscreteBN,
    frame: pd.DataFrame,
    observed: list[str],
    query: list[str],
    chunk_size: int | None,
    first: int,
) -> dict[str, Tensor]:
    """:func:`posterior` of the rows of ``frame``, the first of which is row ``first`` of the
    data (errors name the data's rows)."""
    if len(query) > 1 and not in_log_space(bn):
        # one backward pass gives every marginal, at about three times a forward pass (and
        # it keeps every product for the backward pass): cheaper than a pass per variable
        # only for several variables; the plans' costs decide
        joint = _plan(bn, sorted(set(observed) | set(query), key=bn.variables.index), ())
        each = sum(_plan(bn, observed, (q,)).cost for q in query)
        if BACKWARD_FACTOR * joint.cost < each:
            return _posterior_by_gradient(bn, frame, observed, query, chunk_size, first)
    return {q: _posterior_kept(bn, frame, observed, q, chunk_size, first) for q in query}


def _posterior_kept(
    bn: DiscreteBN,
    frame: pd.DataFrame,
    observed: list[str],
    q: str,
    chunk_size: int | None,
    first: int,
) -> Tensor:
    if in_log_space(bn):
        plan = _plan(bn, observed, (q,), len(frame))
        out = [torch.zeros(0, bn.cardinalities[q], dtype=torch.float64)]
        for offset, _, log_factor in _log_batches(bn, frame, plan, chunk_size or plan.chunk_size()):
            log_total = torch.logsumexp(log_factor, -1, keepdim=True)
            # -inf where the evidence has probability zero
            _check_positive(torch.isfinite(log_total.squeeze(-1)).double(), first + offset)
            out.append((log_factor - log_total).exp())
        return torch.cat(out)
    if _reduce(bn, observed, (q,), len(frame)):
        factor, _ = reduced_query(bn, encode(bn, frame), q)
        total = factor.sum(-1, keepdim=True)
        _check_positive(total.squeeze(-1), first)
        return factor / total
    plan = _plan(bn, observed, (q,), len(frame))
    out = [torch.zeros(0, bn.cardinalities[q], dtype=torch.float64)]
    for offset, size, lam in _batches(bn, frame, plan, chunk_size or plan.chunk_size()):
        factor, _ = execute(plan, bn.tables, lam, size)
        total = factor.sum(-1, keepdim=True)
        _check_positive(total.squeeze(-1), first + offset)
        out.append(factor / total)
    return torch.cat(out)


def _posterior_by_gradient(
    bn: DiscreteBN,
    frame: pd.DataFrame,
    observed: list[str],
    query: list[str],
    chunk_size: int | None,
    first: int,
) -> dict[str, Tensor]:
    plan = _plan(bn, sorted(set(observed) | set(query), key=bn.variables.index), (), len(frame))
    cards = bn.cardinalities
    out = {v: [torch.zeros(0, cards[v], dtype=torch.float64)] for v in query}
    rows = chunk_size or plan.chunk_size(keep_intermediates=True)
    for offset, size, lam in _batches(bn, frame, plan, rows):
        leaves = [lam[v].requires_grad_() for v in query]
        with torch.enable_grad():
            factor, _ = execute(plan, bn.tables, lam, size)
            _check_positive(factor.detach(), first + offset)
            grads = torch.autograd.grad(factor.log().sum(), leaves)
        for v, leaf, grad in zip(query, leaves, grads, strict=True):
            out[v].append((leaf.detach() * grad).clamp(min=0).T)
    return {v: torch.cat(ts) for v, ts in out.items()}


def by_rows(
    bn: DiscreteBN, frame: pd.DataFrame, compute: Callable[[pd.DataFrame, int], T]
) -> list[T]:
    """``compute(rows, first)`` on the rows of ``frame`` (``first``: the position of the first),
    as one part; in a ``torch.distributed`` group, on each process's block of the rows, every
    process getting every part in order (:func:`ppdgm.distributed.split_work`). Every process
    checks every cell first, so bad data fails alike everywhere."""
    where = current_group()
    if not where.parallel:
        return [compute(frame, 0)]
    encode(bn, frame, compact=True)
    return split_work(len(frame), lambda a, b: compute(frame.iloc[a:b], a))


def _check_positive(z: Tensor, offset: int) -> None:
    bad = (z <= 0).nonzero().flatten()
    if bad.numel():
        rows = (bad + offset).tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ZeroProbabilityEvidence(
            f"the evidence of row(s) {shown} has probability zero under the network, "
            f"so the posterior is undefined there"
        )
