"""Checks of arguments shared across the package: one wording for every integer setting."""

from __future__ import annotations

from typing import Any

__all__ = ["ContractError", "RankFailed", "ReplicasDiverged", "check_int"]


class ContractError(TypeError):
    """A model that lacks what the toolkit needs of it (the message names the missing methods)."""


class RankFailed(RuntimeError):
    """Another process of a distributed run failed or went away (see
    :mod:`ppdgm.distributed`)."""


class ReplicasDiverged(RuntimeError):
    """The processes of a distributed run no longer hold the same parameters (see
    :func:`ppdgm.distributed.agree_replicas`)."""


def check_int(name: str, value: Any, least: int = 1) -> int:
    """``value`` when it is an integer (not a bool) of at least ``least``.

    Raises:
        ValueError: ``"{name} must be a positive integer, got ..."`` (``least`` 1), ``"... a
            non-negative integer ..."`` (0), or ``"... an integer >= {least} ..."``.

    Example:
        >>> check_int("epochs", 3)
        3
        >>> check_int("n", -1, least=0)
        Traceback (most recent call last):
        ...
        ValueError: n must be a non-negative integer, got -1
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        what = {1: "a positive integer", 0: "a non-negative integer"}.get(
            least, f"an integer >= {least}"
        )
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value
