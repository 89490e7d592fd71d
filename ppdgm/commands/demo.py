"""``ppdgm demo``: the guided tour on embedded defaults (no downloads)."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["register"]


def register(subparsers: Any) -> None:
    """Adds ``ppdgm demo`` to the ``ppdgm`` parser."""
    parser = subparsers.add_parser(
        "demo",
        help="a tour of the toolkit on the Asia network (no downloads)",
        description="A tour on embedded defaults: structure, sampling, exact queries, "
        "likelihoods with missing cells, learning by EM, and a drawing of the graph.",
    )
    parser.add_argument(
        "-o",
        "--output-dir",
        default="ppdgm-demo",
        metavar="OUT_DIR",
        help="folder for the files the demo writes (./ppdgm-demo)",
    )
    parser.set_defaults(run=run_demo)


def run_demo(args: argparse.Namespace) -> int:
    """Runs every section of :mod:`ppdgm.demo`."""
    from ppdgm.demo import run

    run(args.output_dir)
    return 0
