"""The dependency graph of any Pyro program, and drawings of graphs, networks and programs."""

from __future__ import annotations

import itertools
import shutil
import warnings
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, overload

import graphviz
import networkx as nx
import pyro
import pyro.distributions as dist
import pyro.poutine as poutine
import torch
from pyro.infer.inspect import TrackProvenance, get_provenance, is_sample_site
from pyro.poutine.util import site_is_subsample

from ppdgm.graph.dag import as_dag, compiled, network_dag
from ppdgm.graph.independence import format_trail

__all__ = ["ROLES", "GraphvizNotFound", "dependency_graph", "render", "to_graphviz"]

#: How :func:`render` draws highlighted nodes, by role; later roles win where a node has several.
ROLES: dict[str, dict[str, str]] = {
    "trail": {"color": "#d94801", "penwidth": "2.5"},
    "blanket": {"style": "filled,bold", "fillcolor": "#a1d99b", "color": "#006d2c"},
    "highlight": {"style": "filled,bold", "fillcolor": "#fdd0a2", "color": "#d94801"},
    "given": {"style": "filled,bold", "fillcolor": "#bdbdbd", "color": "#252525"},
    "y": {"style": "filled,bold", "fillcolor": "#fc9272", "color": "#a50f15"},
    "x": {"style": "filled,bold", "fillcolor": "#9ecae1", "color": "#08519c"},
}
_OBSERVED = {"style": "filled", "fillcolor": "#e0e0e0"}
_FORMATS = ("svg", "png", "pdf")


class GraphvizNotFound(UserWarning):
    """The graphviz ``dot`` program is missing, so :func:`render` wrote DOT source instead."""


@torch.enable_grad()  # as in pyro.infer.inspect.get_dependencies: provenance needs grad mode on
def dependency_graph(model: Callable[..., Any], *args: Any, **kwargs: Any) -> nx.DiGraph:
    """The DAG of a Pyro program: its sample sites and their direct dependencies.

    The program runs once under Pyro's provenance tracking (the machinery of
    ``pyro.infer.inspect.get_dependencies``); site ``u -> v`` is an edge when ``v``'s log-density
    depends on the value ``u``'s ``pyro.sample`` returned. Unlike ``get_dependencies``'s prior
    dependencies, observed sites are parents too, so a network's program with every column
    observed still has the network's edges. ``pyro.deterministic`` and ``Delta`` sites are
    elided: a site that reads a deterministic value depends on the sites it was computed from.
    Values used without passing through ``pyro.sample`` (the raw ``obs`` tensor) carry no
    dependency.

    Arguments:
        model: a Pyro program.
        *args, **kwargs: its arguments.

    Returns:
        A frozen DAG in program order. Node attributes: ``observed`` (bool), ``distribution``
        (name of the site's distribution, wrappers removed), ``plates`` (names of the enclosing
        vectorized plates, outermost first), ``discrete`` (bool), ``shape`` (of the value) and
        ``event_shape``.
        Graph attributes: ``name``, ``plates`` (plate name to full size, before any
        subsampling), ``elided`` (the
        deterministic and Delta sites left out).

    Raises:
        ValueError: when running the program raises, naming the last site it reached.

    Example:
        >>> import torch, pyro, pyro.distributions as dist
        >>> def model(x):
        ...     mu = pyro.sample("mu", dist.Normal(0.0, 1.0))
        ...     with pyro.plate("data", len(x)):
        ...         pyro.sample("x", dist.Normal(mu, 1.0), obs=x)
        >>> g = dependency_graph(model, torch.zeros(3))
        >>> list(g.edges), g.nodes["x"]
        ([('mu', 'x')], {'observed': True, 'distribution': 'Normal', 'plates': ('data',), ...})
    """
    if not callable(model):
        raise TypeError(f"model must be a callable Pyro program, not {type(model).__name__}")
    name = getattr(model, "__qualname__", None) or type(model).__name__
    tracer = poutine.trace(model)
    with torch.random.fork_rng(), torch.no_grad(), pyro.validation_enabled(False):
        with TrackProvenance():
            try:
                tracer.get_trace(*args, **kwargs)
            except Exception as e:
                reached = [n for n, s in tracer.msngr.trace.nodes.items() if s["type"] == "sample"]
                where = f"after site {reached[-1]!r}" if reached else "before its first site"
                message = str(e).split("\nTrace Shapes:")[0].strip()
                raise ValueError(
                    f"tracing the program {name!r} failed {where}: {type(e).__name__}: {message}"
                ) from e
    trace = tracer.msngr.trace
    sites = [msg for msg in trace.nodes.values() if is_sample_site(msg)]
    kept = {msg["name"] for msg in sites}
    elided = [
        n
        for n, msg in trace.nodes.items()
        if msg["type"] == "sample" and not site_is_subsample(msg) and n not in kept
    ]
    graph = nx.DiGraph(name=name, plates={}, elided=elided)
    for msg in sites:
        frames = [f for f in msg["cond_indep_stack"] if f.vectorized]
        graph.graph["plates"].update({f.name: f.full_size or f.size for f in frames})
        graph.add_node(
            msg["name"],
            observed=bool(msg["is_observed"]),
            distribution=_distribution_name(msg["fn"]),
            plates=tuple(f.name for f in frames),
            discrete=_is_discrete(msg["fn"]),
            shape=tuple(msg["value"].shape),
            event_shape=tuple(msg["fn"].event_shape),
        )
    for i, downstream in enumerate(sites):
        upstreams = [u["name"] for u in sites[:i] if u["value"].numel()]
        if not upstreams:
            continue
        provenance = get_provenance(downstream["fn"].log_prob(downstream["value"]))
        graph.add_edges_from((u, downstream["name"]) for u in upstreams if u in provenance)
    return nx.freeze(graph)


