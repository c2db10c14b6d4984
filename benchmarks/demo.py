"""Benchmark: `prunekit demo` on real data, timed from outside, into `results/demo.{json,md}`.

Runs the demo in a fresh folder (so no stage is resumed) under `/usr/bin/time -v` when present, then copies
the run's `demo.json` (data, per-model accuracy and costs, load average) next to the wall time and peak
memory. The README quotes these numbers; `tests/e2e/test_demo_slow.py` checks that the demo still prints
them.

    python benchmarks/demo.py --data ../shared/data/cifar10-subset [--keep runs/demo-benchmark]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import SHARED, add_smoke_flag, results_folder, write_results
from prunekit.report.tables import markdown_table

TIME = shutil.which("time") or ("/usr/bin/time" if Path("/usr/bin/time").exists() else None)


#: ``--smoke``: the demo's --quick budget cut to one epoch on 128 images, no fine-tuning, no timing
SMOKE_SETS = ["data.limit_train=128", "data.limit_test=128", "baseline.train.epochs=1",
              "variants.l1-filter-50.prune.finetune_epochs=0", "variants.global-unstructured-80.prune.finetune_epochs=0",
              "compare.timing=false"]


def run_demo(data: str, out: Path, extra: list[str] = (), env: dict | None = None) -> tuple[float, int | None, str]:
    """Wall seconds, peak resident KiB (None without GNU time) and the demo's printed output (``env``: the
    process's environment, default ours)."""
    command = [sys.executable, "-m", "prunekit", "demo", "--data", data, "--out", str(out), "--no-progress", *extra]
    start = time.perf_counter()
    done = subprocess.run(([TIME, "-v"] if TIME else []) + command, capture_output=True, text=True, check=True,
                          env=env)
    seconds = time.perf_counter() - start
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    return seconds, int(peak.group(1)) if peak else None, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 folder (e.g. ../shared/data/cifar10-subset; "
                                                     "required unless --smoke, which defaults to it)")
    parser.add_argument("--quick", action="store_true", help="time `prunekit demo --quick` instead")
    parser.add_argument("--keep", metavar="DIR", default=None,
                        help="run the demo in this new folder and keep it (e.g. for a screenshot of its report)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    args.data = args.data or (str(SHARED / "data" / "cifar10-subset") if args.smoke else None)
    if args.data is None:
        parser.error("--data DIR is required (e.g. ../shared/data/cifar10-subset)")
    extra = ["--quick"] * (args.quick or args.smoke) + [f"--set={s}" for s in SMOKE_SETS if args.smoke]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.keep) if args.keep else Path(tmp)
        if args.keep and out.exists():
            parser.error(f"--keep {out} exists; the demo must start from an empty folder")
        seconds, peak_kib, printed = run_demo(args.data, out, extra)
        demo = json.loads(next(out.glob("*/demo.json")).read_text())
    payload = {"command": " ".join(["prunekit demo --data", args.data, *extra]), "wall_seconds": round(seconds, 1),
               "peak_rss_mib": round(peak_kib / 1024) if peak_kib else None, "demo": demo,
               "printed_tail": printed.strip().splitlines()[-12:]}
    rows = [{"model": m["model"], "test top-1 (%)": f"{m['top1']:.2f}", "params": m["params"], "MACs": m["macs"]}
            for m in demo["models"]]
    busy = " (machine busy: the time is longer than on a quiet one)" if demo["busy"] else ""
    table = (markdown_table(rows) + f"\n\n{demo['dataset']}{' SYNTHETIC' if demo['synthetic'] else ''}: "
             f"{demo['train_images']} training / {demo['test_images']} test images. Wall time {seconds:.0f} s on "
             f"{demo['cores']} cores; before it started: {demo['load_before']}{busy}.")
    write_results("demo_quick" if args.quick else "demo", payload, table, results_folder(args.smoke))


if __name__ == "__main__":
    main()
