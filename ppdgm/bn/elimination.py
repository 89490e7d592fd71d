r"""Exact inference by variable elimination, batched over rows whose evidence differs.

Evidence enters as indicator factors :math:`\lambda_v(n, s)` (one where row n is missing ``v`` or
has ``v = s``), so one elimination plan serves every row of a batch: each step multiplies the
factors that mention a variable and sums it out with one ``torch.einsum`` whose leading axis is
the row. The work per row of a step is the size of its scope; the sum over steps is the plan's
:attr:`Plan.cost`, the arithmetic floor of batched elimination with that order (min-fill).

After each step a factor is divided by its largest entry per row and the logarithm of that
scale is carried separately, so products of many small probabilities never underflow.

Posterior marginals of several variables come from one backward pass:
:math:`p(v = s \mid e) = \lambda_v(s) \, \partial \log Z / \partial \lambda_v(s)`
(the differential approach of Darwiche, 2003), and expected counts for EM from the gradient
with respect to the CPTs in the same way (see :mod:`ppdgm.bn.learning`).
"""

from __future__ import annotations

import math
import string
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx
import pandas as pd
import torch
from torch import Tensor

from ppdgm.bn.evidence import encode, indicators

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = [
    "Plan",
    "Step",
    "ZeroProbabilityEvidence",
    "elimination_plan",
    "execute",
    "log_evidence",
    "min_fill_order",
    "posterior",
]

#: Entries of float64 intermediates a batch may hold at once (256 MiB).
MEMORY_BUDGET = 2**25
_LETTERS = [c for c in string.ascii_letters if c != "n"]


class ZeroProbabilityEvidence(ValueError):
    """Raised when a posterior is asked for given evidence of probability zero."""


