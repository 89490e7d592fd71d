"""ppdgm.bn.bif: the BIF reader and writer, against pgmpy's reading of the same files."""

from __future__ import annotations

import gzip
import re
import warnings
from pathlib import Path

import numpy as np
import pgmpy
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import ppdgm.bn as pbn
from ppdgm.bn import DiscreteBN
from ppdgm.bn.bif import (
    KEYWORDS,
    BIFError,
    RenormalizedWarning,
    format_bif,
    parse_bif,
    read_bif,
    write_bif,
)

SHIPPED = Path(pgmpy.__file__).parent / "utils" / "example_models"
#: (variables, arcs) of every network pgmpy ships (bnlearn's repository counts).
SIZES = {
    "alarm": (37, 46),
    "andes": (223, 338),
    "asia": (8, 8),
    "barley": (48, 84),
    "cancer": (5, 4),
    "child": (20, 25),
    "diabetes": (413, 602),
    "earthquake": (5, 4),
    "hailfinder": (56, 66),
    "hepar2": (70, 123),
    "insurance": (27, 52),
    "link": (724, 1125),
    "mildew": (35, 46),
    "munin": (1041, 1397),
    "munin1": (186, 273),
    "munin2": (1003, 1244),
    "munin3": (1041, 1306),
    "munin4": (1038, 1388),
    "pathfinder": (109, 195),
    "pigs": (441, 592),
    "sachs": (11, 17),
    "survey": (6, 6),
    "water": (32, 66),
    "win95pts": (76, 112),
}
#: pgmpy's reader costs at least a second a file (most of it building its grammar): the default
#: suite compares it on these (child has the names with '/'), the slow one on all the others.
PGMPY_FAST = ["asia", "child"]
ROUND_TRIP_FAST = ["asia", "child", "alarm", "win95pts", "hailfinder"]

SMALL = """network small {
}
variable A {
  type discrete [ 2 ] { a0, a1 };
}
variable B {
  type discrete [ 3 ] { b0, b1, b2 };
}
variable C {
  type discrete [ 2 ] { c0, c1 };
}
probability ( A ) {
  table 0.25, 0.75;
}
probability ( B | A ) {
  (a0) 0.1, 0.2, 0.7;
  (a1) 0.5, 0.25, 0.25;
}
probability ( C | A, B ) {
  (a0, b0) 0.9, 0.1;
  (a1, b0) 0.8, 0.2;
  (a0, b1) 0.7, 0.3;
  (a1, b1) 0.6, 0.4;
  (a0, b2) 0.5, 0.5;
  (a1, b2) 0.4, 0.6;
}
"""


def _small_tables() -> dict[str, np.ndarray]:
    c = [[[0.9, 0.1], [0.7, 0.3], [0.5, 0.5]], [[0.8, 0.2], [0.6, 0.4], [0.4, 0.6]]]
    return {
        "A": np.array([0.25, 0.75]),
        "B": np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]]),
        "C": np.array(c),
    }


def _same(a: DiscreteBN, b: DiscreteBN, atol: float = 0.0) -> None:
    """Same variables, states (order), parents (order) and tables."""
    assert set(a.variables) == set(b.variables)
    assert set(a.dag.edges) == set(b.dag.edges)
    for v in a.variables:
        assert a.states[v] == b.states[v], v
        assert a.parents(v) == b.parents(v), v
        torch.testing.assert_close(a.cpt(v), b.cpt(v), rtol=0, atol=atol)


def _error(text: str) -> BIFError:
    with pytest.raises(BIFError) as info:
        parse_bif(text, source="t.bif")
    return info.value


def _pgmpy_reading(text: str) -> dict[str, tuple[tuple, tuple, np.ndarray]]:
    """pgmpy's reading of a BIF text: states, parents and raw table (parents' axes, then the
    child's) of each variable."""
    from pgmpy.readwrite import BIFReader

    model = BIFReader(string=text, n_jobs=1).get_model()
    out = {}
    for v in model.nodes():
        cpd = model.get_cpds(v)
        evidence = tuple(cpd.variables[1:])
        values = np.asarray(cpd.get_values(), dtype=np.float64)
        shape = [len(cpd.state_names[u]) for u in evidence] + [values.shape[0]]
        out[v] = (tuple(cpd.state_names[v]), evidence, values.T.reshape(shape))
    return out


