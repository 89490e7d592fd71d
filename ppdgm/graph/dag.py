"""A DAG compiled to bit masks, with the Bayes-ball search behind d-separation."""

from __future__ import annotations

import weakref
from collections.abc import Hashable, Iterable, Iterator
from typing import Any
from weakref import WeakKeyDictionary

import networkx as nx

__all__ = ["CompiledDAG", "as_dag", "clear_caches", "compiled", "describe_names"]

#: Reachable sets remembered per frozen graph before the memo is cleared.
MEMO_SIZE = 65536

_SETS = frozenset((set, frozenset, list))

_COMPILED: WeakKeyDictionary[nx.DiGraph, CompiledDAG] = WeakKeyDictionary()
#: the key of the compiled form in a mutable graph's ``__networkx_cache__``
_CACHE_KEY = "ppdgm_compiled_dag"
# the same, keyed by the identity of what callers pass (a network or a graph): one dict lookup
_BY_ID: dict[int, tuple[weakref.ref[Any], CompiledDAG, dict[str, Any] | None]] = {}


def network_dag(obj: Any) -> nx.DiGraph | None:
    """The DAG of a network (an object whose ``dag`` attribute is a ``networkx.DiGraph``, as
    :class:`ppdgm.bn.DiscreteBN`'s is); None for anything else."""
    dag = getattr(obj, "dag", None)
    return dag if isinstance(dag, nx.DiGraph) and not isinstance(obj, nx.Graph) else None


def as_dag(g: Any) -> nx.DiGraph:
    """The directed graph behind a DAG, a network or a dependency graph."""
    dag = network_dag(g)
    if dag is not None:
        return dag
    if isinstance(g, nx.DiGraph) and not g.is_multigraph():
        return g
    if isinstance(g, nx.Graph):
        raise ValueError(f"expected a directed acyclic graph, got an undirected {type(g).__name__}")
    raise TypeError(f"expected a networkx.DiGraph or a DiscreteBN, not {type(g).__name__}")


def compiled(g: Any) -> CompiledDAG:
    """The compiled form of ``g``; cached for networks and frozen graphs (dependency graphs),
    whose structure cannot change, and for a mutable graph until it changes: in the graph's
    ``__networkx_cache__``, which networkx empties at every change made through its methods."""
    hit = _BY_ID.get(id(g))
    if hit is not None and hit[0]() is g and (hit[2] is None or hit[2].get(_CACHE_KEY) is hit[1]):
        return hit[1]
    dag = as_dag(g)
    cache = None
    if not nx.is_frozen(dag):
        # networkx (3.3 and later) empties a graph's __networkx_cache__ whenever its methods
        # change the graph: the compiled form kept there is current while it is there
        cache = dag.__networkx_cache__
        found = cache.get(_CACHE_KEY)
        if found is None:
            found = cache[_CACHE_KEY] = CompiledDAG(dag)
    else:
        found = _COMPILED.get(dag)
        if found is None:
            found = _COMPILED[dag] = CompiledDAG(dag)
    key = id(g)
    _BY_ID[key] = (weakref.ref(g, lambda _, key=key: _BY_ID.pop(key, None)), found, cache)
    return found


def clear_caches() -> None:
    """Forgets every compiled graph and memoized search (for benchmarks measuring cold starts)."""
    _COMPILED.clear()
    _BY_ID.clear()


def describe_names(names: Iterable[Hashable], limit: int = 12) -> str:
    """A short listing of names for error messages."""
    names = [str(v) for v in names]
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _bits(mask: int) -> Iterator[int]:
    while mask:
        low = mask & -mask
        yield low.bit_length() - 1
        mask ^= low