def _distribution_name(fn: Any) -> str:
    while isinstance(fn, (dist.Independent, dist.ExpandedDistribution, dist.MaskedDistribution)):
        fn = fn.base_dist
    return type(fn).__name__


def _is_discrete(fn: Any) -> bool:
    try:
        return bool(fn.support.is_discrete)
    except (AttributeError, NotImplementedError):
        return False


def to_graphviz(
    obj: Any, *, highlight: Iterable[Hashable] | Mapping[str, Iterable[Hashable]] | None = None
) -> graphviz.Digraph:
    """The graphviz drawing of a network, a DAG, a dependency graph or a program (see
    :func:`render`)."""
    if network_dag(obj) is not None:
        bn, dag = obj, obj.dag
    elif callable(obj) and not isinstance(obj, nx.Graph):
        bn, dag = None, dependency_graph(obj)
    else:
        bn, dag = None, as_dag(obj)
    c = compiled(dag)  # rejects cycles
    roles = _roles(highlight)
    for role, names in roles.items():
        c.names(names, f"highlight[{role!r}]")
    ids = {v: f"n{i}" for i, v in enumerate(dag)}
    drawing = graphviz.Digraph(name=str(dag.graph.get("name", getattr(obj, "name", "G"))))
    drawing.attr(rankdir="TB")
    drawing.attr("node", shape="ellipse", fontname="Helvetica")
    legend = [
        f"{role}: {format_trail(dag, names) if role == 'trail' else ', '.join(map(str, names))}"
        for role, names in roles.items()
        if names
    ]
    if legend:
        drawing.attr(label="\\n".join(reversed(legend)), labelloc="b", fontname="Helvetica")

    def node(into: graphviz.Digraph, v: Hashable) -> None:
        attrs = dict(_OBSERVED) if dag.nodes[v].get("observed") else {}
        for role, style in ROLES.items():
            if v in roles.get(role, ()):
                attrs.update(style)
        into.node(ids[v], label=_label(bn, dag, v), **attrs)

    plates = {v: tuple(dag.nodes[v].get("plates", ())) for v in dag}
    _nest(drawing, (), plates, dict(dag.graph.get("plates", {})), node, [0])
    trail = list(roles.get("trail", ()))
    on_trail = {frozenset(e) for e in itertools.pairwise(trail)}
    for u, v in dag.edges:
        attrs = ROLES["trail"] if frozenset((u, v)) in on_trail else {}
        drawing.edge(ids[u], ids[v], **attrs)
    return drawing


def _roles(
    highlight: Iterable[Hashable] | Mapping[str, Iterable[Hashable]] | None,
) -> dict[str, list[Hashable]]:
    if highlight is None:
        return {}
    if not isinstance(highlight, Mapping):
        highlight = {"highlight": highlight}
    unknown = [r for r in highlight if r not in ROLES]
    if unknown:
        raise ValueError(f"unknown highlight role(s) {unknown}; the roles are {list(ROLES)}")

    def listed(names: Any) -> list[Hashable]:
        return [names] if isinstance(names, str) else list(names)

    return {role: listed(highlight[role]) for role in ROLES if role in highlight}