def _assert_equals_pgmpy(bn: DiscreteBN, theirs: dict) -> None:
    """Our reading equals pgmpy's: states and parents in the same order, tables within the
    network's silent tolerance raw, and to 1e-12 once pgmpy's rows are normalized (the
    network renormalizes rows that BIF files round)."""
    assert set(theirs) == set(bn.variables)
    for v, (states, parents, table) in theirs.items():
        assert bn.states[v] == states, v
        assert bn.parents(v) == parents, v
        ours = bn.cpt(v).numpy()
        np.testing.assert_allclose(ours, table, rtol=0, atol=pbn.CPT_TOLERANCE)
        normalized = table / table.sum(-1, keepdims=True)
        np.testing.assert_allclose(ours, normalized, rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- reading


def test_reads_rows_and_tables():
    bn = parse_bif(SMALL)
    assert bn.name == "small"
    assert bn.variables == ("A", "B", "C")
    assert bn.states["B"] == ("b0", "b1", "b2")
    assert bn.parents("C") == ("A", "B")
    for v, table in _small_tables().items():
        assert torch.equal(bn.cpt(v), torch.as_tensor(table)), v


def test_table_form_lists_the_childs_states_slowest():
    """``table`` with parents: every parents' configuration (last parent fastest) for the
    child's first state, then for its second, ... as pgmpy (and pyAgrum) read it."""
    text = SMALL.replace(
        """  (a0, b0) 0.9, 0.1;
  (a1, b0) 0.8, 0.2;
  (a0, b1) 0.7, 0.3;
  (a1, b1) 0.6, 0.4;
  (a0, b2) 0.5, 0.5;
  (a1, b2) 0.4, 0.6;""",
        "  table 0.9, 0.7, 0.5, 0.8, 0.6, 0.4,\n        0.1, 0.3, 0.5, 0.2, 0.4, 0.6;",
    )
    bn = parse_bif(text)
    torch.testing.assert_close(bn.cpt("C"), torch.as_tensor(_small_tables()["C"]), rtol=0, atol=0)
    _assert_equals_pgmpy(bn, _pgmpy_reading(text))


def test_table_form_agrees_with_pyagrum(tmp_path):
    gum = pytest.importorskip("pyagrum")
    text = SMALL.replace(
        "(a0) 0.1, 0.2, 0.7;\n  (a1) 0.5, 0.25, 0.25;", "table 0.1, 0.5, 0.2, 0.25, 0.7, 0.25;"
    )
    path = tmp_path / "small.bif"
    path.write_text(text)
    theirs = gum.loadBN(str(path))
    ours = read_bif(path)
    for a in range(2):
        row = [theirs.cpt("B")[{"A": a, "B": b}] for b in range(3)]
        np.testing.assert_allclose(ours.cpt("B")[a].numpy(), row, rtol=0, atol=1e-7)
    assert ours.cpt("B")[1].tolist() == [0.5, 0.25, 0.25]


def test_accepts_crlf_tabs_comments_quotes_properties_and_loose_lists():
    text = """// a comment line
property software "our tool, version 2";
network "small net" {
\tproperty note = "http://example.org";
}
/* a block comment
   over lines with variable X { } inside */
variable A { type discrete[2]{ "a0" "a1" }; property position = (1, 2); }
variable B {
\tproperty label = b;
\ttype discrete [ 3 ] { b0,b1 , b2, };
}
variable C {
  type discrete [ 2 ] { c0, c1 };
}
probability ( A ) { table .25 7.5e-1; }
probability(B|A){
  property note = rows;
  ( a0 ) 0.1 0.2 0.7;   // trailing comment
  (a1)\t5E-1, .25, 2.5e-01,;
}
probability ( C | A B ) {
  default 0.5, 0.5;
  (a0, b0) 0.9, 0.1;
  (a1, b0) 0.8, 0.2;
  (a0, b1) 0.7, 0.3;
  (a1, b1) 0.6, 0.4;
  (a1 b2) 0.4, 0.6;
}
"""
    bn = parse_bif(text.replace("\n", "\r\n"))
    assert bn.name == "small net"
    _same(bn, parse_bif(SMALL.replace("small", "other")))


def test_default_row_fills_only_the_rows_not_listed():
    text = SMALL.replace(
        "  (a0, b0) 0.9, 0.1;\n  (a1, b0) 0.8, 0.2;", "  default 0.8, 0.2;\n  (a0, b0) 0.9, 0.1;"
    )
    assert torch.equal(parse_bif(text).cpt("C"), parse_bif(SMALL).cpt("C"))
    only_default = SMALL[: SMALL.index("probability ( C")] + (
        "probability ( C | A, B ) { default 0.5, 0.5; }"
    )
    assert torch.equal(parse_bif(only_default).cpt("C"), torch.full((2, 3, 2), 0.5).double())


def test_names_with_other_characters():
    """Names are runs of anything but whitespace, quotes and { } ( ) [ ] ; , | (pgmpy reads
    state names the same way; its variable names are letters, digits, '_', '-' and '.')."""
    text = """network n { }
variable x.y { type discrete [ 3 ] { Asy/Patch, <5, >=7.5 }; }
variable a-b { type discrete [ 2 ] { 0-3_days, Transp. }; }
variable été { type discrete [ 2 ] { 12+, -1 }; }
probability ( x.y ) { table 0.2, 0.3, 0.5; }
probability ( a-b | x.y ) { (Asy/Patch) 1, 0; (<5) 0, 1; (>=7.5) 0.5, 0.5; }
probability ( été | a-b, x.y ) { default 0.5, 0.5; (Transp., <5) 1, 0; }
"""
    bn = parse_bif(text)
    assert bn.states["x.y"] == ("Asy/Patch", "<5", ">=7.5")
    assert bn.states["été"] == ("12+", "-1")
    assert bn.parents("été") == ("a-b", "x.y")
    assert bn.cpt("été")[1, 1].tolist() == [1.0, 0.0]
    assert bn.cpt("a-b")[2].tolist() == [0.5, 0.5]


def test_gzip_and_plain_files_read_the_same(tmp_path):
    plain = tmp_path / "small.bif"
    plain.write_text(SMALL)
    packed = tmp_path / "small.bif.gz"
    packed.write_bytes(gzip.compress(SMALL.encode()))
    a, b = read_bif(plain), read_bif(packed)
    assert a.name == b.name == "small"
    _same(a, b)


def test_utf8_byte_order_mark_and_out_of_order_blocks():
    """A BOM is skipped, and a probability block may come before its variables' blocks."""
    blocks = SMALL.split("probability")
    text = "\ufeff" + "probability".join(["", *blocks[1:]]) + blocks[0]
    _same(parse_bif(text), parse_bif(SMALL))


def test_rows_off_within_the_tolerance_are_renormalized_with_a_warning():
    text = SMALL.replace("(a1) 0.5, 0.25, 0.25;", "(a1) 0.5, 0.25, 0.24999;")
    with pytest.warns(RenormalizedWarning, match=r"t\.bif:17:3: 1 row\(s\) of 'B'.*given A=a1"):
        bn = parse_bif(text, source="t.bif")
    torch.testing.assert_close(bn.cpt("B")[1].sum(), torch.tensor(1.0).double())
    assert bn.cpt("B")[1, 0].item() == pytest.approx(0.5 / 0.99999, abs=1e-15)
    # rounding within the network's own tolerance is renormalized silently
    quiet = SMALL.replace("(a1) 0.5, 0.25, 0.25;", "(a1) 0.5, 0.25, 0.2500001;")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert parse_bif(quiet).cpt("B")[1].sum().item() == pytest.approx(1, abs=1e-15)


def test_missing_file():
    with pytest.raises(FileNotFoundError, match="no BIF file"):
        read_bif("/nonexistent/x.bif")


# --------------------------------------------------------------------------- errors


def _replace(old: str, new: str) -> str:
    assert SMALL.count(old) == 1, old
    return SMALL.replace(old, new)


ERRORS = [
    # (text, line, column, message)
    (
        _replace("(a0) 0.1, 0.2, 0.7;", "(a0) 0.1, 0.9;"),
        16,
        3,
        r"row of 'B' has 2 values, expected 3",
    ),
    (
        _replace("table 0.25, 0.75;", "table 0.25, 0.25, 0.5;"),
        13,
        3,
        r"'table' of 'A' has 3 values",
    ),
    (
        _replace("(a1, b1) 0.6", "(a1, b9) 0.6"),
        23,
        8,
        r"'b9' is not a state of 'B' \(its states: b0,",
    ),
    (
        _replace("(a1, b1) 0.6", "(a1) 0.6"),
        23,
        3,
        r"names 1 state\(s\), expected one for each parent",
    ),
    (_replace("b0, b1, b2", "b0, b1, b0"), 7, 33, r"state 'b0' of variable 'B' is listed twice"),
    (_replace("[ 3 ] { b0", "[ 4 ] { b0"), 7, 19, r"'B' declares 4 states but lists 3"),
    (
        _replace("variable C {", "variable B {"),
        9,
        10,
        r"variable 'B' is declared twice \(first on line 6",
    ),
    (
        SMALL + "probability ( B | A ) { default 0.5, 0.25, 0.25; }",
        27,
        15,
        r"a second probability block",
    ),
    (
        _replace("(a1, b1) 0.6", "(a0, b1) 0.6"),
        23,
        3,
        r"second row given A=a0, B=b1 .*line 22, col",
    ),
    (SMALL + "probability ( D ) { table 1; }\n", 27, 15, r"block for 'D', which is not declared"),
    (_replace("( C | A, B )", "( C | A, D )"), 19, 22, r"parent 'D' of 'C' is not a declared var"),
    (_replace("(a1, b2) 0.4, 0.6;", ""), 19, 1, r"no row given A=a1, B=b2 \(1 of 6 rows miss"),
    (SMALL[:-60], 23, 6, r"expected a state name, ',' or '\)' .*found the end of the file"),
    (SMALL[: SMALL.index("(a0, b0)")], 20, 3, r"found the end of the file \(is the '}' closing"),
    (_replace("{ a0, a1 };\n}", "{ a0, a1 };"), 5, 1, r"found 'variable' \(is the '}' closing the"),
    (SMALL + "}\n", 27, 1, r"a '}' that closes no block"),
    (_replace("0.1, 0.2, 0.7", "1.1, -0.1, 0.0"), 16, 13, r"probability -0.1 is negative"),
    (_replace("0.1, 0.2, 0.7", "0.1, nan, 0.7"), 16, 13, r"'nan' is not a number"),
    (_replace("0.1, 0.2, 0.7", "0.1, 1e999, 0.7"), 16, 13, r"probability 1e999 is not finite"),
    (_replace("0.1, 0.2, 0.7", "0.1, 1e, 0.7"), 16, 13, r"'1e' is not a number"),
    (_replace("0.1, 0.2, 0.7;", "0.1, 0.2, 0.7"), 17, 3, r"expected a number or ';'.*found '\('"),
    (_replace("0.1, 0.2, 0.7", "0.1,, 0.2, 0.7"), 16, 12, r"expected a number .*found ','"),
    (
        _replace("(a0) 0.1, 0.2, 0.7", "(a0) 0.1, 0.2, 0.6"),
        16,
        3,
        r"row given A=a0 of 'B' sums to 0.9,",
    ),
    (_replace("table 0.25, 0.75", "table 0.25, 0.7"), 13, 3, r"row of 'A' sums to 0.95, not one"),
    (_replace("discrete [ 2 ] { c0", "continuous [ 2 ] { c0"), 10, 8, r"type 'continuous': only"),
    (_replace("( C | A, B )", "( C | A, C )"), 19, 22, r"'C' is listed as its own parent"),
    (_replace("( C | A, B )", "( C | A, A )"), 19, 22, r"parent 'A' of 'C' is listed twice"),
    (_replace("(a0) 0.1", "table 0.1, 0.5, 0.2, 0.25, 0.7, 0.25;\n  (a0) 0.1"), 17, 3, r"mixes"),
    (_replace("(a1, b2)", "(a1,, b2)"), 25, 3, r"empty state name"),
    (_replace("{ c0, c1 }", "{ c0,, c1 }"), 10, 28, r"expected a state name .*found ','"),
    (SMALL + "/* open\n", 27, 1, r"a '/\*' comment without its '\*/'"),
    (_replace("variable C {\n  type", "variable C {\n  property x = 1;\n  kind"), 11, 3, "'kind'"),
    (_replace("[ 2 ] { c0, c1 };", "[ 2 ] { c0, c1 }"), 11, 1, r"expected ';' after the states"),
    (
        _replace("  table 0.25, 0.75;", "  property a = {1};\n  table 0.25, 0.75;"),
        13,
        3,
        "property",
    ),
]


@pytest.mark.parametrize(("text", "line", "column", "message"), ERRORS)
def test_errors_name_the_file_line_and_column(text, line, column, message):
    error = _error(text)
    assert re.search(message, str(error)), str(error)
    assert str(error).startswith(f"t.bif:{error.line}:{error.column}: ")
    assert (error.line, error.column) == (line, column), str(error)


def test_a_variable_without_a_table():
    error = _error(SMALL[: SMALL.index("probability ( C")])
    assert (error.line, error.column) == (9, 10)
    assert "variable 'C' has no probability block" in str(error)


def test_errors_about_the_whole_file(tmp_path):
    garbage = tmp_path / "garbage.bif"
    garbage.write_text("this is not a Bayesian network\n")
    with pytest.raises(BIFError, match=r"garbage\.bif is not a BIF file: line 1, column 1"):
        read_bif(garbage)
    empty = tmp_path / "empty.bif"
    empty.write_text("  // nothing\n")
    with pytest.raises(BIFError, match=r"empty\.bif is not a BIF file: it declares no var"):
        read_bif(empty)
    latin = tmp_path / "latin.bif"
    latin.write_bytes(SMALL.replace("b1", "b\xe9").encode("latin-1"))
    with pytest.raises(BIFError, match=r"latin\.bif:7:30: not UTF-8 text \(byte 0xe9\)"):
        read_bif(latin)
    broken = tmp_path / "broken.bif.gz"
    broken.write_bytes(gzip.compress(SMALL.encode())[:40])
    with pytest.raises(BIFError, match=r"broken\.bif\.gz: not a readable gzip file"):
        read_bif(broken)
    cycle = SMALL.replace(
        "probability ( A ) {\n  table 0.25, 0.75;",
        "probability ( A | C ) {\n  (c0) 0.25, 0.75;\n  (c1) 0.5, 0.5;",
    )
    with pytest.raises(BIFError, match=r"t\.bif: the graph has a cycle"):
        parse_bif(cycle, source="t.bif")


def test_a_table_too_large_is_refused_before_it_is_built():
    parents = [f"P{i}" for i in range(30)]
    text = "".join(f"variable {p} {{ type discrete [ 2 ] {{ a, b }}; }}\n" for p in parents)
    text += "variable C { type discrete [ 2 ] { a, b }; }\n"
    text += "".join(f"probability ( {p} ) {{ table 0.5, 0.5; }}\n" for p in parents)
    text += f"probability ( C | {', '.join(parents)} ) {{ default 0.5, 0.5; }}\n"
    error = _error(text)
    assert "the table of 'C' would have 2147483648 entries, more than 1e+08" in str(error)
    assert (error.line, error.column) == (62, 1)


def test_the_public_names():
    assert pbn.read_bif is read_bif and pbn.write_bif is write_bif
    assert pbn.BIFError is BIFError and issubclass(BIFError, ValueError)
    assert issubclass(RenormalizedWarning, UserWarning)
    import ppdgm.bn.interop as interop

    assert not hasattr(interop, "read_bif") and not hasattr(interop, "write_bif")


def test_pathological_lines_are_rejected_quickly():
    """The regular expressions do not backtrack exponentially on long malformed rows."""
    for bad in ["1111 " * 200 + "x", "1111, " * 200 + ",", "1" * 5000 + "e"]:
        text = _replace("(a0) 0.1, 0.2, 0.7", f"(a0) {bad}")
        assert isinstance(_error(text), BIFError)
    names = _replace("(a1, b2)", "(" + "a" * 5000 + ",, b2)")
    assert "empty state name" in str(_error(names))


# --------------------------------------------------------------------------- shipped networks


@pytest.mark.parametrize("name", sorted(SIZES))
def test_every_shipped_network_reads(name):
    bn = read_bif(SHIPPED / f"{name}.bif.gz")
    assert bn.name == name
    assert (len(bn.variables), bn.dag.number_of_edges()) == SIZES[name]
    assert sorted(p.name.removesuffix(".bif.gz") for p in SHIPPED.glob("*.bif.gz")) == sorted(SIZES)


@pytest.mark.parametrize("name", PGMPY_FAST)
def test_equals_pgmpy_reading(name):
    path = SHIPPED / f"{name}.bif.gz"
    _assert_equals_pgmpy(
        read_bif(path), _pgmpy_reading(gzip.decompress(path.read_bytes()).decode())
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SIZES) - set(PGMPY_FAST)))
def test_equals_pgmpy_reading_on_every_shipped_network(name):
    path = SHIPPED / f"{name}.bif.gz"
    _assert_equals_pgmpy(
        read_bif(path), _pgmpy_reading(gzip.decompress(path.read_bytes()).decode())
    )


