"""BIF files (the Bayesian network Interchange Format): a strict, fast reader and a writer.

Why a parser of our own: pgmpy's ``BIFReader`` runs a pyparsing grammar whose name classes
are built from all of Unicode on every call. Measured here (pgmpy 1.0, one thread, 2-core
machine) it takes 1.2 to 2.3 s even for the smallest files (asia, alarm), 7 to 12 s for barley,
pathfinder and the munin networks and 20 to 27 s each for diabetes and mildew (5 MB): reading
the example networks dominated the test suite. This module splits the text with regular
expressions (one per common shape of block, a token loop only for the rest and for wording
errors) and keeps the numbers as text until numpy converts all of them in one call. It reads
alarm in 2.4 ms and diabetes in 0.29 s (50 to 5,000 times faster than pgmpy), within 2x of
pyAgrum's C++ ``loadBN`` on 20 of the 24 files (0.5x to 1.9x its time, faster on the 10
largest). On the four files of one kilobyte (asia, cancer, earthquake, survey: 3.5x to 4.2x,
under half a millisecond) building the :class:`DiscreteBN` and checking its tables takes most
of the time (``benchmarks/bench_bn.py --read``).

It is also strict where pgmpy is lenient: a malformed file raises :class:`BIFError`, whose
message names the file, the line and the column, instead of reading garbage or failing with
a parser's traceback.

The format read (pgmpy's and pyAgrum's dialects)::

    network NAME { property ...; }                  // optional; the name may be quoted
    variable NAME {
      type discrete [ 3 ] { low, medium, high };    // commas optional
      property position = (10, 20);                 // properties anywhere, ignored
    }
    probability ( CHILD | PARENT1, PARENT2 ) {
      (low, yes) 0.1, 0.2, 0.7;                     // one row per parents' configuration
      default 0.3, 0.3, 0.4;                        // the rows not listed
    }
    probability ( ROOT ) { table 0.5, 0.5; }

``table`` lists the child's states slowest: all the configurations of the parents (the last
parent fastest) for the child's first state, then for its second state, and so on (as pgmpy
and pyAgrum read it). ``//`` and ``/* */`` comments, CRLF line ends, tabs and double quotes
(read as spaces, as pgmpy does) are accepted, and so are names with any characters but
whitespace, quotes and ``{ } ( ) [ ] ; , |`` (``Asy/Patch``, ``a-b``, ``x.y``, ``<5``).
Numbers: ``0.1``, ``1e-05``, ``.5``, ``1.``. A ``.gz`` file is decompressed first.

A row that sums to one within :data:`~ppdgm.bn.network.CPT_TOLERANCE` is renormalized by the
network silently (BIF files round their numbers); one further off, but within
:data:`RENORMALIZE_TOLERANCE`, is renormalized with a :class:`RenormalizedWarning`; one
further still is an error.
"""

from __future__ import annotations

import gzip
import itertools
import math
import os
import re
import warnings
import zlib
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

import networkx as nx
import numpy as np

from ppdgm.atomic import atomic_path
from ppdgm.bn.network import CPT_TOLERANCE, DiscreteBN

__all__ = [
    "KEYWORDS",
    "MAX_ENTRIES",
    "RENORMALIZE_TOLERANCE",
    "BIFError",
    "RenormalizedWarning",
    "format_bif",
    "parse_bif",
    "read_bif",
    "write_bif",
]

#: The words of the format; :func:`write_bif` refuses them as names.
KEYWORDS = frozenset(
    {"network", "variable", "probability", "property", "type", "discrete", "table", "default"}
)

#: The most entries a table read may have (its parents' rows times its states).
MAX_ENTRIES = 10**8

#: How far from one a row may sum and still be read (renormalized, with a warning) when it is
#: beyond the network's own silent tolerance :data:`~ppdgm.bn.network.CPT_TOLERANCE`.
RENORMALIZE_TOLERANCE = 1e-4


class BIFError(ValueError):
    """A BIF file that cannot be read: malformed, or not describing a valid network.

    Attributes:
        path: the file (or the ``source`` given to :func:`parse_bif`).
        line: the line of the problem (1-based), or None for a problem of the whole file.
        column: its column (1-based, in characters), or None.
        problem: the message without the place.
    """

    def __init__(
        self,
        problem: str,
        path: str,
        line: int | None = None,
        column: int | None = None,
        *,
        message: str | None = None,
    ) -> None:
        if message is None:
            where = f"{path}:{line}:{column}" if line is not None else str(path)
            message = f"{where}: {problem}"
        super().__init__(message)
        self.path = path
        self.line = line
        self.column = column
        self.problem = problem


class RenormalizedWarning(UserWarning):
    """Rows of a BIF file's table summed to one only within :data:`RENORMALIZE_TOLERANCE`
    (beyond the network's own silent tolerance) and were divided by their sums."""


