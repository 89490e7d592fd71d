r"""Learning CPTs from data: maximum likelihood, Dirichlet/BDeu pseudo-counts, and EM.

With complete data the estimate is the normalized counts of each family,
:math:`\theta_{s \mid u} = (N_{u s} + \alpha_{u s}) / \sum_{s'} (N_{u s'} + \alpha_{u s'})`.
With missing cells, EM replaces the counts by their expectation under the current parameters,
:math:`E[N_{us}] = \sum_n p(v = s, pa = u \mid e_n)`, all of which come from one backward pass
through the batched elimination: :math:`E[N_{us}] = \theta_{s|u}\,\partial \sum_n \log p(e_n) /
\partial \theta_{s|u}`. Each iteration never decreases the objective
:math:`\sum_n \log p(e_n) + \sum \alpha \log \theta` (the log-likelihood when there is no prior).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import networkx as nx
import pandas as pd
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ppdgm.bn.elimination import elimination_plan, execute
from ppdgm.bn.evidence import MISSING, as_frame, encode, indicators, unknown_states
from ppdgm.bn.network import DiscreteBN
from ppdgm.bn.sampling import family_index

__all__ = ["FitResult", "fit", "prior_counts"]

Prior = Literal["none", "dirichlet", "bdeu"]


@dataclass
class FitResult:
    """What :func:`fit` learned and how.

    Attributes:
        network: the network with the learned CPTs.
        method: ``"counts"`` (complete data, closed form) or ``"em"``.
        log_likelihood: ``sum_n log p(row n)`` after each iteration (the first entry is at the
            initial parameters for EM; a single entry for complete data).
        objective: the log-likelihood plus ``sum alpha log theta`` (what EM never decreases).
        iterations: EM iterations run (0 for complete data).
        converged: whether EM stopped on the tolerance rather than ``max_iter``.
    """

    network: DiscreteBN
    method: str
    log_likelihood: list[float] = field(default_factory=list)
    objective: list[float] = field(default_factory=list)
    iterations: int = 0
    converged: bool = True


def fit(
    structure: DiscreteBN | nx.DiGraph,
    data: pd.DataFrame | Mapping[str, Any],
    *,
    states: Mapping[str, Sequence[Hashable]] | None = None,
    prior: Prior = "none",
    pseudo_count: float = 1.0,
    equivalent_sample_size: float = 10.0,
    max_iter: int = 100,
    tol: float = 1e-6,
    init: DiscreteBN | None = None,
    seed: int | None = 0,
    progress: bool = False,
    chunk_size: int | None = None,
) -> FitResult:
    """Learns the CPTs of a structure from rows of state names.

    Complete data gives the maximum-likelihood (or, with a prior, posterior-mean) tables in
    closed form; data with missing cells runs EM from ``init`` (by default the available-case
    counts smoothed by the prior and a seeded random perturbation, which breaks the symmetry of
    variables that are never observed).

    Arguments:
        structure: a network (its DAG, parents' order and states are kept) or a DAG.
        data: rows of state names; NaN or None marks a missing cell; an absent column is a
            variable that is never observed (hidden).
        states: state names for a DAG, e.g. ``states={"grade": ("A", "B", "C")}``; where not
            given, a variable's states are the sorted values the data hold, so a state that
            never occurs in the data is not a state of the learned network (give it here to
            keep it, with a prior if its probability should not be zero).
        prior: ``"none"`` (maximum likelihood), ``"dirichlet"`` (``pseudo_count`` added to every
            cell, 1 being Laplace smoothing) or ``"bdeu"`` (``equivalent_sample_size`` spread
            uniformly over each table).
        pseudo_count: the Dirichlet pseudo-count.
        equivalent_sample_size: the BDeu equivalent sample size.
        max_iter: EM's iteration limit.
        tol: EM stops when an iteration gains less than ``tol`` nats per row.
        init: EM's starting network (same structure and states).
        seed: seed of EM's random initialization.
        progress: show a progress bar over EM iterations.
        chunk_size: rows per batch of the E-step.

    Returns:
        A :class:`FitResult`.

    Raises:
        ValueError: for unknown variables or states, a variable without states, an unknown
            prior, or EM started where some row has probability zero. A value that is not
            among a variable's states, or a variable never observed, is refused with a message
            that shows the ``states={...}`` to pass.

    Example:
        >>> from ppdgm.bn import sprinkler
        >>> truth = sprinkler()
        >>> rows = truth.sample(20_000, seed=0)
        >>> learned = fit(truth.dag, rows).network
        >>> round(float(learned.cpt("rain")[1, 1]), 1)  # p(rain = yes | cloudy = yes)
        0.8
    """
    frame = as_frame(data)
    template = _template(structure, frame, states)
    try:
        codes = encode(template, frame)
    except ValueError as e:
        unknown = unknown_states(template, frame)
        if not unknown:
            raise
        raise ValueError(f"{e}. {_states_hint(structure, template, unknown)}") from None
    alpha = prior_counts(template, prior, pseudo_count, equivalent_sample_size)
    counts = _complete_case_counts(template, codes)
    if not (codes == MISSING).any():
        tables = {v: _normalize(counts[v] + alpha[v]) for v in template.variables}
        network = template.with_cpts(tables)
        ll = float(network.log_prob(frame).sum())
        objective = ll + _log_prior(tables, alpha)
        return FitResult(network, "counts", [ll], [objective], 0, True)
    return _em(template, codes, counts, alpha, init, max_iter, tol, seed, progress, chunk_size)


def prior_counts(
    bn: DiscreteBN, prior: Prior, pseudo_count: float = 1.0, equivalent_sample_size: float = 10.0
) -> dict[str, Tensor]:
    """The pseudo-counts ``alpha`` added to each table's counts for a prior."""
    shapes = {v: bn.tables[v].shape for v in bn.variables}
    if prior == "none":
        return {v: torch.zeros(s, dtype=torch.float64) for v, s in shapes.items()}
    if prior == "dirichlet":
        if pseudo_count < 0:
            raise ValueError(f"pseudo_count must be non-negative, not {pseudo_count}")
        return {
            v: torch.full(s, float(pseudo_count), dtype=torch.float64) for v, s in shapes.items()
        }
    if prior == "bdeu":
        if equivalent_sample_size <= 0:
            raise ValueError(
                f"equivalent_sample_size must be positive, not {equivalent_sample_size}"
            )
        return {
            v: torch.full(s, equivalent_sample_size / math.prod(s), dtype=torch.float64)
            for v, s in shapes.items()
        }
    raise ValueError(f"unknown prior {prior!r}; use 'none', 'dirichlet' or 'bdeu'")


def _template(
    structure: DiscreteBN | nx.DiGraph,
    frame: pd.DataFrame,
    states: Mapping[str, Sequence[Hashable]] | None,
) -> DiscreteBN:
    """A network with the target structure and states, and uniform tables."""
    if isinstance(structure, DiscreteBN):
        if states is not None:
            given = ", ".join(f"{v!r}: {tuple(s)!r}" for v, s in states.items())
            raise ValueError(
                "states come from the network; pass states only with a DAG: to learn the "
                "network's structure with other states, fit its DAG, "
                f"ppdgm.bn.fit(bn.dag, data, states={{**bn.states, {given}}})"
            )
        dag, parents, names = (
            structure.dag,
            {v: structure.parents(v) for v in structure.variables},
            dict(structure.states),
        )
    elif isinstance(structure, nx.DiGraph):
        dag, parents, names = structure, None, dict(states or {})
        for v in dag:
            if v in names:
                continue
            if v not in frame.columns or frame[v].isna().all():
                raise ValueError(
                    f"variable {v!r} has no observed value: give its states, e.g. "
                    f"fit(dag, data, states={{{v!r}: ('no', 'yes')}}) with its own state names"
                )
            names[v] = tuple(sorted(frame[v].dropna().unique().tolist(), key=str))
    else:
        raise TypeError(
            f"structure must be a DiscreteBN or a networkx.DiGraph, not {type(structure).__name__}"
        )
    order = parents or {v: tuple(dag.predecessors(v)) for v in dag}
    uniform = {
        v: torch.full(
            (*(len(names[u]) for u in order[v]), len(names[v])),
            1.0 / len(names[v]),
            dtype=torch.float64,
        )
        for v in dag
    }
    return DiscreteBN(dag, uniform, names, parents=order, name=getattr(structure, "name", None))


def _states_hint(
    structure: DiscreteBN | nx.DiGraph, template: DiscreteBN, unknown: Mapping[str, list[Any]]
) -> str:
    """How to learn a network whose states include the ``unknown`` values."""
    items = ", ".join(f"{v!r}: {(*template.states[v], *values)!r}" for v, values in unknown.items())
    if isinstance(structure, DiscreteBN):
        return (
            "To learn a network that has these states too, fit the network's DAG and pass "
            f"every state: ppdgm.bn.fit(bn.dag, data, states={{**bn.states, {items}}})"
        )
    return f"Pass every state: fit(dag, data, states={{{items}, ...}})"


def _complete_case_counts(bn: DiscreteBN, codes: Tensor) -> dict[str, Tensor]:
    """Counts of each family over the rows where the whole family is observed."""
    columns = {v: j for j, v in enumerate(bn.variables)}
    counts = {}
    for v in bn.variables:
        family = [columns[u] for u in (*bn.parents(v), v)]
        complete = (codes[:, family] >= 0).all(1)
        rows = codes[complete]
        card = len(bn.states[v])
        index = family_index(bn, rows, v, columns) * card + rows[:, columns[v]]
        shape = bn.tables[v].shape
        counts[v] = (
            torch.bincount(index, minlength=math.prod(shape)).to(torch.float64).reshape(shape)
        )
    return counts


def _normalize(counts: Tensor) -> Tensor:
    """Rows of a table normalized; a row with no counts at all becomes uniform."""
    total = counts.sum(-1, keepdim=True)
    uniform = torch.full_like(counts, 1.0 / counts.shape[-1])
    return torch.where(total > 0, counts / total.clamp(min=torch.finfo(counts.dtype).tiny), uniform)


def _log_prior(tables: Mapping[str, Tensor], alpha: Mapping[str, Tensor]) -> float:
    total = 0.0
    for v, a in alpha.items():
        mask = a > 0
        total += float((a[mask] * tables[v][mask].log()).sum())
    return total


def _em(
    template: DiscreteBN,
    codes: Tensor,
    counts: Mapping[str, Tensor],
    alpha: Mapping[str, Tensor],
    init: DiscreteBN | None,
    max_iter: int,
    tol: float,
    seed: int | None,
    progress: bool,
    chunk_size: int | None,
) -> FitResult:
    if init is not None:
        if init.dag.edges != template.dag.edges or dict(init.states) != dict(template.states):
            raise ValueError("init must have the structure and states of the network being fit")
        tables = {v: init.tables[v].clone() for v in template.variables}
    else:
        generator = torch.Generator().manual_seed(seed) if seed is not None else None
        tables = {
            v: _normalize(
                counts[v]
                + alpha[v]
                + torch.rand(counts[v].shape, dtype=torch.float64, generator=generator)
            )
            for v in template.variables
        }
    observed = [v for j, v in enumerate(template.variables) if bool((codes[:, j] >= 0).any())]
    plan = elimination_plan(template, observed, (), prune=False)
    plan.check_memory(what=f"EM on {template.name}")
    rows = chunk_size or plan.chunk_size(keep_intermediates=True)
    columns = {v: j for j, v in enumerate(template.variables)}
    cards = template.cardinalities
    batches = [
        (
            chunk.shape[0],
            {v: indicators(chunk[:, columns[v]], cards[v]) for v in plan.evidence_variables},
        )
        for chunk in codes.split(rows)
    ]
    n = codes.shape[0]

    def expectation(theta: dict[str, Tensor]) -> tuple[float, dict[str, Tensor]]:
        leaves = {v: t.detach().requires_grad_() for v, t in theta.items()}
        expected = {v: torch.zeros_like(t) for v, t in theta.items()}
        ll = 0.0
        for size, lam in batches:
            with torch.enable_grad():
                factor, log_scale = execute(plan, leaves, lam, size)
                log_z = factor.log()
                if not torch.isfinite(log_z).all():
                    raise ValueError(
                        "EM cannot start: some rows have probability zero under the initial "
                        "parameters (give an init without zeros)"
                    )
                grads = torch.autograd.grad(log_z.sum(), list(leaves.values()))
            ll += float((log_z.detach() + log_scale).sum())
            for (v, leaf), grad in zip(leaves.items(), grads, strict=True):
                expected[v] += leaf.detach() * grad
        return ll, expected

    ll, expected = expectation(tables)
    history, objective = [ll], [ll + _log_prior(tables, alpha)]
    converged = False
    with tqdm(total=max_iter, desc="EM", unit="it", disable=not progress, leave=False) as bar:
        while len(history) <= max_iter:
            tables = {v: _normalize(expected[v] + alpha[v]) for v in template.variables}
            ll, expected = expectation(tables)
            history.append(ll)
            objective.append(ll + _log_prior(tables, alpha))
            bar.update()
            bar.set_postfix(loglik_per_row=f"{ll / n:.5f}")
            if objective[-1] - objective[-2] < tol * n:
                converged = True
                break
    network = template.with_cpts(tables)
    return FitResult(network, "em", history, objective, len(history) - 1, converged)