# --------------------------------------------------------------------------- writing


def test_written_text():
    text = format_bif(parse_bif(SMALL))
    assert "property" not in text
    assert text.startswith("network small {\n}\nvariable A {\n  type discrete [ 2 ] { a0, a1 };\n}")
    # the rows of C in the order of its parents' configurations, the last parent fastest
    rows = re.findall(r"\n  \((.*)\) ", text[text.index("probability ( C | A, B )") :])
    assert rows == ["a0, b0", "a0, b1", "a0, b2", "a1, b0", "a1, b1", "a1, b2"]
    assert "  table 0.25, 0.75;" in text


@pytest.mark.parametrize("name", ROUND_TRIP_FAST)
def test_round_trip_of_shipped_networks(name, example_network, tmp_path):
    bn = example_network(name)
    path = tmp_path / f"{name}.bif"
    bn.write_bif(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.bif"]
    _same(read_bif(path), bn)
    assert read_bif(path).variables == bn.variables


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(set(SIZES) - set(ROUND_TRIP_FAST)))
def test_round_trip_of_every_shipped_network(name, tmp_path):
    bn = read_bif(SHIPPED / f"{name}.bif.gz")
    path = tmp_path / f"{name}.bif.gz"
    write_bif(bn, path)
    _same(read_bif(path), bn)


