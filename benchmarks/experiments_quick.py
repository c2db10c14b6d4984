"""Benchmark: every shipped experiment with `--quick` on real data, and one table of their key numbers.

Runs `prunekit run experiments/X.yaml --quick` for each recipe (resuming: finished stages are skipped),
then reads each run folder's `compare.json` into `results/experiments_quick.{json,md}`. CIFAR-100 is not
in ../shared, so the GoogLeNet/CIFAR-100 recipe runs on CIFAR-10 here (`--set data.dataset=cifar10`). The
VGG-11 channel-config recipe starts from `runs/vgg11-real/last.pt` when it exists (the README's 20-epoch
`prunekit train` run) instead of its 8-epoch quick baseline.

    python benchmarks/experiments_quick.py --data ../shared/data/cifar10-subset [--only NAME] [--summarise]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from common import SHARED, add_smoke_flag, results_folder, write_results
from prunekit.report.tables import markdown_table
from prunekit.experiment import load_experiment, run_folder
from prunekit.paths import variant_of

ROOT = Path(__file__).resolve().parents[1]
EXTRA = {"googlenet_cifar100": ["--set", "data.dataset=cifar10"]}
if (ROOT / "runs" / "vgg11-real" / "last.pt").exists():
    EXTRA["vgg11_l1_cfg"] = ["--set", "baseline.checkpoint=runs/vgg11-real/last.pt"]


#: ``--smoke``: the pretrained ResNet-56 recipe on 64 images, pruned without fine-tuning, no timing
SMOKE_RECIPE = "resnet56_pretrained_l1"
SMOKE_SETS = ["--set", "data.limit_train=64", "--set", "data.limit_test=64",
              "--set", "variants.pruned-B.prune.finetune_epochs=0", "--set", "compare.timing=false"]


def run(recipe: Path, data: str, out: Path) -> float:
    command = [sys.executable, "-m", "prunekit", "run", str(recipe), "--quick", "--data", data, "--out", str(out),
               "--no-progress", *EXTRA.get(recipe.stem, [])]
    started = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    return time.perf_counter() - started


def folder_of(recipe: Path, out: Path, extra_sets: list[str]) -> Path:
    experiment = load_experiment(recipe, quick=True, assignments=[a for a in extra_sets if a != "--set"])
    return run_folder(experiment, out)


def key_rows(recipe: Path, folder: Path) -> list[dict]:
    rows = json.loads((folder / "compare.json").read_text())["rows"]
    return [{"experiment": recipe.stem, "model": variant_of(r["path"]),
             "dataset": r["dataset"], "images": r["images"], "top1": r["top1"], "params": r["params"],
             "nonzero": r["nonzero_params"], "MACs": r["macs"], "compact_bytes": r["compact_bytes"],
             "latency_ms": r["latency_ms"], "speed-up": r.get("speedup")} for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="CIFAR-10 folder (e.g. ../shared/data/cifar10-subset; "
                                                     "required unless --smoke, which defaults to it)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "quick"))
    parser.add_argument("--only", default=None, help="one recipe stem")
    parser.add_argument("--summarise", action="store_true", help="only read the finished run folders")
    add_smoke_flag(parser)
    args = parser.parse_args()
    args.data = args.data or (str(SHARED / "data" / "cifar10-subset") if args.smoke else None)
    if args.data is None:
        parser.error("--data DIR is required (e.g. ../shared/data/cifar10-subset)")
    if args.smoke:
        args.only, args.out = SMOKE_RECIPE, str(results_folder(True) / "runs")
        EXTRA[SMOKE_RECIPE] = SMOKE_SETS
    out = Path(args.out)
    recipes = sorted((ROOT / "experiments").glob("*.yaml"))
    if args.only:
        recipes = [r for r in recipes if r.stem == args.only]
    rows, seconds = [], {}
    for recipe in recipes:
        if not args.summarise:
            seconds[recipe.stem] = run(recipe, args.data, out)
        folder = folder_of(recipe, out, EXTRA.get(recipe.stem, []))
        if (folder / "compare.json").exists():
            rows += key_rows(recipe, folder)
    table = markdown_table(rows) + "\n\nAll `--quick` budgets on the real CIFAR-10 subset (509 test images); " \
                                   "latency at batch 1 from each run's compare table."
    write_results("experiments_quick", {"rows": rows, "seconds": seconds}, table,
                  Path(args.out).parent if args.smoke else results_folder(False))


if __name__ == "__main__":
    main()
