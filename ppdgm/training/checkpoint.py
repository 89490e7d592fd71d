"""Checkpoints of any model: written atomically, read with ``torch.load(weights_only=True)``,
checked before anything is built, and rebuilt from what every checkpoint records of its model.

A checkpoint is a dict with ``format`` (:data:`FORMAT`), ``model`` (the spec, see
:func:`model_spec`), ``state_dict``, ``pyro_params`` (the unconstrained ``pyro.param`` values of
a program, see :mod:`ppdgm.infer.params`; empty for most models), and whatever the writer adds (the
training loop adds the epoch, the optimizer's state, the history and the data's description).

The spec of a zoo model is its name, constructor arguments and dtype; that of a user's module is
its class and, when ``ppdgm fit FILE.py:NAME`` built it, the file, ``NAME`` and keyword arguments
(:mod:`ppdgm.source`), so that ``ppdgm evaluate`` and ``ppdgm sample`` build it again. A module
built in Python is loaded into a module the caller builds: :func:`load_weights`.
"""

from __future__ import annotations

import math
import os
import pickle
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ppdgm.atomic import atomic_path
from ppdgm.base import registered_name
from ppdgm.batch import Batch
from ppdgm.infer.params import load_program_params, program_params
from ppdgm.settings import config_from, plain
from ppdgm.source import build_from_source, source_of

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

#: The marker of a ppdgm checkpoint, with the version of its layout.
FORMAT = "ppdgm-checkpoint/1"

#: The most parameter and buffer elements a checkpoint's model may declare (2**34, 64 GiB of
#: float32), and the most any one size setting may ask for: a spec beyond it is refused before
#: anything is allocated.
MAX_ELEMENTS = 2**34

#: The most memory a checkpoint's parameters and buffers may take (8 GiB), estimated before
#: anything is allocated; less where the machine has less memory available.
MAX_BYTES = 8 * 2**30


def model_spec(model: nn.Module) -> dict[str, Any]:
    """What rebuilds ``model``'s architecture, as plain data.

    A zoo model: ``name`` (its lower-case zoo name), ``config`` (constructor arguments) and
    ``dtype``. Any other module: ``name`` None, ``class`` (its qualified class name), ``config``
    ``{}``, ``dtype`` and ``source`` (``file``, ``name``, ``kwargs``, ``sha256`` when
    :func:`ppdgm.source.load_source` built it, else None).
    """
    first = next(iter(model.parameters()), None)
    dtype = str(first.dtype if first is not None else torch.get_default_dtype())
    dtype = dtype.removeprefix("torch.")
    name = registered_name(model)
    if name is not None:
        try:
            return {"name": name, "config": model.config, "dtype": dtype}
        except ValueError:  # a zoo model around parts of the user's own: no config
            pass
    cls = type(model)
    return {
        "name": None,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config": {},
        "dtype": dtype,
        "source": source_of(model),
    }


def same_model(saved: dict[str, Any], mine: dict[str, Any]) -> bool:
    """Whether two specs describe the same architecture (the file of a source may have moved;
    its ``NAME`` and arguments must match)."""

    def key(spec: dict[str, Any]) -> tuple[Any, ...]:
        source = spec.get("source") or {}
        cls = str(spec.get("class", "")).rpartition(".")[2]  # a file's module name has its hash
        config = _settings(spec)
        return (spec.get("name"), config, cls, source.get("name"), source.get("kwargs"))

    return key(saved) == key(mine)


def _settings(spec: dict[str, Any]) -> Any:
    """A zoo spec's config with every setting, defaults filled in (a checkpoint of an earlier
    version may leave out a setting added since); other specs' as saved."""
    from ppdgm.models import MODELS

    cls = MODELS.get(str(spec.get("name")))
    if cls is None:
        return spec.get("config")
    try:
        return plain(config_from(cls.Config, spec.get("config") or {}, cls.zoo_name))
    except ValueError:
        return spec.get("config")


