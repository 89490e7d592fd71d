"""``ppdgm ci``, ``ppdgm blanket`` and ``ppdgm render``: independence queries from the shell."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any

import networkx as nx

from ppdgm.commands._common import load_network, non_negative_int, parse_names

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["load_target", "register"]

TARGET_HELP = (
    "a BIF file, an example network name (asia, alarm, ...) or a Pyro program "
    "path/to/file.py:function (called without arguments)"
)


def load_target(spec: str) -> DiscreteBN | Callable[..., Any]:
    """A network or a Pyro program from the command line's ``TARGET``.

    Arguments:
        spec: ``path/to/file.py:function``, the path of a BIF file, or an example name.

    Raises:
        ValueError: when ``spec`` is none of these, or the file or function cannot be loaded.
        FileNotFoundError: for a BIF path that does not exist.
    """
    from ppdgm.source import load_object

    file, colon, _ = spec.rpartition(":")
    if colon and file.endswith(".py"):
        return load_object(spec)
    return load_network(spec)


def _graph(target: DiscreteBN | Callable[..., Any]) -> DiscreteBN | nx.DiGraph:
    from ppdgm.bn.network import DiscreteBN
    from ppdgm.graph.inspect import dependency_graph

    return target if isinstance(target, DiscreteBN) else dependency_graph(target)


def _names(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _run_ci(args: argparse.Namespace) -> int:
    from ppdgm.graph.citest import check_independencies
    from ppdgm.graph.explain import explain
    from ppdgm.graph.independence import Independence

    target = load_target(args.target)
    g = _graph(target)
    xs, ys, given = parse_names(args.x), parse_names(args.y), _names(args.given)
    print(explain(g, xs, ys, given))
    if args.samples:
        (result,) = check_independencies(
            target, Independence(xs, ys, given), num_samples=args.samples, seed=args.seed
        )
        print(f"  empirical: {result}")
    return 0


def _run_blanket(args: argparse.Namespace) -> int:
    from ppdgm.graph.explain import describe_blanket

    g = _graph(load_target(args.target))
    print(describe_blanket(g, args.variable))
    return 0


def _run_render(args: argparse.Namespace) -> int:
    from ppdgm.graph.independence import active_trail, markov_blanket
    from ppdgm.graph.inspect import GraphvizNotFound, render

    g = _graph(load_target(args.target))
    highlight: dict[str, list[Hashable]] = {}
    for role in ("x", "y", "given", "highlight"):
        if _names(getattr(args, role)):
            highlight[role] = list(_names(getattr(args, role)))
    if args.blanket:
        highlight["blanket"] = sorted(markov_blanket(g, args.blanket))
        highlight.setdefault("x", [args.blanket])
    if len(highlight.get("x", ())) == 1 and len(highlight.get("y", ())) == 1:
        trail = active_trail(g, highlight["x"][0], highlight["y"][0], highlight.get("given", ()))
        if trail is not None:
            highlight["trail"] = trail
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GraphvizNotFound)
        written = render(g, args.output, highlight=highlight or None)
    for w in caught:
        print(f"ppdgm render: {w.message}", file=sys.stderr)
    print(f"wrote {written}")
    return 0


def register(subparsers: Any) -> None:
    """Adds ``ci``, ``blanket`` and ``render`` to the ``ppdgm`` command."""
    ci = subparsers.add_parser(
        "ci",
        help="is X independent of Y given Z? (d-separation, active trail, minimal separator)",
        description="Answers X ⊥ Y | Z by d-separation; optionally tests it on samples.",
    )
    ci.add_argument("target", help=TARGET_HELP)
    ci.add_argument("--x", required=True, help="variable(s), comma-separated")
    ci.add_argument("--y", required=True, help="variable(s), comma-separated")
    ci.add_argument("--given", default="", help="conditioning variable(s), comma-separated")
    ci.add_argument(
        "--samples",
        type=non_negative_int,
        default=0,
        help="also test the statement on this many samples (0: none)",
    )
    ci.add_argument("--seed", type=int, default=0, help="seed of the samples")
    ci.set_defaults(run=_run_ci)

    blanket = subparsers.add_parser("blanket", help="the Markov blanket of a variable")
    blanket.add_argument("target", help=TARGET_HELP)
    blanket.add_argument("variable")
    blanket.set_defaults(run=_run_blanket)

    draw = subparsers.add_parser("render", help="draw a network or program with graphviz")
    draw.add_argument("target", help=TARGET_HELP)
    draw.add_argument("-o", "--output", required=True, help="file: .svg, .png, .pdf or .dot")
    draw.add_argument("--highlight", default="", help="variables to highlight, comma-separated")
    draw.add_argument("--x", default="", help="query variable(s) X to highlight")
    draw.add_argument("--y", default="", help="query variable(s) Y to highlight")
    draw.add_argument("--given", default="", help="conditioning variable(s) to highlight")
    draw.add_argument("--blanket", default="", help="highlight this variable's Markov blanket")
    draw.set_defaults(run=_run_render)
