"""Data-parallel training and evaluation over processes with ``torch.distributed``.

Processes are launched by ``torchrun`` (one machine or several, rendezvous ``c10d``); each runs
the same ``fit``. :func:`fit <ppdgm.training.loop.fit>` finds an initialised process group
(:func:`current_group`) and then:

- every process draws the same shuffle of each epoch (seeded by ``(seed, epoch)``) and takes
  its contiguous block of every global minibatch (:func:`shard`): ``batch_size`` is the
  global minibatch, whatever the number of processes;
- each process's loss is its block's mean weighted by its share of the minibatch's rows, and
  the gradients are summed over processes (:func:`sum_gradients`, one ``all_reduce`` of a flat
  buffer), so every process applies the gradient of the whole minibatch's mean: a
  deterministic objective gives the parameters of one process, to float rounding;
- the parameters start equal (:func:`broadcast_parameters` from rank 0), and torch's random
  stream during training is seeded per rank (sampling noise, such as SVI's guide draws,
  differs between processes, as it would between minibatch rows);
- validation scores each process's block of rows and sums the totals (:func:`sum_values`);
  the estimates of :func:`ppdgm.estimate.bounds` are made chunk by chunk, each chunk on one
  process with a seed of its own, and gathered (:func:`gather`): the per-row numbers of one
  process, exactly;
- at the end of every epoch the buffers (running statistics, which each process updates on
  rows of its own) are set to rank 0's, as DDP's ``broadcast_buffers`` does, and the
  parameters are compared across processes (:func:`agree_replicas`): processes that no longer
  hold one model stop the run with an error naming the parameter, never a checkpoint of one
  process's model scored with another's;
- rank 0 alone writes checkpoints, metrics and pictures and shows the progress bar.

The gradients are summed with ``all_reduce`` rather than through ``DistributedDataParallel``:
DDP wraps a module's ``forward``, and a Pyro program's parameters and entry points (``model``,
``guide``, ``pyro.param`` sites outside any module) are not a ``forward``. Large gradients
are reduced in place and small ones together in one flat buffer, as DDP's buckets do.

The command line joins the group that ``torchrun`` describes in the environment
(:func:`joined_from_environment`): gloo on the CPU, NCCL for CUDA models.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor

from ppdgm._checks import RankFailed, ReplicasDiverged
from ppdgm.batch import Batch, num_rows, select_rows

__all__ = [
    "Group",
    "RankFailed",
    "ReplicasDiverged",
    "agree_replicas",
    "broadcast_parameters",
    "current_group",
    "deal_out",
    "gather",
    "joined_from_environment",
    "shard",
    "split_work",
    "sum_gradients",
    "sum_values",
]

T = TypeVar("T")

#: Gradients with fewer entries than this are reduced together in one flat buffer.
BUCKET = 1 << 20

#: How long a collective waits for the other processes before the run stops (a failed peer).
TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class Group:
    """The processes of a run: this one's ``rank`` among ``size``."""

    rank: int = 0
    size: int = 1

    @property
    def writer(self) -> bool:
        """Whether this process writes files and shows progress (rank 0)."""
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        """Whether there is more than one process."""
        return self.size > 1


def current_group() -> Group:
    """The initialised default process group, or a group of this process alone."""
    if dist.is_available() and dist.is_initialized():
        return Group(dist.get_rank(), dist.get_world_size())
    return Group()


def shard(batch: Batch, where: Group) -> Batch:
    """This process's contiguous block of the rows of a global minibatch (blocks differ in size
    by at most one row; a process may get none when the minibatch has fewer rows than there
    are processes).

    Example:
        >>> x = torch.arange(5)
        >>> [shard(x, Group(r, 2)).tolist() for r in range(2)]
        [[0, 1, 2], [3, 4]]
    """
    n = num_rows(batch)
    start, stop = _block(n, where)
    return select_rows(batch, slice(start, stop))


def _block(n: int, where: Group) -> tuple[int, int]:
    base, extra = divmod(n, where.size)
    start = where.rank * base + min(where.rank, extra)
    return start, start + base + (where.rank < extra)