# ----------------------------------------------------------------------------- lexical level

_PUNCTUATION = frozenset("{}()[];,|")
_WORD = r"[^\s{}()\[\];,|]+"
#: One token: a punctuation character (group 1) or a word (group 2), after whitespace.
_TOKEN = re.compile(rf"\s*(?:([{{}}()\[\];,|])|({_WORD}))")
_NUMBER = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?"
_IS_NUMBER = re.compile(_NUMBER)
#: The values of a row: numbers separated by a comma or whitespace, one trailing comma allowed.
#: Only their characters are checked here (a cheaper pattern); numpy's conversion rejects the
#: rest (``1e``, ``--1``), and the reader then words the error with ``_IS_NUMBER``.
_VALUES = re.compile(r"\s*(?:[0-9eE.+\-]+(?:(?:\s*,\s*|\s+)[0-9eE.+\-]+)*\s*,?)?\s*")
#: A list of names separated by a comma or whitespace, one trailing comma allowed.
_NAMES = re.compile(rf"\s*(?:{_WORD}(?:\s*,\s*|\s+|\Z))*")
#: The start of a probability block's entry: a row's parenthesized states (group 1), a
#: keyword (group 2) or the closing brace (group 3).
_ENTRY = re.compile(
    r"\s*(?:\(([^(){}\[\];|]*)\)|(table|default|property)(?![^\s{}()\[\];,|])|(\}))"
)
#: After 'variable': the usual whole block, 'NAME { type discrete [ n ] { states }; }'.
_VARIABLE = re.compile(
    rf"\s*({_WORD})\s*\{{\s*type\s+discrete\s*\[\s*([0-9]+)\s*\]\s*"
    r"\{([^{}()\[\];|]*)\}\s*;\s*\}"
)
#: After 'probability': the usual head, '( CHILD )' or '( CHILD | PARENTS ) {'.
_HEAD = re.compile(rf"\s*\(\s*({_WORD})\s*(?:\|([^(){{}}\[\];|]*))?\)\s*\{{")
_BRACE = re.compile(r"[{}]")
#: Comments to blank out; double-quoted strings (on one line) are skipped so that ``//``
#: inside them is not a comment; a ``/*`` without its ``*/`` is an error.
_COMMENT = re.compile(r'"[^"\n]*"|//[^\n]*|/\*.*?\*/|/\*', re.DOTALL)
#: A name :func:`write_bif` can write: one word, no quote, no comment opener.
_WRITABLE = re.compile(r'[^\s{}()\[\];,|"]+')


@dataclass
class _Variable:
    name: str
    position: int
    states: tuple[str, ...]
    index: dict[str, int] | None = None


@dataclass
class _Block:
    """A probability block as written: its entries as (kind, position, states text, values
    position), with kind ``"row"``, ``"table"`` or ``"default"``; the values of entry ``i``
    are the ``counts[i]`` number strings of the parser's list from ``first`` on."""

    child: str
    position: int
    child_position: int
    parents: tuple[str, ...]
    first: int = -1
    rows: list[tuple[str, int, str, int]] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)


def _line_column(text: str, position: int) -> tuple[int, int]:
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    return line, column


def _shown(token: str | None) -> str:
    return "the end of the file" if token is None else repr(token)


