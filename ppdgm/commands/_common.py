"""Helpers shared by the sub-commands: resolving networks, reading and writing rows and files."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ppdgm.atomic import write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

    from ppdgm.bn import DiscreteBN

__all__ = [
    "fraction",
    "load_network",
    "notes_stream",
    "parse_assignments",
    "parse_names",
    "positive_int",
    "read_rows",
    "write_frame",
    "write_text",
]

_BIF_SUFFIXES = (".bif", ".gz")


def load_network(spec: str | os.PathLike[str]) -> DiscreteBN:
    """A network from a BIF file (plain or gzip-compressed) or an example network's name.

    An existing file is read as BIF; otherwise ``spec`` is looked up with
    :func:`ppdgm.bn.example` (``asia``, ``alarm``, ...), unless it looks like a path (it has a
    directory part or a ``.bif``/``.gz`` suffix), which is then a missing file.

    Raises:
        FileNotFoundError: for a path that does not exist.
        ValueError: for a file that is not valid BIF, or a name that is neither a file nor an
            example network (the message lists the examples).
    """
    from ppdgm.bn import available, example, read_bif

    path = Path(spec)
    if path.is_file():
        return read_bif(path)
    if path.exists():
        raise ValueError(f"{path} is not a file")
    text = os.fspath(spec)
    if os.sep in text or (os.altsep and os.altsep in text) or path.suffix in _BIF_SUFFIXES:
        raise FileNotFoundError(f"no such file: {path}")
    if text in available():
        return example(text)
    raise ValueError(
        f"{text!r} is neither a BIF file nor an example network; examples: {', '.join(available())}"
    )


def read_rows(path: str | os.PathLike[str]) -> pd.DataFrame:
    """Rows of state names from a CSV file with a header of variable names (``-``: standard input).

    Every cell is read as text and only an empty cell is missing (NaN): a state literally named
    ``NA`` or ``None`` (the ``child`` and ``insurance`` networks have some) stays a state.

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the path is a folder or the file cannot be parsed as CSV.
    """
    import pandas as pd

    source: str | os.PathLike[str] | TextIO = path
    if os.fspath(path) == "-":
        source = sys.stdin
    elif Path(path).is_dir():
        raise ValueError(f"{path} is a folder, not a CSV file")
    elif not Path(path).exists():
        raise FileNotFoundError(f"no such file: {path}")
    try:
        return pd.read_csv(source, dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path} as CSV: {e}") from None


def write_text(text: str, path: str | os.PathLike[str] | None) -> None:
    """Writes ``text`` to standard output (``path`` None) or to a file, atomically.

    The text goes to a temporary file next to ``path`` that is then renamed over it, so an
    interrupted run never leaves half a file.

    Raises:
        ValueError: if the file cannot be written (the message names it).
    """
    if path is None:
        sys.stdout.write(text)
        return
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror or e}") from None


def write_frame(
    frame: pd.DataFrame, path: str | os.PathLike[str] | None, *, float_format: str = "%.10g"
) -> None:
    """Writes a DataFrame as CSV (no index, missing cells empty) to standard output or a file
    (atomically).

    Raises:
        ValueError: if the file cannot be written (the message names it).
    """
    write_text(frame.to_csv(index=False, float_format=float_format), path)


def notes_stream(output: str | os.PathLike[str] | None) -> TextIO:
    """Where to print remarks: standard error when the data itself goes to standard output."""
    return sys.stderr if output is None else sys.stdout


def parse_names(text: str) -> list[str]:
    """``"a,b, c"`` as ``["a", "b", "c"]``.

    Raises:
        ValueError: for an empty list or an empty name.
    """
    names = [name.strip() for name in text.split(",")]
    if not names or any(not name for name in names):
        raise ValueError(f"expected comma-separated names, got {text!r}")
    return names


def parse_assignments(text: str) -> dict[str, str]:
    """``"smoke=yes,xray=no"`` as ``{"smoke": "yes", "xray": "no"}``.

    Raises:
        ValueError: for an item without ``=``, an empty name or value, or a repeated name.
    """
    assignments: dict[str, str] = {}
    for item in text.split(","):
        name, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not name or not value:
            raise ValueError(f"expected VARIABLE=STATE[,VARIABLE=STATE...], got {item.strip()!r}")
        if name in assignments:
            raise ValueError(f"variable {name!r} is given twice in {text!r}")
        assignments[name] = value
    return assignments


def positive_int(text: str) -> int:
    """An argparse type: a strictly positive integer."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def device(text: str) -> str:
    """An argparse type: a torch device this machine has (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    try:
        chosen = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(
            f"unknown device {text!r}; expected e.g. cpu, cuda or cuda:1"
        ) from None
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise argparse.ArgumentTypeError(
                f"device {text!r}: this machine has no CUDA GPU that torch "
                f"{torch.__version__} can use"
            )
        if (chosen.index or 0) >= torch.cuda.device_count():
            raise argparse.ArgumentTypeError(
                f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA GPU(s)"
            )
    elif chosen.type != "cpu":
        raise argparse.ArgumentTypeError(f"device {text!r}: expected cpu or cuda[:N]")
    return text


def fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {value}")
    return value
