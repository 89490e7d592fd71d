"""Throughput of data-parallel training: ``ppdgm fit`` with one process against two
(``torchrun --standalone``), one thread each, the same global minibatch and rows.

Models: MADE 784-8000-8000-784 (the 8,000x2 of the MADE paper) and the CS236 VAE
(784-300-300-10) on binarized MNIST (``--data-dir``, default ``../shared/data/binarized_mnist``
beside the repository). Each run trains one epoch on ``--rows`` rows; the epoch's seconds
(from ``metrics.jsonl``, validation on 100 rows included) give rows per second.

Run: ``python benchmarks/bench_distributed.py`` (writes ``benchmarks/results/distributed.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CASES = {
    "made-8000x2": ["made", "--hidden", "8000,8000"],
    "vae-cs236": ["vae", "--hidden", "300,300", "--z-dim", "10"],
}


def run(case: list[str], processes: int, rows: int, data_dir: str, out: Path) -> float:
    """Seconds of one epoch on ``rows`` rows with ``processes`` processes."""
    command = [sys.executable]
    if processes > 1:
        command += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command += ["-m", "ppdgm", "fit", *case, "--data", "binarized-mnist", "--data-dir", data_dir]
    command += ["--train-rows", str(rows), "--valid-rows", "100", "--epochs", "1"]
    command += ["--batch-size", "100", "--out", str(out), "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PPDGM_THREADS": "1"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    entry = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return float(entry["seconds"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="training rows per run (1000)")
    parser.add_argument(
        "--data-dir", default=str(HERE.parent.parent / "shared/data/binarized_mnist")
    )
    parser.add_argument("--out", default=str(HERE / "results" / "distributed.json"))
    parser.add_argument("cases", nargs="*", default=list(CASES))
    args = parser.parse_args()
    results = []
    print(f"{'model':<13} {'1 process s':>12} {'2 processes s':>14} {'speed-up':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            one = run(CASES[name], 1, args.rows, args.data_dir, Path(tmp) / f"{name}-1")
            two = run(CASES[name], 2, args.rows, args.data_dir, Path(tmp) / f"{name}-2")
            results.append(
                {"model": name, "rows": args.rows, "one_s": one, "two_s": two, "speedup": one / two}
            )
            print(f"{name:<13} {one:>12.2f} {two:>14.2f} {one / two:>9.2f}", flush=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