def describe_spec(spec: dict[str, Any]) -> str:
    """A short description of the model a spec describes, for messages."""
    if spec.get("name"):
        return f"{spec['name']} {spec.get('config')}"
    source = spec.get("source")
    if source:
        return f"{source.get('name')}(**{source.get('kwargs')}) of {source.get('file')}"
    return str(spec.get("class", "?")).rpartition(".")[2]


def save_checkpoint(path: str | os.PathLike[str], model: nn.Module, **extra: Any) -> Path:
    """Writes ``model`` (its spec and ``state_dict``) and ``extra`` entries to ``path``,
    atomically: a temporary file next to it is renamed over it, so an interruption leaves the
    previous checkpoint intact. Returns the path.

    ``extra`` may hold ``pyro_params``, the unconstrained values of a program's ``pyro.param``
    parameters by name (:func:`ppdgm.infer.params.program_params`).
    """
    payload: dict[str, Any] = {
        "format": FORMAT,
        "model": model_spec(model),
        "state_dict": model.state_dict(),
        "pyro_params": {},
    }
    payload.update(extra)
    payload["pyro_params"] = {k: v.detach() for k, v in payload["pyro_params"].items()}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The checkpoint at ``path`` (a file, or a run folder: its ``best.pt``), loaded with
    ``weights_only=True`` (tensors and plain containers only: no code from the file runs) and
    checked.

    Raises:
        FileNotFoundError: if there is no such file, or a folder without ``best.pt``.
        ValueError: for a file that is not a PyTorch file, that holds objects other than tensors
            and plain containers (an untrusted pickle), that is not a ppdgm checkpoint, or whose
            weights hold NaN or infinite values (the message names the first one).
    """
    path = Path(path)
    if path.is_dir():
        if not (path / "best.pt").is_file():
            raise FileNotFoundError(f"{path} is a folder without best.pt: not a finished run")
        path = path / "best.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no such checkpoint: {path}")
    try:
        with warnings.catch_warnings():  # torch warns about pickles of other protocols
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ValueError(
            f"{path} is not a ppdgm checkpoint: it holds objects other than tensors and plain "
            "containers, which weights_only loading refuses (a foreign or untrusted pickle)"
        ) from None
    except Exception as e:
        raise ValueError(f"{path} is not a PyTorch checkpoint ({type(e).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(
            f"{path} is not a ppdgm checkpoint (format {found!r}, expected {FORMAT!r}); "
            "write one with ppdgm fit or ppdgm.train.fit"
        )
    spec = payload.get("model")
    payload.setdefault("pyro_params", {})
    if (
        not isinstance(spec, dict)
        or not isinstance(spec.get("config"), dict)
        or not isinstance(payload.get("state_dict"), dict)
        or not isinstance(payload["pyro_params"], dict)
    ):
        raise ValueError(f"{path} is a damaged ppdgm checkpoint: no model spec or state_dict")
    for group in ("state_dict", "pyro_params"):
        for name, value in payload[group].items():
            if not isinstance(value, Tensor):
                raise ValueError(f"{path} is a damaged ppdgm checkpoint: {name} is not a tensor")
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                bad = "NaN" if bool(torch.isnan(value).any()) else "infinite"
                raise ValueError(
                    f"{path} holds {bad} weights ({name}): a model with them gives no numbers; "
                    "the run diverged before this was saved. Resume from an earlier checkpoint "
                    "or train again with a lower learning rate"
                )
    return payload


def _gib(size: float) -> str:
    """A number of bytes for messages: ``"1.5 GiB"``, ``"3.6 TiB"``."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{int(size)} bytes"


