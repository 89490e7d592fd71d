"""``ppdgm.estimate``, the public name of :mod:`ppdgm.infer.estimate`: the log-likelihood
estimators ``LogLikelihood`` and ``Estimate``."""

from ppdgm.infer.estimate import (
    METHODS,
    Estimate,
    LogLikelihood,
    LowESSWarning,
    ParetoKWarning,
    UnreliableWeightsWarning,
    comparison_table,
)

__all__ = [
    "METHODS",
    "Estimate",
    "LogLikelihood",
    "LowESSWarning",
    "ParetoKWarning",
    "UnreliableWeightsWarning",
    "comparison_table",
]
