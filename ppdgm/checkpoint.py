"""``ppdgm.checkpoint``, the public name of :mod:`ppdgm.training.checkpoint`: checkpoints of any
model, loaded with ``weights_only=True``."""

from ppdgm.training.checkpoint import (
    FORMAT,
    MAX_BYTES,
    MAX_ELEMENTS,
    build_model,
    check_config,
    describe_spec,
    load_model,
    load_state,
    load_weights,
    model_spec,
    read_checkpoint,
    same_model,
    save_checkpoint,
)

__all__ = [
    "FORMAT",
    "MAX_BYTES",
    "MAX_ELEMENTS",
    "build_model",
    "check_config",
    "describe_spec",
    "load_model",
    "load_state",
    "load_weights",
    "model_spec",
    "read_checkpoint",
    "same_model",
    "save_checkpoint",
]
