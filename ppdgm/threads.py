"""How many threads torch uses for ppdgm's work: a policy that survives a busy machine.

torch splits each operation over all cores by default. For small operations (the row-wise
indexing of Bayesian-network sampling and inference, the products of a small model) the threads
spend more time waiting for each other than computing, and when another process keeps a core
busy every operation waits for a thread that cannot run: measured on two cores with two other
busy processes, ``bn.sample(100_000)`` on alarm took 9-14 s with two threads and 0.29 s with
one, and three epochs of a small MADE 19.0 s against 0.5 s (see ``docs/benchmarks.md``).

The policy, in order:

1. ``PPDGM_THREADS=N`` in the environment (or ``ppdgm --threads N``, which sets it for the
   run): exactly ``N`` threads for ppdgm's work;
2. otherwise small work (below :data:`SMALL_WORK` multiply-adds per step) runs on **one
   thread**: as fast on a quiet machine, and never stalled on a busy one;
3. otherwise larger work keeps torch's own setting (``torch.set_num_threads``, by default
   one thread per core), where a matrix product gains from more cores.

:func:`work_threads` applies it around a block and restores torch's setting afterwards; the
training loop, evaluation and the Bayesian-network engine run under it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["ENV", "SMALL_WORK", "chosen_threads", "work_threads"]

#: The environment variable that fixes the number of threads.
ENV = "PPDGM_THREADS"

#: Work of fewer multiply-adds per step than this runs on one thread (2**25, about a product
#: of a 100-row batch with a 580 x 580 weight matrix).
SMALL_WORK = 2**25


def _from_environment() -> int | None:
    text = os.environ.get(ENV)
    if text is None or not text.strip():
        return None
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{ENV} must be a positive integer, got {text!r}")
    return value


def chosen_threads(work: float | None = None) -> int:
    """The number of threads for work of ``work`` multiply-adds per step (None: small work,
    as the Bayesian-network engine's row-wise operations are), by the module's policy.

    Raises:
        ValueError: for a ``PPDGM_THREADS`` that is not a positive integer.

    Example:
        >>> chosen_threads(1_000) if ENV not in os.environ else 1
        1
    """
    fixed = _from_environment()
    if fixed is not None:
        return fixed
    if work is None or work < SMALL_WORK:
        return 1
    return torch.get_num_threads()


@contextmanager
def work_threads(work: float | None = None) -> Iterator[int]:
    """Runs the block with :func:`chosen_threads` threads and restores torch's setting.

    Example:
        >>> before = torch.get_num_threads()
        >>> with work_threads() as n:
        ...     inside = torch.get_num_threads()
        >>> inside == n, torch.get_num_threads() == before
        (True, True)
    """
    before = torch.get_num_threads()
    n = chosen_threads(work)
    if n != before:
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
