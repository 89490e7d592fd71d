"""A zoo model's settings: one dataclass per model, from which its command-line flags and the
config its checkpoints record are derived.

Each zoo class declares ``Config``, a frozen dataclass whose fields are its constructor's
keyword arguments, each made by :func:`setting` (a flag, its help and how a command line's text
becomes the value) or :func:`from_data` (a size the data decide, e.g. ``dim``)::

    @dataclass(frozen=True)
    class Config:
        dim: int = from_data()
        hidden_dim: int = setting(500, "hidden units", flag="--hidden")

``ppdgm fit MODEL`` adds the flags of ``MODEL.Config`` (:func:`add_flags`) and builds the
model from them (:func:`from_flags`); a checkpoint stores ``dataclasses.asdict`` of the config
and is rebuilt through ``Config(**saved)`` (:func:`config_from`), which names a setting it does
not know. A new zoo model gets its flags and checkpoints by declaring ``Config``: there is no
builder to extend.

This module imports neither torch nor the zoo, so that ``ppdgm --help`` stays fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "add_flags",
    "config_from",
    "flag_of",
    "flags",
    "from_data",
    "from_flags",
    "plain",
    "python_only",
    "setting",
    "size_lists",
    "sizes",
]

_FLAG = "ppdgm_flag"
_DATA = "ppdgm_from_data"


def sizes(text: str, count: int | None = None) -> tuple[int, ...]:
    """Comma-separated positive integers (``"300,300"``), ``count`` of them when given.

    Raises:
        ValueError: for anything else.

    Example:
        >>> sizes("300,300"), sizes("8,4", count=2)
        ((300, 300), (8, 4))
    """
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        values = ()
    if count == 1 and (len(values) != 1 or values[0] < 1):
        raise ValueError(f"takes one positive integer, got {text!r}")
    if not values or min(values) < 1:
        raise ValueError(f"takes comma-separated positive integers, got {text!r}")
    if count is not None and len(values) != count:
        raise ValueError(f"takes {count} comma-separated positive integers, got {text!r}")
    return values


def size_lists(text: str, count: int) -> tuple[tuple[int, ...], ...]:
    """``count`` lists of sizes separated by colons (``"200,200:100,100"``).

    Raises:
        ValueError: for anything else.

    Example:
        >>> size_lists("200,200:100", 2)
        ((200, 200), (100,))
    """
    parts = str(text).split(":")
    if len(parts) != count:
        raise ValueError(f"takes {count} lists of widths separated by ':', got {text!r}")
    return tuple(sizes(part) for part in parts)


def _one_size(text: str) -> int:
    return sizes(text, count=1)[0]


def _finite(text: str) -> float:
    """A finite number (NaN and infinities are no setting)."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"takes a finite number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"takes a finite number, got {text!r}")
    return value


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    parse: Callable[[str], Any] | None = None,
    metavar: str | None = None,
    flag_default: Any = dataclasses.MISSING,
) -> Any:
    """A field of a model's ``Config`` that the command line sets.

    Arguments:
        default: the constructor's default (a tuple for a list of sizes).
        help: the flag's help, without the default (appended).
        flag: the flag (default: ``--`` and the field's name with dashes).
        parse: the command line's text to the value; default: by the default's type (a bool
            is a switch; a tuple of ints is :func:`sizes`; ``None`` or a string stays text).
        metavar: the value's name in the help.
        flag_default: the command line's default where it differs from the constructor's
            (said in the help).
    """
    return dataclasses.field(
        default=default,
        metadata={
            _FLAG: {
                "help": help,
                "flag": flag,
                "parse": parse,
                "metavar": metavar,
                "flag_default": flag_default,
            }
        },
    )


def from_data() -> Any:
    """A field of a model's ``Config`` that the data decide (``dim``, ``x_dim``, ``levels``):
    no flag; :func:`from_flags` must be given it."""
    return dataclasses.field(default=None, metadata={_FLAG: None, _DATA: True})


def python_only(default: Any = None) -> Any:
    """A field of a model's ``Config`` that only Python sets (the command line keeps
    ``default``)."""
    return dataclasses.field(default=default, metadata={_FLAG: None})


def _options(field: dataclasses.Field[Any]) -> dict[str, Any] | None:
    return field.metadata.get(_FLAG)


