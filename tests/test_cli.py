"""The ``ppdgm`` command, run in-process: every sub-command, checked against brute-force
enumeration of the joint distribution, and bad input."""

from __future__ import annotations

import gzip
import io
import itertools
import math
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ppdgm.demo
from ppdgm.bn import DiscreteBN, asia, read_bif, student
from ppdgm.cli import main

SVG = "{http://www.w3.org/2000/svg}"


# ------------------------------------------------------------------------------ the oracle
class Enumeration:
    """The joint distribution of a small network as an explicit table of every assignment."""

    def __init__(self, bn: DiscreteBN) -> None:
        self.bn = bn
        self.configs = np.array(
            list(itertools.product(*(range(len(bn.states[v])) for v in bn.variables)))
        )
        column = {v: j for j, v in enumerate(bn.variables)}
        probs = np.ones(len(self.configs))
        for v in bn.variables:
            table = bn.cpt(v).numpy()
            index = tuple(self.configs[:, column[u]] for u in (*bn.parents(v), v))
            probs *= table[index]
        self.probs = probs

    def codes(self, rows: pd.DataFrame) -> np.ndarray:
        out = np.full((len(rows), len(self.bn.variables)), -1)
        for j, v in enumerate(self.bn.variables):
            if v in rows.columns:
                lookup = {str(s): i for i, s in enumerate(self.bn.states[v])}
                out[:, j] = [-1 if pd.isna(x) else lookup[x] for x in rows[v]]
        return out

    def consistent(self, rows: pd.DataFrame) -> np.ndarray:
        """``[N, configs]``: whether each assignment agrees with each row's observed cells."""
        codes = self.codes(rows)[:, None, :]
        return ((codes < 0) | (codes == self.configs[None])).all(-1)

    def log_prob(self, rows: pd.DataFrame) -> np.ndarray:
        with np.errstate(divide="ignore"):
            return np.log(self.consistent(rows) @ self.probs)

    def posterior(self, rows: pd.DataFrame, variable: str) -> np.ndarray:
        j = self.bn.variables.index(variable)
        weights = self.consistent(rows) * self.probs
        card = len(self.bn.states[variable])
        joint = np.stack([weights[:, self.configs[:, j] == s].sum(1) for s in range(card)], 1)
        with np.errstate(invalid="ignore"):
            return joint / joint.sum(1, keepdims=True)


def free_parameters(bn: DiscreteBN) -> tuple[int, int, int]:
    cards = bn.cardinalities
    factorized = sum(
        (cards[v] - 1) * math.prod(cards[u] for u in bn.parents(v)) for v in bn.variables
    )
    return factorized, math.prod(cards.values()) - 1, sum(c - 1 for c in cards.values())


def read_csv(path: Path | str) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


@pytest.fixture(scope="module")
def missing_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """10,000 rows of Asia written by ``ppdgm bn sample`` with 30% of the cells blanked."""
    path = tmp_path_factory.mktemp("rows") / "asia-missing.csv"
    assert main(["bn", "sample", "asia", "-n", "10000", "--seed", "1", "--missing", "0.3",
                 "-o", str(path)]) == 0  # fmt: skip
    return path


# ---------------------------------------------------------------------------------- info
def test_info_example(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bn", "info", "asia"]) == 0
    out = capsys.readouterr().out
    bn = asia()
    for v in bn.variables:
        assert re.search(rf"^\s+{v}\s+\| parents: ", out, re.M), v
    factorized, joint, independent = free_parameters(bn)
    assert (factorized, joint, independent) == (18, 255, 8)
    assert re.search(r"full joint table\s+255\s+= 2\^8 - 1", out)
    assert re.search(r"this network\s+18\s", out)
    assert re.search(r"fully independent\s+8\s", out)


@pytest.mark.parametrize("compress", [False, True])
def test_info_written_bif(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], compress: bool
) -> None:
    bn = student()
    path = tmp_path / "student.bif"
    bn.write_bif(path)
    if compress:
        gz = tmp_path / "student.bif.gz"
        gz.write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path = gz
    assert main(["bn", "info", str(path), "--cpt", "grade"]) == 0
    out = capsys.readouterr().out
    factorized, joint, independent = free_parameters(bn)
    assert re.search(rf"full joint table\s+{joint}\s", out)
    assert re.search(rf"this network\s+{factorized}\s", out)
    assert re.search(rf"fully independent\s+{independent}\s", out)
    # p(grade = A | difficulty = easy, intelligence = high) is the table's entry [0, 1, 0]
    row = next(line for line in out.splitlines() if line.lstrip().startswith("high"))
    assert [float(x) for x in row.split()[1:]] == pytest.approx(
        bn.cpt("grade")[0, 1].tolist(), abs=5e-5
    )


