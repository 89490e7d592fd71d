"""Atomic file writes: a temporary file next to the target, renamed over it once complete, so
that an interrupted write (Ctrl-C, a killed process, a full disk) leaves the previous file
intact and never half a file."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_path",
    "describe_os_error",
    "is_disk_full",
    "remove_stale_temporaries",
    "write_bytes_atomic",
    "write_csv_atomic",
    "write_text_atomic",
]

#: what torch's zip writer says when a write comes up short (a full disk, in practice)
_SHORT_WRITE = ("unexpected pos", "no space left on device")


def is_disk_full(error: BaseException) -> bool:
    """Whether ``error`` says the disk is full: an ``OSError`` with ``ENOSPC`` (or ``EDQUOT``,
    a quota), or the ``RuntimeError`` of ``torch.save`` whose write came up short
    (``... unexpected pos ...``)."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    text = str(error).lower()
    return isinstance(error, RuntimeError) and any(s in text for s in _SHORT_WRITE)


def describe_os_error(error: OSError) -> str:
    """The cause of an ``OSError`` in words for a one-line message (without the path).

    Example:
        >>> describe_os_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "x.pt"))
        'disk full (No space left on device)'
        >>> describe_os_error(IsADirectoryError(errno.EISDIR, "Is a directory", "runs"))
        'it is a folder, not a file'
    """
    cause = error.strerror or str(error) or type(error).__name__
    if is_disk_full(error):
        return f"disk full ({cause})"
    return {
        errno.EACCES: f"permission denied: the folder or file is not writable ({cause})",
        errno.EPERM: f"operation not permitted ({cause})",
        errno.EROFS: f"a read-only file system ({cause})",
        errno.EEXIST: f"a file is in the way ({cause})",
        errno.ENOTDIR: f"a part of the path is a file, not a folder ({cause})",
        errno.EISDIR: "it is a folder, not a file",
    }.get(error.errno or 0, cause)


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
    except OSError as e:
        if e.filename is None or Path(os.fsdecode(e.filename)) in (tmp, path):
            # the error names the target, never the temporary file that is gone
            raise OSError(e.errno, e.strerror or str(e), os.fspath(path)) from None
        raise
    except RuntimeError as e:
        if is_disk_full(e):  # torch.save's short write
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), os.fspath(path)) from None
        raise
    finally:
        # never half a file: the temporary one goes, whatever happened; an error removing it
        # (a read-only folder, where it was never made) must not hide the one that matters
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Removes the temporary files :func:`atomic_path` leaves when a process is killed in a
    write (``NAME.tmp``, ``NAME.tmp.png``) from ``folder``; returns those removed (none if the
    folder does not exist). Files it cannot remove are left.

    Example:
        >>> import tempfile
        >>> with tempfile.TemporaryDirectory() as d:
        ...     _ = Path(d, "last.pt.tmp").write_bytes(b"half")
        ...     _ = Path(d, "notes.txt").write_text("kept")
        ...     print([p.name for p in remove_stale_temporaries(d)], sorted(os.listdir(d)))
        ['last.pt.tmp'] ['notes.txt']
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for entry in sorted(folder.iterdir()):
        name = entry.name
        if (name.endswith(".tmp") or ".tmp." in name) and entry.is_file():
            try:
                entry.unlink()
            except OSError:
                continue
            removed.append(entry)
    return removed


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
