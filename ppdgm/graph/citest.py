"""Empirical conditional-independence tests: sample a network or a program, test its graph."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import pandas as pd
import pyro.poutine as poutine
import torch
from pyro.infer import Predictive

from ppdgm.graph.dag import compiled, network_dag
from ppdgm.graph.independence import Independence
from ppdgm.graph.inspect import dependency_graph

__all__ = ["CITestResult", "check_independencies", "fisher_z_test", "g_test"]

Statement = Independence | tuple[Any, ...]


@dataclass(frozen=True)
class CITestResult:
    """The outcome of testing one statement on samples.

    Attributes:
        statement: the statement tested (the null hypothesis).
        method: ``"G-test"`` (discrete variables) or ``"Fisher z"`` (partial correlation).
        statistic: the G statistic, or the largest ``|z|`` over the pairs tested.
        dof: degrees of freedom of the G-test (None for Fisher z).
        p_value: the probability, under the statement, of a statistic at least as extreme
            (Bonferroni-corrected over pairs when Fisher z tests sets).
        num_samples: rows used.
        d_separated: whether the model's graph implies the statement (None for bare data).
    """

    statement: Independence
    method: str
    statistic: float
    dof: int | None
    p_value: float
    num_samples: int
    d_separated: bool | None

    def __str__(self) -> str:
        stat = (
            f"G = {self.statistic:.2f}, dof {self.dof}"
            if self.dof is not None
            else (f"|z| = {self.statistic:.2f}")
        )
        graph = {None: "", True: "; graph: d-separated", False: "; graph: d-connected"}
        p = f"p = {self.p_value:.3g}" if self.p_value > 0 else "p < 1e-300"  # erfc underflows
        return (
            f"{self.statement}: {self.method} {stat}, {p} "
            f"({self.num_samples} samples{graph[self.d_separated]})"
        )


def check_independencies(
    source: Any,
    statements: Statement | Iterable[Statement],
    *args: Any,
    num_samples: int = 5000,
    seed: int = 0,
    **kwargs: Any,
) -> list[CITestResult]:
    """Samples a network or a Pyro program and tests each statement on the draws.

    Statements on discrete variables get a G-test (the log-likelihood-ratio chi-square test,
    stratified over the states of ``given``, a set of variables tested as one joint variable);
    any continuous variable makes it a Fisher z test of the partial correlation given
    ``given`` (linear-Gaussian dependence only; pairs of sets are tested pair by pair with a
    Bonferroni correction). A small p-value rejects the independence; a true independence
    gives p-values uniform on [0, 1].

    A program is sampled with its observations ignored (``poutine.uncondition``), all draws in
    one vectorized pass where the program broadcasts, one by one otherwise; the global random
    state is left as it was. Sites inside a plate contribute one row per plate element, so the
    variables of one statement must have equal shapes.

    Arguments:
        source: a network, a Pyro program, or a DataFrame of draws (float columns are
            continuous, the others discrete; rows missing a cell the statement needs are dropped).
        statements: an :class:`~ppdgm.independence.Independence`, a tuple
            ``(xs, ys)`` or ``(xs, ys, given)``, or a collection of them.
        *args, **kwargs: the program's arguments.
        num_samples: draws from the network or program (ignored for a DataFrame).
        seed: seed of the draws.

    Returns:
        One result per statement, in order.

    Raises:
        ValueError: for an unknown or repeated variable, a vector-valued site, or sites of
            different shapes in one statement.

    Example:
        >>> from ppdgm.bn import asia
        >>> for result in check_independencies(asia(), [("asia", "smoke"), ("smoke", "dysp")]):
        ...     print(result.statement, result.p_value > 0.05, result.d_separated)
        asia ⊥ smoke True True
        smoke ⊥ dysp False False
    """
    if isinstance(statements, (Independence, tuple)):
        statements = [statements]
    statements = [_as_statement(s) for s in statements]
    if isinstance(source, pd.DataFrame):
        graph = None
        checker = compiled(nx.empty_graph(list(source.columns), create_using=nx.DiGraph))
        columns, discrete = _frame_columns(source)
    elif network_dag(source) is not None:
        graph = source.dag
        checker = compiled(graph)
        frame = source.sample(num_samples, seed=seed)
        columns = {v: pd.factorize(frame[v])[0].astype(np.float64) for v in frame.columns}
        discrete = dict.fromkeys(columns, True)
    elif callable(source):
        graph = dependency_graph(source, *args, **kwargs)
        checker = compiled(graph)
        sites = [v for s in statements for v in (*s.xs, *s.ys, *s.given) if v in graph]
        columns = _sample_program(
            source, graph, sorted(set(sites)), num_samples, seed, args, kwargs
        )
        discrete = {v: bool(graph.nodes[v]["discrete"]) for v in graph}
    else:
        raise TypeError(
            f"expected a DiscreteBN, a Pyro program or a DataFrame, not {type(source).__name__}"
        )
    results = []
    for s in statements:
        xs, ys = checker.names(s.xs, "xs"), checker.names(s.ys, "ys")
        given = checker.names(s.given, "given")
        checker.check_disjoint({"xs": xs, "ys": ys, "given": given})
        variables = [*sorted(xs, key=str), *sorted(ys, key=str), *sorted(given, key=str)]
        _check_shapes(variables, columns)
        table = np.column_stack([columns[v].reshape(-1) for v in variables])
        table = table[~np.isnan(table).any(axis=1)]
        x, y, z = np.split(table, [len(xs), len(xs) + len(ys)], axis=1)
        separated = None if graph is None else checker.separated(xs, ys, given)
        if all(discrete[v] for v in variables):
            stat, dof, p = g_test(x, y, z)
            results.append(CITestResult(s, "G-test", stat, dof, p, len(table), separated))
        else:
            stat, p = fisher_z_test(x, y, z)
            results.append(CITestResult(s, "Fisher z", stat, None, p, len(table), separated))
    return results


def _as_statement(s: Statement) -> Independence:
    if isinstance(s, Independence):
        return s
    if isinstance(s, tuple) and len(s) in (2, 3):
        return Independence(*s)
    raise ValueError(f"a statement is an Independence or a tuple (xs, ys[, given]), not {s!r}")


def _frame_columns(frame: pd.DataFrame) -> tuple[dict[Hashable, np.ndarray], dict[Hashable, bool]]:
    columns, discrete = {}, {}
    for v in frame.columns:
        if pd.api.types.is_float_dtype(frame[v]):
            columns[v], discrete[v] = frame[v].to_numpy(np.float64), False
        else:
            codes = pd.factorize(frame[v])[0].astype(np.float64)
            codes[codes < 0] = np.nan
            columns[v], discrete[v] = codes, True
    return columns, discrete


def _sample_program(
    model: Callable[..., Any],
    graph: nx.DiGraph,
    sites: list[Hashable],
    num_samples: int,
    seed: int,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> dict[Hashable, np.ndarray]:
    vectors = [v for v in sites if graph.nodes[v]["event_shape"]]
    if vectors:
        shape = graph.nodes[vectors[0]]["event_shape"]
        raise ValueError(
            f"site {vectors[0]!r} is vector-valued (event shape {shape}); test scalar sites"
        )
    unconditioned = poutine.uncondition(model)
    with torch.random.fork_rng(), torch.no_grad():
        for parallel in (True, False):
            torch.manual_seed(seed)
            predictive = Predictive(
                unconditioned, num_samples=num_samples, return_sites=sites, parallel=parallel
            )
            try:
                draws = predictive(*args, **kwargs)
                break
            except Exception as e:  # a program that does not broadcast: draw one at a time
                if not parallel:
                    raise ValueError(f"sampling the program failed: {type(e).__name__}: {e}") from e
    columns = {}
    for v in sites:
        value = draws[v].detach().to(torch.float64)
        shape = (num_samples, *graph.nodes[v]["shape"])  # vectorized draws can gain 1-sized dims
        columns[v] = value.reshape(shape if value.numel() == np.prod(shape) else (num_samples, -1))
    return {v: c.numpy() for v, c in columns.items()}


def _check_shapes(variables: list[Hashable], columns: dict[Hashable, np.ndarray]) -> None:
    shapes = {v: np.shape(columns[v])[1:] for v in variables}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{v!s} {s}" for v, s in shapes.items())
        raise ValueError(f"the variables of a statement must have equal shapes, got {listed}")


def g_test(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, int, float]:
    """The G-test of ``x ⊥ y | z`` for discrete columns (each a matrix, rows = samples).

    ``G = 2 sum_{z,x,y} n_zxy log(n_zxy n_z / (n_zx n_zy))``, compared with a chi-square whose
    degrees of freedom sum ``(r_z - 1)(c_z - 1)`` over strata ``z``, counting only the states of
    ``x`` and ``y`` seen in the stratum. O(n log n) time and O(n) memory in the number of rows.

    Returns:
        ``(G, dof, p_value)``; the p-value is 1 when there are no degrees of freedom.

    Example:
        >>> import numpy as np
        >>> x = np.array([[0], [0], [1], [1]]); y = np.array([[0], [1], [0], [1]])
        >>> g_test(x, y, np.empty((4, 0)))
        (0.0, 1, 1.0)
    """
    xi, yi, zi = _codes(x), _codes(y), _codes(z)
    nx_, ny_ = int(xi.max()) + 1, int(yi.max()) + 1
    zx, zx_inverse = np.unique(zi * nx_ + xi, return_inverse=True)
    zy, zy_inverse = np.unique(zi * ny_ + yi, return_inverse=True)
    _, first, n_cell = np.unique(
        zx_inverse * len(zy) + zy_inverse, return_index=True, return_counts=True
    )
    n_zx = np.bincount(zx_inverse)[zx_inverse[first]]
    n_zy = np.bincount(zy_inverse)[zy_inverse[first]]
    n_z = np.bincount(zi)[zi[first]]
    stat = float(2 * np.sum(n_cell * np.log(n_cell * n_z / (n_zx * n_zy))))
    rows, cols = np.bincount(zx // nx_), np.bincount(zy // ny_)
    dof = int(np.sum(np.clip(rows - 1, 0, None) * np.clip(cols - 1, 0, None)))
    stat = max(stat, 0.0)  # rounding can leave -1e-16 where G is exactly 0
    if dof == 0:
        return stat, 0, 1.0
    half = torch.tensor([dof / 2, stat / 2], dtype=torch.float64)
    return stat, dof, float(torch.special.gammaincc(half[0], half[1]))


def _codes(columns: np.ndarray) -> np.ndarray:
    """One integer code per row for the joint state of the columns (0 for no columns)."""
    if columns.shape[1] == 0:
        return np.zeros(len(columns), dtype=np.int64)
    return np.unique(columns, axis=0, return_inverse=True)[1].reshape(-1).astype(np.int64)


def fisher_z_test(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> tuple[float, float]:
    """Fisher's z test of zero partial correlation between each column of ``x`` and of ``y``
    given the columns of ``z``.

    The partial correlation ``r`` is the correlation of the least-squares residuals of both on
    ``[1, z]``; ``sqrt(n - |z| - 3) atanh(r)`` is standard normal when it is zero. With several
    pairs the smallest p-value is multiplied by their number (Bonferroni).

    Returns:
        ``(max |z statistic|, p_value)``.

    Example:
        >>> import numpy as np
        >>> rng = np.random.default_rng(0)
        >>> a = rng.normal(size=(2000, 1)); b = a + rng.normal(size=(2000, 1))
        >>> c = b + rng.normal(size=(2000, 1))
        >>> fisher_z_test(a, c, np.empty((2000, 0)))[1] < 1e-6, fisher_z_test(a, c, b)[1] > 0.05
        (True, True)
    """
    n, k = len(x), z.shape[1]
    if n - k - 3 < 1:
        raise ValueError(f"{n} samples are too few for a partial correlation given {k} variables")
    design = np.column_stack([np.ones(n), z])
    both = np.column_stack([x, y])
    residuals = both - design @ np.linalg.lstsq(design, both, rcond=None)[0]
    residuals -= residuals.mean(axis=0)
    scale = np.sqrt((residuals**2).sum(axis=0))
    worst_stat, worst_p = 0.0, 1.0
    for i in range(x.shape[1]):
        for j in range(x.shape[1], both.shape[1]):
            if min(scale[i], scale[j]) <= 1e-12 * math.sqrt(n):  # a constant: independent
                continue
            r = float(residuals[:, i] @ residuals[:, j] / (scale[i] * scale[j]))
            stat = abs(math.atanh(min(max(r, -1 + 1e-15), 1 - 1e-15))) * math.sqrt(n - k - 3)
            p = math.erfc(stat / math.sqrt(2))
            worst_stat, worst_p = max(stat, worst_stat), min(p, worst_p)
    pairs = x.shape[1] * y.shape[1]
    return worst_stat, min(1.0, worst_p * pairs)