# -------------------------------------------------------------------------------- sample
def test_sample_is_the_library_sample(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = asia().sample(300, seed=7).astype(str)
    path = tmp_path / "rows.csv"
    assert main(["bn", "sample", "asia", "-n", "300", "--seed", "7", "-o", str(path)]) == 0
    pd.testing.assert_frame_equal(read_csv(path), expected, check_dtype=False)
    assert "wrote 300 rows" in capsys.readouterr().out
    assert main(["bn", "sample", "asia", "-n", "300", "--seed", "7"]) == 0
    assert capsys.readouterr().out == path.read_text()


def test_sample_missing_cells(missing_csv: Path) -> None:
    rows = read_csv(missing_csv)
    assert rows.shape == (10_000, 8)
    share = rows.isna().to_numpy().mean()
    assert abs(share - 0.3) < 4 * math.sqrt(0.3 * 0.7 / rows.size)
    bn = asia()
    for v in bn.variables:
        assert set(rows[v].dropna()) <= set(bn.states[v])


# -------------------------------------------------------------------------------- loglik
def test_loglik_matches_enumeration(
    missing_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "loglik.csv"
    assert main(["bn", "loglik", "asia", "--data", str(missing_csv), "-o", str(out_path)]) == 0
    out = capsys.readouterr().out
    result = pd.read_csv(out_path, dtype={"log_prob": float}, keep_default_na=False,
                         na_values=[""])  # fmt: skip
    rows = read_csv(missing_csv)
    pd.testing.assert_frame_equal(result.drop(columns="log_prob").astype(str), rows.astype(str))
    expected = Enumeration(asia()).log_prob(rows)
    np.testing.assert_allclose(result["log_prob"], expected, rtol=1e-8, atol=1e-12)
    total = float(re.search(r"log p\(data\) = (\S+) nats in total, (\S+) per row", out)[1])
    assert total == pytest.approx(expected.sum(), abs=1e-4)
    assert "10,000 rows" in out


def test_loglik_impossible_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("tub,either,smoke\nyes,no,\n,,yes\n")
    assert main(["bn", "loglik", "asia", "--data", str(path)]) == 0
    captured = capsys.readouterr()
    result = pd.read_csv(io.StringIO(captured.out))
    assert result["log_prob"][0] == -math.inf
    assert result["log_prob"][1] == pytest.approx(math.log(0.5))
    assert "1 row(s) have probability zero" in captured.err
    assert "rows 1," in captured.err


# --------------------------------------------------------------------------------- query
def test_query_evidence_matches_enumeration(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "bn",
        "query",
        "asia",
        "--vars",
        "lung,tub",
        "--evidence",
        "smoke=yes,xray=yes,dysp=yes",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    evidence = pd.DataFrame({"smoke": ["yes"], "xray": ["yes"], "dysp": ["yes"]})
    oracle = Enumeration(asia())
    for v in ("lung", "tub"):
        block = out.split(f"p({v} | smoke=yes, xray=yes, dysp=yes)\n")[1].splitlines()[:2]
        shown = {line.split()[0]: float(line.split()[1]) for line in block}
        expected = oracle.posterior(evidence, v)[0]
        assert [shown["yes"], shown["no"]] == pytest.approx(expected.tolist(), abs=5e-5)
    assert f"{oracle.posterior(evidence, 'lung')[0, 0]:.4f}" == "0.7237"  # the classic number


def test_query_csv_matches_enumeration(
    missing_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = read_csv(missing_csv).head(200)
    rows.loc[len(rows)] = ["yes", "yes", None, None, None, "no", None, None]  # impossible
    path, out_path = tmp_path / "rows.csv", tmp_path / "posterior.csv"
    rows.to_csv(path, index=False)
    argv = [
        "bn",
        "query",
        "asia",
        "--vars",
        "either,bronc",
        "--csv",
        str(path),
        "-o",
        str(out_path),
    ]
    assert main(argv) == 0
    assert "1 row(s) have probability zero under the network (rows 201," in capsys.readouterr().out
    result = pd.read_csv(out_path, keep_default_na=False, na_values=[""])
    oracle = Enumeration(asia())
    for v in ("either", "bronc"):
        got = result[[f"p({v}=yes)", f"p({v}=no)"]].to_numpy(dtype=float)
        np.testing.assert_allclose(got[:200], oracle.posterior(rows.head(200), v), atol=1e-9)
        assert np.isnan(got[200]).all()


# ----------------------------------------------------------------------------------- fit
def test_fit_em_recovers_the_network(
    missing_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """EM on 10,000 rows with 30% of cells missing recovers the tables the rows came from.

    Tolerance: each entry within 5 standard errors of a proportion estimated from the rows
    where its whole family is observed (``n_eff = N p(parents) 0.7^(|family|)``, variance at
    most 1/4), which is conservative since EM also uses the incomplete rows; and on fresh data
    the learned network is within 0.01 nats per row of the truth.
    """
    out_path = tmp_path / "learned.bif"
    argv = [
        "bn",
        "fit",
        "asia",
        "--data",
        str(missing_csv),
        "--max-iter",
        "200",
        "-o",
        str(out_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "method: EM (maximum likelihood)" in out and ", converged" in out
    assert re.search(r"^\s+0\s+-\d+\.\d+\s+-\d\.\d+$", out, re.M)  # the history starts at 0
    assert f"wrote the learned network to {out_path}" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["learned.bif"]  # no temporary left

    truth, learned = asia(), read_bif(out_path)
    assert learned.dag.edges == truth.dag.edges
    oracle = Enumeration(truth)
    column = {v: j for j, v in enumerate(truth.variables)}
    for v in truth.variables:
        parents = truth.parents(v)
        for config in itertools.product(*(range(2) for _ in parents)):
            match = np.ones(len(oracle.configs), dtype=bool)
            for u, i in zip(parents, config, strict=True):
                match &= oracle.configs[:, column[u]] == i
            n_eff = 10_000 * oracle.probs[match].sum() * 0.7 ** (len(parents) + 1)
            tolerance = 5 * math.sqrt(0.25 / n_eff)
            got, want = learned.cpt(v)[config].numpy(), truth.cpt(v)[config].numpy()
            assert np.abs(got - want).max() < tolerance, (v, config, got, want, tolerance)
    fresh = truth.sample(20_000, seed=11)
    gap = float(truth.log_prob(fresh).mean() - learned.log_prob(fresh).mean())
    assert 0 <= gap < 0.01


def test_fit_complete_data_is_smoothed_counts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With complete rows and a Dirichlet prior, each learned row is (counts + a) / (total + a k),
    counted here with pandas."""
    bn = student()
    rows = bn.sample(2_000, seed=3).astype(str)
    data, out_path = tmp_path / "rows.csv", tmp_path / "learned.bif"
    rows.to_csv(data, index=False)
    argv = ["bn", "fit", str(_bif(bn, tmp_path)), "--data", str(data), "--prior", "dirichlet",
            "--pseudo-count", "0.5", "-o", str(out_path)]  # fmt: skip
    assert main(argv) == 0
    assert "closed-form counts (Dirichlet prior, pseudo-count 0.5)" in capsys.readouterr().out
    learned = read_bif(out_path)
    for v in bn.variables:
        parents, states = list(bn.parents(v)), list(bn.states[v])
        for config in itertools.product(*(bn.states[u] for u in parents)):
            subset = rows
            for u, s in zip(parents, config, strict=True):
                subset = subset[subset[u] == s]
            counts = subset[v].value_counts().reindex(states, fill_value=0).to_numpy()
            expected = (counts + 0.5) / (counts.sum() + 0.5 * len(states))
            index = tuple(bn.states[u].index(s) for u, s in zip(parents, config, strict=True))
            np.testing.assert_allclose(learned.cpt(v)[index].numpy(), expected, rtol=1e-9)


def _bif(bn: DiscreteBN, folder: Path) -> Path:
    path = folder / f"{bn.name}.bif"
    bn.write_bif(path)
    return path


# ---------------------------------------------------------------------------------- demo
def test_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_dir = tmp_path / "demo"
    assert main(["demo", "-o", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert str(out_dir.resolve()) in out.splitlines()[-1]
    assert "p(lung=yes)" in out and "0.7237" in out
    if shutil.which("dot") is None:  # pragma: no cover - the fallback has its own test
        pytest.skip("Graphviz's dot is not installed; the demo writes DOT source")
    root = ET.parse(out_dir / "asia.svg").getroot()
    assert root.tag == f"{SVG}svg"
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert set(asia().variables) <= labels
    assert len(list(root.iter(f"{SVG}g"))) > 8
    assert read_bif(out_dir / "asia-learned.bif").dag.edges == asia().dag.edges


def test_demo_graph_without_dot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ppdgm.demo.shutil, "which", lambda name: None)
    ppdgm.demo.graph_section(tmp_path)
    out = capsys.readouterr().out
    assert "install Graphviz" in out
    assert not (tmp_path / "asia.svg").exists()
    source = (tmp_path / "asia.dot").read_text()
    assert source.startswith("digraph asia {")
    assert all(f"{u} -> {v}" in source for u, v in asia().dag.edges)


# ----------------------------------------------------------------------------- bad input
def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


BAD_INPUT = [
    (lambda d: ["bn", "info", "nosuchnet"], "'nosuchnet' is neither a BIF file"),
    (lambda d: ["bn", "info", str(d / "missing.bif")], "missing.bif"),
    (lambda d: ["bn", "info", str(_write(d / "corrupt.bif", "hello"))], "corrupt.bif"),
    (
        lambda d: ["bn", "info", str(_write(d / "broken.bif", "network x {}\nvariable a {\n"))],
        "broken.bif",
    ),
    (lambda d: ["bn", "info", "asia", "--cpt", "lng"], "'lng'"),
    (lambda d: ["bn", "query", "asia", "--vars", "lng"], "'lng'"),
    (lambda d: ["bn", "query", "asia", "--vars", "lung", "--evidence", "smok=yes"], "'smok'"),
    (lambda d: ["bn", "query", "asia", "--vars", "lung", "--evidence", "smoke=maybe"], "'maybe'"),
    (lambda d: ["bn", "query", "asia", "--vars", "lung", "--evidence", "smoke"], "'smoke'"),
    (
        lambda d: ["bn", "query", "asia", "--vars", "lung", "--evidence", "tub=yes,either=no"],
        "probability zero",
    ),
    (lambda d: ["bn", "loglik", "asia", "--data", str(d / "absent.csv")], "absent.csv"),
    (
        lambda d: [
            "bn",
            "loglik",
            "asia",
            "--data",
            str(_write(d / "c.csv", "asia,smok\nyes,no\n")),
        ],
        "'smok'",
    ),
    (
        lambda d: [
            "bn",
            "query",
            "asia",
            "--vars",
            "lung",
            "--csv",
            str(_write(d / "s.csv", "asia,smoke\nyes,maybe\n")),
        ],
        "'maybe'",
    ),
    (
        lambda d: ["bn", "fit", "asia", "--data", str(_write(d / "f.csv", "lung\nperhaps\n"))],
        "'perhaps'",
    ),
    (
        lambda d: [
            "bn",
            "fit",
            "asia",
            "--data",
            str(_write(d / "g.csv", "lung\nyes\n")),
            "-o",
            str(d / "nodir" / "x.bif"),
        ],
        "nodir",
    ),
    (lambda d: ["bn", "sample", "asia", "-o", str(d / "nodir" / "x.csv")], "nodir"),
]


@pytest.mark.parametrize(("argv", "expected"), BAD_INPUT)
def test_bad_input(
    argv: object, expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv(tmp_path)) == 2  # type: ignore[operator]
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("ppdgm bn: error: ")
    assert expected in lines[0]


@pytest.mark.parametrize(
    "argv",
    [
        ["bn", "sample", "asia", "-n", "0"],
        ["bn", "sample", "asia", "--missing", "1.5"],
        ["bn", "fit", "asia", "--data", "x.csv", "--prior", "laplace"],
        ["bn", "query", "asia", "--vars", "lung", "--evidence", "smoke=yes", "--csv", "x.csv"],
    ],
)
def test_bad_arguments(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


def test_demo_output_is_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = _write(tmp_path / "taken", "")
    assert main(["demo", "-o", str(target)]) == 2
    assert (
        capsys.readouterr().err.strip() == f"ppdgm demo: error: {target} exists and is not a folder"
    )


# ----------------------------------------------------------------------- console script
def test_console_script_help() -> None:
    script = shutil.which("ppdgm", path=str(Path(sys.executable).parent))
    assert script is not None, "the ppdgm console script is not installed next to this Python"
    done = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "usage: ppdgm" in done.stdout
    for command in ("bn", "demo"):
        assert re.search(rf"^\s+{command}\s", done.stdout, re.M), command


def test_the_parser_imports_no_torch() -> None:
    """``ppdgm --help`` answers fast: building the parser imports neither torch nor pyro nor
    pandas (each command imports what it needs when it runs)."""
    code = (
        "import sys, ppdgm.cli; ppdgm.cli.build_parser(); "
        "print(sorted(m for m in ('torch', 'pyro', 'pandas') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------ numbers and OS errors
@pytest.mark.parametrize(
    ("argv", "flag", "wanted"),
    [
        (["bn", "fit", "asia", "--data", "x.csv", "--pseudo-count"], "--pseudo-count", ">= 0"),
        (["bn", "fit", "asia", "--data", "x.csv", "--ess"], "--ess", "> 0"),
        (["bn", "fit", "asia", "--data", "x.csv", "--tol"], "--tol", ">= 0"),
        (["bn", "sample", "asia", "--missing"], "--missing", "in [0, 1]"),
        (["fit", "fvsbn", "--lr"], "--lr", "> 0"),
        (["fit", "fvsbn", "--lr-decay"], "--lr-decay", "> 0"),
        (["fit", "fvsbn", "--weight-decay"], "--weight-decay", ">= 0"),
    ],
)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "NaN", "1e999", "x"])
def test_every_number_option_must_be_finite_and_in_range(
    argv: list[str], flag: str, wanted: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*argv[:-1], f"{flag}={value}"])  # "--lr -inf" would read -inf as a flag
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"error: argument {flag}: must be a finite number" in err
    assert wanted in err


def test_the_shared_number_type_reports_as_argparse_does() -> None:
    import argparse

    from ppdgm.commands._common import finite_float

    positive = finite_float(greater=0.0)
    assert positive("2.5") == 2.5
    for bad, shown in (("nan", "nan"), ("inf", "inf"), ("0", "0"), ("x", "'x'")):
        with pytest.raises(argparse.ArgumentTypeError, match=f"> 0, got {shown}$"):
            positive(bad)
    assert finite_float()("-3") == -3.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"in \[0, 1\], got 2"):
        finite_float(least=0, most=1)("2")


def test_bn_fit_nan_prior_is_refused_not_uniform_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = tmp_path / "rows.csv"
    assert main(["bn", "sample", "asia", "-n", "50", "--seed", "0", "-o", str(rows)]) == 0
    for flag in ("--pseudo-count", "--ess"):
        with pytest.raises(SystemExit):
            main(["bn", "fit", "asia", "--data", str(rows), "--prior", "bdeu", flag, "nan"])
        assert f"argument {flag}: must be a finite number" in capsys.readouterr().err


def test_model_settings_must_be_finite(capsys: pytest.CaptureFixture[str]) -> None:
    for value in ("nan", "inf"):
        assert main(["fit", "realnvp", "--logit-alpha", value, "--out", "never"]) == 2
        err = capsys.readouterr().err.strip()
        assert (
            err == f"ppdgm fit: error: --logit-alpha takes a finite number, got {value} (realnvp)"
        )


def _one_error_line(capsys: pytest.CaptureFixture[str], command: str) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"ppdgm {command}: error: "), lines[0]
    return lines[0]


def test_bn_outputs_under_a_file_or_on_a_full_or_read_only_disk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import errno
    from unittest import mock

    rows = tmp_path / "rows.csv"
    assert main(["bn", "sample", "asia", "-n", "30", "--seed", "0", "-o", str(rows)]) == 0
    capsys.readouterr()
    blocker = _write(tmp_path / "blocker", "")
    assert main(["bn", "fit", "asia", "--data", str(rows), "-o", str(blocker / "x.bif")]) == 2
    assert "blocker is a file, not a folder" in _one_error_line(capsys, "bn")
    assert main(["bn", "sample", "asia", "-o", str(blocker / "x.csv")]) == 2
    assert f"cannot write {blocker / 'x.csv'}: " in _one_error_line(capsys, "bn")

    out = tmp_path / "out"
    out.mkdir()
    (out / "x.csv").write_text("old\n")
    full = OSError(errno.ENOSPC, "No space left on device")
    denied = PermissionError(errno.EACCES, "Permission denied")
    for error, words in ((full, "disk full"), (denied, "permission denied")):
        # a read-only folder: nothing can be made or removed there (root ignores chmod)
        with (
            mock.patch("pathlib.Path.write_text", side_effect=error),
            mock.patch("pathlib.Path.unlink", side_effect=denied),
        ):
            assert main(["bn", "sample", "asia", "-o", str(out / "x.csv")]) == 2
        line = _one_error_line(capsys, "bn")
        assert f"cannot write {out / 'x.csv'}: {words}" in line
        assert (out / "x.csv").read_text() == "old\n"  # the old file stays whole
        assert sorted(p.name for p in out.iterdir()) == ["x.csv"]
    with mock.patch("pathlib.Path.write_bytes", side_effect=full):
        assert main(["bn", "fit", "asia", "--data", str(rows), "-o", str(out / "n.bif")]) == 2
    assert f"cannot write {out / 'n.bif'}: disk full" in _one_error_line(capsys, "bn")
    assert sorted(p.name for p in out.iterdir()) == ["x.csv"]


def test_loglik_of_a_network_with_a_variable_named_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # the network's plate over rows takes another name: 'data' is the variable's
    import networkx as nx

    from ppdgm.bn import DiscreteBN, write_bif

    bn = DiscreteBN(
        nx.DiGraph([("data", "b")]), {"data": [0.5, 0.5], "b": [[0.9, 0.1], [0.2, 0.8]]}
    )
    write_bif(bn, tmp_path / "net.bif")
    (tmp_path / "rows.csv").write_text("data,b\n,1\n0,\n")
    argv = ["bn", "loglik", str(tmp_path / "net.bif"), "--data", str(tmp_path / "rows.csv")]
    for method in ("exact", "importance", "elbo"):
        extra = [] if method == "exact" else ["--samples", "400", "--seed", "0"]
        assert main([*argv, "--method", method, *extra]) == 0, capsys.readouterr().err
        result = pd.read_csv(io.StringIO(capsys.readouterr().out))
        expected = [math.log(0.5 * 0.1 + 0.5 * 0.8), math.log(0.5)]
        if method == "exact":
            assert result["log_prob"].tolist() == pytest.approx(expected, abs=1e-9)
        elif method == "importance":  # row 1 observes a root alone: its weight is exact
            assert result["log_prob"][1] == pytest.approx(expected[1], abs=1e-9)
            assert result["log_prob"][0] == pytest.approx(expected[0], abs=0.15)  # 400 draws
        else:
            assert (result["log_prob"] <= np.array(expected) + 1e-9).all()