def _available_memory() -> int | None:
    """The memory the system can give this process now (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return [leaf for v in value for leaf in _leaves(v)]
    return [value]


def _largest_size(config: dict[str, Any]) -> str:
    """The size setting asking for the most, as ``name=value``, for messages."""
    best: tuple[int, str] | None = None
    for name, value in config.items():
        if "seed" in name:
            continue
        for leaf in _leaves(value):
            if isinstance(leaf, int) and not isinstance(leaf, bool):
                if best is None or leaf > best[0]:
                    best = (leaf, f"{name}={value!r}")
    return best[1] if best else "?"


def _fits(value: Any, kind: Any) -> bool:
    """Whether a saved setting ``value`` (plain data: lists for tuples) is of type ``kind``
    (a ``Config`` field's type: int, float, str, bool, tuples of them, optional)."""
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, k) for k in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin in (tuple, list) or kind in (tuple, list):
        if not isinstance(value, (list, tuple)):
            return False
        args = typing.get_args(kind)
        if not args:
            return True
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(
            _fits(v, k) for v, k in zip(value, args, strict=True)
        )
    return True  # a type this check does not know: the model's own checks decide


def _kind_name(kind: Any) -> str:
    name = kind.__name__ if isinstance(kind, type) else str(kind).replace("typing.", "")
    return f"of type {name}"


def check_config(spec: dict[str, Any]) -> None:
    """Checks a zoo model's saved settings before anything is built: each of the type its
    ``Config`` declares (a single int is also taken for a list of sizes), every size (an int
    anywhere in a setting, but a seed) a positive integer no larger than :data:`MAX_ELEMENTS`,
    every number finite. Specs of other modules are left to their own constructors.

    Raises:
        ValueError: naming the setting, the value and what it must be.
    """
    from ppdgm.models import MODELS

    cls = MODELS.get(str(spec.get("name")))
    config = spec.get("config")
    if cls is None or not isinstance(config, dict):
        return
    try:
        hints = typing.get_type_hints(cls.Config)
    except Exception:  # unresolvable annotations: no type checks
        hints = {}
    for name, value in config.items():
        if hints and name not in hints:
            continue  # config_from names a setting the model does not have
        kind = hints.get(name)
        lenient = isinstance(value, int) and _fits([value], kind) if kind is not None else False
        if kind is not None and not _fits(value, kind) and not lenient:
            raise ValueError(
                f"the saved setting {name}={value!r} of {cls.zoo_name} is not "
                f"{_kind_name(kind)}: a damaged or foreign checkpoint"
            )
        for leaf in _leaves(value):
            if isinstance(leaf, float) and not math.isfinite(leaf):
                raise ValueError(
                    f"the saved setting {name}={value!r} of {cls.zoo_name} is not a finite "
                    "number: a damaged or foreign checkpoint"
                )
            if isinstance(leaf, int) and not isinstance(leaf, bool) and "seed" not in name:
                if not 1 <= leaf <= MAX_ELEMENTS:
                    raise ValueError(
                        f"the saved setting {name}={value!r} of {cls.zoo_name} must hold "
                        f"positive integers no larger than {MAX_ELEMENTS:,}: a damaged or "
                        "foreign checkpoint; refused before allocating"
                    )


