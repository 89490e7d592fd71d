"""Helpers shared by the sub-commands: resolving networks, reading and writing rows and files."""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from ppdgm.atomic import describe_os_error, write_text_atomic

if TYPE_CHECKING:
    import pandas as pd

    from ppdgm.bn import DiscreteBN

__all__ = [
    "check_cell_counts",
    "check_folder",
    "finite_float",
    "fraction",
    "load_network",
    "non_negative_int",
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
    ``NA`` or ``None`` (the ``child`` and ``insurance`` networks have some) stays a state. Every
    row must have as many cells as the header (blank lines are skipped).

    Raises:
        FileNotFoundError: if there is no such file.
        ValueError: if the path is a folder, the file cannot be parsed as CSV, or a row has more
            or fewer cells than the header (the message names the file, the line, counting the
            header as line 1, and both counts).
    """
    import lzma
    import zipfile

    import pandas as pd

    name = os.fspath(path)
    if name == "-":
        text = sys.stdin.read()
        data = text.encode() if isinstance(text, str) else text
        name = "standard input"
    elif Path(path).is_dir():
        raise ValueError(f"{path} is a folder, not a CSV file")
    elif not Path(path).exists():
        raise FileNotFoundError(f"no such file: {path}")
    else:
        try:
            data = _decompressed(Path(path))
        except (OSError, EOFError, zipfile.BadZipFile, lzma.LZMAError) as e:
            raise ValueError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
    check_cell_counts(data, name)
    try:
        return pd.read_csv(io.BytesIO(data), dtype=str, keep_default_na=False, na_values=[""])
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read {path} as CSV: {e}") from None


def _decompressed(path: Path) -> bytes:
    """The bytes of a file, decompressed by its suffix as pandas does (``.gz``, ``.bz2``,
    ``.xz``, or ``.zip`` holding one file)."""
    import bz2
    import gzip
    import lzma
    import zipfile

    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix == ".gz":
        return gzip.decompress(data)
    if suffix == ".bz2":
        return bz2.decompress(data)
    if suffix == ".xz":
        return lzma.decompress(data)
    if suffix == ".zip":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            names = archive.namelist()
            if len(names) != 1:
                raise OSError(f"a .zip file of rows must hold one file, not {len(names)}")
            return archive.read(names[0])
    return data


def check_cell_counts(data: bytes, name: str) -> None:
    r"""Raises a ValueError if a line of the CSV text ``data`` has more or fewer cells than its
    header (the first line that is not blank); blank lines are skipped, as pandas does.

    Quoted cells may hold commas and line breaks (quoted as the CSV standard has it: a quote
    opens and closes a cell, and a quote inside it is doubled). The cells are counted from the
    positions of the commas, quotes and line breaks, without a loop over lines.

    Example:
        >>> check_cell_counts(b'a,b,c\n1,,3\n\n"x,\ny",2,3\n', "rows.csv")  # a blank line
        >>> check_cell_counts(b"a,b,c\n1,2,3\n4,5\n", "rows.csv")
        Traceback (most recent call last):
        ...
        ValueError: rows.csv, line 3: 2 cells, but the header (line 1) has 3 cells; ...
    """
    import numpy as np

    text = np.frombuffer(data, dtype=np.uint8)
    newline = ord("\n") if ord("\n") in data or ord("\r") not in data else ord("\r")
    lines = np.flatnonzero(text == newline)
    commas = np.flatnonzero(text == ord(","))
    quotes = np.flatnonzero(text == ord('"'))
    if quotes.size:  # a comma or line break after an odd number of quotes is inside a cell
        lines_between = lines[np.searchsorted(quotes, lines) % 2 == 0]
        commas = commas[np.searchsorted(quotes, commas) % 2 == 0]
    else:
        lines_between = lines
    starts = np.concatenate([[0], lines_between + 1])
    ends = np.concatenate([lines_between, [len(text)]])
    cells = np.bincount(np.searchsorted(lines_between, commas), minlength=len(starts)) + 1

    def blank(i: int) -> bool:  # spaces, a carriage return or nothing (never a comma)
        return bool(cells[i] == 1 and not data[starts[i] : ends[i]].strip())

    header = 0
    while header < len(starts) and blank(header):  # blank lines before the header
        header += 1
    if header == len(starts):
        return
    bad = (cells != cells[header]).nonzero()[0]
    bad = bad[bad > header]
    first = next((int(i) for i in bad if not blank(int(i))), None)  # skips blank lines only
    if first is None:
        return
    number = np.searchsorted(lines, starts) + 1  # physical line numbers, from 1
    found, expected = (f"{n} cell{'s' if n != 1 else ''}" for n in (cells[first], cells[header]))
    raise ValueError(
        f"{name}, line {number[first]}: {found}, but the header (line {number[header]}) has "
        f"{expected}; every row needs one cell per column (leave a cell empty for a missing "
        "value)"
    )


def write_text(text: str, path: str | os.PathLike[str] | None) -> None:
    """Writes ``text`` to standard output (``path`` None) or to a file, atomically.

    The text goes to a temporary file next to ``path`` that is then renamed over it, so an
    interrupted run never leaves half a file.

    Raises:
        ValueError: if the file cannot be written (the message names it and the cause: a
            missing or read-only folder, a full disk, ...); nothing is left half-written.
    """
    if path is None:
        sys.stdout.write(text)
        return
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {describe_os_error(e)}") from None


def write_frame(
    frame: pd.DataFrame, path: str | os.PathLike[str] | None, *, float_format: str = "%.10g"
) -> None:
    """Writes a DataFrame as CSV (no index, missing cells empty) to standard output or a file
    (atomically).

    Raises:
        ValueError: if the file cannot be written (the message names it).
    """
    write_text(frame.to_csv(index=False, float_format=float_format), path)


def check_folder(folder: str | os.PathLike[str], what: str = "--out") -> None:
    """Refuses a folder to write into that is a file, or lies under a file (it may not exist
    yet: it is made later).

    Arguments:
        folder: the folder.
        what: how the message starts (the flag, or ``cannot write FILE:``).

    Raises:
        ValueError: naming the folder and the file in the way.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} {folder} is a file, not a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"{what} {folder} lies under {parent}, a file, not a folder")
            return


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


