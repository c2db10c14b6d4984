"""Benchmark: `prunekit demo --quick` beside CPU-burning processes, two forced threads against fitted threads.

A newcomer's machine is often busy. With torch's default of one thread per core, a single background job
on a 2-core machine stalls every parallel operation of the demo; prunekit therefore computes with the cores
other work leaves free (``prunekit.measure.threads``). This script runs the demo beside ``--burners``
busy-looping processes, alternately with ``OMP_NUM_THREADS=2`` (the old behaviour: two threads whatever the
load) and without (threads fitted to the free cores), ``--pairs`` times, each run timed from outside
(start-up included). Reported: every run's wall time, the median wall time per mode, and the median of the
per-pair ratios forced / fitted (> 1: fitting is faster), with the machine's load before each run.

    python benchmarks/busy_demo.py --data ../shared/data/cifar10-subset [--burners 1] [--pairs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED, add_smoke_flag, results_folder, write_results
from demo import SMOKE_SETS, run_demo
from prunekit.measure.timing import machine_load
from prunekit.report.tables import markdown_table

MODES = {"forced 2 threads": {"OMP_NUM_THREADS": "2"}, "fitted threads": {}}


def burn(stop_at: float) -> None:
    """Busy-loop one core until ``stop_at`` (wall clock)."""
    while time.time() < stop_at:
        pass


def timed_run(mode: str, data: str, extra: list[str], burners: int) -> dict:
    """One demo run in ``mode`` with ``burners`` busy processes beside it (started just before)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"} | MODES[mode]
    load = machine_load().describe()
    processes = [multiprocessing.Process(target=burn, args=(time.time() + 3600,), daemon=True) for _ in range(burners)]
    for process in processes:
        process.start()
    try:
        with tempfile.TemporaryDirectory() as out:
            seconds, _, printed = run_demo(data, Path(out), extra, env)
    finally:
        for process in processes:
            process.terminate()
    threads_note = next((line for line in printed.splitlines() if "threads so as not to fight" in line), "")
    return {"mode": mode, "wall_seconds": round(seconds, 1), "load_before": load,
            "threads": "fitted: " + threads_note.split("using ")[1].split(" so")[0] if threads_note else "unchanged"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(SHARED / "data" / "cifar10-subset"), help="CIFAR-10 folder")
    parser.add_argument("--burners", type=int, default=1, help="busy-looping processes beside the demo")
    parser.add_argument("--pairs", type=int, default=2, help="forced/fitted pairs, interleaved")
    add_smoke_flag(parser)
    args = parser.parse_args()
    extra = ["--quick"] + ([f"--set={s}" for s in SMOKE_SETS] if args.smoke else [])
    pairs = 1 if args.smoke else args.pairs
    runs = []
    folder = results_folder(args.smoke)
    for index in range(pairs):
        order = list(MODES) if index % 2 == 0 else list(MODES)[::-1]  # alternate who goes first
        pair = {mode: timed_run(mode, args.data, extra, args.burners) for mode in order}
        runs += [pair[mode] | {"pair": index + 1} for mode in order]
        write(runs, args, extra, folder)  # after every pair: a long run interrupted keeps its finished pairs


def write(runs: list[dict], args, extra: list[str], folder: Path) -> None:
    """``busy_demo_<burners>.{json,md}``: every run, the median time per mode, the median per-pair ratio."""
    pairs = len(runs) // 2
    forced, fitted = ([r["wall_seconds"] for r in runs if r["mode"] == mode] for mode in MODES)
    ratios = [a / b for a, b in zip(forced, fitted)]
    summary = {"forced_median_s": statistics.median(forced), "fitted_median_s": statistics.median(fitted),
               "ratio_median": statistics.median(ratios), "ratios": ratios}
    table = (markdown_table(runs, ["pair", "mode", "wall_seconds", "threads", "load_before"])
             + f"\n\n`prunekit demo {' '.join(extra)} --data {args.data}` beside {args.burners} busy-looping "
               f"process(es); wall time includes start-up. Median forced / fitted over {pairs} interleaved "
               f"pair(s): {summary['ratio_median']:.2f}× (pairs: {', '.join(f'{r:.2f}' for r in ratios)}).")
    write_results(f"busy_demo_{args.burners}", {"burners": args.burners, "pairs": pairs, "command": extra,
                                                "runs": runs, "summary": summary}, table, folder)


if __name__ == "__main__":
    main()