class CompiledDAG:
    """A DAG as integer bit masks: bit ``i`` stands for ``nodes[i]``.

    Why not ``nx.is_d_separator``: it builds node sets and ancestral subgraphs for every query
    and is slower per query than pgmpy's own search. Parents, children and ancestors as Python
    integers make each step of the Bayes-ball search a few machine-word operations, and the
    set reachable from ``(xs, given)`` is memoized, so a batch of queries that share ``xs`` and
    ``given`` (Markov blankets, implied independencies) costs one search.

    Raises:
        ValueError: when the graph has a cycle (naming it).
    """

    def __init__(self, graph: nx.DiGraph) -> None:
        # no reference to ``graph`` is kept: the caches are weak in the graph
        self.nodes: tuple[Hashable, ...] = tuple(graph)
        self.index: dict[Hashable, int] = {v: i for i, v in enumerate(self.nodes)}
        index = self.index
        bit = [1 << i for i in range(len(self.nodes))]
        self.bit: dict[Hashable, int] = dict(zip(self.nodes, bit, strict=True))
        # the raw adjacency dicts: graph.succ[v] would build a view object per node
        succ, pred = graph._succ, graph._pred
        self.parents = [sum([bit[index[u]] for u in pred[v]]) for v in self.nodes]
        self.children = [sum([bit[index[u]] for u in succ[v]]) for v in self.nodes]
        self._check_acyclic(graph, [[index[u] for u in succ[v]] for v in self.nodes])
        self._descendants: list[int | None] = [None] * len(self.nodes)
        self._memo: dict[tuple[Any, Any], tuple[int, int]] = {}

    def forget(self) -> None:
        """Empties the memos of searches and descendant sets (for benchmarks of single queries)."""
        self._descendants = [None] * len(self.nodes)
        self._memo.clear()

    def _check_acyclic(self, graph: nx.DiGraph, children: list[list[int]]) -> None:
        """Kahn's topological sort; names a cycle if it cannot finish."""
        indegree = [p.bit_count() for p in self.parents]
        ready = [i for i, d in enumerate(indegree) if d == 0]
        done = 0
        while ready:
            i = ready.pop()
            done += 1
            for j in children[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    ready.append(j)
        if done < len(self.nodes):
            cycle = [u for u, _ in nx.find_cycle(graph)]
            path = " -> ".join(map(str, [*cycle, cycle[0]]))
            raise ValueError(f"the graph is not acyclic: it has the cycle {path}")

    def descendants(self, i: int) -> int:
        """The descendants of node ``i``, itself included (computed on first use)."""
        found = self._descendants[i]
        if found is None:
            children = self.children
            found = frontier = 1 << i
            while frontier:
                grown = 0
                while frontier:
                    low = frontier & -frontier
                    grown |= children[low.bit_length() - 1]
                    frontier ^= low
                frontier = grown & ~found
                found |= grown
            self._descendants[i] = found
        return found

    # --------------------------------------------------------------------------- names
    def names(self, arg: Any, role: str) -> frozenset[Hashable]:
        """The set of names ``arg`` denotes (one name or a collection), all in the graph."""
        key = self._key(arg)
        names = key if isinstance(key, frozenset) else frozenset((key,))
        unknown = [v for v in names if v not in self.index]
        if unknown:
            raise ValueError(
                f"unknown variable(s) {sorted(map(str, unknown))} in {role}; "
                f"the graph has {describe_names(self.nodes)}"
            )
        return names

    def _key(self, arg: Any) -> Any:
        if isinstance(arg, str):
            return arg
        if type(arg) in _SETS:
            return frozenset(arg)
        try:
            if arg in self.index:
                return arg
        except TypeError:
            pass
        if isinstance(arg, Iterable):
            return frozenset(arg)
        return arg

    def mask(self, names: Iterable[Hashable]) -> int:
        index = self.index
        return sum(1 << index[v] for v in names)

    def unmask(self, mask: int) -> set[Hashable]:
        return {self.nodes[i] for i in _bits(mask)}

    @staticmethod
    def check_disjoint(sets: dict[str, frozenset[Hashable] | set[Hashable]]) -> None:
        """Rejects empty query sets and names that appear in two roles."""
        roles = list(sets)
        for role in roles:
            if not sets[role] and role in ("x", "xs", "y", "ys", "v"):
                raise ValueError(f"{role} is empty: name at least one variable")
        for i, a in enumerate(roles):
            for b in roles[i + 1 :]:
                both = sets[a] & sets[b]
                if both:
                    raise ValueError(
                        f"variable(s) {sorted(map(str, both))} appear in both {a} and {b}; "
                        "the sets must be disjoint"
                    )

    # --------------------------------------------------------------------------- queries
    def separated(self, xs: Any, ys: Any, given: Any) -> bool:
        """Whether ``xs`` and ``ys`` are d-separated given ``given``."""
        # the common argument types inline: this line runs for every query
        key = (
            xs if type(xs) is str else self._key(xs),
            frozenset(given) if type(given) in _SETS else self._key(given),
        )
        hit = self._memo.get(key) or self._search(*key)
        bit = self.bit.get(ys) if type(ys) is str else None
        if bit is None or hit[0] & bit:  # a set, an unknown name or an overlap: the slow path
            y = self.names(ys, "ys")
            x, z = self.names(key[0], "xs"), self.names(key[1], "given")
            self.check_disjoint({"xs": x, "ys": y, "given": z})
            return not hit[1] & self.mask(y)
        return not hit[1] & bit

    def reachable(self, xs: Any, given: Any) -> set[Hashable]:
        """The nodes joined to some ``x`` by an active trail given ``given`` (with ``xs``)."""
        key = (self._key(xs), self._key(given))
        hit = self._memo.get(key) or self._search(*key)
        return self.unmask(hit[1])

    def _search(self, xkey: Any, zkey: Any) -> tuple[int, int]:
        x = xkey if isinstance(xkey, frozenset) else (xkey,)
        z = zkey if isinstance(zkey, frozenset) else (zkey,)
        index = self.index
        if not x or not index.keys() >= {*x, *z}:
            self.check_disjoint({"xs": self.names(xkey, "xs"), "given": self.names(zkey, "given")})
        xmask, zmask = self.mask(x), self.mask(z)
        if xmask & zmask:
            self.check_disjoint({"xs": frozenset(x), "given": frozenset(z)})
        found = (xmask | zmask, self._bayes_ball(xmask, zmask))
        if len(self._memo) >= MEMO_SIZE:
            self._memo.clear()
        self._memo[(xkey, zkey)] = found
        return found

    def _bayes_ball(self, xmask: int, zmask: int) -> int:
        """Nodes reachable from ``xmask`` by active trails given ``zmask`` (Koller and Friedman,
        Algorithm 3.1), a breadth-first search over (node, direction) states as bit masks.

        ``up`` holds nodes entered from a child (or a start node): unless observed, the ball
        passes to parents and children. ``down`` holds nodes entered from a parent: unless
        observed it passes on to children, and at a collider that is observed or has an
        observed descendant it bounces back to the parents.
        """
        parents, children, descendants = self.parents, self.children, self._descendants
        open_ = ~zmask
        seen_up = seen_down = 0
        up, down = xmask, 0
        # the bit loops are written out: this is the hot path of every query
        while up or down:
            seen_up |= up
            seen_down |= down
            new_up = new_down = 0
            m = up & open_
            while m:
                low = m & -m
                i = low.bit_length() - 1
                new_up |= parents[i]
                new_down |= children[i]
                m ^= low
            m = down
            while m:
                low = m & -m
                i = low.bit_length() - 1
                m ^= low
                if low & zmask:  # an observed collider
                    new_up |= parents[i]
                    continue
                new_down |= children[i]
                below = descendants[i]
                if below is None:
                    below = self.descendants(i)
                if below & zmask:  # a collider with an observed descendant
                    new_up |= parents[i]
            up = new_up & ~seen_up
            down = new_down & ~seen_down
        return (seen_up | seen_down) & open_

    def blanket(self, v: Hashable) -> set[Hashable]:
        i = self.index[v]
        mask = self.parents[i] | self.children[i]
        for j in _bits(self.children[i]):
            mask |= self.parents[j]
        return self.unmask(mask & ~(1 << i))

    def trail(self, x: Hashable, y: Hashable, given: frozenset[Hashable]) -> list[Hashable] | None:
        """A shortest active trail from ``x`` to ``y`` (the search of :meth:`_bayes_ball` with
        each state's predecessor kept), or None."""
        zmask = self.mask(given)
        start, goal = self.index[x], self.index[y]
        before: dict[tuple[int, bool], tuple[int, bool] | None] = {(start, True): None}
        frontier = [(start, True)]
        while frontier:
            following = []
            for state in frontier:
                i, entered_from_child = state
                if i == goal:
                    path = []
                    at: tuple[int, bool] | None = state
                    while at is not None:
                        path.append(self.nodes[at[0]])
                        at = before[at]
                    return path[::-1]
                observed = (zmask >> i) & 1
                moves: list[tuple[int, bool]] = []
                if not observed:
                    moves += [(j, False) for j in _bits(self.children[i])]
                    if entered_from_child:
                        moves += [(j, True) for j in _bits(self.parents[i])]
                if not entered_from_child and self.descendants(i) & zmask:
                    moves += [(j, True) for j in _bits(self.parents[i])]
                for move in moves:
                    if move not in before:
                        before[move] = state
                        following.append(move)
            frontier = following
        return None