def flag_of(field: dataclasses.Field[Any]) -> str | None:
    """The flag of a config field (None for a field the data decide)."""
    options = _options(field)
    if options is None:
        return None
    return options["flag"] or "--" + field.name.replace("_", "-")


def flags(config: type) -> dict[str, str]:
    """The flags of a ``Config`` class by field name, in declaration order."""
    out = {}
    for field in dataclasses.fields(config):
        flag = flag_of(field)
        if flag is not None:
            out[field.name] = flag
    return out


def _parser(field: dataclasses.Field[Any], options: dict[str, Any]) -> Callable[[str], Any]:
    if options["parse"] is not None:
        return options["parse"]
    default = field.default  # never a bool: a switch is parsed by argparse (store_true)
    if isinstance(default, int):
        return _one_size
    if isinstance(default, float):
        return _finite
    if isinstance(default, tuple) and all(isinstance(v, int) for v in default):
        return sizes
    return str


def _shown(value: Any) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):
        return ":".join(_shown(v) for v in value)
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return "none" if value is None else str(value)


def add_flags(parser: argparse.ArgumentParser | Any, config: type) -> None:
    """Adds the flags of ``config`` (a model's ``Config``) to ``parser`` or an argument group.

    Each flag stores its text under the field's name; :func:`from_flags` parses it, so that an
    error names the flag and the model.
    """
    for field in dataclasses.fields(config):
        options = _options(field)
        if options is None:
            continue
        flag = flag_of(field)
        default = (
            field.default
            if options["flag_default"] is dataclasses.MISSING
            else options["flag_default"]
        )
        if isinstance(field.default, bool):
            parser.add_argument(flag, dest=field.name, action="store_true", help=options["help"])
            continue
        shown = _shown(default)
        if options["flag_default"] is not dataclasses.MISSING:
            shown += f"; {_shown(field.default)} from Python"
        parser.add_argument(
            flag,
            dest=field.name,
            default=default,
            metavar=options["metavar"],
            help=f"{options['help']} ({shown})",
        )


def from_flags(config: type, namespace: argparse.Namespace, name: str, **data: Any) -> Any:
    """The ``config`` instance of parsed flags (:func:`add_flags`) and the data's sizes.

    Arguments:
        config: the model's ``Config``.
        namespace: the parsed flags.
        name: the model's name, for messages.
        data: the fields the data decide (:func:`from_data`), and any the caller fixes.

    Raises:
        ValueError: naming the flag and the model, for a value its parser rejects.
    """
    values: dict[str, Any] = {}
    for field in dataclasses.fields(config):
        if field.name in data:
            values[field.name] = data[field.name]
            continue
        options = _options(field)
        if field.metadata.get(_DATA):
            raise ValueError(f"{name}'s {field.name} comes from the data; pass it")
        if options is None:
            values[field.name] = field.default
            continue
        value = getattr(namespace, field.name, field.default)
        if isinstance(value, str) and not isinstance(field.default, bool):
            try:
                value = _parser(field, options)(value)
                if isinstance(value, float) and not math.isfinite(value):  # a model's own parse
                    raise ValueError(f"takes a finite number, got {value!r}")
            except ValueError as e:
                raise ValueError(f"{flag_of(field)} {e} ({name})") from None
        values[field.name] = value
    return config(**values)


def plain(config: Any) -> dict[str, Any]:
    """A config as plain data, tuples as lists (what checkpoints store).

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class C:
        ...     widths: tuple[int, ...] = (3, 2)
        >>> plain(C())
        {'widths': [3, 2]}
    """

    def lists(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: lists(v) for k, v in value.items()}
        if isinstance(value, (tuple, list)):
            return [lists(v) for v in value]
        return value

    return lists(dataclasses.asdict(config))


def config_from(config: type, saved: Mapping[str, Any], name: str) -> Any:
    """The ``config`` instance of the settings a checkpoint saved.

    Raises:
        ValueError: naming the settings ``name``'s config does not have, or lacks.
    """
    known = {f.name for f in dataclasses.fields(config)}
    unknown = sorted(set(saved) - known)
    if unknown:
        raise ValueError(
            f"the saved settings of {name} name {', '.join(map(repr, unknown))}, which {name} "
            f"does not have (its settings: {', '.join(sorted(known))}): a checkpoint of another "
            "version or from elsewhere"
        )
    try:
        return config(**saved)
    except TypeError as e:
        raise ValueError(f"cannot read the saved settings of {name}: {e}") from None
