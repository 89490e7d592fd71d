"""The ``ppdgm`` command: one sub-command module per capability under :mod:`ppdgm.commands`."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from ppdgm import __version__
from ppdgm._checks import ContractError, RankFailed, ReplicasDiverged
from ppdgm.atomic import describe_os_error
from ppdgm.commands import COMMANDS
from ppdgm.commands._common import positive_int

__all__ = ["build_parser", "main"]

#: the variable of the thread policy (:mod:`ppdgm.threads`, which imports torch)
THREADS_ENV = "PPDGM_THREADS"

#: the exit status after Ctrl-C (128 + SIGINT); SIGTERM during ``fit`` gives 143 (128 + 15)
INTERRUPTED = 130


def _one_line(text: str) -> str:
    """A message on one line (a library's message may span several)."""
    return " ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _os_error(error: OSError) -> str:
    """An ``OSError`` as one line naming the path and the cause."""
    if error.errno is None or error.filename is None:
        return _one_line(str(error))  # ppdgm's own FileNotFoundError("no such file: ...")
    where = os.fsdecode(error.filename)
    if error.filename2 is not None:
        where += f" -> {os.fsdecode(error.filename2)}"
    return _one_line(f"{where}: {describe_os_error(error)}")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="ppdgm", description="Probabilistic programming for deep generative models."
    )
    parser.add_argument("--version", action="version", version=f"ppdgm {__version__}")
    parser.add_argument(
        "--threads",
        type=positive_int,
        help="threads for ppdgm's work (default: the PPDGM_THREADS variable, else one thread "
        "for small work and torch's default for large; see docs/threads.md)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for register in COMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 with a message for bad input)."""
    parser = build_parser()
    # a zoo model's own flags (ppdgm.settings) are known once MODEL is: the command parses them
    args, extras = parser.parse_known_args(argv)
    if extras and not getattr(args, "takes_settings", False):
        parser.error(f"unrecognized arguments: {' '.join(extras)}")
    args.extras = extras
    before = os.environ.get(THREADS_ENV)
    if args.threads is not None:  # the policy reads it (ppdgm.threads); so do child processes
        os.environ[THREADS_ENV] = str(args.threads)
    try:
        return int(args.run(args) or 0)
    except (
        ValueError,
        KeyError,
        ContractError,
        RankFailed,
        ReplicasDiverged,
    ) as e:
        print(f"ppdgm {args.command}: error: {_one_line(str(e))}", file=sys.stderr)
        return 2
    except OSError as e:  # a missing file, a read-only folder, a full disk...
        print(f"ppdgm {args.command}: error: {_os_error(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM during fit (ppdgm.commands.train)
        how = f" {e}" if str(e) else ""  # "by SIGTERM"
        notes = "; ".join(getattr(e, "__notes__", ()))  # what fit kept
        print(
            f"ppdgm {args.command}: interrupted{how}{'; ' + notes if notes else ''}",
            file=sys.stderr,
        )
        return int(getattr(e, "exit_status", INTERRUPTED))
    finally:
        if before is None:
            os.environ.pop(THREADS_ENV, None)
        else:
            os.environ[THREADS_ENV] = before


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
