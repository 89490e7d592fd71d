"""Example networks: Asia, the sprinkler, the student, and every discrete network pgmpy ships."""

from __future__ import annotations

from pathlib import Path

import networkx as nx

from ppdgm.bn.bif import read_bif
from ppdgm.bn.network import DiscreteBN

__all__ = ["BUILTIN", "asia", "available", "example", "sprinkler", "student"]

YES_NO = ("yes", "no")


def asia() -> DiscreteBN:
    """Lauritzen and Spiegelhalter's (1988) chest-clinic network, states ``("yes", "no")``.

    Example:
        >>> bn = asia()
        >>> bn.variables
        ('asia', 'tub', 'smoke', 'lung', 'bronc', 'either', 'xray', 'dysp')
    """
    dag = nx.DiGraph(
        [
            ("asia", "tub"),
            ("smoke", "lung"),
            ("smoke", "bronc"),
            ("tub", "either"),
            ("lung", "either"),
            ("either", "xray"),
            ("bronc", "dysp"),
            ("either", "dysp"),
        ]
    )
    cpts = {
        "asia": [0.01, 0.99],
        "smoke": [0.5, 0.5],
        "tub": [[0.05, 0.95], [0.01, 0.99]],
        "lung": [[0.1, 0.9], [0.01, 0.99]],
        "bronc": [[0.6, 0.4], [0.3, 0.7]],
        # either = tub or lung (a logical OR, written as a table)
        "either": [[[1.0, 0.0], [1.0, 0.0]], [[1.0, 0.0], [0.0, 1.0]]],
        "xray": [[0.98, 0.02], [0.05, 0.95]],
        "dysp": [[[0.9, 0.1], [0.8, 0.2]], [[0.7, 0.3], [0.1, 0.9]]],
    }
    parents = {"either": ("lung", "tub"), "dysp": ("bronc", "either")}
    states = {v: YES_NO for v in dag}
    return DiscreteBN(dag, cpts, states, parents=parents, name="asia")


def sprinkler() -> DiscreteBN:
    """Pearl's wet-grass network (cloudy, sprinkler, rain, wet_grass), states ``("no", "yes")``."""
    dag = nx.DiGraph(
        [
            ("cloudy", "sprinkler"),
            ("cloudy", "rain"),
            ("sprinkler", "wet_grass"),
            ("rain", "wet_grass"),
        ]
    )
    cpts = {
        "cloudy": [0.5, 0.5],
        "sprinkler": [[0.5, 0.5], [0.9, 0.1]],
        "rain": [[0.8, 0.2], [0.2, 0.8]],
        "wet_grass": [[[1.0, 0.0], [0.1, 0.9]], [[0.1, 0.9], [0.01, 0.99]]],
    }
    states = {v: ("no", "yes") for v in dag}
    return DiscreteBN(dag, cpts, states, name="sprinkler")


def student() -> DiscreteBN:
    """Koller and Friedman's student network (difficulty, intelligence, grade, sat, letter)."""
    dag = nx.DiGraph(
        [
            ("difficulty", "grade"),
            ("intelligence", "grade"),
            ("intelligence", "sat"),
            ("grade", "letter"),
        ]
    )
    cpts = {
        "difficulty": [0.6, 0.4],
        "intelligence": [0.7, 0.3],
        # axes: difficulty, intelligence, grade
        "grade": [[[0.3, 0.4, 0.3], [0.9, 0.08, 0.02]], [[0.05, 0.25, 0.7], [0.5, 0.3, 0.2]]],
        "sat": [[0.95, 0.05], [0.2, 0.8]],
        "letter": [[0.1, 0.9], [0.4, 0.6], [0.99, 0.01]],
    }
    states = {
        "difficulty": ("easy", "hard"),
        "intelligence": ("low", "high"),
        "grade": ("A", "B", "C"),
        "sat": ("low", "high"),
        "letter": ("weak", "strong"),
    }
    return DiscreteBN(dag, cpts, states, name="student")


BUILTIN = {"asia": asia, "sprinkler": sprinkler, "student": student}


def _pgmpy_dir() -> Path:
    import pgmpy

    return Path(pgmpy.__file__).parent / "utils" / "example_models"


def available() -> list[str]:
    """Names :func:`example` accepts: the built-in networks and the BIF files pgmpy ships."""
    shipped = sorted(p.name.removesuffix(".bif.gz") for p in _pgmpy_dir().glob("*.bif.gz"))
    return sorted(set(BUILTIN) | set(shipped))


def example(name: str) -> DiscreteBN:
    """An example network by name: ``asia``, ``sprinkler``, ``student``, or any discrete network
    whose BIF file pgmpy ships (``alarm``, ``child``, ``insurance``, ``win95pts``, ...).

    Read from the files inside the installed pgmpy package; nothing is downloaded.

    Raises:
        ValueError: for a name that is neither built in nor shipped by pgmpy.
    """
    if name in BUILTIN:
        return BUILTIN[name]()
    path = _pgmpy_dir() / f"{name}.bif.gz"
    if not path.is_file():
        raise ValueError(f"unknown example network {name!r}; available: {', '.join(available())}")
    return read_bif(path)
