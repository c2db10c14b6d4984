"""Benchmark: how much accuracy a pruned ResNet-56 keeps for the same cost and retraining budget.

From the pretrained ResNet-56 (../shared/pretrained, ImageNet normalisation) every row prunes once, retrains
``--epochs`` epochs on the first ``--train-images`` images of ``--data``'s training split (same seed, same
epochs, same lr for every row) through :func:`prunekit.pipeline.run_pruning`, and measures:

* ``top1_pruned``: test top-1 (``--data``'s test split) right after pruning (after BN recalibration when
  the row recalibrates), before retraining;
* ``top1_retrained``: the same test split after retraining;
* ``top1_eval``: ``--eval-data``'s test split after retraining (default: ``--data``, then it equals
  ``top1_retrained``).

Settings: ``filter-half-macs`` (filter pruning with ``macs_target`` 0.5: half the MACs; allocation uniform =
scope layer, global = one LAMP-normalised ranking), ``unstructured-0.9`` and ``unstructured-0.8`` (uniform =
scope layer, global = one magnitude threshold, lamp = scope lamp, suggested = ``prunekit sensitivity
--suggest``'s choice: per-layer sensitivity curves plus the whole-model comparison of the candidate
allocations, measured on ``--held-out`` training images that retraining never sees). ``sparsity`` is the
filter sparsity for the filter setting and the overall weight sparsity otherwise.

    python benchmarks/recovery.py --data ../shared/data/cifar10-subset [--eval-data DIR] [--epochs 1] \
        [--train-images 1500] [--threads 1] [--rows filter-half-macs/l1/uniform/plain,...] [--json OUT]

Writes ``benchmarks/results/recovery.json`` (or ``--json``) and the ``.md`` beside it after every row;
rows already in that JSON with the same budget are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import SHARED, add_smoke_flag, hardware, results_folder
from prunekit.analysis.points import Evaluator
from prunekit.analysis.sensitivity import allocation_candidates, choose_allocation, run_sensitivity
from prunekit.atomic import atomic_write_text
from prunekit.config import FINETUNE_LR, PruneConfig, TrainConfig
from prunekit.data import get_data
from prunekit.data.normalisation import NORMALISATIONS
from prunekit.foreign import load_weights
from prunekit.measure import count_macs
from prunekit.models import create_model
from prunekit.pipeline import run_pruning, with_normalisation
from prunekit.report.tables import markdown_table
from prunekit.evaluation import evaluate_split

RESNET56 = SHARED / "pretrained" / "resnet56-4bfd9763.th"
DEFAULT_DATA = SHARED / "data" / "cifar10-subset"
RESULTS = Path(__file__).resolve().parent / "results"
BN_BATCHES = 8  # batches of 128 training images for BN recalibration
SENSITIVITY_SPARSITIES = (0.6, 0.9)

# (setting, method, allocation, distill, bn_recalibration)
ROWS = [
    ("filter-half-macs", "l1", "uniform", False, False),
    ("filter-half-macs", "l1", "uniform", False, True),
    ("filter-half-macs", "l1", "uniform", True, True),
    ("filter-half-macs", "taylor", "uniform", False, True),
    ("filter-half-macs", "fpgm", "uniform", False, True),
    ("filter-half-macs", "l1", "global", False, True),
    ("unstructured-0.9", "l1", "uniform", False, False),
    ("unstructured-0.9", "l1", "global", False, False),
    ("unstructured-0.9", "l1", "lamp", False, False),
    ("unstructured-0.9", "l1", "lamp", True, True),
    ("unstructured-0.8", "l1", "uniform", False, False),
    ("unstructured-0.8", "l1", "global", False, False),
    ("unstructured-0.8", "l1", "lamp", False, False),
    ("unstructured-0.8", "l1", "suggested", False, False),
]
SCOPES = {"uniform": "layer", "global": "global", "lamp": "lamp"}


def row_id(spec) -> str:
    setting, method, allocation, distill, bn = spec
    extras = "+".join(name for name, on in (("bn", bn), ("distill", distill)) if on) or "plain"
    return f"{setting}/{method}/{allocation}/{extras}"


def dense_model():
    return load_weights(create_model("resnet56"), RESNET56).eval()


def held_out(full, start: int, count: int):
    """``full`` with its test split replaced by training images ``start … start+count`` (never retrained on)."""
    images, labels = full.train
    return dataclasses.replace(full, test=(images[start:start + count], labels[start:start + count]), val=None)


def suggested_ratios(model, target: float, held, meta: dict, work: Path) -> tuple[dict, dict]:
    """The allocation `prunekit sensitivity --suggest` would write, measured on the held-out images."""
    data = with_normalisation(held, meta)
    evaluator = Evaluator(data, data.info.mean, data.info.std, torch.device("cpu"), "test")
    rows = run_sensitivity(model, SENSITIVITY_SPARSITIES, evaluator, work / "sensitivity.csv", progress=False)
    candidates = allocation_candidates(model, rows, target)
    chosen, results = choose_allocation(model, candidates, evaluator)
    return candidates[chosen], {"chosen": chosen, "candidates": results}


def prune_config(spec, epochs: int, ratios: dict | None) -> PruneConfig:
    setting, method, allocation, _, bn = spec
    common = dict(finetune_epochs=epochs, recalibrate_bn=BN_BATCHES if bn else 0, seed=0)
    if setting == "filter-half-macs":
        return PruneConfig(granularity="filter", macs_target=0.5, criterion=method,
                           scope="layer" if allocation == "uniform" else "global", **common)
    if ratios is not None:
        return PruneConfig(granularity="unstructured", ratios=ratios, **common)
    return PruneConfig(granularity="unstructured", sparsity=float(setting.split("-")[1]), scope=SCOPES[allocation],
                       **common)


def run_row(spec, args, data, eval_data, held, meta: dict) -> dict:
    setting, method, allocation, distill, bn = spec
    model = dense_model()
    started = time.perf_counter()
    extra = {}
    with tempfile.TemporaryDirectory() as tmp:
        ratios = None
        if allocation == "suggested":
            ratios, extra = suggested_ratios(model, float(setting.split("-")[1]), held, meta, Path(tmp))
        train = TrainConfig(lr=FINETUNE_LR, batch_size=args.batch_size, device="cpu", seed=0, distill=distill)
        result = run_pruning(model, data, prune_config(spec, args.epochs, ratios), train, tmp, name="row",
                             meta=meta, progress=False)
    seconds = time.perf_counter() - started
    evaluated = evaluate_split(result.model, with_normalisation(eval_data, meta), "test", device="cpu")
    sparsity = result.filter_sparsity if result.filter_sparsity is not None else result.sparsity
    return {"setting": setting, "method": method, "allocation": allocation, "distill": distill,
            "bn_recalibration": bn, "macs": int(result.meta["macs"]), "sparsity": float(sparsity),
            "top1_pruned": result.rounds[0]["pruned_top1"], "top1_retrained": result.test_top1,
            "top1_eval": evaluated.top1, "seconds": seconds, "id": row_id(spec), **extra}


def table(rows: list[dict]) -> str:
    shown = [{"setting": r["setting"], "method": r["method"], "allocation": r["allocation"],
              "BN recal.": "yes" if r["bn_recalibration"] else "", "distill": "yes" if r["distill"] else "",
              "MACs": f"{r['macs'] / 1e6:.1f}M", "sparsity": f"{r['sparsity']:.3f}",
              "top-1 pruned": f"{r['top1_pruned']:.2f}", "top-1 retrained": f"{r['top1_retrained']:.2f}",
              "top-1 eval": f"{r['top1_eval']:.2f}", "seconds": f"{r['seconds']:.0f}"} for r in rows]
    return markdown_table(shown)


def write(path: Path, payload: dict) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, default=str))
    budget = payload["budget"]
    head = (f"ResNet-56 (pretrained), retraining {budget['epochs']} epoch(s) on {budget['train_images']} training "
            f"images of {budget['data']}, lr {budget['lr']}, batch {budget['batch_size']}, seed 0, "
            f"{budget['threads']} torch thread(s); dense MACs {payload['dense_macs'] / 1e6:.1f}M. Test top-1 in % "
            f"({payload['test_images']} test images); eval = {budget['eval_data']}.\n\n")
    notes = [f"\n{r['setting']} suggested: chose `{r['chosen']}` on {budget['held_out']} held-out training images "
             "(whole model pruned, no retraining: " + ", ".join(f"{c['allocation']} {c['top1']:.2f}%"
                                                               for c in r["candidates"]) + ")."
             for r in payload["rows"] if r.get("chosen")]
    atomic_write_text(path.with_suffix(".md"), head + table(payload["rows"]) + "\n" + "\n".join(notes) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="CIFAR-10 folder (default: the shared subset)")
    parser.add_argument("--eval-data", default=None, help="CIFAR-10 folder for top1_eval (default: --data)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-images", type=int, default=1500, help="training images retrained on")
    parser.add_argument("--held-out", type=int, default=256, help="training images after those, for --suggest")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rows", default=None, help="comma-separated row ids (default: all), e.g. "
                                                     + row_id(ROWS[0]))
    parser.add_argument("--json", default=str(RESULTS / "recovery.json"))
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # the first row, no retraining, on 64 images
        args.epochs, args.train_images, args.held_out, args.rows = 0, 64, 64, row_id(ROWS[0])
        args.json = str(results_folder(True) / "recovery.json")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if not RESNET56.is_file():
        sys.exit(f"needs the pretrained ResNet-56 at {RESNET56}")
    mean, std = NORMALISATIONS["imagenet"]
    meta = {"dataset": "cifar10", "num_classes": 10, "mean": list(mean), "std": list(std)}
    full = get_data("cifar10", root=args.data, download=False)
    data = dataclasses.replace(full, train=tuple(t[:args.train_images] for t in full.train))
    held = held_out(full, args.train_images, args.held_out)
    eval_data = get_data("cifar10", root=args.eval_data, download=False) if args.eval_data else full
    budget = {"epochs": args.epochs, "train_images": len(data.train[1]), "held_out": args.held_out,
              "batch_size": args.batch_size, "lr": FINETUNE_LR, "threads": args.threads, "data": args.data,
              "eval_data": args.eval_data or args.data, "bn_batches": BN_BATCHES,
              "sensitivity_sparsities": list(SENSITIVITY_SPARSITIES)}
    path = Path(args.json)
    previous = json.loads(path.read_text()) if path.exists() else {}
    rows = previous.get("rows", []) if previous.get("budget") == budget else []
    payload = {"hardware": hardware(), "budget": budget, "dense_macs": count_macs(dense_model()),
               "test_images": len(full.test[1]), "rows": rows}
    wanted = [s for s in ROWS if args.rows is None or row_id(s) in args.rows.split(",")]
    for spec in wanted:
        if any(r.get("id") == row_id(spec) for r in rows):
            continue
        print(f"--- {row_id(spec)}", flush=True)
        rows.append(run_row(spec, args, data, eval_data, held, meta))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "candidates"}), flush=True)
        write(path, payload)
    write(path, payload)
    print(table(rows))


if __name__ == "__main__":
    main()
