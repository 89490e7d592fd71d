"""Conditional independencies a DAG implies: d-separation, Markov blankets, separators, I-maps."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx

from ppdgm.graph.dag import as_dag, compiled

__all__ = [
    "Independence",
    "active_trail",
    "active_trails",
    "d_separated",
    "format_trail",
    "implied_independencies",
    "is_imap",
    "local_independencies",
    "markov_blanket",
    "markov_equivalent",
    "minimal_d_separator",
]

#: What the functions of this module accept as a graph: a ``networkx.DiGraph`` (including one
#: from :func:`ppdgm.inspect.dependency_graph`) or a :class:`~ppdgm.bn.DiscreteBN`.
GraphLike = Any


@dataclass(frozen=True, eq=False)
class Independence:
    """The statement ``xs ⊥ ys | given``: ``xs`` and ``ys`` are independent given ``given``.

    Each field is a frozenset of variable names (a single name is accepted too). Statements are
    symmetric: ``Independence("a", "b") == Independence("b", "a")``.

    Example:
        >>> Independence("xray", {"smoke", "bronc"}, "either")
        xray ⊥ bronc, smoke | either
    """

    xs: frozenset[Hashable]
    ys: frozenset[Hashable]
    given: frozenset[Hashable] = frozenset()

    def __post_init__(self) -> None:
        for field in ("xs", "ys", "given"):
            value = getattr(self, field)
            names = frozenset((value,) if isinstance(value, str) else value)
            object.__setattr__(self, field, names)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Independence):
            return NotImplemented
        return self.given == other.given and {self.xs, self.ys} == {other.xs, other.ys}

    def __hash__(self) -> int:
        return hash((frozenset((self.xs, self.ys)), self.given))

    def __repr__(self) -> str:
        def names(s: frozenset[Hashable]) -> str:
            return ", ".join(sorted(map(str, s)))

        text = f"{names(self.xs)} ⊥ {names(self.ys)}"
        return f"{text} | {names(self.given)}" if self.given else text


def d_separated(
    g: GraphLike,
    xs: Hashable | Iterable[Hashable],
    ys: Hashable | Iterable[Hashable],
    given: Hashable | Iterable[Hashable] = (),
) -> bool:
    """Whether ``xs`` and ``ys`` are d-separated given ``given`` in the DAG ``g``.

    True means every distribution that factorizes over ``g`` has ``xs ⊥ ys | given``. The answer
    comes from a Bayes-ball reachability search (Koller and Friedman, Algorithm 3.1) over bit
    masks; the set reachable from ``(xs, given)`` is memoized for frozen graphs (networks,
    dependency graphs), so asking about many ``ys`` for one ``(xs, given)`` costs one search.

    Arguments:
        g: a DAG, a network or a dependency graph.
        xs, ys, given: a variable name or a collection of names; the three must be disjoint.

    Raises:
        ValueError: for an unknown name, overlapping sets, an empty ``xs`` or ``ys``, or a cycle.

    Example:
        >>> import networkx as nx
        >>> collider = nx.DiGraph([("a", "c"), ("b", "c")])
        >>> d_separated(collider, "a", "b"), d_separated(collider, "a", "b", given="c")
        (True, False)
    """
    return compiled(g).separated(xs, ys, given)


def active_trails(
    g: GraphLike, xs: Hashable | Iterable[Hashable], given: Hashable | Iterable[Hashable] = ()
) -> dict[Hashable, set[Hashable]]:
    """For each ``x`` in ``xs``, the variables d-connected to it given ``given``.

    Each set holds the nodes ``y`` (not ``x`` itself, not in ``given``) joined to ``x`` by an
    active trail, i.e. exactly those for which ``d_separated(g, x, y, given)`` is False.

    Example:
        >>> import networkx as nx
        >>> chain = nx.DiGraph([("a", "b"), ("b", "c")])
        >>> sorted(active_trails(chain, "a")["a"]), active_trails(chain, "a", given="b")
        (['b', 'c'], {'a': set()})
    """
    c = compiled(g)
    return {x: c.reachable(x, given) - {x} for x in sorted(c.names(xs, "xs"), key=c.index.get)}


def active_trail(
    g: GraphLike, x: Hashable, y: Hashable, given: Hashable | Iterable[Hashable] = ()
) -> list[Hashable] | None:
    """A shortest active trail from ``x`` to ``y`` given ``given``, or None if they are d-separated.

    A shortest active walk never repeats a node (cutting a loop out of it keeps it active), so
    the breadth-first Bayes-ball search returns a trail: consecutive nodes are adjacent, every
    collider on it is in ``given`` or has a descendant there, and no other node is in ``given``.

    Example:
        >>> import networkx as nx
        >>> g = nx.DiGraph([("a", "c"), ("b", "c"), ("c", "d")])
        >>> active_trail(g, "a", "b", given="d")
        ['a', 'c', 'b']
    """
    c = compiled(g)
    (x,), (y,) = c.names([x], "x"), c.names([y], "y")
    z = c.names(given, "given")
    c.check_disjoint({"x": {x}, "y": {y}, "given": z})
    return c.trail(x, y, z)


def format_trail(g: GraphLike, trail: Sequence[Hashable]) -> str:
    """A trail written with the direction of each edge.

    Example:
        >>> import networkx as nx
        >>> format_trail(nx.DiGraph([("a", "c"), ("b", "c")]), ["a", "c", "b"])
        'a -> c <- b'
    """
    dag = as_dag(g)
    parts = [str(trail[0])] if trail else []
    for u, v in itertools.pairwise(trail):
        if not (dag.has_edge(u, v) or dag.has_edge(v, u)):
            raise ValueError(f"{u!r} and {v!r} are not adjacent, so the trail is not one")
        parts.append(f"{'->' if dag.has_edge(u, v) else '<-'} {v}")
    return " ".join(parts)


def markov_blanket(g: GraphLike, v: Hashable) -> set[Hashable]:
    """The Markov blanket of ``v``: its parents, its children and its children's other parents.

    Given its blanket, ``v`` is d-separated from every other variable.

    Example:
        >>> from ppdgm.bn import asia
        >>> sorted(markov_blanket(asia(), "either"))
        ['bronc', 'dysp', 'lung', 'tub', 'xray']
    """
    c = compiled(g)
    (v,) = c.names([v], "v")
    return c.blanket(v)


def minimal_d_separator(
    g: GraphLike,
    xs: Hashable | Iterable[Hashable],
    ys: Hashable | Iterable[Hashable],
    *,
    included: Iterable[Hashable] = (),
    restricted: Iterable[Hashable] | None = None,
) -> set[Hashable] | None:
    """A minimal set that d-separates ``xs`` from ``ys``, or None if no set does.

    Minimal means that no proper subset (containing ``included``) separates; the search is
    networkx's ``find_minimal_d_separator`` (van der Zander et al., 2019). No separator exists
    when some ``x`` and ``y`` are adjacent.

    Arguments:
        g: a DAG, a network or a dependency graph.
        xs, ys: the sets to separate.
        included: variables the separator must contain.
        restricted: variables the separator may use (all others if None).

    Example:
        >>> from ppdgm.bn import asia
        >>> sorted(minimal_d_separator(asia(), "smoke", "dysp"))
        ['bronc', 'lung']
    """
    c = compiled(g)
    x, y = c.names(xs, "xs"), c.names(ys, "ys")
    inc = c.names(included, "included")
    c.check_disjoint({"xs": x, "ys": y, "included": inc})
    allowed = set(c.nodes) - x - y if restricted is None else set(c.names(restricted, "restricted"))
    found = nx.find_minimal_d_separator(as_dag(g), x, y, included=inc, restricted=allowed | inc)
    return None if found is None else set(found)


def local_independencies(g: GraphLike) -> list[Independence]:
    """Each variable is independent of its non-descendants given its parents (the local Markov
    property); variables with nothing to be independent of are left out.

    Example:
        >>> import networkx as nx
        >>> local_independencies(nx.DiGraph([("a", "c"), ("b", "c"), ("c", "d")]))
        [a ⊥ b, b ⊥ a, d ⊥ a, b | c]
    """
    dag = as_dag(g)
    compiled(dag)  # rejects cycles
    statements = []
    for v in dag:
        parents = set(dag.predecessors(v))
        others = set(dag) - nx.descendants(dag, v) - parents - {v}
        if others:
            statements.append(Independence(v, others, parents))
    return statements


def implied_independencies(g: GraphLike, max_conditioning: int = 2) -> list[Independence]:
    """Every ``x ⊥ y | Z`` with ``|Z| <= max_conditioning`` that d-separation implies.

    Pairs are unordered (``x`` before ``y`` in the graph's node order), sets ``Z`` of growing
    size. The number of candidate statements grows as ``n^(k+2)``, hence the bound.

    Example:
        >>> import networkx as nx
        >>> implied_independencies(nx.DiGraph([("a", "b"), ("b", "c")]), max_conditioning=1)
        [a ⊥ c | b]
    """
    if not isinstance(max_conditioning, int) or max_conditioning < 0:
        raise ValueError(f"max_conditioning must be a non-negative integer, not {max_conditioning}")
    c = compiled(g)
    order = c.index
    found = []
    for size in range(max_conditioning + 1):
        for z in itertools.combinations(c.nodes, size):
            zset = frozenset(z)
            for i, x in enumerate(c.nodes):
                if x in zset:
                    continue
                reach = c.reachable(x, zset)
                found.extend(
                    Independence(x, y, zset)
                    for y in c.nodes[i + 1 :]
                    if y not in zset and y not in reach
                )

    def position(s: Independence) -> tuple[int, ...]:
        (x,), (y,) = s.xs, s.ys
        return (len(s.given), order[x], order[y], *sorted(order[v] for v in s.given))

    found.sort(key=position)
    return found


def is_imap(g: GraphLike, h: GraphLike) -> bool:
    """Whether ``g`` is an I-map of ``h``: every independence ``g`` implies also holds in ``h``.

    Checks the local Markov statements of ``g`` in ``h``: d-separation in ``h`` is a
    semi-graphoid, and a semi-graphoid satisfying a DAG's local statements satisfies all its
    d-separations (Verma and Pearl, 1988). Adding edges to a DAG keeps it an I-map.

    Raises:
        ValueError: when the two graphs have different variables.

    Example:
        >>> import networkx as nx
        >>> chain = nx.DiGraph([("a", "b"), ("b", "c")])
        >>> complete = nx.DiGraph([("a", "b"), ("b", "c"), ("a", "c")])
        >>> is_imap(complete, chain), is_imap(chain, complete)
        (True, False)
    """
    dg, ch = as_dag(g), compiled(h)
    _check_same_nodes(dg, as_dag(h))
    return all(ch.separated(s.xs, s.ys, s.given) for s in local_independencies(dg))


def markov_equivalent(g: GraphLike, h: GraphLike) -> bool:
    """Whether two DAGs imply the same independencies: the same skeleton and the same
    v-structures ``a -> c <- b`` with ``a``, ``b`` not adjacent (Verma and Pearl, 1990).

    Example:
        >>> import networkx as nx
        >>> forward = nx.DiGraph([("a", "b"), ("b", "c")])
        >>> backward = nx.DiGraph([("c", "b"), ("b", "a")])
        >>> collider = nx.DiGraph([("a", "b"), ("c", "b")])
        >>> markov_equivalent(forward, backward), markov_equivalent(forward, collider)
        (True, False)
    """
    dg, dh = as_dag(g), as_dag(h)
    compiled(dg), compiled(dh)  # rejects cycles
    _check_same_nodes(dg, dh)
    return _skeleton(dg) == _skeleton(dh) and _v_structures(dg) == _v_structures(dh)


def _skeleton(g: nx.DiGraph) -> set[frozenset[Hashable]]:
    return {frozenset(e) for e in g.edges}


def _v_structures(g: nx.DiGraph) -> set[tuple[frozenset[Hashable], Hashable]]:
    return {
        (frozenset((a, b)), c)
        for c in g
        for a, b in itertools.combinations(g.predecessors(c), 2)
        if not g.has_edge(a, b) and not g.has_edge(b, a)
    }


def _check_same_nodes(g: nx.DiGraph, h: nx.DiGraph) -> None:
    if set(g) != set(h):
        only_g = sorted(map(str, set(g) - set(h)))
        only_h = sorted(map(str, set(h) - set(g)))
        raise ValueError(
            f"the graphs have different variables: only in the first {only_g}, "
            f"only in the second {only_h}"
        )