def broadcast_parameters(tensors: Sequence[Tensor]) -> None:
    """Sets every process's ``tensors`` (parameters and buffers) to rank 0's."""
    with _collective("broadcasting the parameters"), torch.no_grad():
        for t in tensors:
            dist.broadcast(t.data, src=0)


def sum_gradients(params: Sequence[Tensor]) -> None:
    """Sums each parameter's gradient over the processes. A gradient missing on some processes
    counts as zero there; one missing on every process stays missing (``None``), as in one
    process, so that Adam skips that parameter alike.

    Gradients of :data:`BUCKET` entries or more are reduced in place, one ``all_reduce`` each;
    the smaller ones, with the flags of which processes have a gradient, are flattened into one
    buffer and reduced together (DDP's buckets), so a step costs a few collectives whatever the
    number of small tensors, and no copy of the large ones.
    """
    params = list(params)
    if not params:
        return
    present = [float(p.grad is not None) for p in params]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    small = [p for p in params if p.numel() < BUCKET]
    with _collective("summing the gradients"):
        for p in params:
            if p.numel() >= BUCKET:
                dist.all_reduce(p.grad)
        flags = torch.tensor(present, dtype=params[0].grad.dtype, device=params[0].device)
        flat = torch.cat([*(p.grad.reshape(-1) for p in small), flags])
        dist.all_reduce(flat)
    offset = 0
    for p in small:
        n = p.numel()
        p.grad.copy_(flat[offset : offset + n].view_as(p))
        offset += n
    for p, anywhere in zip(params, flat[offset:].tolist(), strict=True):
        if anywhere == 0:
            p.grad = None


def agree_replicas(params: dict[str, Tensor], buffers: Sequence[Tensor], epoch: int) -> None:
    """Sets every process's ``buffers`` to rank 0's, then checks that every process holds the
    same ``params`` (named), as the summed gradients keep them.

    Each parameter is compared by a fingerprint (its float64 sum and sum of squares, one
    ``all_gather`` for all of them) with a relative tolerance of 1e-9, which the summation
    order of machines with other thread counts stays well inside.

    Raises:
        ReplicasDiverged: naming the first parameter that differs and the processes: code that
            changes parameters outside the optimizer differently on each process, or an
            objective that reads rank-dependent state, breaks data parallelism.
    """
    broadcast_parameters(list(buffers))
    names = list(params)
    if not names:
        return
    with torch.no_grad():
        prints = torch.stack(
            [
                torch.stack([p.detach().double().sum(), p.detach().double().square().sum()])
                for p in params.values()
            ]
        )
    everyone = [torch.empty_like(prints) for _ in range(current_group().size)]
    with _collective("comparing the parameters"):
        dist.all_gather(everyone, prints)
    ours = everyone[0]
    for rank, theirs in enumerate(everyone[1:], start=1):
        close = torch.isclose(theirs, ours, rtol=1e-9, atol=1e-12).all(dim=1)
        if not bool(close.all()):
            name = names[int((~close).nonzero()[0])]
            raise ReplicasDiverged(
                f"after epoch {epoch} the processes hold different parameters: {name!r} of rank "
                f"{rank} differs from rank 0's. The gradients are summed over the processes, so "
                "only code that changes parameters outside the optimizer, or an objective that "
                "reads state of one process (its rank, its own data), can part them: make every "
                "process run the same program on its block of the minibatch. The checkpoint of "
                "the epoch before is intact."
            )


def sum_values(values: Sequence[float], device: torch.device | None = None) -> list[float]:
    """Each value summed over the processes (float64)."""
    t = torch.tensor(list(values), dtype=torch.float64, device=device)
    with _collective("summing the validation scores"):
        dist.all_reduce(t)
    return t.tolist()


def gather(value: T) -> list[T]:
    """Every process's ``value`` (any picklable object), in rank order, on every process."""
    out: list[Any] = [None] * current_group().size
    with _collective("gathering the results"):
        dist.all_gather_object(out, value)
    return out