@pytest.mark.parametrize("seed", range(4))
def test_round_trip_of_random_networks_is_exact(seed, bn_tools, tmp_path):
    bn = bn_tools.random_network(seed)
    path = tmp_path / "random.bif.gz"
    write_bif(bn, path)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    back = read_bif(path)
    assert back.name == "random"
    _same(back, bn)


def test_integer_states_are_written_as_text(bn_tools, tmp_path):
    bn = bn_tools.random_network(1, integer_states=True)
    back = parse_bif(format_bif(bn))
    for v in bn.variables:
        assert back.states[v] == tuple(str(s) for s in bn.states[v])
        assert torch.equal(back.cpt(v), bn.cpt(v))


def _two_variables(first: str, second: str, states: list[str]) -> DiscreteBN:
    import networkx as nx

    k = len(states)
    rows = np.random.default_rng(0).dirichlet(np.ones(2), size=k)
    return DiscreteBN(
        nx.DiGraph([(first, second)]),
        {first: np.full(k, 1 / k), second: rows},
        {first: states, second: ("no", "yes")},
        name="pair",
    )


BAD_NAMES = ["a b", "a,b", "a{", "b}", "(a", "a)", "a;b", "a|b", 'a"b', "", "a\tb", "[x]"]
BAD_NAMES += ["a//b", "a/*b", "x\u00a0y", *sorted(KEYWORDS)]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_writer_refuses_names_it_could_not_read_back(bad, tmp_path):
    path = tmp_path / "x.bif"
    if not bad:  # an empty name reads as a missing cell: the network itself refuses it
        with pytest.raises(ValueError, match=r"state '' of variable 'A'"):
            _two_variables("A", "B", ["ok", bad])
        return
    as_state = _two_variables("A", "B", ["ok", bad])
    with pytest.raises(ValueError, match=re.escape(repr(bad)) + r" \(a state of variable 'A'\)"):
        write_bif(as_state, path)
    if bad:
        as_variable = _two_variables(bad, "B", ["s0", "s1"])
        with pytest.raises(ValueError, match=re.escape(repr(bad)) + r" \(a variable\)"):
            write_bif(as_variable, path)
    assert not path.exists() and not list(tmp_path.iterdir())


