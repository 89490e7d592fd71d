"""Discrete Bayesian networks: a DAG, state names and one conditional probability table per node."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
import numpy as np
import pandas as pd
import torch
from torch import Tensor

from ppdgm.counting import ParameterCounts, count_parameters
from ppdgm.threads import work_threads

if TYPE_CHECKING:
    from ppdgm.bn.approximate import PosteriorEstimate
    from ppdgm.bn.learning import FitResult
    from ppdgm.infer.estimate import Estimate

__all__ = ["CPT_TOLERANCE", "DerivedTables", "DiscreteBN"]


class DerivedTables:
    """What the engine derives once from a network's tables and keeps with it: elimination
    plans, log-tables, sampling CDFs, state indexes. A network cannot change, so nothing here
    goes stale; a network made by :meth:`DiscreteBN.with_cpts` starts empty.

    Example:
        >>> derived = DerivedTables()
        >>> derived.get(("twice", 2), lambda: 2 * 2), derived.get(("twice", 2), lambda: 0)
        (4, 4)
        >>> len(derived)
        1
    """

    def __init__(self) -> None:
        self._store: dict[Hashable, Any] = {}

    def get(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The value kept under ``key``, built by ``build()`` the first time."""
        if key not in self._store:
            self._store[key] = build()
        return self._store[key]

    def __len__(self) -> int:
        return len(self._store)


#: How far a CPT row may sum from one before it is rejected (BIF files round their numbers).
CPT_TOLERANCE = 1e-6