def _label(bn: Any, dag: nx.DiGraph, v: Hashable) -> str:
    if bn is not None:
        return f"{v}\\nCPT {'×'.join(str(n) for n in bn.cpt(v).shape)}"
    distribution = dag.nodes[v].get("distribution")
    return f"{v}\\n{distribution}" if distribution else str(v)


def _nest(
    into: graphviz.Digraph,
    prefix: tuple[str, ...],
    plates: dict[Hashable, tuple[str, ...]],
    sizes: dict[str, int],
    node: Callable[[graphviz.Digraph, Hashable], None],
    counter: list[int],
) -> None:
    """Draws the nodes whose plates are ``prefix``, then one cluster per plate nested in it."""
    for v, path in plates.items():
        if path == prefix:
            node(into, v)
    inner = dict.fromkeys(
        p[len(prefix)]
        for p in plates.values()
        if p[: len(prefix)] == prefix and len(p) > len(prefix)
    )
    for plate in inner:
        counter[0] += 1
        with into.subgraph(name=f"cluster_{counter[0]}") as cluster:
            size = sizes.get(plate)
            cluster.attr(
                label=f"{plate}" + (f" [{size}]" if size is not None else ""),
                labeljust="r",
                labelloc="b",
                style="rounded",
            )
            _nest(cluster, (*prefix, plate), plates, sizes, node, counter)


@overload
def render(obj: Any, path: None = None, *, highlight: Any = None) -> graphviz.Digraph: ...
@overload
def render(obj: Any, path: str | Path, *, highlight: Any = None) -> Path: ...


def render(
    obj: Any,
    path: str | Path | None = None,
    *,
    highlight: Sequence[Hashable] | Mapping[str, Iterable[Hashable]] | None = None,
) -> graphviz.Digraph | Path:
    """Draws a network, a DAG, a dependency graph or a program (traced without arguments; pass
    ``dependency_graph(model, *args)`` for one that takes some).

    Plates are drawn as clusters labelled with their size, observed sites shaded, and each
    label carries the site's distribution or the variable's CPT shape.

    Arguments:
        obj: what to draw.
        path: where to write: ``.svg``, ``.png`` or ``.pdf`` (rendered by graphviz's ``dot``),
            or ``.dot``/``.gv`` (the source). None returns the drawing instead (it displays
            itself in notebooks).
        highlight: names to highlight, or a mapping from roles to names: ``x``, ``y``,
            ``given`` (a query), ``blanket``, ``highlight``, and ``trail`` (a path whose edges
            are drawn bold, as returned by :func:`ppdgm.independence.active_trail`).

    Returns:
        The ``graphviz.Digraph`` when ``path`` is None, else the path written. Without the
        ``dot`` program, that is the DOT source next to ``path`` and a
        :class:`GraphvizNotFound` warning says how to install graphviz.

    Raises:
        ValueError: for an unknown file type, highlight role or variable, or a cycle.

    Example:
        >>> from ppdgm.bn import asia
        >>> drawing = render(asia(), highlight={"x": ["tub"], "given": ["either"]})
        >>> "cluster" in drawing.source, "tub\\\\nCPT 2×2" in drawing.source
        (False, True)
    """
    drawing = to_graphviz(obj, highlight=highlight)
    if path is None:
        return drawing
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if kind not in (*_FORMATS, "dot", "gv"):
        raise ValueError(
            f"cannot render to {path.name!r}: the file type must be .svg, .png, .pdf, .dot or .gv"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind in ("dot", "gv"):
        path.write_text(drawing.source, encoding="utf-8")
        return path
    try:
        if shutil.which("dot") is None:
            raise graphviz.ExecutableNotFound(("dot",))
        path.write_bytes(drawing.pipe(format=kind))
    except graphviz.ExecutableNotFound:
        source = path.with_suffix(".dot")
        source.write_text(drawing.source, encoding="utf-8")
        warnings.warn(
            f"graphviz's `dot` program was not found, so {str(source)!r} holds the DOT source "
            f"instead of {str(path)!r}. Install graphviz (apt-get install graphviz, "
            f"brew install graphviz, or conda install graphviz), then run "
            f"`dot -T{kind} {source} -o {path}`.",
            GraphvizNotFound,
            stacklevel=2,
        )
        return source
    return path
