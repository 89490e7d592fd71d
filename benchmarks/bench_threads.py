"""The thread policy (``ppdgm.threads``) on a quiet and on a loaded machine.

Two small jobs, each timed with torch's default of one thread per core (``PPDGM_THREADS`` set
to the core count: what ppdgm did before the policy) and with the policy (no variable: one
thread for small work), alternating, in one process:

- ``bn.sample(100_000)`` on alarm (37 variables), and pgmpy's ``BayesianModelSampling`` for
  reference;
- three epochs of ``fit`` of a MADE(64, [500]) on the 8x8 digits (1,397 rows, batch 100), as
  ``ppdgm fit made --data digits --epochs 3`` does.

Then the same with ``--busy`` processes (default 2) started by the benchmark itself, each a
busy loop on a core, as another user's job would be. Prints the times and the ratios and writes
``benchmarks/results/threads.json``.

Run: ``.venv/bin/python benchmarks/bench_threads.py [--busy 2] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from ppdgm.bn import example
from ppdgm.data import load_digits
from ppdgm.models import MADE
from ppdgm.threads import ENV
from ppdgm.training.loop import fit

RESULTS = Path(__file__).parent / "results" / "threads.json"


def _busy_loop() -> None:  # pragma: no cover - runs in a child process
    while True:
        pass


def _jobs() -> dict[str, Callable[[], None]]:
    """The timed jobs, their data read beforehand (reading alarm's BIF file is not timed)."""
    alarm, digits = example("alarm"), load_digits("train")

    def sample_alarm() -> None:
        alarm.sample(100_000, seed=0)

    def fit_made() -> None:
        torch.manual_seed(0)
        fit(MADE(64, [500]), digits, epochs=3, batch_size=100, progress=False)

    return {"bn.sample(100_000) alarm": sample_alarm, "fit MADE(64,[500]) 3 epochs": fit_made}


def _pgmpy_alarm(model: object) -> Callable[[], None]:
    import logging

    from pgmpy.sampling import BayesianModelSampling

    logging.getLogger("pgmpy").setLevel(logging.ERROR)

    def sample() -> None:
        BayesianModelSampling(model).forward_sample(size=100_000, seed=0, show_progress=False)

    return sample


def _timed(job: Callable[[], None], threads: int | None) -> float:
    if threads is None:
        os.environ.pop(ENV, None)
    else:
        os.environ[ENV] = str(threads)
    start = time.perf_counter()
    job()
    return time.perf_counter() - start


def measure(repeats: int, with_pgmpy: bool) -> dict[str, dict[str, float]]:
    cores = torch.get_num_threads()
    jobs = _jobs()
    out: dict[str, dict[str, float]] = {}
    for name, job in jobs.items():
        job()  # warm-up: caches, imports
        times: dict[str, list[float]] = {"default": [], "policy": []}
        for _ in range(repeats):
            times["default"].append(_timed(job, cores))
            times["policy"].append(_timed(job, None))
        row = {k: statistics.median(v) for k, v in times.items()}
        row["speed-up"] = row["default"] / row["policy"]
        out[name] = row
        print(
            f"  {name:<30} {cores} threads {row['default']:8.3f} s   policy "
            f"{row['policy']:8.3f} s   x{row['speed-up']:.1f}",
            flush=True,
        )
    if with_pgmpy:
        seconds = _timed(_pgmpy_alarm(example("alarm").to_pgmpy()), None)
        out["bn.sample(100_000) alarm"]["pgmpy"] = seconds
        print(f"  {'pgmpy forward_sample alarm':<30} {seconds:8.3f} s", flush=True)
    os.environ.pop(ENV, None)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy-loop processes (2)")
    parser.add_argument("--repeats", type=int, default=3, help="timings per setting (3)")
    parser.add_argument("--no-pgmpy", action="store_true", help="skip pgmpy's sampler")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args()
    results: dict[str, object] = {
        "machine": {
            "cores": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "processor": platform.processor() or platform.machine(),
            "torch": torch.__version__,
        }
    }
    print(f"quiet machine ({torch.get_num_threads()} torch threads by default):", flush=True)
    results["quiet"] = measure(args.repeats, not args.no_pgmpy)
    busy = [multiprocessing.Process(target=_busy_loop, daemon=True) for _ in range(args.busy)]
    for process in busy:
        process.start()
    try:
        time.sleep(1.0)
        print(f"loaded machine ({args.busy} busy-loop processes):", flush=True)
        results["loaded"] = measure(args.repeats, not args.no_pgmpy)
    finally:
        for process in busy:
            process.terminate()
            process.join()
    results["busy_processes"] = args.busy
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