def _check_sizes(
    build: Any, spec: dict[str, Any], saved: dict[str, Tensor], dtype: torch.dtype
) -> None:
    """Builds the model on the ``meta`` device (no memory) to refuse absurd sizes (an estimate
    of the memory of its parameters and buffers) and weights of other shapes before anything
    is allocated."""
    config = spec.get("config") or {}
    available = _available_memory()
    limit, why = MAX_BYTES, f"the limit of {_gib(MAX_BYTES)}"
    if available is not None and available < limit:
        limit, why = available, f"the {_gib(available)} of memory available"

    def refuse(elements: int, size: float, estimate: str) -> None:
        if elements > MAX_ELEMENTS or size > limit:
            raise ValueError(
                f"the checkpoint's model {describe_spec(spec)} {estimate} {elements:,} weights, "
                f"an estimated {_gib(size)}, more than {why} (its largest setting: "
                f"{_largest_size(config)}): a damaged or foreign checkpoint; refused before "
                "allocating"
            )

    try:
        with torch.device("meta"):
            ghost = build()
    except ValueError:
        raise
    except Exception as e:
        if isinstance(e, RuntimeError) and "overflow" in str(e).lower():
            raise ValueError(
                f"the checkpoint's model {describe_spec(spec)} asks for tensors larger than "
                f"memory can address (its largest setting: {_largest_size(config)}): a damaged "
                "or foreign checkpoint; refused before allocating"
            ) from None
        # a constructor meta tensors cannot run (it reads values of its tensors): a rough
        # lower bound, one dense layer between the two largest sizes, before the real build
        widths = sorted(
            (
                leaf
                for name, value in config.items()
                if "seed" not in name
                for leaf in _leaves(value)
                if isinstance(leaf, int) and not isinstance(leaf, bool) and leaf > 0
            ),
            reverse=True,
        )
        elements = widths[0] * widths[1] if len(widths) > 1 else (widths[0] if widths else 0)
        refuse(elements, elements * dtype.itemsize, "needs at least")
        return
    tensors = ghost.state_dict()
    shapes = {k: v.shape for k, v in tensors.items()}
    elements = sum(math.prod(s) for s in shapes.values())
    size = sum(
        math.prod(v.shape) * (dtype.itemsize if v.is_floating_point() else v.element_size())
        for v in tensors.values()
    )
    refuse(elements, size, "declares")
    for name, shape in shapes.items():
        if name in saved and tuple(saved[name].shape) != tuple(shape):
            raise ValueError(
                f"the saved weights do not fit the model: {name} is saved with shape "
                f"{tuple(saved[name].shape)}, but {describe_spec(spec)} has {tuple(shape)}"
            )


def build_model(spec: dict[str, Any], state_dict: dict[str, Tensor] | None = None) -> nn.Module:
    """A fresh model of the architecture ``spec`` (from :func:`model_spec`) describes.

    Arguments:
        spec: the spec.
        state_dict: the weights that will be loaded; the architecture is first built without
            memory and its sizes checked against them (and against :data:`MAX_ELEMENTS` and
            :data:`MAX_BYTES`); a zoo model's settings are checked first (:func:`check_config`).

    Raises:
        ValueError: for an unknown model name, arguments its constructor rejects, an unknown
            dtype, absurd sizes, or a module built in Python (which :func:`load_weights`
            loads into a module the caller builds).
        FileNotFoundError: for a user's module whose file is gone.
    """
    from ppdgm.models import model_class

    dtype = getattr(torch, str(spec.get("dtype", "float32")), None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"unknown dtype {spec.get('dtype')!r} in the model spec")
    if spec.get("name") is not None:
        cls = model_class(spec["name"])
        check_config(spec)

        def build() -> nn.Module:
            try:
                return cls.from_config(spec["config"])
            except TypeError as e:
                raise ValueError(
                    f"cannot rebuild {cls.__name__} from {spec['config']!r}: {e}"
                ) from None

    elif spec.get("source"):

        def build() -> nn.Module:
            return build_from_source(spec["source"])

    else:
        raise ValueError(
            f"the checkpoint holds a {describe_spec(spec)} built in Python, which it cannot build "
            "again: build the module yourself and load the weights into it with "
            "ppdgm.checkpoint.load_weights(path, module)"
        )
    if state_dict is not None:
        _check_sizes(build, spec, state_dict, dtype)
    try:
        return build().to(dtype)
    except RuntimeError as e:  # e.g. an allocation the estimate could not foresee
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"cannot build {describe_spec(spec)}: {first}") from None


def load_state(model: nn.Module, checkpoint: dict[str, Any], path: Any) -> None:
    """Loads a checkpoint's ``state_dict`` (from :func:`read_checkpoint`) into ``model``.

    Raises:
        ValueError: naming ``path`` and the tensor at fault, for weights that do not fit the
            model: a tensor of another shape (both shapes), complex values, or tensors the
            model lacks or the checkpoint lacks.
    """
    saved = checkpoint["state_dict"]
    mine = model.state_dict()
    for name, tensor in mine.items():
        if name not in saved:  # a model may fill it in (an earlier layout): its load decides
            continue
        if tuple(saved[name].shape) != tuple(tensor.shape):
            raise ValueError(
                f"{path}: the saved weights do not fit the model: {name} has shape "
                f"{tuple(saved[name].shape)}, expected {tuple(tensor.shape)}"
            )
        if saved[name].is_complex() and not tensor.is_complex():
            raise ValueError(
                f"{path}: the saved weights do not fit the model: {name} is complex "
                f"({saved[name].dtype}), expected real numbers ({tensor.dtype})"
            )
    try:  # missing and unknown tensors: torch names them (a model may read an older layout)
        model.load_state_dict(saved)
    except RuntimeError as e:
        message = " ".join(line.strip() for line in str(e).strip().splitlines())
        raise ValueError(f"{path}: the saved weights do not fit the model: {message}") from None