_ANY_NAME = st.one_of(
    st.text(
        st.one_of(
            st.characters(blacklist_categories=("Cs",)),
            st.sampled_from(list('{}()[];,|"/*- .\t\r\n\x00\u00a0')),
        ),
        max_size=5,
    ),
    st.sampled_from(sorted(KEYWORDS)),
)


@settings(max_examples=150, deadline=None, database=None)
@given(first=_ANY_NAME, second=_ANY_NAME, states=st.lists(_ANY_NAME, min_size=1, max_size=4))
def test_any_name_is_refused_or_read_back_identically(first, second, states):
    """The writer's check matches the reader: a name written reads back as itself."""
    if first == second or len(set(states)) < len(states):
        return
    if "" in (first, second, *states):  # refused by the network itself (reads as missing)
        with pytest.raises(ValueError, match="''"):
            _two_variables(first, second, states)
        return
    bn = _two_variables(first, second, states)
    try:
        text = format_bif(bn)
    except ValueError as e:
        bad = [n for n in (first, second, *states) if repr(n) in str(e)]
        assert bad, str(e)
        return
    _same(parse_bif(text), bn)


# --------------------------------------------------------------------------- fuzzing

_FUZZ = SMALL.replace("(a0, b0) 0.9, 0.1;", "default 0.9, 0.1;").encode()
_TOKENS = [m.group() for m in re.finditer(rb"\s+|[{}()\[\];,|]|[^\s{}()\[\];,|]+", _FUZZ)]


