"""Atomic file writes: a temporary file next to the target, renamed over it once complete, so
that an interrupted write (Ctrl-C, a killed process, a full disk) leaves the previous file
intact and never half a file."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["atomic_path", "write_bytes_atomic", "write_csv_atomic", "write_text_atomic"]


@contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path next to ``path`` to write into; when the block ends without an
    exception it is renamed over ``path``, otherwise removed.

    Arguments:
        path: the file to write.
        suffix: appended to the temporary file's name (writers that choose a format by the
            file's extension need the real one last, e.g. ``".tmp.png"``).

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     with atomic_path(f"{d}/notes.txt") as tmp:
        ...         _ = tmp.write_text("done")
        ...     print(Path(d, "notes.txt").read_text(), sorted(p.name for p in Path(d).iterdir()))
        done ['notes.txt']
    """
    path = Path(path)
    tmp = path.with_name(path.name + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Writes ``text`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Writes ``data`` to ``path`` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_csv_atomic(frame: Any, path: str | os.PathLike[str], float_format: str = "%.10g") -> Path:
    """Writes a pandas DataFrame as CSV (no index, missing cells empty) to ``path`` atomically;
    returns the path."""
    return write_text_atomic(path, frame.to_csv(index=False, float_format=float_format))