def split_work(rows: int, compute: Callable[[int, int], T]) -> list[T]:
    """``compute(start, stop)`` on this process's block of ``rows`` rows; every process's
    result, in rank order, on every process. An error on any process is raised on every
    process (that of the lowest rank), so that none waits for the others in vain.

    Outside a group: ``[compute(0, rows)]``.
    """
    where = current_group()
    if not where.parallel:
        return [compute(0, rows)]
    start, stop = _block(rows, where)
    try:
        mine: tuple[Any, BaseException | None] = (compute(start, stop), None)
    except Exception as e:  # shared below, then raised everywhere
        mine = (None, e)
    parts = gather(mine)
    for _, error in parts:
        if error is not None:
            raise error
    return [part for part, _ in parts]


def deal_out(
    rows: int,
    rows_per_pass: int,
    compute: Callable[[int, int], T],
    *,
    seed: int | None = None,
    stream: int = 0,
) -> list[T]:
    """``compute(start, stop)`` on each pass of ``rows_per_pass`` rows, the passes dealt out to
    the processes in turn; every pass's result, in order, on every process.

    With ``seed``, pass ``i`` draws from torch's stream seeded by ``(seed, stream, i)`` (and the
    stream outside is left as it was), so a row's numbers depend on its pass alone: they are
    the same for any number of processes. Warnings raised by any pass are raised again on
    every process, once each; an error on any process is raised on every process (that of the
    earliest pass), so that none waits for the others in vain.

    Example:
        >>> deal_out(5, 2, lambda a, b: list(range(a, b)))
        [[0, 1], [2, 3], [4]]
    """
    where = current_group()
    passes = -(-rows // rows_per_pass)
    mine: dict[int, Any] = {}
    error: tuple[int, BaseException] | None = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(where.rank, passes, where.size):
            start, stop = i * rows_per_pass, min(rows, (i + 1) * rows_per_pass)
            with torch.random.fork_rng(enabled=seed is not None, devices=[]):
                if seed is not None:
                    torch.manual_seed((seed * 1_000_003 + stream) * 1_000_003 + i)
                try:
                    mine[i] = compute(start, stop)
                except Exception as e:  # shared below, then raised everywhere
                    error = (i, e)
                    break
    said = [(w.category, str(w.message)) for w in caught]
    shares = gather((mine, said, error)) if where.parallel else [(mine, said, error)]
    errors = sorted((e for _, _, e in shares if e is not None), key=lambda pair: pair[0])
    if errors:
        raise errors[0][1]
    for category, message in dict.fromkeys(w for _, share, _ in shares for w in share):
        warnings.warn(message, category, stacklevel=2)
    results = {i: r for share, _, _ in shares for i, r in share.items()}
    return [results[i] for i in range(passes)]


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    try:
        yield
    except (RuntimeError, dist.DistBackendError) as e:  # a peer died or timed out
        cause = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RankFailed(
            f"another process of the run failed or stopped while {what} ({cause}); the last "
            "checkpoint written by rank 0 is intact: fix the cause and resume the run"
        ) from e


def launched_by_torchrun() -> bool:
    """Whether the environment describes a process of a ``torchrun`` launch."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


@contextlib.contextmanager
def joined_from_environment(cuda: bool = False) -> Iterator[Group]:
    """Joins the process group ``torchrun`` describes (``RANK``, ``WORLD_SIZE``, ...) for the
    duration, gloo on the CPU or NCCL with ``cuda`` (each process on the GPU of its
    ``LOCAL_RANK``), and leaves it when every process is done; outside ``torchrun``, or in a
    group already, does nothing."""
    if not launched_by_torchrun() or (dist.is_available() and dist.is_initialized()):
        yield current_group()
        return
    backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend, timeout=TIMEOUT)
    try:
        yield current_group()
        # every process leaves the group together: one that tears its connections down while
        # another still works (rank 0 writing pictures after training) can end in gloo's
        # ``terminate called without an active exception`` at exit
        with _collective("finishing the run"):
            dist.barrier()
    finally:
        dist.destroy_process_group()
