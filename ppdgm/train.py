"""``ppdgm.train``, the public name of :mod:`ppdgm.training.loop`: ``fit`` and ``evaluate`` for
every model, the zoo's and yours."""

from ppdgm.training.loop import (
    PRECISIONS,
    FitResult,
    Objective,
    adam,
    default_objective,
    evaluate,
    fit,
    label_accuracy,
    maximum_likelihood,
    retain_freed_memory,
)

__all__ = [
    "PRECISIONS",
    "FitResult",
    "Objective",
    "adam",
    "default_objective",
    "evaluate",
    "fit",
    "label_accuracy",
    "maximum_likelihood",
    "retain_freed_memory",
]
