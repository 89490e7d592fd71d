"""d-separation speed: every ``d_separated(g, x, y, markov_blanket(x))`` on win95pts vs pgmpy.

For each ordered pair ``(x, y)`` with ``y`` outside ``x``'s Markov blanket (5,250 queries on the
76-node network), ppdgm's ``d_separated`` and pgmpy's ``DAG.is_dconnected`` answer the same
question in the same process; the answers must agree. Three timings for ppdgm:

- ``pass``: one pass over all queries starting from empty caches (graph compiled and every
  reachable set searched inside the timed pass), the way a user's loop runs: queries that
  share ``(x, given)`` share one Bayes-ball search;
- ``search``: the search memo emptied before every query, so each query runs its own search
  (the graph stays compiled);
- ``mutable``: the same queries on a plain mutable ``nx.DiGraph`` copy, whose compiled form is
  kept in the graph's ``__networkx_cache__`` (which networkx empties when the graph changes);

and networkx's ``is_d_separator`` for reference.

Run: ``.venv/bin/python benchmarks/bench_dseparation.py``; writes
``benchmarks/results/dseparation.json``.
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import networkx as nx
import pgmpy
from pgmpy.base import DAG

import ppdgm
from ppdgm.bn import example
from ppdgm.graph.dag import clear_caches, compiled
from ppdgm.graph.independence import d_separated, markov_blanket

REPEATS = 5
RESULTS = Path(__file__).parent / "results" / "dseparation.json"


def best_time(run: Callable[[], list[bool]], setup: Callable[[], None] = lambda: None) -> float:
    """The fastest of ``REPEATS`` runs, in seconds (``setup`` runs untimed before each)."""
    best = float("inf")
    for _ in range(REPEATS):
        setup()
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> dict[str, object]:
    bn = example("win95pts")
    g = bn.dag
    reference = DAG(list(g.edges))
    reference.add_nodes_from(g.nodes)
    blankets = {v: markov_blanket(g, v) for v in g}
    assert all(blankets[v] == set(reference.get_markov_blanket(v)) for v in g)
    queries = [(x, y, blankets[x]) for x in g for y in g if y != x and y not in blankets[x]]
    pgmpy_observed = [(x, y, list(z)) for x, y, z in queries]

    def ours() -> list[bool]:
        return [d_separated(bn, x, y, z) for x, y, z in queries]

    def ours_search() -> list[bool]:
        answers = []
        for x, y, z in queries:
            compiled(bn).forget()
            answers.append(d_separated(bn, x, y, z))
        return answers

    mutable = nx.DiGraph(g)

    def ours_mutable() -> list[bool]:
        return [d_separated(mutable, x, y, z) for x, y, z in queries]

    def theirs() -> list[bool]:
        return [not reference.is_dconnected(x, y, z) for x, y, z in pgmpy_observed]

    def networkx() -> list[bool]:
        return [nx.is_d_separator(g, {x}, {y}, z) for x, y, z in queries]

    answers = {f.__name__: f() for f in (ours, ours_search, ours_mutable, theirs, networkx)}
    assert all(a == answers["theirs"] for a in answers.values()), "the answers disagree"
    seconds = {
        "ppdgm_pass": best_time(ours, clear_caches),
        "ppdgm_search": best_time(ours_search),
        "ppdgm_mutable": best_time(ours_mutable),
        "pgmpy": best_time(theirs),
        "networkx": best_time(networkx),
    }
    per_query_us = {k: 1e6 * s / len(queries) for k, s in seconds.items()}
    result = {
        "network": "win95pts",
        "nodes": g.number_of_nodes(),
        "edges": g.number_of_edges(),
        "queries": len(queries),
        "separated": sum(answers["theirs"]),
        "repeats_best_of": REPEATS,
        "per_query_us": {k: round(v, 3) for k, v in per_query_us.items()},
        "speedup_vs_pgmpy": {
            k: round(per_query_us["pgmpy"] / v, 2) for k, v in per_query_us.items() if k != "pgmpy"
        },
        "versions": {
            "ppdgm": ppdgm.__version__,
            "pgmpy": pgmpy.__version__,
            "networkx": nx.__version__,
            "python": platform.python_version(),
        },
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    result = main()
    print(f"{result['queries']} queries on win95pts ({result['separated']} d-separated)")
    for name, us in result["per_query_us"].items():
        ratio = result["speedup_vs_pgmpy"].get(name)
        versus = f"  {ratio:6.2f}x pgmpy's speed" if ratio is not None else ""
        print(f"  {name:<13} {us:8.2f} µs per query{versus}")
    print(f"wrote {RESULTS}")
