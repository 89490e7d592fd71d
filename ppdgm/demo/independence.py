"""The tour's section on conditional independence: d-separation on the Asia network, a Markov
blanket, an empirical check on samples, and a drawing of an active trail."""

from __future__ import annotations

import warnings
from pathlib import Path

from ppdgm import bn as networks
from ppdgm.graph.citest import check_independencies
from ppdgm.graph.explain import describe_blanket, explain
from ppdgm.graph.independence import Independence, active_trail
from ppdgm.graph.inspect import GraphvizNotFound, render

__all__ = ["demo_section"]


def demo_section(out_dir: Path) -> str:
    """The independence part of ``ppdgm demo`` on the Asia network: d-separation answers, a
    Markov blanket, an empirical check, and a highlighted drawing written into ``out_dir``.

    Returns:
        The text to print.
    """
    asia = networks.asia()
    queries = [
        (["asia"], ["smoke"], []),
        (["xray"], ["dysp"], ["either"]),
        (["tub"], ["lung"], ["either"]),
        (["smoke"], ["dysp"], ["bronc"]),
    ]
    lines = ["Conditional independence in the Asia network (d-separation):"]
    lines += ["  " + line for q in queries for line in explain(asia, *q).splitlines()]
    lines += ["  " + line for line in describe_blanket(asia, "either").splitlines()]
    statements = [Independence(*q) for q in queries]
    lines.append("Empirical check on 20000 samples (small p: the data reject independence):")
    lines += [f"  {r}" for r in check_independencies(asia, statements, num_samples=20000)]
    trail = active_trail(asia, "smoke", "dysp", ["bronc"]) or []
    highlight = {"x": ["smoke"], "y": ["dysp"], "given": ["bronc"], "trail": trail}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", GraphvizNotFound)
        written = render(asia, Path(out_dir) / "asia-independence.svg", highlight=highlight)
    lines += [f"  note: {w.message}" for w in caught]
    lines.append(f"  drawing of smoke ⊥ dysp | bronc with its active trail: {written}")
    return "\n".join(lines)
