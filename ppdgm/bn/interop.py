"""The bridge to pgmpy: converting networks both ways and reading and writing BIF files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import networkx as nx
import numpy as np

from ppdgm.atomic import atomic_path

if TYPE_CHECKING:
    from ppdgm.bn.network import DiscreteBN

__all__ = ["from_pgmpy", "read_bif", "to_pgmpy", "write_bif"]


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


def read_bif(path: str | os.PathLike[str]) -> DiscreteBN:
    """Reads a network from a BIF file (plain or gzip-compressed), through pgmpy's reader.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the file is not valid BIF or describes an invalid network; the message
            names the file and the problem.
    """
    import gzip

    from pgmpy.readwrite import BIFReader

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no BIF file at {path}")
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise ValueError(f"cannot read {path} as BIF text: {e}") from None
    if "network" not in text or "variable" not in text:
        raise ValueError(f"{path} is not a BIF file: no 'network' or 'variable' block found")
    try:
        model = BIFReader(string=text, n_jobs=1).get_model()
    except Exception as e:  # pgmpy raises assorted parser errors
        raise ValueError(f"{path} is not a valid BIF file: {type(e).__name__}: {e}") from None
    stem = path.name.removesuffix(".gz").removesuffix(".bif")
    try:
        return from_pgmpy(model, name=stem)
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def write_bif(bn: DiscreteBN, path: str | os.PathLike[str]) -> None:
    """Writes a network to a BIF file through pgmpy's writer (atomically: a temporary file
    is renamed into place, so an interrupted write never leaves half a file)."""
    from pgmpy.readwrite import BIFWriter

    with atomic_path(path) as tmp:
        BIFWriter(to_pgmpy(bn)).write_bif(str(tmp))