def non_negative_int(text: str) -> int:
    """An argparse type: an integer, 0 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {value}")
    return value


def finite_float(
    *,
    least: float | None = None,
    greater: float | None = None,
    most: float | None = None,
) -> Callable[[str], float]:
    """An argparse type: a finite number (never NaN or infinite), within the bounds given.

    Arguments:
        least: the smallest value allowed (``>= least``); None: no bound.
        greater: a bound the value must exceed (``> greater``); None: no bound.
        most: the largest value allowed (``<= most``); None: no bound.

    Returns:
        The type function: a ``str`` to a ``float``, raising ``argparse.ArgumentTypeError``
        (argparse reports ``argument --ess: must be a finite number > 0, got nan`` and exits 2).

    Example:
        >>> positive = finite_float(greater=0)
        >>> positive("0.5")
        0.5
        >>> positive("nan")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be a finite number > 0, got nan
    """
    bounds = []
    if least is not None:
        bounds.append(f">= {least:g}")
    if greater is not None:
        bounds.append(f"> {greater:g}")
    if most is not None:
        bounds.append(f"<= {most:g}")
    wanted = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
    if least is not None and most is not None and greater is None:
        wanted = f"a finite number in [{least:g}, {most:g}]"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except (TypeError, ValueError):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {text!r}") from None
        if (
            not math.isfinite(value)
            or (least is not None and not value >= least)
            or (greater is not None and not value > greater)
            or (most is not None and not value <= most)
        ):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value:g}")
        return value

    parse.__name__ = "finite_float"  # argparse names the type in some messages
    return parse


#: An argparse type: a number in [0, 1].
fraction = finite_float(least=0.0, most=1.0)
