"""Sub-commands of ``ppdgm``: each module has ``register(subparsers)`` that adds its parsers and
sets ``run`` (a function of the parsed arguments returning an exit status) as a default."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ppdgm.commands import bn, demo, independence, train

__all__ = ["COMMANDS"]

COMMANDS: list[Callable[[Any], None]] = [
    bn.register,
    demo.register,
    independence.register,
    train.register,
]
