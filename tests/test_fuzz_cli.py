"""Seeded property tests (hypothesis, offline, derandomized) of what ppdgm reads from outside:
``.amat`` text, the ``--evidence`` strings of ``ppdgm bn query``, and checkpoints given to
``ppdgm evaluate``.

Each surface answers with the right result, or with one named error (a ``ValueError`` naming
the line; exit status 2 and one line on standard error), never another exception. The default
suite runs a few hundred cases; the ``slow`` test runs the same properties with enough cases
that the file runs over 3,000 (``pytest -m slow tests/test_fuzz_cli.py``).
"""

from __future__ import annotations

import copy
import io
import math
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ppdgm.cli import main
from ppdgm.data import read_amat

pytestmark = pytest.mark.usefixtures("one_thread")

#: examples of each property in the default suite, and in the slow test
DEFAULT = {"amat": 150, "evidence": 100, "checkpoint": 100}
SLOW = {"amat": 1500, "evidence": 700, "checkpoint": 600}


def seeded(examples: int) -> Any:
    """Hypothesis settings: derandomized, no database, no deadline, ``examples`` cases."""
    return settings(
        derandomize=True,
        database=None,
        deadline=None,
        max_examples=examples,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ------------------------------------------------------------------------------- .amat text
_ENDINGS = [b"\n", b"\r\n", b"\r"]


def _reference(data: bytes) -> tuple[list[list[int]] | None, int | None, str]:
    """The rows of ``.amat`` text as the format defines them, else the line (from 1) and the
    kind of the first error (``value``, ``count`` or ``empty``)."""
    lines = re.split(rb"\r\n|\r|\n", data)
    tokens = [[t for t in re.split(rb"[ \t]+", line) if t] for line in lines]
    for number, line in enumerate(tokens, 1):
        if any(t not in (b"0", b"1") for t in line):
            return None, number, "value"
    while tokens and not tokens[-1]:
        tokens.pop()
    if not tokens:
        return None, None, "empty"
    dim = len(tokens[0])
    for number, line in enumerate(tokens, 1):
        if len(line) != dim or not dim:
            return None, number, "count"
    return [[int(t) for t in line] for line in tokens], None, ""


@st.composite
def amat_texts(draw: st.DrawFn) -> bytes:
    """Rows of 0 and 1 with any line endings and separators, sometimes damaged: a ragged row,
    a value other than 0 and 1, stray bytes, a cut."""
    dim = draw(st.integers(1, 6))
    rows = draw(st.lists(st.lists(st.sampled_from([0, 1]), min_size=dim, max_size=dim), max_size=6))
    out = b""
    for row in rows:
        sep = draw(st.sampled_from([b" ", b"\t", b"  ", b" \t"]))
        lead = draw(st.sampled_from([b"", b"", b" "]))
        out += lead + sep.join(str(v).encode() for v in row) + draw(st.sampled_from(_ENDINGS))
    out += b"".join(draw(st.lists(st.sampled_from(_ENDINGS), max_size=2)))
    damage = draw(st.sampled_from(["none", "none", "insert", "delete", "cut", "replace"]))
    if damage != "none" and out:
        at = draw(st.integers(0, len(out)))
        if damage == "insert":
            junk = draw(
                st.one_of(
                    st.sampled_from([b"2", b"01", b"0.5", b"x", b"\x00", b"\xff\xfe", b"\x0c"]),
                    st.sampled_from([b" 1", b"0 ", b"\r", b"\n", b"\r\n"]),
                    st.binary(min_size=1, max_size=4),
                )
            )
            out = out[:at] + junk + out[at:]
        elif damage == "delete":
            out = out[:at] + out[at + draw(st.integers(1, 3)) :]
        elif damage == "cut":
            out = out[:at]
        else:
            out = out[:at] + draw(st.binary(min_size=1, max_size=2)) + out[at + 1 :]
    return out


@pytest.fixture(scope="module")
def amat_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("amat") / "rows.amat"


def check_amat(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    rows, line, kind = _reference(data)
    try:
        got = read_amat(path)
    except ValueError as e:
        message = str(e)
        assert rows is None, f"{data!r}: refused ({message}), but holds {rows}"
        assert message.startswith(str(path)), message
        if kind == "empty":
            assert "holds no rows" in message, (data, message)
        else:
            assert f", line {line}: " in message, (data, message, kind)
            assert ("is not 0 or 1" in message) == (kind == "value"), (data, message)
        return
    assert rows is not None, f"{data!r}: read as {got.tolist()}, expected an error ({kind})"
    assert got.dtype == torch.float32
    assert got.tolist() == rows, data


def test_amat_fuzz(amat_file: Path) -> None:
    seeded(DEFAULT["amat"])(given(amat_texts())(lambda data: check_amat(amat_file, data)))()


# --------------------------------------------------------------------- CLI evidence strings
_ASIA = {
    "asia": ["yes", "no"],
    "tub": ["yes", "no"],
    "smoke": ["yes", "no"],
    "lung": ["yes", "no"],
    "bronc": ["yes", "no"],
    "either": ["yes", "no"],
    "xray": ["yes", "no"],
    "dysp": ["yes", "no"],
}


@st.composite
def evidence_texts(draw: st.DrawFn) -> tuple[str, bool]:
    """An ``--evidence`` string and whether it is well formed (known names and states, each
    name once): pairs of asia's names and states, with noise in the separators, unknown names
    and states, repeats, empty items and arbitrary text."""
    if draw(st.integers(0, 4)) == 0:
        return draw(st.text(max_size=30)), False
    names = draw(st.lists(st.sampled_from(sorted(_ASIA)), max_size=4, unique=True))
    items, good = [], True
    for name in names:
        state = draw(st.sampled_from(_ASIA[name]))
        noise = draw(st.integers(0, 9))
        if noise == 0:
            name, good = name + draw(st.sampled_from(["x", "_", "é", "-"])), False
        elif noise == 1:
            state, good = draw(st.sampled_from(["maybe", "YES", "", "1", "n o"])), False
        elif noise == 2:
            name, state = f" {name} ", f"{state} "  # spaces around are stripped
        elif noise == 3:
            items.append(draw(st.sampled_from(["", "=", "x=", "=yes", ",", "a=b=c"])))
            good = False
        items.append(f"{name}={state}" if noise != 4 else f"{name}:{state}")
        good = good and noise != 4
    if names and draw(st.integers(0, 6)) == 0:
        items.append(items[0])  # a repeated name
        good = False
    return ",".join(items), good and bool(items)


def check_evidence(capsys: pytest.CaptureFixture[str], text: str, good: bool) -> None:
    from ppdgm.commands._common import parse_assignments

    try:
        status = main(["bn", "query", "asia", "--vars", "lung,tub", f"--evidence={text}"])
    except SystemExit as e:  # argparse: a malformed command line
        status = e.code
    captured = capsys.readouterr()
    assert status in (0, 2), (text, status, captured.err)
    assert "Traceback" not in captured.err
    if status == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, (text, captured.err)
        assert lines[0].startswith("ppdgm bn: error: "), captured.err
        assert not good or "probability zero" in lines[0], (text, captured.err)
        return
    evidence = parse_assignments(text) if text else {}  # accepted: it parses
    assert all(_ASIA.get(k) and v in _ASIA[k] for k, v in evidence.items()), text
    for name in ("lung", "tub"):
        block = captured.out[captured.out.index(f"p({name}") :].splitlines()[1:3]
        values = [float(line.split()[1]) for line in block]
        assert [line.split()[0] for line in block] == ["yes", "no"], captured.out
        assert math.isclose(sum(values), 1.0, abs_tol=2e-4), captured.out


def test_evidence_fuzz(capsys: pytest.CaptureFixture[str]) -> None:
    run = given(evidence_texts())(lambda case: check_evidence(capsys, *case))
    seeded(DEFAULT["evidence"])(run)()


# ------------------------------------------------------------------------------ checkpoints
@pytest.fixture(scope="module")
def checkpoint_bytes(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], bytes]:
    out = tmp_path_factory.mktemp("fuzz") / "run"
    argv = ["fit", "fvsbn", "--data", "digits", "--train-rows", "100", "--valid-rows", "40"]
    assert main([*argv, "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    data = (out / "best.pt").read_bytes()
    return torch.load(io.BytesIO(data), weights_only=True), data


_JUNK = st.one_of(
    st.none(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=8),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.booleans(),
)
_DTYPES = [torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool,
           torch.complex64, torch.uint8]  # fmt: skip


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path into nested dicts and lists."""
    found = [prefix] if prefix else []
    if isinstance(tree, dict):
        for key, value in tree.items():
            found += _paths(value, (*prefix, key))
    elif isinstance(tree, list) and len(tree) < 10:
        for i, value in enumerate(tree):
            found += _paths(value, (*prefix, i))
    return found


@st.composite
def damaged_checkpoints(draw: st.DrawFn, original: tuple[dict[str, Any], bytes]) -> bytes:
    """The bytes of a checkpoint after one to three mutations: keys dropped, tensors of other
    shapes, dtypes or values (NaN, inf, huge), junk where anything was, absurd settings, or the
    file's bytes cut, flipped or replaced."""
    payload, data = original
    kind = draw(st.sampled_from(["tree"] * 6 + ["cut", "flip", "random", "append"]))
    if kind == "cut":
        return data[: draw(st.integers(0, len(data) - 1))]
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "random":
        return draw(st.binary(max_size=200))
    if kind == "append":
        return data + draw(st.binary(min_size=1, max_size=50))
    tree = copy.deepcopy(payload)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(tree)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        *parent_keys, key = path
        parent = tree
        for k in parent_keys:
            parent = parent[k]
        value = parent[key]
        action = draw(st.sampled_from(["drop", "junk", "shape", "dtype", "values", "setting"]))
        if action == "drop" and isinstance(parent, dict):
            del parent[key]
        elif action == "shape" and isinstance(value, torch.Tensor):
            shape = draw(st.lists(st.integers(0, 70), max_size=3))
            parent[key] = torch.zeros(shape, dtype=value.dtype)
        elif action == "dtype" and isinstance(value, torch.Tensor):
            parent[key] = value.to(draw(st.sampled_from(_DTYPES)))
        elif action == "values" and isinstance(value, torch.Tensor) and value.numel():
            bad = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e30, -1e30, 0.0]))
            changed = value.clone().double()
            changed.view(-1)[draw(st.integers(0, value.numel() - 1))] = bad
            parent[key] = changed.to(value.dtype) if value.is_floating_point() else changed
        elif action == "setting":
            tree.setdefault("model", {})
            if isinstance(tree["model"], dict):
                config = tree["model"].setdefault("config", {})
                if isinstance(config, dict):
                    config[draw(st.sampled_from(["dim", "hidden_dim", "x"]))] = draw(
                        st.one_of(st.sampled_from([0, -1, 10**12, 2**40, "64", 64.0, True]), _JUNK)
                    )
        else:
            parent[key] = draw(_JUNK)
    buffer = io.BytesIO()
    torch.save(tree, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def checkpoint_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("damaged") / "damaged.pt"


def check_checkpoint(capsys: pytest.CaptureFixture[str], path: Path, data: bytes) -> None:
    path.write_bytes(data)
    status = main(["evaluate", str(path), "--rows", "20", "--json"])
    captured = capsys.readouterr()
    assert status in (0, 2), (status, captured.err)
    assert "Traceback" not in captured.err
    if status == 2:
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1, captured.err
        assert lines[0].startswith("ppdgm evaluate: error: "), lines[0]
        return
    import json

    report = json.loads(captured.out)
    assert math.isfinite(report["nll"]) and math.isfinite(report["bits_per_dim"]), report


def test_checkpoint_fuzz(
    capsys: pytest.CaptureFixture[str], checkpoint_bytes: Any, checkpoint_file: Path
) -> None:
    run = given(damaged_checkpoints(checkpoint_bytes))(
        lambda data: check_checkpoint(capsys, checkpoint_file, data)
    )
    seeded(DEFAULT["checkpoint"])(run)()


# ------------------------------------------------------------------------------------- slow
@pytest.mark.slow
def test_every_surface_at_length(
    capsys: pytest.CaptureFixture[str],
    amat_file: Path,
    checkpoint_bytes: Any,
    checkpoint_file: Path,
) -> None:
    """The same properties with more cases: with the default tests, over 3,000."""
    seeded(SLOW["amat"])(given(amat_texts())(lambda data: check_amat(amat_file, data)))()
    seeded(SLOW["evidence"])(given(evidence_texts())(lambda case: check_evidence(capsys, *case)))()
    run = given(damaged_checkpoints(checkpoint_bytes))(
        lambda data: check_checkpoint(capsys, checkpoint_file, data)
    )
    seeded(SLOW["checkpoint"])(run)()


def test_the_slow_run_brings_the_file_over_three_thousand_cases() -> None:
    assert sum(DEFAULT.values()) + sum(SLOW.values()) >= 3000