class DiscreteBN:
    r"""A discrete Bayesian network :math:`p(x) = \prod_v p(x_v \mid x_{pa(v)})`.

    Each variable ``v`` has a tuple of state names ``states[v]`` and a conditional probability
    table whose axes are the parents, in the order of ``parents(v)``, then ``v`` itself:
    ``cpt[i_1, ..., i_k, j] = p(v = states[v][j] | pa_1 = states[pa_1][i_1], ...)``.
    The parents' order is that of ``dag.predecessors(v)`` (the order in which the edges were
    added) unless ``parents`` gives it explicitly.

    The network is immutable: learning returns a new one.

    Arguments:
        dag: the structure, a directed acyclic graph whose nodes are the variable names.
        cpts: one table per variable (any array-like), axes as above.
        states: the state names of each variable; ``range(card)`` where not given.
        parents: the parents' axis order for some variables, overriding the DAG's order.
        name: a label for printing.

    Raises:
        ValueError: for a cycle, a missing or unknown table, a parent that is not in the graph,
            a table of the wrong shape, negative or non-finite entries, or rows that do not sum
            to one within :data:`CPT_TOLERANCE` (rows within it are renormalized, as BIF files
            round their numbers); for a variable or state name that a DataFrame would read as
            a missing cell (None, NaN, ``pd.NA``) or that is empty text, and for repeated or
            unhashable state names (the message names the variable and the state).

    Example:
        >>> import networkx as nx
        >>> dag = nx.DiGraph([("rain", "wet")])
        >>> bn = DiscreteBN(
        ...     dag,
        ...     {"rain": [0.8, 0.2], "wet": [[0.9, 0.1], [0.2, 0.8]]},
        ...     states={"rain": ("no", "yes"), "wet": ("no", "yes")},
        ... )
        >>> bn.parents("wet")
        ('rain',)
        >>> float(bn.log_prob({"wet": "yes"}).exp())
        0.24
    """

    def __init__(
        self,
        dag: nx.DiGraph,
        cpts: Mapping[str, Any],
        states: Mapping[str, Sequence[Hashable]] | None = None,
        *,
        parents: Mapping[str, Sequence[str]] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(dag, nx.DiGraph):
            raise TypeError(f"dag must be a networkx.DiGraph, not {type(dag).__name__}")
        states = dict(states or {})
        parents = dict(parents or {})
        for label, keys in (("CPT", cpts), ("states", states), ("parents", parents)):
            unknown = [v for v in keys if v not in dag]
            if unknown:
                raise ValueError(f"{label} given for variable(s) not in the graph: {unknown}")
        for v in dag:
            problem = _missing_name(v)
            if problem:
                raise ValueError(
                    f"variable {v!r} has an invalid name: {problem}; name it with non-empty text"
                )
        missing = [v for v in dag if v not in cpts]
        if missing:
            raise ValueError(f"no CPT given for variable(s) {missing}")

        self.name = name or "network"
        self._parents: dict[str, tuple[str, ...]] = {}
        for v in dag:
            order = tuple(parents.get(v, tuple(dag.predecessors(v))))
            for u in order:
                if u not in dag:
                    raise ValueError(f"parent {u!r} of {v!r} is not a node of the graph")
            if sorted(map(str, order)) != sorted(map(str, dag.predecessors(v))) or len(
                set(order)
            ) != len(order):
                raise ValueError(
                    f"parents given for {v!r} {order} differ from its predecessors in the graph "
                    f"{tuple(dag.predecessors(v))}"
                )
            self._parents[v] = order

        self._variables = _topological_order(dag, self._parents)
        tables = {v: _as_table(v, cpts[v]) for v in self._variables}
        self._states: dict[str, tuple[Hashable, ...]] = {}
        for v in self._variables:
            card = tables[v].shape[-1] if tables[v].ndim else 0
            names = _state_names(v, states[v]) if v in states else tuple(range(card))
            if len(names) < 1:
                raise ValueError(f"variable {v!r} has no states")
            self._states[v] = names
        self._cpts = {
            v: torch.from_numpy(_checked_table(v, tables[v], self._parents[v], self._states))
            for v in self._variables
        }
        frozen = nx.DiGraph()
        frozen.add_nodes_from(self._variables)
        frozen.add_edges_from((u, v) for v in self._variables for u in self._parents[v])
        self._dag = nx.freeze(frozen)
        self.derived = DerivedTables()

    # ----------------------------------------------------------------------------- structure
    @property
    def dag(self) -> nx.DiGraph:
        """The structure (a frozen networkx.DiGraph)."""
        return self._dag

    @property
    def variables(self) -> tuple[str, ...]:
        """The variables in topological order."""
        return self._variables

    @property
    def plate(self) -> str:
        """The name of the plate over rows in :meth:`model`: ``"data"``, or where a variable
        has that name, the first of ``"_data"``, ``"__data"``, ... that none has. Pass it to
        :mod:`ppdgm.infer` (``LogLikelihood(bn.model, plate=bn.plate)``)."""
        name = "data"
        while name in self._states:
            name = "_" + name
        return name

    @property
    def states(self) -> Mapping[str, tuple[Hashable, ...]]:
        """The state names of each variable (read-only mapping)."""
        return MappingProxyType(self._states)

    @property
    def cardinalities(self) -> dict[str, int]:
        """The number of states of each variable."""
        return {v: len(s) for v, s in self._states.items()}

    def parents(self, variable: str) -> tuple[str, ...]:
        """The parents of ``variable``, in the order of its CPT's axes."""
        self._check_variable(variable)
        return self._parents[variable]

    @property
    def tables(self) -> Mapping[str, Tensor]:
        """Every conditional probability table by variable, read-only and not copied (for the
        engine's modules: :meth:`cpt` gives a copy to change)."""
        return MappingProxyType(self._cpts)

    def cpt(self, variable: str) -> Tensor:
        """The conditional probability table of ``variable`` (float64, axes: parents, then it).

        The tensor is a copy; the network itself cannot be changed.
        """
        self._check_variable(variable)
        return self._cpts[variable].clone()

    def parameter_counts(self) -> ParameterCounts:
        """Free parameters of the network against the full joint table and full independence."""
        return count_parameters(self._dag, self.cardinalities)

    def _check_variable(self, variable: str) -> None:
        try:
            known = variable in self._states
        except TypeError:  # an unhashable name
            known = False
        if not known:
            raise ValueError(
                f"unknown variable {variable!r}; the network has {list(self._variables)}"
            )

    def __repr__(self) -> str:
        return (
            f"DiscreteBN({self.name!r}, {len(self._variables)} variables, "
            f"{self._dag.number_of_edges()} edges)"
        )

    def describe(self, *, counts: bool = True) -> str:
        """A readable summary: each variable with its parents and states, and (if ``counts``)
        the parameter counts."""
        lines = [
            f"{self.name}: {len(self._variables)} variables, {self._dag.number_of_edges()} edges"
        ]
        width = max(len(str(v)) for v in self._variables)
        for v in self._variables:
            pa = ", ".join(self._parents[v]) or "-"
            states = ", ".join(map(str, self._states[v]))
            lines.append(f"  {v!s:<{width}}  | parents: {pa}  | states: {states}")
        if counts:
            lines.append(str(self.parameter_counts()))
        return "\n".join(lines)

    # ----------------------------------------------------------------------------- inference
    def log_prob(
        self,
        data: pd.DataFrame | Mapping[str, Any],
        *,
        chunk_size: int | None = None,
        method: Literal["exact", "importance"] = "exact",
        num_samples: int = 1000,
        seed: int | None = None,
    ) -> Tensor | Estimate:
        """Exact log-probability of each row, with missing cells summed out; or its importance-
        sampled estimate for a network too wide for exact inference.

        Arguments:
            data: rows of state names (a DataFrame, or a mapping of variable to state for one
                row); NaN or None marks a missing cell, and an absent column is missing everywhere.
            chunk_size: rows processed at once (bounds memory); chosen from the network if None.
            method: ``"exact"`` (variable elimination), or ``"importance"``: ``num_samples``
                draws of each row's missing cells from the network (likelihood weighting,
                :mod:`ppdgm.bn.approximate`), with a private ``seed``.

        Returns:
            Exact: a float64 tensor ``[N]``, ``log p(observed cells of row n)``; ``-inf`` for
            evidence of probability zero. Importance: an :class:`~ppdgm.infer.estimate.Estimate`
            (``log_prob``, ``stderr``, ``ess``, ``pareto_k``), which warns where the weights
            cannot be trusted. Data of no rows gives empty results for either method (a tensor
            ``[0]``, or an estimate of ``[0]`` tensors), not an error.

        Raises:
            ValueError: for a column that is not a variable or is named more than once, or
                an unknown state (the message names them).
            TooLargeForExactInference: (exact) when the plan needs more memory than
                :func:`~ppdgm.bn.elimination.memory_limit`, before allocating.

        Example:
            >>> from ppdgm.bn import asia
            >>> bn = asia()
            >>> rows = pd.DataFrame({"smoke": ["yes"], "xray": ["yes"]})
            >>> exact = bn.log_prob(rows)
            >>> est = bn.log_prob(rows, method="importance", num_samples=20_000, seed=0)
            >>> bool((est.log_prob - exact).abs() < 4 * est.stderr)
            True
        """
        if method == "importance":
            from ppdgm.bn.approximate import importance_log_prob

            with work_threads():
                return importance_log_prob(self, data, num_samples=num_samples, seed=seed)
        if method != "exact":
            raise ValueError(f"unknown method {method!r}; choose exact or importance")
        from ppdgm.bn.elimination import log_evidence

        with work_threads():
            return log_evidence(self, data, chunk_size=chunk_size)

    def posterior(
        self,
        data: pd.DataFrame | Mapping[str, Any],
        variables: Sequence[str] | str,
        *,
        chunk_size: int | None = None,
        as_frame: bool = False,
        method: Literal["exact", "importance"] = "exact",
        num_samples: int = 1000,
        seed: int | None = None,
    ) -> dict[str, Tensor] | pd.DataFrame | PosteriorEstimate:
        """Exact posterior marginals given each row's observed cells; or their importance-
        sampled estimates for a network too wide for exact inference.

        Arguments:
            data: evidence rows, as for :meth:`log_prob`.
            variables: the query variables (a name or a sequence of names).
            chunk_size: rows processed at once; chosen from the network if None.
            as_frame: return one DataFrame instead of a dict of tensors.
            method: ``"exact"``, or ``"importance"``: self-normalized importance sampling with
                ``num_samples`` draws per row from the network (:mod:`ppdgm.bn.approximate`),
                with a private ``seed``.

        Returns:
            For each query variable, a float64 tensor ``[N, card]`` of ``p(v = s | row n)`` with
            the states in the order of ``states[v]`` (one-hot where ``v`` itself is observed).
            With ``as_frame=True``, the same numbers as one float64 DataFrame whose columns are
            the pairs ``(variable, state)`` (a MultiIndex with levels ``variable`` and
            ``state``) and whose index is the rows' index. With ``method="importance"``, a
            :class:`~ppdgm.bn.approximate.PosteriorEstimate` (``probs``, ``stderr``, ``ess``,
            ``pareto_k``), or with ``as_frame=True`` its ``probs`` as one DataFrame. Data of
            no rows gives empty results for either method (``[0, card]`` tensors, or a frame
            of no rows with the same columns), not an error.

        Raises:
            ValueError: for an unknown variable or state, a column named more than once, or a
                row whose evidence has probability zero (the posterior is undefined there).
            TooLargeForExactInference: (exact) when the plan needs more memory than
                :func:`~ppdgm.bn.elimination.memory_limit`, before allocating.

        Example:
            >>> from ppdgm.bn import asia
            >>> bn = asia()
            >>> rows = pd.DataFrame({"smoke": ["yes", "no"], "xray": ["yes", None]}, index=[7, 9])
            >>> post = bn.posterior(rows, ["lung", "tub"])
            >>> post["lung"].round(decimals=4)
            tensor([[0.6460, 0.3540],
                    [0.0100, 0.9900]], dtype=torch.float64)
            >>> bn.posterior(rows, ["lung", "tub"], as_frame=True).round(4)
            variable   lung            tub
            state       yes     no     yes      no
            7         0.646  0.354  0.0672  0.9328
            9         0.010  0.990  0.0104  0.9896
            >>> est = bn.posterior(rows, "lung", method="importance", num_samples=20_000, seed=0)
            >>> error = (est.probs["lung"] - post["lung"]).abs()
            >>> bool((error < 4 * est.stderr["lung"] + 1e-9).all())
            True
        """
        from ppdgm.bn.evidence import as_frame as to_frame

        if method == "importance":
            from ppdgm.bn.approximate import importance_posterior

            with work_threads():
                estimate = importance_posterior(
                    self, data, variables, num_samples=num_samples, seed=seed
                )
            return estimate.as_frame(self, to_frame(data).index) if as_frame else estimate
        if method != "exact":
            raise ValueError(f"unknown method {method!r}; choose exact or importance")
        from ppdgm.bn.elimination import posterior

        with work_threads():
            marginals = posterior(self, data, variables, chunk_size=chunk_size)
        if not as_frame:
            return marginals
        columns = pd.MultiIndex.from_tuples(
            [(v, s) for v in marginals for s in self._states[v]], names=["variable", "state"]
        )
        values = torch.cat(list(marginals.values()), 1).numpy()
        return pd.DataFrame(values, index=to_frame(data).index, columns=columns)

    def predict(
        self,
        data: pd.DataFrame | Mapping[str, Any],
        variables: Sequence[str] | str | None = None,
        *,
        progress: bool = False,
    ) -> pd.DataFrame:
        """The most probable state of variables in each row, given the row's observed cells.

        Each cell of the result is the argmax over states of the exact posterior marginal
        ``p(v | observed cells of row n)`` of :meth:`posterior`: the best guess of each variable
        on its own. A tie (states within :data:`~ppdgm.bn.imputation.TIE_TOLERANCE` of the
        largest probability) goes to the first state in the order of ``states[v]``. A variable
        observed in a row is predicted as its observed value. All the variables of a block of
        rows come from one posterior computation, batched over rows.

        Arguments:
            data: rows of state names, as for :meth:`log_prob`.
            variables: the variables to predict (a name or a sequence of names); by default
                every variable missing in some row (an absent column is missing everywhere),
                in the order of :attr:`variables`.
            progress: show a progress bar when there are several blocks of
                :data:`~ppdgm.bn.imputation.ROWS_PER_BLOCK` rows.

        Returns:
            A DataFrame with one categorical column per predicted variable holding the
            network's own state names (categories ``states[v]``), and the index of ``data``.

        Raises:
            ValueError: for an unknown variable or state.
            ZeroProbabilityEvidence: for a row whose observed cells have probability zero and
                that misses a predicted variable (the message gives its position).

        Example:
            >>> from ppdgm.bn import asia
            >>> bn = asia()
            >>> rows = pd.DataFrame(
            ...     {"smoke": ["yes", None], "xray": ["yes", "no"], "dysp": ["yes", None]}
            ... )
            >>> bn.predict(rows, ["smoke", "lung", "bronc"])
              smoke lung bronc
            0   yes  yes   yes
            1    no   no    no
        """
        from ppdgm.bn.imputation import predict

        with work_threads():
            return predict(self, data, variables, progress=progress)

    def impute(
        self,
        data: pd.DataFrame | Mapping[str, Any],
        *,
        sample: bool = False,
        seed: int | None = None,
        progress: bool = False,
    ) -> pd.DataFrame:
        """A copy of the rows with every missing cell filled in, given each row's observed cells.

        By default each missing cell gets its most probable state, the argmax of its own
        posterior marginal (as :meth:`predict`). Cell by cell: the completed row is not
        necessarily the most probable completion as a whole (the joint MAP), and may even be
        impossible under the network. With ``sample=True`` the missing cells of each row are
        drawn together from the joint conditional ``p(missing cells | observed cells)``: the
        missing variables one after another, each from its posterior given the observed cells
        and the cells drawn so far (one posterior computation per variable and block of rows,
        batched over rows).

        Only the columns of ``data`` are filled (a variable without a column stays absent and
        is summed out); every filled column becomes categorical, holding the network's own
        state names (categories ``states[v]``).

        Arguments:
            data: rows of state names, as for :meth:`log_prob`.
            sample: draw the missing cells instead of taking the most probable states.
            seed: seed of a private generator for the draws (the global torch generator if
                None); the same seed and rows give the same draws.
            progress: show a progress bar when there are several blocks of
                :data:`~ppdgm.bn.imputation.ROWS_PER_BLOCK` rows.

        Returns:
            A DataFrame with the index and columns of ``data`` and no missing cell.

        Raises:
            ValueError: for a column that is not a variable of the network, or an unknown state.
            ZeroProbabilityEvidence: for a row with missing cells whose observed cells have
                probability zero (the message gives its position).

        Example:
            >>> from ppdgm.bn import asia
            >>> bn = asia()
            >>> rows = pd.DataFrame({"smoke": ["yes", None], "lung": [None, None], "xray": "yes"})
            >>> bn.impute(rows)  # row 1: each cell's best guess, not the best pair (yes, yes)
              smoke lung xray
            0   yes  yes  yes
            1   yes   no  yes
            >>> draws = bn.impute(rows, sample=True, seed=0)
            >>> draws.equals(bn.impute(rows, sample=True, seed=0)), int(draws.isna().sum().sum())
            (True, 0)
        """
        from ppdgm.bn.imputation import impute

        with work_threads():
            return impute(self, data, sample=sample, seed=seed, progress=progress)

    # ----------------------------------------------------------------------------- programs
    def model(
        self, data: pd.DataFrame | Mapping[str, Any] | None = None, *, num_rows: int = 1
    ) -> dict[str, Tensor]:
        """The network as a Pyro program, one ``pyro.plate(bn.plate)`` over rows (named
        ``"data"`` unless a variable has that name; see :attr:`plate`).

        Each variable is a ``pyro.sample`` site named after it, in topological order, drawn from a
        ``Categorical`` whose probabilities are its CPT indexed by the parents' values. A column
        observed in every row is an observed site; a column with missing cells is a latent site
        marked ``infer={"enumerate": "parallel"}`` whose distribution is clamped to the observed
        value in the rows that have one, so ``TraceEnum_ELBO`` sums out exactly the missing cells.

        ``pyro.render_model`` draws every edge of the network. Pyro's ``get_dependencies``
        reports dependencies on latent sites only, so it lists every edge for ``bn.model()``
        and whenever each column has a missing cell, and omits edges out of observed sites.

        Arguments:
            data: rows of state names, or None to sample ``num_rows`` rows from the prior.
            num_rows: the plate's size when ``data`` is None.

        Returns:
            The value of every site (state indices), keyed by variable.
        """
        from ppdgm.bn.program import network_model

        return network_model(self, data, num_rows=num_rows)

    def sample(self, n: int, seed: int | None = None) -> pd.DataFrame:
        """Draws ``n`` rows by ancestral sampling (vectorized over rows).

        Arguments:
            n: number of rows.
            seed: seed of a private generator; the global torch generator if None.

        Returns:
            A DataFrame with one categorical column of state names per variable.
        """
        from ppdgm.bn.sampling import ancestral_sample

        with work_threads():
            return ancestral_sample(self, n, seed=seed)

    def fit(self, data: pd.DataFrame, **kwargs: Any) -> FitResult:
        """Learns new CPTs for this structure and these states; see :func:`ppdgm.bn.fit`."""
        from ppdgm.bn.learning import fit

        with work_threads():
            return fit(self, data, **kwargs)

    # ----------------------------------------------------------------------------- interop
    def to_pgmpy(self) -> Any:
        """The same network as a ``pgmpy.models.DiscreteBayesianNetwork``."""
        from ppdgm.bn.interop import to_pgmpy

        return to_pgmpy(self)

    def write_bif(self, path: str | Path) -> None:
        """Writes the network to a BIF file (see :func:`ppdgm.bn.bif.write_bif`)."""
        from ppdgm.bn.bif import write_bif

        write_bif(self, path)

    def with_cpts(self, cpts: Mapping[str, Any]) -> DiscreteBN:
        """A network with the same structure and states and some tables replaced."""
        tables = {v: cpts.get(v, self._cpts[v]) for v in self._variables}
        return DiscreteBN(self._dag, tables, self._states, parents=self._parents, name=self.name)


def _as_table(variable: str, table: Any) -> np.ndarray:
    # numpy, not torch, for the checks: a network's many small tables are checked several
    # times faster (reading a BIF file of tens of tables is dominated by them)
    try:
        if isinstance(table, Tensor):
            t = table.detach().to(dtype=torch.float64, device="cpu").numpy().copy()
        else:
            t = np.array(table, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"CPT of {variable!r} is not a numeric array: {e}") from None
    return t


def _missing_name(name: Any) -> str | None:
    """Why ``name`` cannot name a variable or a state (None if it can): a name that reads as a
    missing cell (None, NaN, ``pd.NA``, ``NaT``) or is empty text would be confused with one."""
    if isinstance(name, str):
        return "it is empty, and an empty cell reads as missing" if not name else None
    try:
        missing = pd.api.types.is_scalar(name) and bool(pd.isna(name))
    except (TypeError, ValueError):  # pragma: no cover - an object whose isna is not a bool
        missing = False
    if missing:
        return f"{name!r} marks a missing cell in a DataFrame"
    return None


def _state_names(variable: str, given: Any) -> tuple[Hashable, ...]:
    """The state names given for ``variable`` as a tuple, checked: each one hashable, not a
    marker of a missing cell or empty text, and none repeated.

    Raises:
        ValueError: naming the variable and the offending state.
    """
    if isinstance(given, (str, bytes)) or not isinstance(given, Iterable):
        raise ValueError(
            f"the states of variable {variable!r} must be a sequence of state names, not {given!r}"
        )
    names = tuple(given)
    seen: dict[Hashable, int] = {}
    for i, s in enumerate(names):
        problem = _missing_name(s)
        if problem:
            raise ValueError(
                f"state {s!r} of variable {variable!r} (position {i}) is not a valid state "
                f"name: {problem}; name the state with non-empty text or a number"
            )
        try:
            first = seen.setdefault(s, i)
        except TypeError:
            raise ValueError(
                f"state {s!r} of variable {variable!r} (position {i}) is not hashable; state "
                "names must be text or numbers"
            ) from None
        if first != i:
            raise ValueError(
                f"variable {variable!r} has repeated state names {names}: {s!r} at positions "
                f"{first} and {i} (equal values name one state); give distinct names"
            )
    return names


def _topological_order(dag: nx.DiGraph, parents: Mapping[str, tuple[str, ...]]) -> tuple[str, ...]:
    """The variables in topological order, ties broken by the graph's node order (as
    ``nx.lexicographical_topological_sort`` with that key, in one pass that also finds cycles).

    Raises:
        ValueError: naming a cycle of the graph.
    """
    index = {v: i for i, v in enumerate(dag.nodes)}
    waiting = {v: len(ps) for v, ps in parents.items()}
    children: dict[str, list[str]] = {v: [] for v in index}
    for v, ps in parents.items():
        for u in ps:
            children[u].append(v)
    ready = [(index[v], v) for v, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, v = heapq.heappop(ready)
        order.append(v)
        for c in children[v]:
            waiting[c] -= 1
            if waiting[c] == 0:
                heapq.heappush(ready, (index[c], c))
    if len(order) < len(index):
        cycle = [u for u, _ in nx.find_cycle(dag)]
        raise ValueError(f"the graph has a cycle: {' -> '.join(map(str, [*cycle, cycle[0]]))}")
    return tuple(order)


def _checked_table(
    variable: str,
    table: np.ndarray,
    parents: tuple[str, ...],
    states: Mapping[str, tuple[Hashable, ...]],
) -> np.ndarray:
    """The table, checked (shape, finite, non-negative, rows summing to one within
    :data:`CPT_TOLERANCE`), with rows that sum to one only within the tolerance divided by their
    sums so that the network is a distribution; rows already within rounding of one are left
    bit for bit (idempotent). A valid table costs three reductions; the others only an error."""
    expected = (*(len(states[u]) for u in parents), len(states[variable]))
    if table.shape != expected:
        axes = ", ".join(f"{u}={len(states[u])}" for u in (*parents, variable))
        raise ValueError(
            f"CPT of {variable!r} has shape {tuple(table.shape)}, expected {expected} "
            f"(axes: {axes})"
        )
    sums = table.sum(-1, keepdims=True)
    error = np.abs(sums - 1)
    # NaN compares false: a non-finite entry makes a sum NaN or infinite and fails here too
    if not (table.min() >= 0 and error.max() <= CPT_TOLERANCE):
        if not np.isfinite(table).all():
            raise ValueError(f"CPT of {variable!r} has non-finite entries")
        if (table < 0).any():
            raise ValueError(f"CPT of {variable!r} has negative entries (min {table.min():g})")
        worst = np.unravel_index(int(error.argmax()), error.shape[:-1]) if parents else ()
        where = ", ".join(f"{u}={states[u][i]}" for u, i in zip(parents, worst, strict=True))
        raise ValueError(
            f"CPT of {variable!r} does not sum to one over {variable!r}: the row "
            f"{('given ' + where) if where else ''} sums to {float(sums[tuple(worst)][0]):.6g} "
            f"(tolerance {CPT_TOLERANCE:g})"
        )
    off = error > 1e-12
    return np.where(off, table / sums, table) if off.any() else table
