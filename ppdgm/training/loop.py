"""One training loop for density models: minibatches, Adam, validation every epoch, early
stopping, checkpoints, resumption, a progress bar, a metrics file and pictures.

The loop minimizes an *objective*, a function ``(model, batch, step) -> loss``. The default,
:func:`maximum_likelihood`, is ``-mean log p(batch)``; the variational objectives of
:class:`ppdgm.svi.SVIObjective` (ELBO, mean-field ELBO, IWAE, with KL annealing) fit the same
slot and train the VAEs by SVI.

Determinism: the shuffle of each epoch and torch's random stream during it are seeded from
``(seed, epoch)``, so a run resumed from the checkpoint of its last finished epoch reaches the
same parameters as one that was never interrupted.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ppdgm._checks import check_int
from ppdgm.atomic import write_text_atomic
from ppdgm.base import DENSITY, PROGRAM, can_sample, log_prob_is_exact, model_kind, values_checked
from ppdgm.batch import (
    Batch,
    as_arguments,
    check_rows,
    first_tensor,
    map_tensors,
    num_rows,
    replace_first,
    select_rows,
    split_rows,
)
from ppdgm.data import batches, fixed_binarization
from ppdgm.data import dynamic_binarization as dynamic_binarization_of
from ppdgm.distributed import (
    agree_replicas,
    broadcast_parameters,
    current_group,
    shard,
    sum_gradients,
    sum_values,
)
from ppdgm.infer.estimate import Estimate, LogLikelihood, UnreliableWeightsWarning
from ppdgm.infer.params import load_program_params, program_params
from ppdgm.infer.probe import probe
from ppdgm.infer.svi import SVIObjective
from ppdgm.infer.weights import NaNLogDensity
from ppdgm.threads import work_threads
from ppdgm.training.checkpoint import (
    describe_spec,
    load_state,
    model_spec,
    read_checkpoint,
    same_model,
    save_checkpoint,
)
from ppdgm.training.plots import picture_samples, save_learning_curves, save_sample_grid

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

Objective = Callable[[nn.Module, Batch, int], Tensor]


def retain_freed_memory() -> bool:
    """Asks glibc to keep freed large blocks for reuse instead of unmapping them, for the whole
    process; returns whether it could.

    By default every block above a few megabytes is returned to the system when freed, so a
    training step whose large temporaries (NADE's ``N x n x d`` hidden states) are freed and
    allocated again faults all their pages in anew: on a CPU that made NADE(784, 500) steps
    about 3x slower. The price is a process that keeps its peak memory. Programs (``ppdgm fit``,
    the benchmarks) call this; a library should not, so :func:`fit` does not.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        return bool(
            libc.mallopt(m_mmap_threshold, 2**31 - 1) and libc.mallopt(m_trim_threshold, 2**31 - 1)
        )
    except (OSError, AttributeError):  # not glibc
        return False


def maximum_likelihood(model: nn.Module, batch: Batch, step: int) -> Tensor:
    """``-mean log p(batch)``: the model's ``training_loss(batch, step)`` where it has one (MADE
    picks the mask of the step there), else ``-model.log_prob(*batch).mean()``."""
    training_loss = getattr(model, "training_loss", None)
    if training_loss is not None and isinstance(batch, Tensor):
        return training_loss(batch, step)
    args, kwargs = as_arguments(batch)
    return -model.log_prob(*args, **kwargs).mean()


def default_objective(model: nn.Module) -> Objective:
    """The objective :func:`fit` uses when given none: maximum likelihood for a density model,
    the ELBO (:class:`ppdgm.svi.SVIObjective`) for a latent-variable model."""
    if model_kind(model) == DENSITY:
        return maximum_likelihood
    return SVIObjective("elbo")


@torch.no_grad()
def evaluate(
    model: nn.Module,
    x: Batch,
    batch_size: int = 100,
    *,
    method: str = "elbo",
    num_samples: int = 1,
) -> dict[str, Any]:
    """The mean negative log-likelihood of the rows of ``x``, in nats and in bits per dimension.

    A density model is scored with its ``log_prob``: ``"bound": "exact"``, or
    ``"dequantization"`` where ``log_prob`` is a bound (a dequantized flow says so with
    ``log_prob_is_exact = False``). A latent-variable model is scored by
    :class:`ppdgm.estimate.LogLikelihood` on its ``model`` and ``guide``: ``method="elbo"``
    (an upper bound on the NLL) or ``"importance"`` (the IWAE bound with ``num_samples``
    draws, tighter), with its standard error.

    Arguments:
        model: the model (see :mod:`ppdgm.base`).
        x: the rows (a tensor, or a tuple or dict of tensors, see :mod:`ppdgm.batch`).
        batch_size: rows per pass.
        method, num_samples: the estimator of a latent-variable model.

    Raises:
        ValueError: for ``x`` of no rows (a mean over nothing is no number).

    Returns:
        ``rows``, ``nll``, ``bits_per_dim``, ``bound``, and for estimates ``stderr`` (of
        ``nll``) and ``num_samples``; for a model with ``classify(x)`` (an
        :class:`~ppdgm.models.SSVAE`) and rows ``(x, y)`` with labels, the ``accuracy`` on the
        ``labelled`` rows (label ``-1``: unknown, not counted).

    Example:
        >>> from ppdgm.models import FVSBN
        >>> model = FVSBN(4)
        >>> torch.nn.init.zeros_(model.weight)  # the uniform distribution: 4 bits
        Parameter containing: ...
        >>> evaluate(model, torch.ones(3, 4))
        {'rows': 3, 'nll': 2.772588..., 'bits_per_dim': 1.0, 'bound': 'exact'}
    """
    x = check_rows(x, "x")
    if num_rows(x) == 0:
        raise ValueError("there are no rows to evaluate: x has 0 rows")
    where = current_group()
    if not where.parallel:
        return _evaluate_here(model, x, batch_size, method=method, num_samples=num_samples)
    mine = _evaluate_here(
        model, shard(x, where), batch_size, method=method, num_samples=num_samples
    )
    n = num_rows(x)
    total, variance = -mine["nll"] * mine["rows"], (mine.get("stderr", 0.0) * mine["rows"]) ** 2
    total, variance = sum_values([total, variance])
    dim = math.prod(first_tensor(x).shape[1:])
    out = {**mine, "rows": n, "nll": -total / max(n, 1)}
    out["bits_per_dim"] = out["nll"] / (dim * math.log(2))
    if "stderr" in mine:
        out["stderr"] = math.sqrt(variance) / max(n, 1)
    if "labelled" in mine:  # every process has the key: the model classifies, the rows have labels
        right, labelled = sum_values([out.pop("correct"), out.pop("labelled")])
        out.update(_accuracy(right, int(labelled)))
    return out


def _labels_of(x: Batch) -> tuple[Tensor, Tensor] | None:
    """The rows and labels of a batch ``(x, y)`` or ``{"x": x, "y": y}``, or None."""
    args, kwargs = as_arguments(x)
    rows = args[0] if args else kwargs.get("x")
    labels = args[1] if len(args) > 1 else kwargs.get("y")
    if not isinstance(rows, Tensor) or not isinstance(labels, Tensor) or labels.dim() != 1:
        return None
    return rows, labels


def _classified(model: nn.Module, x: Batch, batch_size: int) -> dict[str, Any]:
    """For a model with ``classify`` and rows with labels (``-1``: unknown): how many of the
    labelled rows it classifies right (``correct``, ``labelled``); else nothing."""
    pair = _labels_of(x)
    if not callable(getattr(model, "classify", None)) or pair is None:
        return {}
    rows, labels = pair
    known = labels >= 0
    first = next(model.parameters(), None)
    device = first.device if first is not None else rows.device
    right = 0
    for chunk, y in zip(
        split_rows(rows[known], batch_size), split_rows(labels[known], batch_size), strict=True
    ):  # each chunk moves to the model's device, as the scores' chunks do
        right += int((model.classify(chunk.to(device)).to(y.device) == y).sum())
    return {"correct": right, "labelled": int(known.sum())}


@torch.no_grad()
def label_accuracy(model: nn.Module, x: Batch, batch_size: int = 100) -> dict[str, Any]:
    """How well a model with ``classify(x)`` (an :class:`~ppdgm.models.SSVAE`) labels rows
    ``(x, y)`` or ``{"x": x, "y": y}`` whose labels are known (``-1``: unknown, not counted):
    ``{"accuracy": ..., "labelled": ...}``, or ``{}`` for a model that does not classify or
    rows without labels."""
    counts = _classified(model, check_rows(x, "x"), batch_size)
    return _accuracy(counts["correct"], counts["labelled"]) if counts else {}


def _accuracy(right: float, labelled: int) -> dict[str, Any]:
    if not labelled:
        return {}
    return {"accuracy": right / labelled, "labelled": labelled}


@torch.no_grad()
def _evaluate_here(
    model: nn.Module, x: Batch, batch_size: int, *, method: str, num_samples: int
) -> dict[str, Any]:
    kind = model_kind(model)
    x = check_rows(x, "x")
    first = next(model.parameters(), None)
    device = first.device if first is not None else first_tensor(x).device
    was_training = model.training
    model.eval()
    out: dict[str, Any] = {"rows": num_rows(x)}
    work = batch_size * sum(p.numel() for p in model.parameters())
    with work_threads(work):
        try:  # each chunk moves to the model's device: a model on a GPU scores data in memory
            chunks = (map_tensors(c, lambda t: t.to(device)) for c in split_rows(x, batch_size))
            if kind == DENSITY:
                total = 0.0
                for chunk in chunks:
                    args, kwargs = as_arguments(chunk)
                    total += float(model.log_prob(*args, **kwargs).double().sum())
                bound, variance = ("exact" if log_prob_is_exact(model) else "dequantization"), None
            else:
                estimator = LogLikelihood(
                    model.model, model.guide, method=method, num_samples=num_samples
                )
                parts = []
                for chunk in chunks:
                    args, kwargs = as_arguments(chunk)
                    parts.append(estimator(*args, **kwargs))
                estimate = Estimate.concat(parts)
                total, variance, bound = estimate.total, estimate.total_stderr**2, method
        finally:
            model.train(was_training)
    n = max(out["rows"], 1)
    dim = math.prod(first_tensor(x).shape[1:])
    out["nll"] = -total / n
    out["bits_per_dim"] = out["nll"] / (dim * math.log(2))
    out["bound"] = bound
    if variance is not None:
        out["stderr"] = math.sqrt(variance) / n if math.isfinite(variance) else math.nan
        out["num_samples"] = num_samples
    counts = _classified(model, x, batch_size)
    if counts and current_group().parallel:
        out.update(counts)  # summed over the processes by evaluate
    elif counts:
        out.update(_accuracy(counts["correct"], counts["labelled"]))
    return out


@dataclass
class FitResult:
    """What :func:`fit` did.

    Attributes:
        history: one entry per finished epoch (``epoch``, ``train_loss``, ``valid_nll``,
            ``valid_bits_per_dim``, ``seconds``, ``best``; ``valid_bound`` where the
            validation NLL is a bound (``"elbo"``, ``"dequantization"``); ``valid_iwae_nll``
            with ``valid_samples``, and ``valid_iwae_unreliable`` where its importance weights
            were flagged as unreliable).
        best_epoch: the epoch of the lowest validation NLL (the last epoch without validation
            data); its weights are in the model when :func:`fit` returns.
        best_valid_nll: that NLL, or None.
        stopped_early: whether early stopping ended the run.
        seconds: training time of the epochs run by this call.
        out_dir: where checkpoints, metrics and pictures went, or None.
        files: the files written into ``out_dir``.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_valid_nll: float | None = None
    stopped_early: bool = False
    seconds: float = 0.0
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)


def fit(
    model: nn.Module,
    train: Batch,
    valid: Batch | None = None,
    *,
    epochs: int = 10,
    batch_size: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    lr_decay: float = 1.0,
    precision: str = "32",
    patience: int | None = None,
    max_seconds: float | None = None,
    seed: int = 0,
    objective: Objective | None = None,
    valid_samples: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    plots: bool = True,
    data: dict[str, Any] | None = None,
    dynamic_binarization: bool = False,
) -> FitResult:
    """Trains ``model`` by minimizing ``objective`` over minibatches of ``train`` with Adam.

    ``model`` is any module of the contract (:mod:`ppdgm.base`): one with ``log_prob``
    trains by maximum likelihood, one with Pyro programs ``model`` and ``guide`` by SVI (the
    ELBO unless ``objective`` says otherwise). Parameters a program creates with
    ``pyro.param`` are found by running it once before training, and trained and saved with
    the module's own.

    Every epoch: a pass over ``train`` shuffled by ``(seed, epoch)``, then the validation NLL
    (:func:`evaluate`; the negative ELBO of a latent-variable model); a lower one saves
    ``best.pt``; ``last.pt`` (for ``resume``) and one line of ``metrics.jsonl`` are written
    after every epoch. At the end the best weights are loaded into the model, and
    ``learning_curves.png`` and (for a model with ``sample``) ``samples.png`` are drawn.

    Arguments:
        model: the model, a ``torch.nn.Module``.
        train, valid: the rows, a tensor ``[N, ...]`` or a tuple or dict of tensors with ``N``
            rows each (labels reach the model this way: ``model(x, y)``, see
            :mod:`ppdgm.batch`), moved to the device of the model's parameters (so that a
            model moved to a GPU trains there); ``valid`` None: no validation or early
            stopping.
        epochs: the epoch to stop after, counting those a resumed run already did.
        batch_size, lr: minibatch size and Adam's learning rate (Adam as :func:`adam` makes it).
        weight_decay: an L2 penalty on every parameter (Adam's ``weight_decay``); 0: none.
        lr_decay: the learning rate of epoch ``e`` (from 0) is ``lr * lr_decay**e``; 1: constant.
        precision: ``"32"``: train in the parameters' dtype; ``"bf16-mixed"``: the training
            loss runs under ``torch.autocast`` with bfloat16, so matrix products take bfloat16
            inputs (with float32 weights, gradients and Adam state), 1.3 to 2 times as fast
            on processors with bfloat16 instructions. Validation runs without autocast,
            in the parameters' dtype, so the reported NLL is not rounded.
        patience: stop after this many epochs without a lower validation NLL; None: never.
        max_seconds: stop after the epoch during which this much training time (in this call)
            has passed; None: no limit.
        seed: the seed of the shuffles and of torch's random stream during training.
        objective: the loss of a minibatch, ``(model, batch, step) -> Tensor``; None:
            :func:`default_objective`.
        valid_samples: for a latent-variable model, also report the importance-weighted
            bound with this many samples each epoch (``valid_iwae_nll``); None: only the ELBO.
        out_dir: the folder of checkpoints, metrics and pictures; None: keep nothing.
        resume: continue the run whose ``last.pt`` is in ``out_dir``.
        overwrite: start afresh even if ``out_dir`` holds a run.
        progress: show a tqdm bar with the loss and the validation NLL.
        plots: draw the pictures (needs ``out_dir``).
        data: a description of the data, kept in the checkpoints (``ppdgm evaluate`` uses it).
        dynamic_binarization: the rows of ``train`` (its first tensor; labels stay) are
            intensities in ``[0, 1]``, and each epoch trains on a fresh Bernoulli draw of them,
            :func:`ppdgm.data.dynamic_binarization` with ``(seed, epoch)`` (so a resumed run
            replays the same draws), as the CS236 homework trains on MNIST. The rows of
            ``valid`` are binarized once (:func:`ppdgm.data.fixed_binarization` with ``seed``;
            binary rows stay as they are), so that every epoch is scored on the same rows.

    In a ``torch.distributed`` process group (``torchrun``), every process calls ``fit`` with
    the same arguments and the run is data parallel: ``batch_size`` is the global minibatch,
    each process takes its block of it, the gradients are summed, validation is sharded by rows,
    and rank 0 alone writes ``out_dir`` and shows progress (see
    :mod:`ppdgm.distributed`). A deterministic objective gives the parameters of one
    process, to float rounding.

    Raises:
        TypeError: for a model of neither kind (the message names the missing methods).
        ValueError: for bad settings or data (see the model's ``check``), a ``resume`` whose
            checkpoint is of another model or other settings, an ``out_dir`` holding a run
            without ``resume`` or ``overwrite``, or a loss that is not finite.
        FileNotFoundError: for ``resume`` without ``out_dir/last.pt``.
    """
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    if patience is not None and patience < 1:
        raise ValueError(f"patience must be a positive integer or None, got {patience!r}")
    if patience is not None and valid is None:
        raise ValueError("early stopping (patience) needs validation data")
    if valid_samples is not None:
        check_int("valid_samples", valid_samples)
    if objective is None:
        objective = default_objective(model)
    kind = model_kind(model, program=bool(getattr(objective, "needs_program", False)))
    if valid_samples is not None and model_kind(model) != PROGRAM:
        raise ValueError(
            "valid_samples is for latent-variable models; a density model's log_prob is scored "
            "as it is"
        )
    if next(model.parameters(), None) is None and kind == DENSITY:
        raise ValueError(f"{type(model).__name__} has no parameters to train")
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    intensities = None
    if dynamic_binarization:  # the model checks a draw; each epoch draws afresh from these
        train = map_tensors(check_rows(train, "train"), lambda t: t.to(device))
        intensities = first_tensor(train)
        train = replace_first(train, dynamic_binarization_of(intensities, seed, 0))
        if valid is not None:
            valid = check_rows(valid, "valid")
            valid = replace_first(valid, fixed_binarization(first_tensor(valid), seed))
    train = _prepare(train, "train", model, device)
    valid = _prepare(valid, "valid", model, device) if valid is not None else None
    if num_rows(train) == 0:
        raise ValueError("no training data: train has 0 rows")
    if valid is not None and num_rows(valid) == 0:
        raise ValueError("the validation data has 0 rows: pass valid=None to train without one")
    out = Path(out_dir) if out_dir is not None else None
    settings: dict[str, Any] = {"seed": seed, "batch_size": batch_size, "lr": lr}
    if weight_decay:
        settings["weight_decay"] = weight_decay
    if hasattr(objective, "settings"):  # e.g. an SVIObjective: a resumed run must match it
        settings["objective"] = objective.settings
    if lr_decay != 1.0:
        settings["lr_decay"] = lr_decay
    if precision != "32":
        settings["precision"] = precision
    if dynamic_binarization:
        settings["dynamic_binarization"] = True
    if not weight_decay >= 0:
        raise ValueError(f"weight_decay must be a non-negative number, got {weight_decay!r}")
    if not 0 < lr_decay <= 1:
        raise ValueError(f"lr_decay must be in (0, 1], got {lr_decay!r}")
    autocast = _autocast(model, precision)
    if out is not None and not resume and (out / "last.pt").exists() and not overwrite:
        raise ValueError(
            f"{out} holds a run already; resume it (--resume) or start over (--overwrite)"
        )
    if resume and out is None:
        raise ValueError("resume needs out_dir, the folder of the run to continue")
    # before anything is written or trained: the programs run once on a few rows, so that a
    # program that cannot train fails now, not after an epoch, and its pyro.param parameters
    # exist (on a stream of its own: the training stream stays that of (seed, epoch))
    sample_rows = select_rows(train, slice(0, min(batch_size, num_rows(train))))
    with torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        pyro_params = _preflight(model, kind, sample_rows, valid is not None)
    where = current_group()
    if where.parallel:  # every process starts from rank 0's parameters
        broadcast_parameters([*model.parameters(), *model.buffers(), *pyro_params.values()])
    optimizer = adam([*model.parameters(), *pyro_params.values()], lr=lr, weight_decay=weight_decay)
    state: dict[str, Any] = {"history": [], "best": math.inf, "best_epoch": None, "bad": 0}
    best_state = None
    writes = out is not None and where.writer  # other processes of a run write nothing
    if out is not None:
        if writes:
            out.mkdir(parents=True, exist_ok=True)
        if resume:
            state, best_state = _resume(model, pyro_params, optimizer, out, settings)
        if writes:
            _rewrite_metrics(out / "metrics.jsonl", state["history"])

    history: list[dict[str, Any]] = state["history"]
    start = len(history)
    steps_per_epoch = math.ceil(num_rows(train) / batch_size)
    stopped = patience is not None and state["bad"] >= patience
    bar = tqdm(
        total=epochs * steps_per_epoch,
        initial=min(start, epochs) * steps_per_epoch,
        disable=not progress or not where.writer,
        unit="batch",
        dynamic_ncols=True,
    )
    began = time.perf_counter()
    trained = optimizer.param_groups[0]["params"]
    replicas = {
        **dict(model.named_parameters()),
        **{f"pyro.param {k!r}": v for k, v in pyro_params.items()},
    }
    work = batch_size // where.size * sum(p.numel() for p in trained)
    saved_epoch = start  # the epoch of out/last.pt (a resumed run's, until the next is saved)
    training = True
    try:
        with torch.random.fork_rng(devices=_rng_devices(device)), bar, work_threads(work):
            for epoch in range(start, epochs):
                if stopped:
                    break
                torch.manual_seed(seed * 1_000_003 + epoch + where.rank * RANK_STREAMS)
                for group in optimizer.param_groups:
                    group["lr"] = lr * lr_decay**epoch
                tick = time.perf_counter()
                model.train()
                total = torch.zeros((), dtype=torch.float64, device=device)
                bar.set_description(f"epoch {epoch + 1}/{epochs}")
                if intensities is not None and epoch > 0:  # epoch 0's draw is the checked one
                    train = replace_first(train, dynamic_binarization_of(intensities, seed, epoch))
                for b, whole in enumerate(batches(train, batch_size, seed=seed, epoch=epoch)):
                    step = epoch * steps_per_epoch + b
                    batch = shard(whole, where) if where.parallel else whole
                    optimizer.zero_grad(set_to_none=True)
                    if num_rows(batch):  # a process may get no rows of a short last minibatch
                        try:
                            with values_checked(), autocast():  # train was checked in full above
                                loss = objective(model, batch, step)
                        except NaNLogDensity as e:  # the parameters diverged at the last step
                            _check_finite(torch.tensor(math.nan), epoch, step, out, cause=str(e))
                            raise
                        # this block's share of the minibatch's mean: summed over the processes,
                        # the gradients are those of the whole minibatch
                        (loss * (num_rows(batch) / num_rows(whole))).backward()
                        total += loss.detach() * num_rows(batch)
                    if where.parallel:
                        sum_gradients(trained)
                    optimizer.step()
                    bar.update()
                    if b % 20 == 0 and num_rows(batch):
                        _check_finite(loss, epoch, step, out)
                        bar.set_postfix(_postfix(float(loss.detach()), history), refresh=False)
                if where.parallel:  # rank 0's buffers everywhere; the parameters still one model
                    agree_replicas(replicas, list(model.buffers()), epoch + 1)
                summed = sum_values([float(total)])[0] if where.parallel else float(total)
                entry: dict[str, Any] = {"epoch": epoch + 1, "train_loss": summed / num_rows(train)}
                _check_finite(torch.tensor(entry["train_loss"]), epoch, step, out)
                if valid is not None:
                    scores = evaluate(model, valid, batch_size=batch_size)
                    entry["valid_nll"] = scores["nll"]
                    entry["valid_bits_per_dim"] = scores["bits_per_dim"]
                    if scores["bound"] != "exact":
                        entry["valid_bound"] = scores["bound"]
                    if "accuracy" in scores:
                        entry["valid_accuracy"] = scores["accuracy"]
                    if valid_samples is not None:
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always", UnreliableWeightsWarning)
                            iwae = evaluate(
                                model,
                                valid,
                                batch_size=batch_size,
                                method="importance",
                                num_samples=valid_samples,
                            )
                        entry["valid_iwae_nll"] = iwae["nll"]
                        if any(issubclass(w.category, UnreliableWeightsWarning) for w in caught):
                            entry["valid_iwae_unreliable"] = True
                score = entry.get("valid_nll", -float(epoch))  # no validation: the latest is best
                entry["best"] = score < state["best"]
                if entry["best"]:
                    state.update(best=score, best_epoch=epoch + 1, bad=0)
                    if valid is not None:  # without, the best is the latest: no copy needed
                        best_state = _snapshot(model, pyro_params)
                else:
                    state["bad"] += 1
                entry["seconds"] = time.perf_counter() - tick
                history.append(entry)
                bar.set_postfix(_postfix(entry["train_loss"], history), refresh=True)
                if writes:
                    extra = {
                        "data": data or {},
                        "settings": settings,
                        "epoch": epoch + 1,
                        "pyro_params": pyro_params,
                    }
                    if entry["best"]:
                        save_checkpoint(out / "best.pt", model, **extra)
                    _rewrite_metrics(out / "metrics.jsonl", history)  # atomic: whole lines
                    save_checkpoint(
                        out / "last.pt",
                        model,
                        **extra,
                        optimizer=optimizer.state_dict(),
                        history=history,
                        state={k: v for k, v in state.items() if k != "history"},
                    )
                    saved_epoch = epoch + 1
                stopped = patience is not None and state["bad"] >= patience
                if max_seconds is not None:
                    late = float(time.perf_counter() - began >= max_seconds)
                    if (sum_values([late])[0] if where.parallel else late) > 0:  # all stop together
                        break
        training = False
        seconds = time.perf_counter() - began
        if valid is not None and best_state is not None:
            _restore(model, pyro_params, best_state)
        model.eval()
        files: list[Path] = []
        if writes and history:
            files += [out / "best.pt", out / "last.pt", out / "metrics.jsonl"]
            if plots:
                name = type(model).__name__
                files.append(save_learning_curves(history, out / "learning_curves.png", title=name))
                if can_sample(model):
                    with torch.random.fork_rng(devices=_rng_devices(device)):
                        samples = picture_samples(model, 64, seed)
                    files.append(save_sample_grid(samples, out / "samples.png", title=name))
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (ppdgm.commands.train): what was kept
        if where.writer:
            e.add_note(_kept(out if writes else None, _saved_epoch(out, saved_epoch), training))
        raise
    has_valid = valid is not None and state["best_epoch"] is not None
    return FitResult(
        history=history,
        best_epoch=state["best_epoch"],
        best_valid_nll=state["best"] if has_valid else None,
        stopped_early=stopped and len(history) < epochs,
        seconds=seconds,
        out_dir=out,
        files=files,
    )


#: The offset of each rank's random stream during training (rank 0's is that of one process).
RANK_STREAMS = 1_000_000_007


def _rng_devices(device: torch.device) -> list[Any]:
    return [device] if device.type == "cuda" else []


def _prepare(data: Batch, name: str, model: nn.Module, device: torch.device) -> Batch:
    """The data checked in full, once, and moved to ``device``: by the model's
    ``check_batch`` (rows and what comes with them, such as labels) where it has one, else by
    its ``check`` for a plain tensor, else by shape and finiteness."""
    check_batch = getattr(model, "check_batch", None)
    check = getattr(model, "check", None)
    if callable(check_batch):
        data = check_batch(check_rows(data, name))
    elif callable(check) and isinstance(data, Tensor):
        data = check(data)
    else:
        data = check_rows(data, name)
    return map_tensors(data, lambda t: t.to(device))


def _preflight(model: nn.Module, kind: str, rows: Batch, validate: bool) -> dict[str, Tensor]:
    """Runs the model once on ``rows``; returns its programs' ``pyro.param`` parameters.

    Raises:
        ValueError: for a ``log_prob`` that does not return one value per row, and for a
            program that LogLikelihood cannot score (no plate "data", a guide that does not
            match the model: see :func:`ppdgm.infer.probe.probe`) when there is validation data.
    """
    n = num_rows(rows)
    args, kwargs = as_arguments(rows)
    if kind == DENSITY:
        with torch.no_grad():
            log_p = model.log_prob(*args, **kwargs)
        if not isinstance(log_p, Tensor) or tuple(log_p.shape) != (n,):
            shape = tuple(log_p.shape) if isinstance(log_p, Tensor) else type(log_p).__name__
            raise ValueError(
                f"{type(model).__name__}.log_prob returned {shape} for {n} rows; it must return "
                f"one log-density per row, shape ({n},)"
            )
        return {}
    params = program_params(model, rows)
    if validate:
        with torch.no_grad():
            probe(model.model, model.guide, args, kwargs, "data")
    if next(model.parameters(), None) is None and not params:
        raise ValueError(
            f"{type(model).__name__} has no parameters to train: its module has none and its "
            "programs create none with pyro.param"
        )
    return params


def _snapshot(model: nn.Module, pyro_params: dict[str, Tensor]) -> dict[str, Any]:
    return {
        "state_dict": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "pyro_params": {k: v.detach().clone() for k, v in pyro_params.items()},
    }


def _restore(model: nn.Module, pyro_params: dict[str, Tensor], snapshot: dict[str, Any]) -> None:
    model.load_state_dict(snapshot["state_dict"])
    load_program_params(pyro_params, snapshot["pyro_params"], "the best epoch")


#: Adam's flags that choose its kernel, not its arithmetic
_KERNEL_FLAGS = ("fused", "foreach")

#: the device types whose parameters Adam updates with its fused kernel
_FUSED_DEVICES = ("cpu", "cuda")


def adam(params: Iterable[nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.Adam:
    """``torch.optim.Adam``, with its fused kernel where every parameter allows it.

    The fused kernel updates each tensor in one pass over memory; the default on the CPU makes
    several. For a MADE of two layers of 4,000 units on a CPU core the update took 12 ms a step
    instead of 90 ms. It computes the same update up to rounding (about 1e-7 apart after 50
    steps in float32). Parameters on other devices, or not floating point, get the default.

    Arguments:
        params: the parameters to update.
        lr, weight_decay: Adam's learning rate and L2 penalty.

    Returns:
        The optimizer.
    """
    params = list(params)
    fused = bool(params) and all(
        p.is_floating_point() and p.device.type in _FUSED_DEVICES for p in params
    )
    return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


#: the values of ``fit(precision=...)``
PRECISIONS = ("32", "bf16-mixed")


def _autocast(
    model: nn.Module, precision: str
) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """A factory of the context that the training loss runs in, for ``precision``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "32":
        return contextlib.nullcontext
    device = next(model.parameters()).device.type
    return functools.partial(torch.autocast, device_type=device, dtype=torch.bfloat16)


def _resume(
    model: nn.Module,
    pyro_params: dict[str, Tensor],
    optimizer: torch.optim.Optimizer,
    out: Path,
    settings: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    checkpoint = read_checkpoint(out / "last.pt")
    spec, mine = checkpoint["model"], model_spec(model)
    if not same_model(spec, mine):
        raise ValueError(
            f"{out / 'last.pt'} is a checkpoint of {describe_spec(spec)}, not of the "
            f"{describe_spec(mine)} being trained; start over with --overwrite or point --out "
            "elsewhere"
        )
    if checkpoint.get("settings") != settings:
        raise ValueError(
            f"{out / 'last.pt'} was trained with {checkpoint.get('settings')}, not {settings}; "
            "resume with the same seed, batch size, learning rate and objective"
        )
    try:
        load_state(model, checkpoint, out / "last.pt")
        load_program_params(pyro_params, checkpoint["pyro_params"], str(out / "last.pt"))
        _load_optimizer(optimizer, checkpoint, out / "last.pt", model, pyro_params)
        state = _saved_progress(checkpoint, out / "last.pt")
        best_state = None
        if (out / "best.pt").exists():
            best = read_checkpoint(out / "best.pt")
            for name, value in best["state_dict"].items():
                mine = checkpoint["state_dict"].get(name)
                if mine is not None and tuple(mine.shape) != tuple(value.shape):
                    raise ValueError(
                        f"{out / 'best.pt'}: {name} has shape {tuple(value.shape)}, but the "
                        f"model's (and last.pt's) is {tuple(mine.shape)}"
                    )
            best_state = {"state_dict": best["state_dict"], "pyro_params": best["pyro_params"]}
    except ValueError as e:
        raise ValueError(
            f"cannot resume: {e}; start over with --overwrite or point --out elsewhere"
        ) from None
    return state, best_state


def _load_optimizer(
    optimizer: torch.optim.Optimizer,
    checkpoint: dict[str, Any],
    path: Path,
    model: nn.Module,
    pyro_params: dict[str, Tensor],
) -> None:
    """Loads the optimizer's saved state, checking that each of its tensors has the shape of
    its parameter (torch does not, and a step would fail on it).

    Raises:
        ValueError: naming ``path`` and the parameter, for a missing or damaged state.
    """
    saved = checkpoint.get("optimizer")
    if not isinstance(saved, dict):
        raise ValueError(f"{path} holds no optimizer state (not a checkpoint to resume from)")
    try:
        optimizer.load_state_dict(saved)
    except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as e:
        raise ValueError(f"{path}: the saved optimizer state does not fit: {e}") from None
    for group in optimizer.param_groups:  # the saved flags name the kernel of the saving run
        group.update({k: optimizer.defaults[k] for k in _KERNEL_FLAGS})
    names = {id(p): n for n, p in model.named_parameters()}
    names.update({id(p): f"pyro.param {n!r}" for n, p in pyro_params.items()})
    for param, moments in optimizer.state.items():
        for key, value in moments.items():
            if key == "step" or not isinstance(value, Tensor):
                continue
            if tuple(value.shape) != tuple(param.shape):
                raise ValueError(
                    f"{path}: the optimizer's {key} of {names.get(id(param), '?')} has shape "
                    f"{tuple(value.shape)}, expected {tuple(param.shape)}"
                )


def _saved_progress(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The loop's state saved in ``last.pt``: ``best``, ``best_epoch``, ``bad`` and
    ``history``.

    Raises:
        ValueError: naming ``path``, for a missing or damaged entry.
    """
    state, history = checkpoint.get("state"), checkpoint.get("history")
    if (
        not isinstance(state, dict)
        or not isinstance(history, list)
        or not all(isinstance(e, dict) for e in history)
        or not {"best", "best_epoch", "bad"} <= set(state)
    ):
        raise ValueError(f"{path} holds no record of the epochs run (not a checkpoint to resume)")
    return {**state, "history": list(history)}


def _saved_epoch(out: Path | None, known: int) -> int:
    """The epoch of ``out/last.pt`` as the file says (an interruption may fall between writing
    it and noting that it was written); ``known`` where it cannot be read."""
    if out is None or not (out / "last.pt").exists():
        return known
    try:
        return int(read_checkpoint(out / "last.pt")["epoch"])
    except (ValueError, KeyError, TypeError, OSError, RuntimeError):
        return known


def _kept(out: Path | None, saved_epoch: int, training: bool) -> str:
    """What an interrupted :func:`fit` leaves, in words: the checkpoint of the last finished
    epoch (``saved_epoch``; 0: none), and how to go on from it; ``training``: whether the
    interruption came during the epochs (else while drawing the pictures)."""
    if out is None:
        return "nothing was saved (no output folder)"
    if not saved_epoch:
        return f"no epoch finished, so no checkpoint was written to {out}"
    lost = f"epoch {saved_epoch + 1} was cut short and is lost; " if training else ""
    return (
        f"{lost}kept {out / 'last.pt'}, the checkpoint of epoch {saved_epoch}, the last "
        "finished one (and best.pt); --resume continues from it"
    )


def _rewrite_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    write_text_atomic(path, "".join(json.dumps(entry) + "\n" for entry in history))


def _check_finite(
    loss: Tensor, epoch: int, step: int, out: Path | None, cause: str | None = None
) -> None:
    if not bool(torch.isfinite(loss)):
        kept = (
            f"; the last good checkpoint (epoch {epoch}) is {out / 'last.pt'}, resume from it"
            if out is not None and epoch > 0
            else ""
        )
        why = f" ({cause})" if cause else ""
        raise ValueError(
            f"the loss is {float(loss.detach())} at epoch {epoch + 1} (step {step}){why}; "
            f"training stopped, try a lower learning rate{kept}"
        )


def _postfix(loss: float, history: list[dict[str, Any]]) -> dict[str, str]:
    postfix = {"loss": f"{loss:.3f}"}
    if history and history[-1].get("valid_nll") is not None:
        postfix["valid NLL"] = f"{history[-1]['valid_nll']:.3f}"
    return postfix