@dataclass(frozen=True)
class Step:
    """One step of a plan: multiply the ``inputs`` factors and sum out ``variable``.

    Attributes:
        variable: the variable summed out (None for the final product over the kept ones).
        inputs: the factor slots consumed.
        scope: the variables of the new factor, in the order of its axes.
        batched: whether the new factor has a leading row axis.
        equation: the ``torch.einsum`` equation (``n`` is the row axis).
        size: entries per row of the product before summing (the step's work).
    """

    variable: str | None
    inputs: tuple[int, ...]
    scope: tuple[str, ...]
    batched: bool
    equation: str
    size: int


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

    @property
    def cost(self) -> int:
        """Entries per row over all steps: the arithmetic floor of this plan."""
        return sum(s.size for s in self.steps)

    @property
    def width(self) -> int:
        """The largest step's entries per row."""
        return max((s.size for s in self.steps), default=1)

    def chunk_size(self, budget: int = MEMORY_BUDGET) -> int:
        """Rows per batch so that all intermediates of a batch fit in ``budget`` entries."""
        return max(1, budget // max(self.cost, 1))


def min_fill_order(
    graph: nx.Graph, eliminate: Sequence[str], cardinalities: Mapping[str, int]
) -> list[str]:
    """Greedy min-fill elimination order (ties by min-weight, then by position in ``eliminate``).

    Arguments:
        graph: an undirected interaction graph (the moral graph of a network).
        eliminate: the variables to order; the others stay in the graph.
        cardinalities: each variable's number of states (for the weight tie-break).
    """
    g = {v: set(graph.neighbors(v)) for v in graph.nodes}
    rank = {v: i for i, v in enumerate(eliminate)}
    remaining = set(eliminate)
    order = []
    while remaining:

        def score(v: str) -> tuple[int, int, int]:
            nb = list(g[v])
            fill = sum(1 for i, a in enumerate(nb) for b in nb[i + 1 :] if b not in g[a])
            weight = math.prod(cardinalities[u] for u in nb) * cardinalities[v]
            return fill, weight, rank[v]

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
) -> Plan:
    """Builds the plan that sums out everything but ``keep`` given indicators on ``evidence``.

    Arguments:
        bn: the network.
        evidence: variables that get an indicator factor (observed in some row, or queried).
        keep: variables left in the result, in this order.
        prune: drop variables that are neither kept, nor evidence, nor ancestors of either:
            they are barren and sum to one. EM needs every CPT and turns this off.
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
    order = min_fill_order(moral, [v for v in cpt_variables if v not in set(keep)], cards)

    alive = list(range(len(scopes)))
    steps = []

    def combine(variable: str | None, inputs: list[int], out: tuple[str, ...]) -> None:
        union = list(dict.fromkeys(u for i in inputs for u in scopes[i]))
        if len(union) > len(_LETTERS):
            raise ValueError(f"elimination step over {len(union)} variables is too wide")
        letter = dict(zip(union, _LETTERS, strict=False))
        is_batched = any(batched[i] for i in inputs)
        terms = ["n" * batched[i] + "".join(letter[u] for u in scopes[i]) for i in inputs]
        result = "n" * is_batched + "".join(letter[u] for u in out)
        size = math.prod(cards[u] for u in union)
        steps.append(
            Step(variable, tuple(inputs), out, is_batched, ",".join(terms) + "->" + result, size)
        )
        scopes.append(out)
        batched.append(is_batched)
        alive.append(len(scopes) - 1)

    for x in order:
        inputs = [i for i in alive if x in scopes[i]]
        for i in inputs:
            alive.remove(i)
        union = dict.fromkeys(u for i in inputs for u in scopes[i])
        combine(x, inputs, tuple(u for u in union if u != x))
    final = list(alive)
    alive.clear()
    combine(None, final, tuple(keep))
    return Plan(cpt_variables, evidence_variables, tuple(keep), tuple(steps))


def execute(
    plan: Plan, cpts: Mapping[str, Tensor], evidence: Mapping[str, Tensor], rows: int
) -> tuple[Tensor, Tensor]:
    """Runs a plan on one batch.

    Arguments:
        plan: the plan.
        cpts: a table for each of ``plan.cpt_variables``.
        evidence: indicators ``[rows, card]`` for each of ``plan.evidence_variables``.
        rows: the batch's number of rows.

    Returns:
        ``(factor, log_scale)``: a factor ``[rows, *cards of plan.keep]`` and ``[rows]`` such that
        the unnormalized joint of the kept variables with the evidence is
        ``factor * exp(log_scale)``. Differentiable in the CPTs and the indicators.
    """
    slots: list[Tensor | None] = [cpts[v] for v in plan.cpt_variables]
    slots += [evidence[v] for v in plan.evidence_variables]
    log_scale = torch.zeros(rows, dtype=torch.float64)
    for step in plan.steps:
        operands = [slots[i] for i in step.inputs]
        for i in step.inputs:
            slots[i] = None
        if operands:
            t = torch.einsum(step.equation, *operands)
        else:
            t = torch.ones((), dtype=torch.float64)
        if step.batched:
            top = t.detach().reshape(rows, -1).amax(1)
        else:
            top = t.detach().amax() if t.numel() else torch.ones((), dtype=torch.float64)
        safe = torch.where(top > 0, top, torch.ones_like(top))
        t = t / safe.reshape(safe.shape + (1,) * (t.dim() - safe.dim()))
        log_scale = log_scale + top.log()
        slots.append(t)
    result = slots[-1]
    assert result is not None
    if not plan.steps[-1].batched:
        result = result.expand((rows, *result.shape))
    return result, log_scale


def _chunks(codes: Tensor, size: int) -> Iterator[Tensor]:
    for start in range(0, codes.shape[0], size):
        yield codes[start : start + size]


def _observed_columns(bn: DiscreteBN, codes: Tensor) -> list[str]:
    seen = (codes >= 0).any(0).tolist()
    return [v for v, s in zip(bn.variables, seen, strict=True) if s]


def _plan(bn: DiscreteBN, evidence: Sequence[str], keep: Sequence[str]) -> Plan:
    key = ("plan", frozenset(evidence), tuple(keep))
    return bn._cached(key, lambda: elimination_plan(bn, evidence, keep))


def _indicators(bn: DiscreteBN, chunk: Tensor, variables: Sequence[str]) -> dict[str, Tensor]:
    column = {v: j for j, v in enumerate(bn.variables)}
    cards = bn.cardinalities
    return {v: indicators(chunk[:, column[v]], cards[v]) for v in variables}


def _tables(bn: DiscreteBN) -> dict[str, Tensor]:
    return bn._cpts


def log_evidence(
    bn: DiscreteBN, data: pd.DataFrame | Mapping[str, Any], *, chunk_size: int | None = None
) -> Tensor:
    """``log p(observed cells)`` of each row (see :meth:`DiscreteBN.log_prob`)."""
    codes = encode(bn, data)
    observed = _observed_columns(bn, codes)
    plan = _plan(bn, observed, ())
    out = []
    for chunk in _chunks(codes, chunk_size or plan.chunk_size()):
        lam = _indicators(bn, chunk, plan.evidence_variables)
        factor, log_scale = execute(plan, _tables(bn), lam, chunk.shape[0])
        out.append(factor.log() + log_scale)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


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
    codes = encode(bn, data)
    observed = _observed_columns(bn, codes)
    if len(query) == 1:
        return {query[0]: _posterior_kept(bn, codes, observed, query[0], chunk_size)}
    return _posterior_by_gradient(bn, codes, observed, query, chunk_size)


def _posterior_kept(
    bn: DiscreteBN, codes: Tensor, observed: list[str], q: str, chunk_size: int | None
) -> Tensor:
    plan = _plan(bn, observed, (q,))
    out = []
    offset = 0
    for chunk in _chunks(codes, chunk_size or plan.chunk_size()):
        lam = _indicators(bn, chunk, plan.evidence_variables)
        factor, _ = execute(plan, _tables(bn), lam, chunk.shape[0])
        total = factor.sum(-1, keepdim=True)
        _check_positive(total.squeeze(-1), offset)
        out.append(factor / total)
        offset += chunk.shape[0]
    return torch.cat(out) if out else torch.zeros(0, bn.cardinalities[q], dtype=torch.float64)


def _posterior_by_gradient(
    bn: DiscreteBN, codes: Tensor, observed: list[str], query: list[str], chunk_size: int | None
) -> dict[str, Tensor]:
    plan = _plan(bn, sorted(set(observed) | set(query), key=bn.variables.index), ())
    out: dict[str, list[Tensor]] = {v: [] for v in query}
    offset = 0
    for chunk in _chunks(codes, chunk_size or plan.chunk_size()):
        lam = _indicators(bn, chunk, plan.evidence_variables)
        leaves = [lam[v].requires_grad_() for v in query]
        with torch.enable_grad():
            factor, _ = execute(plan, _tables(bn), lam, chunk.shape[0])
            _check_positive(factor.detach(), offset)
            grads = torch.autograd.grad(factor.log().sum(), leaves)
        for v, leaf, grad in zip(query, leaves, grads, strict=True):
            out[v].append((leaf.detach() * grad).clamp(min=0))
        offset += chunk.shape[0]
    cards = bn.cardinalities
    return {
        v: torch.cat(ts) if ts else torch.zeros(0, cards[v], dtype=torch.float64)
        for v, ts in out.items()
    }


def _check_positive(z: Tensor, offset: int) -> None:
    bad = (z <= 0).nonzero().flatten()
    if bad.numel():
        rows = (bad + offset).tolist()
        shown = ", ".join(map(str, rows[:10])) + (", ..." if len(rows) > 10 else "")
        raise ZeroProbabilityEvidence(
            f"the evidence of row(s) {shown} has probability zero under the network, "
            f"so the posterior is undefined there"
        )