def _load_pyro_params(
    model: nn.Module, checkpoint: dict[str, Any], path: Any, example: Batch | None
) -> None:
    saved = checkpoint.get("pyro_params") or {}
    if not saved:
        return
    if example is None:
        raise ValueError(
            f"{path} holds Pyro parameters ({', '.join(sorted(saved))}) that the program "
            "creates with pyro.param when it runs: pass a batch of data (example=...) so "
            "that they can be created and loaded"
        )
    load_program_params(program_params(model, example), saved, str(path))


def load_model(
    path: str | os.PathLike[str], expect: type | None = None, example: Batch | None = None
) -> tuple[nn.Module, dict[str, Any]]:
    """The model saved at ``path``, rebuilt and loaded, with the checkpoint itself.

    Arguments:
        path: a checkpoint written by :func:`save_checkpoint`.
        expect: the class the model must be; None: any.
        example: a batch of data, for a program with ``pyro.param`` parameters (they are
            created by running it once).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: see :func:`read_checkpoint` and :func:`build_model`; also for a checkpoint
            of another class than ``expect`` or a ``state_dict`` that does not fit.
    """
    checkpoint = read_checkpoint(path)
    try:
        model = build_model(checkpoint["model"], checkpoint["state_dict"])
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None
    if expect is not None and not isinstance(model, expect):
        raise ValueError(
            f"{path} holds a {type(model).__name__} checkpoint, not a {expect.__name__} one"
        )
    load_state(model, checkpoint, path)
    _load_pyro_params(model, checkpoint, path, example)
    model.eval()
    return model, checkpoint


def load_weights(
    path: str | os.PathLike[str], module: nn.Module, example: Batch | None = None
) -> dict[str, Any]:
    """Loads the weights saved at ``path`` into ``module``, a module the caller built (for a
    model trained from Python, whose checkpoint cannot build it); returns the checkpoint.

    Arguments:
        path: a checkpoint written by :func:`save_checkpoint` (``best.pt``, ``last.pt``).
        module: a module of the saved architecture.
        example: a batch of data, for a program with ``pyro.param`` parameters.

    Raises:
        ValueError: see :func:`read_checkpoint`; also for a checkpoint of another class or
            weights that do not fit.

    Example:
        >>> import tempfile
        >>> class Line(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mu = nn.Parameter(torch.tensor([1.5]))
        ...     def log_prob(self, x):
        ...         return -0.5 * ((x - self.mu) ** 2).sum(-1)
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = save_checkpoint(f"{d}/line.pt", Line())
        ...     fresh = Line()
        ...     _ = torch.nn.init.zeros_(fresh.mu)
        ...     _ = load_weights(f"{d}/line.pt", fresh)
        >>> fresh.mu
        Parameter containing:
        tensor([1.5000], requires_grad=True)
    """
    checkpoint = read_checkpoint(path)
    saved, mine = checkpoint["model"], model_spec(module)
    saved_class = str(saved.get("class", "")).rpartition(".")[2]
    if saved.get("name") != mine.get("name") or (
        saved_class and saved_class != type(module).__qualname__.rpartition(".")[2]
    ):
        raise ValueError(
            f"{path} holds a {describe_spec(saved)} checkpoint, not one of a "
            f"{type(module).__name__}"
        )
    load_state(module, checkpoint, path)
    _load_pyro_params(module, checkpoint, path, example)
    return checkpoint
