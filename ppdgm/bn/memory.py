"""How much memory exact inference may take: a limit, and the error that refuses a query over
it before anything is allocated."""

from __future__ import annotations

import math
import os

__all__ = [
    "MEMORY_LIMIT_VARIABLE",
    "TooLargeForExactInference",
    "gib",
    "memory_limit",
    "too_large",
]


class TooLargeForExactInference(ValueError):
    """Raised before exact inference whose plan would need more memory than allowed (see
    :func:`memory_limit`); the message gives the widest factor, the memory and the ways out."""


#: The variable that sets :func:`memory_limit`, in bytes or with a unit (``8G``, ``512M``).
MEMORY_LIMIT_VARIABLE = "PPDGM_MEMORY_LIMIT"


def memory_limit() -> int:
    """The most bytes one exact query may need: the ``PPDGM_MEMORY_LIMIT`` variable (bytes, or a
    number with ``K``, ``M``, ``G`` or ``T``), else half the machine's physical memory.

    Raises:
        ValueError: for a malformed ``PPDGM_MEMORY_LIMIT``.

    Example:
        >>> import os
        >>> os.environ["PPDGM_MEMORY_LIMIT"] = "1.5G"
        >>> memory_limit()
        1610612736
        >>> del os.environ["PPDGM_MEMORY_LIMIT"]
    """
    text = os.environ.get(MEMORY_LIMIT_VARIABLE, "").strip()
    if not text:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
        except (ValueError, OSError, AttributeError):  # not a POSIX system: 8 GiB
            return 8 * 2**30
    units = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
    unit = units.get(text[-1].upper(), 1)
    try:
        value = float(text[:-1] if unit > 1 else text) * unit
    except ValueError:
        value = math.nan
    if not value > 0 or math.isinf(value):
        raise ValueError(
            f"{MEMORY_LIMIT_VARIABLE}={text!r}: give a positive number of bytes, or one with a "
            "unit K, M, G or T (e.g. 8G)"
        )
    return int(value)


def gib(n: float) -> str:
    """Bytes as MiB or GiB, for messages."""
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def too_large(
    what: str, need: int, limit: int, scope: list[str], entries: int
) -> TooLargeForExactInference:
    """The error for a query needing ``need`` bytes over ``limit``, whose widest factor joins
    ``scope`` into ``entries`` entries; it names the ways out."""
    shown = ", ".join(scope[:8]) + (f" and {len(scope) - 8} more" if len(scope) > 8 else "")
    return TooLargeForExactInference(
        f"exact inference for {what} needs {gib(need)} even one row at a time, more than "
        f"the limit of {gib(limit)}: its widest step joins {len(scope)} variables "
        f"({shown}) into a factor of {entries:,} entries. Estimate instead with "
        'method="importance" (bn.log_prob(rows, method="importance"), bn.posterior(rows, '
        'variables, method="importance")), observe more variables, or raise the limit '
        f"with the {MEMORY_LIMIT_VARIABLE} variable (e.g. {MEMORY_LIMIT_VARIABLE}=64G)"
    )
