"""The bridge to pgmpy: converting networks both ways (BIF files: :mod:`ppdgm.bn.bif`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["from_pgmpy", "to_pgmpy"]


def from_pgmpy(model: Any, *, name: str | None = None) -> DiscreteBN:
    """Converts a pgmpy discrete Bayesian network (with CPDs) into a :class:`DiscreteBN`.

    The parents' order of each table is the evidence order of its pgmpy CPD, and the states
    and probabilities are copied exactly, so ``from_pgmpy(bn.to_pgmpy())`` equals ``bn``.

    Raises:
        ValueError: for a model that has no CPD for some node, or that is not discrete.
    """
    from ppdgm.bn.network import DiscreteBN

    nodes = list(model.nodes())
    dag = nx.DiGraph()
    dag.add_nodes_from(nodes)
    dag.add_edges_from(model.edges())
    cpts, states, parents = {}, {}, {}
    for v in nodes:
        cpd = model.get_cpds(v)
        if cpd is None:
            raise ValueError(f"the pgmpy model has no CPD for variable {v!r}")
        if not hasattr(cpd, "state_names") or not hasattr(cpd, "get_values"):
            raise ValueError(f"the CPD of {v!r} is not a discrete table ({type(cpd).__name__})")
        evidence = list(cpd.variables[1:])
        values = np.asarray(cpd.get_values(), dtype=np.float64)
        shape = [len(cpd.state_names[u]) for u in evidence] + [values.shape[0]]
        cpts[v] = values.T.reshape(shape)
        states[v] = tuple(cpd.state_names[v])
        for u in evidence:
            states.setdefault(u, tuple(cpd.state_names[u]))
        parents[v] = tuple(evidence)
    return DiscreteBN(dag, cpts, states, parents=parents, name=name or _model_name(model))


def _model_name(model: Any) -> str:
    return getattr(model, "name", None) or "network"


def to_pgmpy(bn: DiscreteBN) -> Any:
    """The network as a ``pgmpy.models.DiscreteBayesianNetwork`` with one ``TabularCPD`` each."""
    from pgmpy.factors.discrete import TabularCPD
    from pgmpy.models import DiscreteBayesianNetwork

    model = DiscreteBayesianNetwork()
    model.add_nodes_from(bn.variables)
    model.add_edges_from(bn.dag.edges)
    for v in bn.variables:
        parents = list(bn.parents(v))
        table = bn.cpt(v).numpy()
        card = table.shape[-1]
        values = table.reshape(-1, card).T
        state_names = {u: list(bn.states[u]) for u in (v, *parents)}
        cpd = TabularCPD(
            v,
            card,
            values,
            evidence=parents or None,
            evidence_card=[len(bn.states[u]) for u in parents] or None,
            state_names=state_names,
        )
        model.add_cpds(cpd)
    model.name = bn.name
    return model
