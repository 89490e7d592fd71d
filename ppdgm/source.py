"""Models from a user's own Python file, named ``FILE.py:NAME``, and the record of where a
module came from, which checkpoints keep so that ``ppdgm evaluate`` and ``ppdgm sample`` can
build the module again.

``NAME`` is a class or a factory function in ``FILE.py``; calling it with the keyword arguments
``kwargs`` (plain JSON data) returns the module. The file is imported as a module of its own
(``ppdgm_user.<stem>_<hash>``), once per path and content.

Importing a file runs its code. A checkpoint names the file it was built from, and rebuilding
it imports that file again, never code stored in the checkpoint (which loads with
``torch.load(weights_only=True)``): it runs what you wrote, as ``ppdgm fit`` did.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import warnings
import weakref
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn

__all__ = [
    "build_from_source",
    "load_object",
    "load_source",
    "parse_reference",
    "source_of",
]

_SOURCES: weakref.WeakKeyDictionary[nn.Module, dict[str, Any]] = weakref.WeakKeyDictionary()


def parse_reference(text: str) -> tuple[Path, str]:
    """``"path/to/file.py:NAME"`` as ``(Path("path/to/file.py"), "NAME")``.

    Raises:
        ValueError: for text that is not ``FILE.py:NAME``.

    Example:
        >>> parse_reference("models/my_vae.py:MyVAE")
        (PosixPath('models/my_vae.py'), 'MyVAE')
    """
    path, sep, name = str(text).rpartition(":")
    if not sep or not path.endswith(".py") or not name.isidentifier():
        raise ValueError(
            f"expected FILE.py:NAME (a Python file and the class or function in it that builds "
            f"the model, e.g. my_vae.py:MyVAE), got {text!r}"
        )
    return Path(path), name


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _import(path: Path) -> ModuleType:
    if not path.is_file():
        raise FileNotFoundError(f"no such Python file: {path}")
    digest = _digest(path)
    name = f"ppdgm_user.{path.stem}_{digest[:12]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has a loader
        raise ValueError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        del sys.modules[name]
        raise ValueError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    return module


def load_object(reference: str) -> Any:
    """The class or function ``NAME`` of ``FILE.py`` (``reference`` is ``FILE.py:NAME``), e.g.
    a Pyro program to inspect or a factory of modules.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a bad reference, a file that fails to import, or no callable ``NAME``
            in it (the message lists what it has).
    """
    path, name = parse_reference(reference)
    module = _import(path)
    found = getattr(module, name, None)
    if callable(found):
        return found
    classes = sorted(
        k
        for k, v in vars(module).items()
        if not k.startswith("_")
        and isinstance(v, type)
        and issubclass(v, nn.Module)
        and v.__module__ == module.__name__
    )
    functions = sorted(
        k
        for k, v in vars(module).items()
        if not k.startswith("_")
        and callable(v)
        and getattr(v, "__module__", None) == module.__name__
        and not isinstance(v, type)
    )
    hint = "".join(
        f"; its {what}: {', '.join(names)}"
        for what, names in (("modules", classes), ("functions", functions))
        if names
    )
    raise ValueError(f"{path} has no class or function {name!r}{hint}")


def load_source(reference: str, kwargs: dict[str, Any] | None = None) -> nn.Module:
    """The module that ``NAME(**kwargs)`` of ``FILE.py`` returns (``reference`` is
    ``FILE.py:NAME``), recorded with its source so that checkpoints can rebuild it.

    Raises:
        FileNotFoundError: for a missing file.
        ValueError: for a bad reference, a file that fails to import, a missing ``NAME``,
            arguments that are not JSON data or that ``NAME`` rejects, or a result that is not a
            ``torch.nn.Module``.
    """
    path, name = parse_reference(reference)
    kwargs = dict(kwargs or {})
    try:
        json.dumps(kwargs)
    except (TypeError, ValueError):
        raise ValueError(
            f"the keyword arguments of {name} must be JSON data, got {kwargs!r}"
        ) from None
    factory = load_object(reference)
    try:
        built = factory(**kwargs)
    except TypeError as e:
        raise ValueError(f"{name}(**{kwargs}) failed: {e}") from None
    if not isinstance(built, nn.Module):
        raise ValueError(
            f"{name}(**{kwargs}) returned a {type(built).__name__}, not a torch.nn.Module"
        )
    _SOURCES[built] = {
        "file": str(path.resolve()),
        "name": name,
        "kwargs": kwargs,
        "sha256": _digest(path),
    }
    return built


def source_of(module: nn.Module) -> dict[str, Any] | None:
    """Where ``module`` came from (``file``, ``name``, ``kwargs``, ``sha256``), when
    :func:`load_source` built it; else None."""
    found = _SOURCES.get(module)
    return dict(found) if found is not None else None


def build_from_source(source: dict[str, Any]) -> nn.Module:
    """The module a source record (from :func:`source_of`) describes, built again; warns when
    the file has changed since.

    Raises:
        FileNotFoundError, ValueError: as :func:`load_source`; also for a damaged record.
    """
    try:
        path, name, kwargs = Path(source["file"]), source["name"], source["kwargs"]
    except (KeyError, TypeError):
        raise ValueError(f"a damaged model source record: {source!r}") from None
    if not path.is_file():
        raise FileNotFoundError(
            f"the model was built by {name} in {path}, which no longer exists; put the file "
            "back, or build the module yourself and load the weights with "
            "ppdgm.checkpoint.load_weights"
        )
    if source.get("sha256") not in (None, _digest(path)):
        warnings.warn(
            f"{path} has changed since the checkpoint was written; building {name} from the "
            "file as it is now",
            stacklevel=2,
        )
    return load_source(f"{os.fspath(path)}:{name}", kwargs)
