"""``ppdgm.independence``, the public name of :mod:`ppdgm.graph.independence`: d-separation,
Markov blankets and the independencies a DAG, a network or a program's graph implies."""

from ppdgm.graph.independence import (
    Independence,
    active_trail,
    active_trails,
    d_separated,
    format_trail,
    implied_independencies,
    is_imap,
    local_independencies,
    markov_blanket,
    markov_equivalent,
    minimal_d_separator,
)

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
