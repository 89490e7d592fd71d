"""``ppdgm.inspect``, the public name of :mod:`ppdgm.graph.inspect`: the dependency graph of any
Pyro program, and drawings of graphs, networks and programs."""

from ppdgm.graph.inspect import ROLES, GraphvizNotFound, dependency_graph, render, to_graphviz

__all__ = ["ROLES", "GraphvizNotFound", "dependency_graph", "render", "to_graphviz"]