def _read_or_reject(data: bytes, tmp_path_factory) -> None:
    """Reading gives a network or a ValueError with a message, never another exception."""
    path = tmp_path_factory.mktemp("fuzz") / "f.bif"
    path.write_bytes(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RenormalizedWarning)
        try:
            bn = read_bif(path)
        except ValueError as e:
            assert str(e)
            if isinstance(e, BIFError):
                assert str(e).startswith(str(path)) or "is not a BIF file" in str(e)
        else:
            assert isinstance(bn, DiscreteBN)


_FUZZ_SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


@_FUZZ_SETTINGS
@given(cut=st.integers(0, len(_FUZZ)))
def test_fuzz_truncated(cut, tmp_path_factory):
    _read_or_reject(_FUZZ[:cut], tmp_path_factory)


@_FUZZ_SETTINGS
@given(
    changes=st.lists(
        st.tuples(st.integers(0, len(_FUZZ) - 1), st.integers(0, 255)), min_size=1, max_size=6
    )
)
def test_fuzz_byte_mutations(changes, tmp_path_factory):
    data = bytearray(_FUZZ)
    for at, byte in changes:
        data[at] = byte
    _read_or_reject(bytes(data), tmp_path_factory)


@_FUZZ_SETTINGS
@given(drop=st.sets(st.integers(0, len(_TOKENS) - 1), min_size=1, max_size=4))
def test_fuzz_token_deletions(drop, tmp_path_factory):
    data = b"".join(t for i, t in enumerate(_TOKENS) if i not in drop)
    _read_or_reject(data, tmp_path_factory)