def _listing(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def _split_names(text: str) -> list[str] | None:
    """The names of a comma- or space-separated list, or None for an empty element."""
    names = text.replace(",", " ").split()
    if text.count(",") != len(names) - 1 and _NAMES.fullmatch(text) is None:
        return None
    return names


class _Parser:
    """Reads the blocks of a BIF text (first pass, syntax), then builds the network from them
    (second pass, meaning); every error carries the position of its cause.

    The common shapes of a block are read by one regular expression each (fast paths); any
    other text, valid or not, goes through the token-by-token reading, which also words the
    errors.
    """

    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.source = source
        self.pos = 0
        self.network_name: str | None = None
        self.network_position = -1
        self.variables: dict[str, _Variable] = {}
        self.blocks: dict[str, _Block] = {}
        self.numbers: list[str] = []
        self.starts: list[int] = []
        self.values = np.empty(0)
        self.renormalized: list[str] = []

    # ------------------------------------------------------------------------- helpers
    def error(self, position: int, problem: str) -> BIFError:
        line, column = _line_column(self.text, position)
        return BIFError(problem, self.source, line, column)

    def token(self) -> tuple[str | None, int]:
        """The next token and its position; None and the end of the text at the end."""
        m = _TOKEN.match(self.text, self.pos)
        if m is None:
            self.pos = len(self.text)
            return None, len(self.text)
        i = m.lastindex or 0
        self.pos = m.end()
        return m.group(i), m.start(i)

    def fail(
        self, token: str | None, position: int, wanted: str, context: str, opened: int = -1
    ) -> NoReturn:
        """Raises 'expected ``wanted`` ``context``, found ``token``', pointing at a block left
        open (at ``opened``) when the token starts another block."""
        problem = f"expected {wanted} {context}, found {_shown(token)}"
        if opened >= 0 and (token is None or token in ("network", "variable", "probability")):
            line, _ = _line_column(self.text, opened)
            problem += f" (is the '}}' closing the block of line {line} missing?)"
        raise self.error(position, problem)

    def expect(self, wanted: str, context: str, opened: int = -1) -> int:
        token, position = self.token()
        if token != wanted:
            self.fail(token, position, f"'{wanted}'", context, opened)
        return position

    def word(self, wanted: str, context: str, opened: int = -1) -> tuple[str, int]:
        token, position = self.token()
        if token is None or token in _PUNCTUATION:
            self.fail(token, position, wanted, context, opened)
        return token, position

    def skip_property(self, position: int) -> None:
        """Skips ``property ...;`` (its text is ignored)."""
        end = self.text.find(";", self.pos)
        brace = _BRACE.search(self.text, self.pos, end if end >= 0 else len(self.text))
        if end < 0 or brace is not None:
            raise self.error(position, "a 'property' without its ';'")
        self.pos = end + 1

    # ------------------------------------------------------------------------- first pass
    def parse(self) -> None:
        first = True
        while True:
            token, position = self.token()
            if token is None:
                break
            if token == "variable":
                self.variable(position)
            elif token == "probability":
                self.probability(position)
            elif token == "network":
                self.network(position)
            elif token == "property":
                self.skip_property(position)
            elif first:
                line, column = _line_column(self.text, position)
                problem = (
                    f"line {line}, column {column}: expected 'network', 'variable' or "
                    f"'probability', found {token!r}"
                )
                raise BIFError(
                    problem,
                    self.source,
                    line,
                    column,
                    message=f"{self.source} is not a BIF file: {problem}",
                )
            elif token == "}":
                raise self.error(position, "a '}' that closes no block")
            else:
                self.fail(token, position, "'network', 'variable' or 'probability'", "next")
            first = False
        try:
            self.values = np.array(self.numbers, dtype=np.float64)
        except ValueError:
            bad = [i for i, n in enumerate(self.numbers) if not _IS_NUMBER.fullmatch(n)]
            i = bad[0] if bad else 0
            raise self.number_error(i, f"{self.numbers[i]!r} is not a number") from None

    def network(self, start: int) -> None:
        if self.network_name is not None:
            line, _ = _line_column(self.text, self.network_position)
            raise self.error(start, f"a second 'network' block (the first is on line {line})")
        words = []
        while True:
            token, position = self.token()
            if token == "{":
                break
            if token is None or token in _PUNCTUATION:
                self.fail(token, position, "a name or '{'", "after 'network'")
            words.append(token)
        self.network_name, self.network_position = " ".join(words), start
        while True:
            token, position = self.token()
            if token == "}":
                return
            if token != "property":
                self.fail(token, position, "'property' or '}'", "in the network block", start)
            self.skip_property(position)

    def variable(self, start: int) -> None:
        m = _VARIABLE.match(self.text, self.pos)
        if m is not None:
            name, count, listed = m.group(1, 2, 3)
            states = _split_names(listed)
            if (
                states is not None
                and name not in self.variables
                and len(count) < 10
                and len(states) == int(count) > 0
                and len(set(states)) == len(states)
            ):
                self.variables[name] = _Variable(name, m.start(1), tuple(states))
                self.pos = m.end()
                return
        name, at = self.word("a variable name", "after 'variable'")
        if name in self.variables:
            line, _ = _line_column(self.text, self.variables[name].position)
            raise self.error(at, f"variable {name!r} is declared twice (first on line {line})")
        self.expect("{", f"after 'variable {name}'")
        found: tuple[str, ...] | None = None
        while True:
            token, position = self.token()
            if token == "}":
                break
            if token == "type" and found is None:
                found = self.states(name, start)
            elif token == "property":
                self.skip_property(position)
            else:
                wanted = "'property' or '}'" if found is not None else "'type', 'property' or '}'"
                self.fail(token, position, wanted, f"in the block of variable {name!r}", start)
        if found is None:
            raise self.error(at, f"variable {name!r} has no 'type discrete [ n ] {{ ... }};'")
        self.variables[name] = _Variable(name, at, found)

    def states(self, name: str, start: int) -> tuple[str, ...]:
        context = f"in the type of variable {name!r}"
        kind, at = self.word("'discrete'", context, start)
        if kind != "discrete":
            raise self.error(
                at, f"variable {name!r} has type {kind!r}: only 'discrete' variables are read"
            )
        self.expect("[", context, start)
        count, count_at = self.word("the number of states", context, start)
        if not (count.isascii() and count.isdigit()):
            self.fail(count, count_at, "the number of states (a whole number)", context)
        if len(count) >= 10:
            raise self.error(count_at, f"variable {name!r} declares too many states")
        self.expect("]", context, start)
        self.expect("{", context, start)
        states: list[str] = []
        seen: dict[str, int] = {}
        after_comma = True
        while True:
            token, position = self.token()
            if token == "}":
                break
            if token == ",":
                if after_comma:
                    self.fail(token, position, "a state name", context)
                after_comma = True
                continue
            if token is None or token in _PUNCTUATION:
                self.fail(token, position, "a state name, ',' or '}'", context, start)
            if token in seen:
                line, column = _line_column(self.text, seen[token])
                raise self.error(
                    position,
                    f"state {token!r} of variable {name!r} is listed twice (first on line "
                    f"{line}, column {column})",
                )
            seen[token] = position
            states.append(token)
            after_comma = False
        self.expect(";", f"after the states of variable {name!r}", start)
        if not states:
            raise self.error(count_at, f"variable {name!r} has no states")
        if int(count) != len(states):
            raise self.error(
                count_at,
                f"variable {name!r} declares {int(count)} states but lists {len(states)}",
            )
        return tuple(states)

    def probability(self, start: int) -> None:
        m = _HEAD.match(self.text, self.pos)
        if m is not None:
            child, listed = m.group(1, 2)
            parents = [] if listed is None else _split_names(listed)
            if (
                parents is not None
                and (parents or listed is None)
                and child not in parents
                and len(set(parents)) == len(parents)
                and child not in self.blocks
            ):
                self.pos = m.end()
                self.entries(_Block(child, start, m.start(1), tuple(parents)))
                return
        self.head(start)

    def head(self, start: int) -> None:
        self.expect("(", "after 'probability'")
        child, child_at = self.word("a variable name", "after 'probability ('")
        context = f"in the head of the probability block of {child!r}"
        parents: list[str] = []
        token, position = self.token()
        if token in ("|", ","):
            token, position = self.token()
            if token == ")":
                self.fail(token, position, "a parent's name", context)
        after_comma = False
        while token != ")":
            if token == ",":
                if after_comma or not parents:
                    self.fail(token, position, "a parent's name", context)
                after_comma = True
            elif token is None or token in _PUNCTUATION:
                self.fail(token, position, "a parent's name, ',' or ')'", context)
            elif token == child:
                raise self.error(position, f"variable {child!r} is listed as its own parent")
            elif token in parents:
                raise self.error(position, f"parent {token!r} of {child!r} is listed twice")
            else:
                parents.append(token)
                after_comma = False
            token, position = self.token()
        if child in self.blocks:
            line, _ = _line_column(self.text, self.blocks[child].position)
            raise self.error(
                child_at, f"a second probability block for {child!r} (the first is on line {line})"
            )
        self.expect("{", f"after the head of the probability block of {child!r}")
        self.entries(_Block(child, start, child_at, tuple(parents)))

    def entries(self, block: _Block) -> None:
        """Reads the entries of a probability block up to its closing brace. The hot loop:
        one regular expression for the start of each entry, one for its values."""
        text, rows, counts, numbers = self.text, block.rows, block.counts, self.numbers
        starts = self.starts
        entry, values, find = _ENTRY.match, _VALUES.fullmatch, text.find
        block.first = len(numbers)
        pos = self.pos
        while True:
            m = entry(text, pos)
            if m is None:
                self.pos = pos
                self.bad_entry(block)
            kind = m.lastindex
            if kind == 3:
                self.pos = m.end()
                self.blocks[block.child] = block
                return
            if kind == 2:
                keyword, at, states = m.group(2), m.start(2), ""
                if keyword == "property":
                    self.pos = m.end()
                    self.skip_property(at)
                    pos = self.pos
                    continue
            else:
                keyword, at, states = "row", m.start(1) - 1, m.group(1)
            first = m.end()
            end = find(";", first)
            segment = text[first:] if end < 0 else text[first:end]
            if end < 0 or values(segment) is None:
                self.bad_values(first, end, block.child)
            parts = segment.replace(",", " ").split()
            starts.append(len(numbers))
            numbers += parts
            counts.append(len(parts))
            rows.append((keyword, at, states, first))
            pos = end + 1

    def bad_entry(self, block: _Block) -> NoReturn:
        context = f"in the probability block of {block.child!r}"
        token, position = self.token()
        if token != "(":
            self.fail(token, position, "'(', 'table', 'default' or '}'", context, block.position)
        while True:
            token, position = self.token()
            if token is None or (token in _PUNCTUATION and token != ","):
                self.fail(token, position, "a state name, ',' or ')'", f"in a row {context}")

    def bad_values(self, first: int, end: int, child: str) -> NoReturn:
        """Raises the error of the values starting at ``first`` (up to the ';' at ``end``)."""
        self.pos = first
        limit = len(self.text) if end < 0 else end
        context = f"in a row of the probability block of {child!r}"
        after_comma = True
        while True:
            token, position = self.token()
            if token is None or position >= limit:
                if end < 0:
                    self.fail(None, len(self.text), "';'", context)
                raise self.error(first, f"malformed values {context}")  # pragma: no cover
            if token == ",":
                if after_comma:
                    self.fail(token, position, "a number", context)
                after_comma = True
            elif token in _PUNCTUATION:
                self.fail(token, position, "a number or ';'", context)
            elif _IS_NUMBER.fullmatch(token) is None:
                raise self.error(position, f"{token!r} is not a number ({context})")
            else:
                after_comma = False

    # ------------------------------------------------------------------------- second pass
    def build(self, name: str | None) -> DiscreteBN:
        if not self.variables:
            raise BIFError(
                "it declares no variable",
                self.source,
                message=f"{self.source} is not a BIF file: it declares no variable",
            )
        for block in self.blocks.values():
            if block.child not in self.variables:
                raise self.error(
                    block.child_position,
                    f"a probability block for {block.child!r}, which is not declared",
                )
            for k, parent in enumerate(block.parents):
                if parent not in self.variables:
                    raise self.error(
                        self.parent_position(block, k),
                        f"parent {parent!r} of {block.child!r} is not a declared variable",
                    )
        for variable in self.variables.values():
            if variable.name not in self.blocks:
                raise self.error(
                    variable.position, f"variable {variable.name!r} has no probability block"
                )
        for block in self.blocks.values():
            self.check_counts(block)
        values = self.values
        if values.size and not (np.isfinite(values).all() and values.min() >= 0):
            i = int(np.argmax(~np.isfinite(values) | (values < 0)))
            word = "negative" if values[i] < 0 else "not finite"
            raise self.number_error(i, f"probability {self.numbers[i]} is {word}")
        # Every row's sum at once; a block is checked row by row only if one is off (or if
        # it has a 'table' with parents, whose rows are not contiguous in the file).
        sums = np.add.reduceat(values, self.starts) if values.size else values
        off = np.flatnonzero(np.abs(sums - 1) > CPT_TOLERANCE).tolist()
        suspects = {self.block_of(self.starts[i])[0].child for i in off}
        cpts = {
            child: self.table(block, values, child in suspects)
            for child, block in self.blocks.items()
        }
        for message in self.renormalized:
            warnings.warn(message, RenormalizedWarning, stacklevel=3)
        order = list(self.variables)
        dag = nx.DiGraph()
        dag.add_nodes_from(order)
        dag.add_edges_from((u, v) for v in order for u in self.blocks[v].parents)
        states = {v: var.states for v, var in self.variables.items()}
        parents = {v: block.parents for v, block in self.blocks.items()}
        try:
            return DiscreteBN(
                dag, cpts, states, parents=parents, name=name or self.network_name or None
            )
        except ValueError as e:
            raise BIFError(str(e), self.source) from None

    def parent_position(self, block: _Block, k: int) -> int:
        """Where the ``k``-th parent is named in the block's head."""
        self.pos = block.child_position
        self.token()
        found = -1
        while found < k:
            token, position = self.token()
            if token not in ("|", ","):
                found += 1
        return position

    def block_of(self, i: int) -> tuple[_Block, int, int]:
        """The block, entry and place in the entry of the ``i``-th number of the file."""
        block = next(b for b in self.blocks.values() if b.first + sum(b.counts) > i)
        ends = np.cumsum(block.counts) + block.first
        r = int(np.searchsorted(ends, i, side="right"))
        return block, r, i - (int(ends[r - 1]) if r else block.first)

    def number_error(self, i: int, problem: str) -> BIFError:
        """The error ``problem`` about the ``i``-th number of the file, at its place."""
        block, r, k = self.block_of(i)
        first = block.rows[r][3]
        segment = self.text[first : self.text.find(";", first)]
        at = first + [m.start() for m in re.finditer(r"[^\s,]+", segment)][k]
        return self.error(at, f"{problem} (in the probability block of {block.child!r})")

    def describe(self, block: _Block, configuration: int) -> str:
        """' given A=a, B=b' for a configuration index of the block's parents."""
        if not block.parents:
            return ""
        cards = [len(self.variables[p].states) for p in block.parents]
        index = np.unravel_index(configuration, cards)
        pairs = (
            f"{p}={self.variables[p].states[int(i)]}"
            for p, i in zip(block.parents, index, strict=True)
        )
        return " given " + ", ".join(pairs)

    def check_counts(self, block: _Block) -> None:
        """Checks that each entry of a block has as many values as it should."""
        card = len(self.variables[block.child].states)
        configurations = math.prod(len(self.variables[p].states) for p in block.parents)
        if not block.rows:
            raise self.error(block.position, f"the probability block of {block.child!r} is empty")
        whole = card * configurations
        if whole > MAX_ENTRIES:
            raise self.error(
                block.position,
                f"the table of {block.child!r} would have {whole} entries, more than "
                f"{MAX_ENTRIES:.0e}",
            )
        expected = [whole if kind == "table" else card for kind, *_ in block.rows]
        if block.counts == expected:
            return
        r = next(i for i, (n, e) in enumerate(zip(block.counts, expected, strict=True)) if n != e)
        kind = block.rows[r][0]
        per = f"one per state of {block.child!r}"
        if kind == "table":
            per = f"{card} states of {block.child!r} times {configurations} parents' rows"
        raise self.error(
            block.rows[r][1],
            f"this {'row' if kind == 'row' else repr(kind)} of {block.child!r} has "
            f"{block.counts[r]} values, expected {expected[r]} ({per})",
        )

    def table(self, block: _Block, values: np.ndarray, suspect: bool) -> np.ndarray:
        """The block's table, axes: parents then child; its rows' sums are checked if
        ``suspect`` (one is off) or if they were not (a 'table' with parents)."""
        child, rows = block.child, block.rows
        card = len(self.variables[child].states)
        cards = [len(self.variables[p].states) for p in block.parents]
        configurations = math.prod(cards)
        if len(rows) == 1 and rows[0][0] == "table":
            o = block.first
            table = values[o : o + card * configurations].reshape(card, configurations).T
            source: Callable[[int], int] = lambda i: 0  # noqa: E731
            suspect = suspect or configurations > 1
        else:
            table, source = self.assemble(block, values, card, cards)
        if not suspect:
            return table.reshape(*cards, card)
        sums = table.sum(1)
        error = np.abs(sums - 1)
        worst = int(np.argmax(error))
        if error[worst] > CPT_TOLERANCE:
            if error[worst] > RENORMALIZE_TOLERANCE:
                raise self.error(
                    rows[source(worst)][1],
                    f"the row{self.describe(block, worst)} of {child!r} sums to "
                    f"{sums[worst]:.10g}, not one (tolerance {RENORMALIZE_TOLERANCE:g})",
                )
            off = error > CPT_TOLERANCE
            table = table.copy()
            table[off] /= sums[off, None]
            first = int(np.argmax(off))
            line, column = _line_column(self.text, rows[source(first)][1])
            self.renormalized.append(
                f"{self.source}:{line}:{column}: {int(off.sum())} row(s) of {child!r} sum to "
                f"one only within {RENORMALIZE_TOLERANCE:g} (the row"
                f"{self.describe(block, first)} sums to {sums[first]:.10g}); renormalized"
            )
        return table.reshape(*cards, card)

    def assemble(
        self, block: _Block, numbers: np.ndarray, card: int, cards: list[int]
    ) -> tuple[np.ndarray, Callable[[int], int]]:
        """The table of a block of rows (and maybe a default) or of one 'table', and which
        entry gave each of its rows. Memory grows with the entries, not the parents' rows."""
        child, rows = block.child, block.rows
        lookups = [self.index_of(p) for p in block.parents]
        strides = [math.prod(cards[k + 1 :]) for k in range(len(cards))]
        configurations = math.prod(cards)
        table = np.empty((configurations, card))
        seen: dict[int, int] = {}
        explicit: list[int] = []
        starts: list[int] = []
        default = whole = -1
        offset = block.first
        for r, (kind, at, states, _) in enumerate(rows):
            if kind == "row":
                if whole >= 0:
                    self.mixed(block, at)
                names = _split_names(states)
                if names is None:
                    raise self.error(
                        at, f"this row of {child!r} has an empty state name (a stray ',')"
                    )
                if len(names) != len(lookups):
                    self.bad_key(block, at, states, names)
                i = 0
                for lookup, stride, name in zip(lookups, strides, names, strict=True):
                    j = lookup.get(name, -1)
                    if j < 0:
                        self.bad_key(block, at, states, names)
                    i += j * stride
                if i in seen:
                    line, column = _line_column(self.text, rows[seen[i]][1])
                    raise self.error(
                        at,
                        f"a second row{self.describe(block, i)} in the probability block of "
                        f"{child!r} (the first is on line {line}, column {column})",
                    )
                seen[i] = r
                explicit.append(i)
                starts.append(offset)
            elif kind == "table":
                if whole >= 0 or explicit or default >= 0:
                    self.mixed(block, at)
                whole = r
                n = card * configurations
                table[:] = numbers[offset : offset + n].reshape(card, configurations).T
            else:
                if default >= 0 or whole >= 0:
                    self.mixed(block, at)
                default = r
            offset += block.counts[r]
        if whole >= 0:
            return table, lambda i: whole
        if explicit:
            if len(starts) * card == offset - block.first:  # rows only: one slice
                table[explicit] = numbers[block.first : offset].reshape(-1, card)
            else:
                table[explicit] = numbers[np.asarray(starts)[:, None] + np.arange(card)]
        if len(explicit) < configurations:
            if default < 0:
                first = next(i for i in range(configurations) if i not in seen)
                raise self.error(
                    block.position,
                    f"the probability block of {child!r} has no row"
                    f"{self.describe(block, first)} ({configurations - len(explicit)} of "
                    f"{configurations} rows missing) and no 'default' row",
                )
            missing = np.ones(configurations, dtype=bool)
            missing[explicit] = False
            at = block.first + sum(block.counts[:default])
            table[missing] = numbers[at : at + card]
        return table, lambda i: seen.get(i, default)

    def index_of(self, variable: str) -> dict[str, int]:
        """Each state's index, for a variable (built once)."""
        var = self.variables[variable]
        if var.index is None:
            var.index = {s: i for i, s in enumerate(var.states)}
        return var.index

    def mixed(self, block: _Block, at: int) -> NoReturn:
        raise self.error(
            at,
            f"the probability block of {block.child!r} mixes a 'table' with rows, or has two "
            "'table' or two 'default' entries",
        )

    def bad_key(self, block: _Block, at: int, text: str, names: list[str]) -> NoReturn:
        parents = block.parents
        if len(names) != len(parents):
            raise self.error(
                at,
                f"this row of {block.child!r} names {len(names)} state(s), expected one for "
                f"each parent ({', '.join(parents) or 'none'})",
            )
        spots = [m.start() for m in re.finditer(r"[^\s,]+", text)]
        for name, parent, spot in zip(names, parents, spots, strict=True):
            if name not in self.variables[parent].states:
                raise self.error(
                    at + 1 + spot,
                    f"{name!r} is not a state of {parent!r} (its states: "
                    f"{_listing(self.variables[parent].states)})",
                )
        raise AssertionError("unreachable")  # pragma: no cover


# ----------------------------------------------------------------------------- reading


def _decode(raw: bytes, source: str) -> str:
    """The text of a file's bytes: gunzipped if compressed, decoded as UTF-8, comments and
    quotes blanked out (same length, so positions stay those of the file)."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise BIFError(f"not a readable gzip file ({e})", source) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        line_start = raw.rfind(b"\n", 0, e.start) + 1
        column = len(raw[line_start : e.start].decode("utf-8", "replace")) + 1
        problem = f"not UTF-8 text (byte 0x{raw[e.start]:02x})"
        raise BIFError(problem, source, line, column) from None
    return _blank(text, source)


def _blank(text: str, source: str) -> str:
    if text.startswith("\ufeff"):
        text = " " + text[1:]
    if "//" in text or "/*" in text:

        def blank(m: re.Match[str]) -> str:
            s = m.group()
            if s[0] == '"':
                return s
            if s == "/*":
                line, column = _line_column(text, m.start())
                raise BIFError("a '/*' comment without its '*/'", source, line, column)
            return re.sub(r"[^\n]", " ", s)

        text = _COMMENT.sub(blank, text)
    if '"' in text:
        text = text.replace('"', " ")
    return text


def parse_bif(text: str, *, name: str | None = None, source: str = "<string>") -> DiscreteBN:
    """The network described by a BIF text.

    Arguments:
        text: the contents of a BIF file.
        name: the network's name; that of the ``network`` block (or ``"network"``) if None.
        source: what error messages call the text (a file name).

    Raises:
        BIFError: for a malformed text or an invalid network (the message gives the line and
            the column).

    Warns:
        RenormalizedWarning: for rows that sum to one only within
            :data:`RENORMALIZE_TOLERANCE`, renormalized.

    Example:
        >>> bn = parse_bif('''
        ... network wet { }
        ... variable rain { type discrete [ 2 ] { no, yes }; }
        ... variable wet { type discrete [ 2 ] { no, yes }; }
        ... probability ( rain ) { table 0.8, 0.2; }
        ... probability ( wet | rain ) { (no) 0.9, 0.1; (yes) 0.2, 0.8; }
        ... ''')
        >>> bn.name, bn.parents("wet"), bn.cpt("wet")[1].tolist()
        ('wet', ('rain',), [0.2, 0.8])
        >>> parse_bif("variable rain { type discrete [ 2 ] { no, no }; }")
        Traceback (most recent call last):
        ...
        ppdgm.bn.bif.BIFError: <string>:1:43: state 'no' of variable 'rain' is listed twice ...
    """
    parser = _Parser(_blank(text, source), source)
    parser.parse()
    return parser.build(name)


def read_bif(path: str | os.PathLike[str]) -> DiscreteBN:
    """Reads a network from a BIF file, plain or gzip-compressed (``.bif.gz``).

    The network is named after the file (``alarm.bif.gz`` gives ``"alarm"``); each
    variable's parents keep the order of its ``probability`` block and its states the order
    of its ``variable`` block.

    Raises:
        FileNotFoundError: if there is no such file.
        BIFError: (a ValueError) for a file that is not UTF-8 BIF text or describes an invalid
            network; the message names the file, the line and the column.

    Warns:
        RenormalizedWarning: for rows that sum to one only within
            :data:`RENORMALIZE_TOLERANCE` (they are renormalized).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no BIF file at {path}")
    source = str(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise BIFError(f"cannot be read ({e})", source) from None
    parser = _Parser(_decode(raw, source), source)
    parser.parse()
    return parser.build(path.name.removesuffix(".gz").removesuffix(".bif"))


# ----------------------------------------------------------------------------- writing


def _checked(name: Hashable, what: str) -> str:
    """``str(name)``, or a ValueError if the reader could not read it back."""
    text = str(name)
    problem = None
    if not text:
        problem = "it is empty"
    elif _WRITABLE.fullmatch(text) is None:
        bad = sorted({c for c in text if c.isspace() or c in '{}()[];,|"'})
        problem = f"it contains {', '.join(map(repr, bad))}"
    elif "//" in text or "/*" in text:
        problem = "it contains a comment opener ('//' or '/*')"
    elif text in KEYWORDS:
        problem = "it is a BIF keyword"
    if problem is not None:
        raise ValueError(
            f"cannot write {text!r} ({what}) to a BIF file: {problem}; BIF names cannot be "
            "empty or a keyword, nor contain whitespace, quotes, any of { } ( ) [ ] ; , | "
            "or '//' and '/*'"
        )
    return text


def format_bif(bn: DiscreteBN) -> str:
    """The network as BIF text: variables and tables in topological order, each table's rows
    in the order of its parents' configurations (the last parent fastest), every probability
    written with ``repr`` (the shortest text that reads back to the same float64).

    Raises:
        ValueError: for a variable or state name that the reader could not read back (see
            :func:`write_bif`).

    Example:
        >>> from ppdgm.bn import sprinkler
        >>> print(format_bif(sprinkler()).split("probability")[2].strip())
        ( sprinkler | cloudy ) {
          (no) 0.5, 0.5;
          (yes) 0.9, 0.1;
        }
    """
    names = {v: _checked(v, "a variable") for v in bn.variables}
    if len(set(names.values())) != len(names):
        raise ValueError(f"variables {list(names)} are not distinct once written as text")
    states: dict[str, list[str]] = {}
    for v in bn.variables:
        states[v] = [_checked(s, f"a state of variable {names[v]!r}") for s in bn.states[v]]
        if len(set(states[v])) != len(states[v]):
            raise ValueError(f"the states of {names[v]!r} are not distinct once written as text")
    network = re.sub(r"[^\w-]", "_", bn.name) or "unknown"
    lines = [f"network {network} {{", "}"]
    for v in bn.variables:
        lines += [
            f"variable {names[v]} {{",
            f"  type discrete [ {len(states[v])} ] {{ {', '.join(states[v])} }};",
            "}",
        ]
    for v in bn.variables:
        parents = bn.parents(v)
        table = bn.cpt(v).numpy()
        if not parents:
            lines += [
                f"probability ( {names[v]} ) {{",
                f"  table {', '.join(map(repr, table.tolist()))};",
                "}",
            ]
            continue
        lines.append(f"probability ( {names[v]} | {', '.join(names[u] for u in parents)} ) {{")
        rows = table.reshape(-1, table.shape[-1]).tolist()
        configurations = itertools.product(*(states[u] for u in parents))
        for configuration, row in zip(configurations, rows, strict=True):
            lines.append(f"  ({', '.join(configuration)}) {', '.join(map(repr, row))};")
        lines.append("}")
    return "\n".join(lines) + "\n"


def write_bif(bn: DiscreteBN, path: str | os.PathLike[str]) -> None:
    """Writes a network to a BIF file (gzip-compressed if the name ends in ``.gz``).

    The file is written atomically (to a temporary file renamed into place, so an interrupted
    write never leaves half a file) and reads back to the same network with :func:`read_bif`:
    same states, parents and, bit for bit, tables (see :func:`format_bif`). States are written
    as ``str(state)``.

    Raises:
        ValueError: for a variable or state name that could not be read back: empty, a BIF
            keyword (``variable``, ``table``, ...), or containing whitespace, a double quote,
            one of ``{ } ( ) [ ] ; , |``, or ``//`` or ``/*``; the message names it.
    """
    data = format_bif(bn).encode()
    if str(path).endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
