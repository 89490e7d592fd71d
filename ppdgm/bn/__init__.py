"""Discrete Bayesian networks as Pyro programs: exact batched inference, sampling, learning."""

from __future__ import annotations

from ppdgm.bn.bif import BIFError, RenormalizedWarning, read_bif, write_bif
from ppdgm.bn.elimination import ZeroProbabilityEvidence
from ppdgm.bn.examples import asia, available, example, sprinkler, student
from ppdgm.bn.interop import from_pgmpy, to_pgmpy
from ppdgm.bn.learning import FitResult, fit
from ppdgm.bn.memory import TooLargeForExactInference, memory_limit
from ppdgm.bn.network import CPT_TOLERANCE, DiscreteBN

__all__ = [
    "CPT_TOLERANCE",
    "BIFError",
    "DiscreteBN",
    "FitResult",
    "RenormalizedWarning",
    "TooLargeForExactInference",
    "ZeroProbabilityEvidence",
    "asia",
    "available",
    "example",
    "fit",
    "from_pgmpy",
    "memory_limit",
    "read_bif",
    "sprinkler",
    "student",
    "to_pgmpy",
    "write_bif",
]
