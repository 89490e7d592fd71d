"""Discrete-network speed: ppdgm's batched exact inference and sampling against pgmpy's.

Runs both peers side by side in one process and prints ratios (targets from the issue):

- posterior of one query variable per row, 10,000 rows with half the cells missing at random:
  pgmpy's ``VariableElimination.query`` per row (it has no batch query) over ppdgm's
  ``bn.posterior`` per row; at least 100x on alarm, child, hailfinder and win95pts, 30x on
  insurance. The two answers are compared on every row pgmpy answered.
- the arithmetic floor: entries per row summed over the batched elimination steps, for min-fill
  and for the order ppdgm chooses, and how close the engine gets: its time (encoding the
  DataFrame included) against one fused multiply-add per entry on cache-resident data.
- ``bn.sample`` against ``BayesianModelSampling.forward_sample`` at 100,000 rows on alarm: 20x.
- memory: peak resident memory of ``bn.posterior`` at 10,000, 100,000 and 400,000 rows (in
  subprocesses);
  rows are processed in chunks, so the growth is the input and the output, not intermediates.
- ``--read`` (instead of the above): reading every BIF file pgmpy ships, ``ppdgm.bn.read_bif``
  against pyAgrum's C++ ``loadBN`` (target: within 2x) and pgmpy's ``BIFReader`` (stopped
  after ``--pgmpy-limit`` seconds, 30 by default), all on the same uncompressed copy of each
  file. pyAgrum does not read names with characters such as '/', '<' or '+' (child's
  ``Asy/Patch``, ``<5``, ``12+``): it reads a copy with '_' instead, as the output notes.

- ``--pyagrum`` (instead of the above): end to end (the network read aside), ppdgm's
  ``bn.posterior`` of one variable over 1,000 rows with half the cells missing (planning
  included: a fresh network per network) against pyAgrum's ``LazyPropagation`` answering the
  same rows one by one (evidence set, inference, posterior; 200 rows timed), on every network
  pgmpy ships; the planning time of ppdgm's elimination order alone; the largest difference of
  the answers. Targets: faster than pyAgrum everywhere, at least 50x on alarm, child,
  insurance, win95pts and hepar2.

Usage: ``python benchmarks/bench_bn.py [--quick]``; writes ``benchmarks/results/bn.json``;
``python benchmarks/bench_bn.py --read [NETWORK ...]`` writes ``benchmarks/results/bn-read.json``.
Run with ``PPDGM_THREADS=1 OMP_NUM_THREADS=1`` for one-thread numbers.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ppdgm.bn import DiscreteBN, example, read_bif
from ppdgm.bn.elimination import elimination_plan

TARGETS = {"alarm": 100, "child": 100, "hailfinder": 100, "win95pts": 100, "insurance": 30}


def missing_at_random(bn: DiscreteBN, rows: int, fraction: float, seed: int) -> pd.DataFrame:
    """Sampled rows with ``fraction`` of the cells blanked at random."""
    frame = bn.sample(rows, seed=seed).astype(object)
    mask = np.random.default_rng(seed).random(frame.shape) < fraction
    return frame.mask(mask)


def best_time(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def arithmetic_floor(entries: int) -> float:
    """Seconds for one fused multiply-add per entry over ``entries`` float64 values, on pieces
    small enough to stay in cache (the engine's chunks mostly do): no memory stalls, so a
    lower bound on any pass that touches every entry once."""
    piece = 2**14
    a = torch.rand(piece, dtype=torch.float64)
    b = torch.rand(piece, dtype=torch.float64)
    acc = torch.zeros(piece, dtype=torch.float64)

    def run() -> None:
        for _ in range(max(1, entries // piece)):
            acc.addcmul_(a, b)

    return best_time(run) * entries / (max(1, entries // piece) * piece)


def posterior_case(name: str, rows: int, pgmpy_rows: int) -> dict:
    from pgmpy.inference import VariableElimination

    bn = example(name)
    frame = missing_at_random(bn, rows, 0.5, seed=0)
    query = bn.variables[len(bn.variables) // 2]
    bn.posterior(frame.head(8), [query])  # builds and caches the plan
    ours = best_time(lambda: bn.posterior(frame, [query]))
    answer = bn.posterior(frame, [query])[query]

    engine = VariableElimination(bn.to_pgmpy())
    todo = frame.index[frame[query].isna()][:pgmpy_rows]
    error = 0.0
    start = time.perf_counter()
    for i in todo:
        evidence = {k: v for k, v in frame.loc[i].items() if isinstance(v, str)}
        factor = engine.query([query], evidence=evidence, show_progress=False)
        reference = np.array([factor.get_value(**{query: s}) for s in bn.states[query]])
        error = max(error, float(np.abs(reference - answer[i].numpy()).max()))
    theirs = (time.perf_counter() - start) / len(todo)

    observed = [v for v in bn.variables if frame[v].notna().any()]
    chosen = elimination_plan(bn, observed, (query,))
    min_fill = elimination_plan(bn, observed, (query,), order="min-fill")
    floor = arithmetic_floor(chosen.cost * rows)
    return {
        "network": name,
        "query": query,
        "rows": rows,
        "ppdgm_us_per_row": ours / rows * 1e6,
        "pgmpy_us_per_row": theirs * 1e6,
        "pgmpy_rows_timed": len(todo),
        "ratio": theirs / (ours / rows),
        "target": TARGETS.get(name),
        "max_abs_difference": error,
        "floor_entries_per_row_min_fill": min_fill.cost,
        "floor_entries_per_row_chosen": chosen.cost,
        "engine_over_arithmetic_floor": ours / floor,
    }


def sampling_case(name: str, rows: int) -> dict:
    from pgmpy.sampling import BayesianModelSampling

    bn = example(name)
    sampler = BayesianModelSampling(bn.to_pgmpy())
    ours = best_time(lambda: bn.sample(rows, seed=0))
    theirs = best_time(lambda: sampler.forward_sample(size=rows, show_progress=False), repeat=2)
    return {
        "network": name,
        "rows": rows,
        "ppdgm_s": ours,
        "pgmpy_s": theirs,
        "ratio": theirs / ours,
        "target": 20,
    }


MEMORY_PROBE = """
import sys, numpy as np
from ppdgm.bn import example
bn = example(sys.argv[1]); rows = int(sys.argv[2])
frame = bn.sample(rows, seed=0)  # categorical columns: one byte a cell
rng = np.random.default_rng(0)
for v in frame.columns:
    frame[v] = frame[v].mask(rng.random(rows) < 0.5)
q = bn.variables[len(bn.variables) // 2]
bn.posterior(frame.head(8), [q])
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024
before = status("VmRSS:")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the high-water mark VmHWM to the current resident size
bn.posterior(frame, [q])
print(status("VmHWM:") - before)
"""


def memory_case(name: str, rows: int) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, name, str(rows)],
        check=True,
        capture_output=True,
        text=True,
    )
    return {"network": name, "rows": rows, "peak_growth_mib": float(out.stdout.split()[-1])}


class _TimeLimit(Exception):
    pass


def _stop(*_: object) -> None:
    raise _TimeLimit


def pgmpy_read_time(path: Path, limit: float) -> float | None:
    """Seconds pgmpy's BIFReader takes to read ``path`` into a model; None if it is stopped
    after ``limit`` seconds (pgmpy's parser is pure Python, so an alarm interrupts it)."""
    from pgmpy.readwrite import BIFReader

    previous = signal.signal(signal.SIGALRM, _stop)
    signal.setitimer(signal.ITIMER_REAL, limit)
    start = time.perf_counter()
    try:
        BIFReader(str(path), n_jobs=1).get_model()
        return time.perf_counter() - start
    except _TimeLimit:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def pyagrum_read_time(path: Path, repeat: int) -> tuple[float, str]:
    """Best seconds of pyAgrum's ``loadBN`` on ``path`` (on a copy with '/' in names made '_'
    if it refuses the file), and a note saying so."""
    import pyagrum as gum

    try:
        gum.loadBN(str(path))
        note = ""
    except Exception:  # pyAgrum's names are letters, digits, '_', '-' and '.'

        def name(m: re.Match[str]) -> str:
            word = re.sub(r"[^\w.\-]", "_", m.group())
            return "_" + word if word[0].isdigit() and not word.isdigit() else word

        def plain(m: re.Match[str]) -> str:
            return re.sub(r"[^\s,{}()\[\];]+", name, m.group())

        text = re.sub(r"(?m)^\s*(?:type discrete.*|\([^)]*\))", plain, path.read_text())
        renamed = path.with_name(path.stem + "-renamed.bif")
        renamed.write_text(text)
        path, note = renamed, "pyAgrum read a copy with names made letters, digits, '_', '-', '.'"
    return best_time(lambda: gum.loadBN(str(path)), repeat), note


def read_case(name: str, folder: Path, pgmpy_limit: float) -> dict:
    import pgmpy

    packed = Path(pgmpy.__file__).parent / "utils" / "example_models" / f"{name}.bif.gz"
    path = folder / f"{name}.bif"
    path.write_bytes(gzip.decompress(packed.read_bytes()))
    repeat = 3 if path.stat().st_size > 1_000_000 else 20
    ours = best_time(lambda: read_bif(path), repeat)
    theirs, note = pyagrum_read_time(path, repeat)
    pgmpy_s = pgmpy_read_time(path, pgmpy_limit)
    return {
        "network": name,
        "kilobytes": path.stat().st_size / 1000,
        "ppdgm_s": ours,
        "pyagrum_s": theirs,
        "pgmpy_s": pgmpy_s,
        "ratio_to_pyagrum": ours / theirs,
        "pgmpy_over_ppdgm": None if pgmpy_s is None else pgmpy_s / ours,
        "target": 2.0,
        "note": note,
    }


def read_main(names: list[str], pgmpy_limit: float, out: Path) -> None:
    """Read times of every shipped network: ppdgm, pyAgrum and pgmpy side by side."""
    import pgmpy

    shipped = Path(pgmpy.__file__).parent / "utils" / "example_models"
    names = names or sorted(p.name.removesuffix(".bif.gz") for p in shipped.glob("*.bif.gz"))
    print(f"torch threads: {torch.get_num_threads()}; pgmpy stopped after {pgmpy_limit:g} s")
    print(
        f"{'network':<11} {'kB':>7} {'ppdgm ms':>9} {'pyAgrum ms':>10} {'pgmpy s':>8} "
        f"{'ppdgm/pyAgrum':>13} {'pgmpy/ppdgm':>11}"
    )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in sorted(names, key=lambda n: (shipped / f"{n}.bif.gz").stat().st_size):
            r = read_case(name, Path(tmp), pgmpy_limit)
            rows.append(r)
            pgmpy_s = "skipped" if r["pgmpy_s"] is None else f"{r['pgmpy_s']:.2f}"
            speedup = "-" if r["pgmpy_s"] is None else f"{r['pgmpy_over_ppdgm']:.0f}x"
            print(
                f"{name:<11} {r['kilobytes']:>7.0f} {1e3 * r['ppdgm_s']:>9.2f} "
                f"{1e3 * r['pyagrum_s']:>10.2f} {pgmpy_s:>8} {r['ratio_to_pyagrum']:>13.2f} "
                f"{speedup:>11}" + (f"  ({r['note']})" if r["note"] else "")
            )
    skipped = [r["network"] for r in rows if r["pgmpy_s"] is None]
    if skipped:
        print(f"pgmpy skipped (over {pgmpy_limit:g} s): {', '.join(skipped)}")
    over = [r["network"] for r in rows if r["ratio_to_pyagrum"] > 2]
    print(f"within 2x of pyAgrum: {len(rows) - len(over)} of {len(rows)}; over: {over or '-'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"read": rows}, indent=2) + "\n")
    print(f"wrote {out}")


AGAINST_PYAGRUM = {"alarm": 50, "child": 50, "insurance": 50, "win95pts": 50, "hepar2": 50}


def to_pyagrum(bn: DiscreteBN):  # -> pyagrum.BayesNet (an optional peer)
    """The network as a ``pyagrum.BayesNet`` (variables ``v0..``, states ``s0..``: pyAgrum's
    names cannot hold every character BIF files use)."""
    import pyagrum as gum

    g = gum.BayesNet()
    ids = {v: f"v{i}" for i, v in enumerate(bn.variables)}
    for v in bn.variables:
        labels = [f"s{j}" for j in range(len(bn.states[v]))]
        g.add(gum.LabelizedVariable(ids[v], ids[v], labels))
    for v in bn.variables:
        for u in bn.parents(v):
            g.addArc(ids[u], ids[v])
    back = {i: v for v, i in ids.items()}
    for v in bn.variables:
        pot = g.cpt(ids[v])
        axes = [back[n] for n in reversed(pot.names)]  # toarray's axes, first variable last
        scope = [*bn.parents(v), v]
        table = bn.cpt(v).numpy().transpose([scope.index(a) for a in axes])
        pot.fillWith(table.flatten().tolist())
    return g, ids


def pyagrum_case(name: str, rows: int, theirs_rows: int) -> dict:
    import pyagrum as gum

    data = missing_at_random(example(name), rows, 0.5, seed=0)
    bn = example(name)  # fresh: no plan made yet
    query = bn.variables[len(bn.variables) // 2]
    observed = [v for v in bn.variables if data[v].notna().any()]
    start = time.perf_counter()
    elimination_plan(bn, observed, (query,), search=False)
    planning = time.perf_counter() - start
    bn = example(name)
    start = time.perf_counter()
    ours = bn.posterior(data, query)[query]
    ours_s = time.perf_counter() - start
    g, ids = to_pyagrum(bn)
    codes = {v: {s: f"s{j}" for j, s in enumerate(bn.states[v])} for v in bn.variables}
    start = time.perf_counter()
    engine = gum.LazyPropagation(g)
    worst = 0.0
    for i in range(theirs_rows):
        row = data.iloc[i]
        engine.setEvidence({ids[v]: codes[v][s] for v, s in row.items() if pd.notna(s)})
        engine.makeInference()
        p = engine.posterior(ids[query]).toarray()
        worst = max(worst, float(np.abs(p - ours[i].numpy()).max()))
    theirs_s = (time.perf_counter() - start) / theirs_rows * rows
    return {
        "network": name,
        "variables": len(bn.variables),
        "rows": rows,
        "planning_s": planning,
        "ppdgm_s": ours_s,
        "pyagrum_s": theirs_s,
        "ratio": theirs_s / ours_s,
        "target": AGAINST_PYAGRUM.get(name, 1),
        "max_abs_difference": worst,
    }


def pyagrum_main(names: list[str], out: Path) -> None:
    import pgmpy

    shipped = Path(pgmpy.__file__).parent / "utils" / "example_models"
    names = names or sorted(p.name.removesuffix(".bif.gz") for p in shipped.glob("*.bif.gz"))
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"{'network':<11} {'vars':>5} {'plan s':>7} {'ppdgm s':>8} {'pyAgrum s':>9} "
        f"{'ratio':>7} {'target':>6} {'max diff':>9}"
    )
    # the process's first torch and pandas calls initialise them: not a cost of any query
    warm = example("asia")
    warm.posterior(missing_at_random(warm, 10, 0.5, seed=0), "lung")
    results = []
    for name in names:
        r = pyagrum_case(name, 1000, 200)
        results.append(r)
        print(
            f"{name:<11} {r['variables']:>5} {r['planning_s']:>7.3f} {r['ppdgm_s']:>8.3f} "
            f"{r['pyagrum_s']:>9.3f} {r['ratio']:>7.1f} {r['target']:>6} "
            f"{r['max_abs_difference']:>9.1e}",
            flush=True,
        )
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--pgmpy-rows", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="fewer rows, for a smoke run")
    parser.add_argument("--out", default=None, help="the JSON written (default: by section)")
    parser.add_argument("--read", action="store_true", help="time reading BIF files instead")
    parser.add_argument("--pgmpy-limit", type=float, default=30.0, help="seconds, with --read")
    parser.add_argument("--pyagrum", action="store_true", help="posteriors against pyAgrum")
    parser.add_argument("networks", nargs="*", help="with --read or --pyagrum: these only")
    args = parser.parse_args()
    results_dir = Path(__file__).parent / "results"
    if args.pyagrum:
        pyagrum_main(args.networks, Path(args.out or results_dir / "bn-pyagrum.json"))
        return
    if args.read:
        read_main(args.networks, args.pgmpy_limit, Path(args.out or results_dir / "bn-read.json"))
        return
    args.out = args.out or str(results_dir / "bn.json")
    rows, pgmpy_rows = (2_000, 30) if args.quick else (args.rows, args.pgmpy_rows)

    results: dict[str, list] = {"posterior": [], "sampling": [], "memory": []}
    print(f"torch threads: {torch.get_num_threads()}")
    print(
        f"{'network':<11} {'ppdgm us/row':>12} {'pgmpy us/row':>12} {'ratio':>7} {'target':>6} "
        f"{'max diff':>9} {'floor min-fill':>14} {'floor used':>10} {'x floor':>7}"
    )
    for name in TARGETS:
        r = posterior_case(name, rows, pgmpy_rows)
        results["posterior"].append(r)
        print(
            f"{name:<11} {r['ppdgm_us_per_row']:>12.2f} {r['pgmpy_us_per_row']:>12.1f} "
            f"{r['ratio']:>7.0f} {r['target']:>6} {r['max_abs_difference']:>9.1e} "
            f"{r['floor_entries_per_row_min_fill']:>14} {r['floor_entries_per_row_chosen']:>10} "
            f"{r['engine_over_arithmetic_floor']:>7.1f}"
        )
    s = sampling_case("alarm", 20_000 if args.quick else 100_000)
    results["sampling"].append(s)
    print(
        f"sampling alarm {s['rows']} rows: ppdgm {s['ppdgm_s']:.3f} s, pgmpy {s['pgmpy_s']:.3f} s, "
        f"ratio {s['ratio']:.0f} (target {s['target']})"
    )
    for n in (10_000, 100_000, 400_000):
        m = memory_case("alarm", n)
        results["memory"].append(m)
        print(f"memory alarm posterior {n} rows: peak grew {m['peak_growth_mib']:.1f} MiB")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
