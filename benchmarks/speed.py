"""Benchmark: is a pruned model measurably faster where it runs? MACs target vs latency target, eager vs ONNX Runtime,
fp32 vs int8, at batch 1 and 64, one thread.

Per model (ResNet-56 with the public pretrained weights from ../shared, normalisation imagenet; VGG-11 and
MobileNetV2 randomly initialised, so their top-1 only shows the pipeline runs):

* ``dense``: the model as loaded;
* ``macs 0.5``: ``prune_channels(macs_target=0.5)``: uniform L1, today's way;
* ``latency 0.5``: :func:`prunekit.prune.latency.prune_to_latency` at batch 1 on a latency table built (or
  read from the cache) on this machine: knapsack allocation (widths valued by the loss measured on the BN
  batches, residual branches kept or removed whole), then measured and corrected;
* ``int8`` of each (``prunekit.export.quantize_model``, 8 calibration batches of the subset).

MobileNetV2's pruned widths are multiples of 8 (``round_to=8``, :data:`ROUND_TO`): the x86 int8 depthwise
kernel takes a slow path at other widths above 100 channels (see :mod:`prunekit.export.quantize`); a row
quantized with such widths says so in its flags.

Every pruned model gets its BatchNorm statistics recalibrated on 8 batches of 128 training images of the real
CIFAR-10 subset before its top-1 on the 509 test images is measured. Then ``compare_checkpoints`` measures
all of them in one table with ``runtime="eager,onnxruntime"``: each runtime times every model interleaved
with the dense one (warm-up, median of paired per-round ratios, 1 thread), so each speed-up compares pruned
and dense in the same runtime with the same inference optimisations (eager: :mod:`prunekit.inference`, BatchNorm
folded and the graph traced flat; ONNX Runtime: its default graph optimisations); ONNX Runtime cannot take the
int8 GraphModules (marked "not run").
Efficiency = speed-up ÷ MACs reduction. A model measured slower than the dense one is flagged SLOWER.

    python benchmarks/speed.py [--quick | --only MODEL [MODEL ...]] [--smoke] [--json OUT] [--repeats N]

``--quick``: ResNet-56 only (what the acceptance needs, about 2.5 min); ``--only``: these models. ``--smoke``: a tiny VGG on synthetic data, eager only, a few seconds (CI).
Writes ``benchmarks/results/speed.{json,md}`` (``--json OUT``: the JSON there instead, no Markdown; ``--smoke``
writes nothing unless ``--json`` is given).
"""

from __future__ import annotations

import argparse
import copy
import json
import warnings
import tempfile
import time
from pathlib import Path

import torch

from common import SHARED, hardware, write_results
from prunekit.analysis.compare import CompareSettings, compare_checkpoints
from prunekit.checkpoint import save_checkpoint
from prunekit.data import get_data
from prunekit.export import quantize_model, save_quantized
from prunekit.export.quantize import slow_int8_widths
from prunekit.foreign import load_foreign
from prunekit.measure.latency import build_latency_table
from prunekit.measure.timing import machine_load
from prunekit.models import ZeroWidthLayer, create_model
from prunekit.pipeline import with_normalisation
from prunekit.prune import prune_channels
from prunekit.prune.latency import prune_to_latency
from prunekit.report.tables import markdown_table
from prunekit.train.bn import recalibrate_bn
from prunekit.train.loop import sample_batches

DATA = SHARED / "data" / "cifar10-subset"
RESNET56 = SHARED / "pretrained" / "resnet56-4bfd9763.th"
IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
MODELS = ("resnet56", "vgg11", "mobilenetv2")
TARGET = 0.5
BN_BATCHES = 8
ROUND_TO = {"mobilenetv2": 8}  # int8 depthwise kernels want widths in multiples of 8 (see the module doc)


def load_dense(name: str, smoke: bool):
    """(model, meta): ResNet-56 with its public weights; the others (and the smoke model) seeded random."""
    torch.manual_seed(0)
    if smoke:
        return create_model("vgg11", num_classes=10, cfg=[8, "M", 16, "M", 16, 16]), {}
    if name == "resnet56":
        return load_foreign("resnet56", RESNET56, num_classes=10).model, dict(IMAGENET)
    return create_model(name, num_classes=10), {}


def variants(dense, data, smoke: bool, round_to: int | None = None) -> dict[str, tuple]:
    """{label: (fp32 model, record)} for dense, MACs target and latency target, BN recalibrated."""
    batches = sample_batches(data, BN_BATCHES)
    macs = prune_channels(copy.deepcopy(dense), macs_target=TARGET, round_to=round_to)
    table = build_latency_table(dense, batch_size=1)
    started = time.perf_counter()
    target = 0.8 if smoke else TARGET  # the tiny model's per-op overhead leaves little to cut
    fast, result = prune_to_latency(dense, target, table, batches=batches, round_to=round_to)
    record = {"table_build_s": table.build_s, "table_cached_shapes": table.cached, "table_shapes": len(table.curves),
              "latency_search_s": time.perf_counter() - started, "removed_branches": removed_branches(fast),
              **result.as_dict()}
    for model in (macs, fast):
        recalibrate_bn(model, batches)
    return {"dense": (dense, {}), f"macs {TARGET}": (macs, {}), f"latency {target}": (fast, record)}


def removed_branches(model) -> int:
    """How many convs of ``model`` lost every output channel (one per residual branch removed whole)."""
    return sum(1 for m in model.modules() if isinstance(m, ZeroWidthLayer) and m.in_channels and not m.out_channels)


def save_all(models: dict, data, meta: dict, folder: Path) -> tuple[list[Path], dict]:
    """Every fp32 variant and its int8 twin saved as checkpoints; returns (paths in table order, records)."""
    paths, records, calibration = [], {}, sample_batches(data, BN_BATCHES, batch_size=64)
    for label, (model, record) in models.items():
        paths.append(save_checkpoint(model, folder / f"{label.replace(' ', '_')}.pt", {**meta, "label": label}))
        records[paths[-1].name] = record
    for label, (model, _) in models.items():
        with warnings.catch_warnings():  # the slow widths are named in the row's flags instead
            warnings.filterwarnings("ignore", message=r".*depthwise conv\(s\) have widths", category=UserWarning)
            quantized = quantize_model(model, calibration)
        paths.append(save_quantized(quantized, folder / f"{label.replace(' ', '_')}_int8.pt", {**meta}))
        slow = slow_int8_widths(model)
        if slow:
            records[paths[-1].name] = {"int8_slow_widths": slow}
    return paths, records


def table_rows(name: str, comparison, records: dict) -> list[dict]:
    """The benchmark's rows from a comparison (eager and ONNX Runtime columns side by side)."""
    rows = []
    targets = comparison.settings.targets
    eager = next(t.suffix for t in targets if t.runtime == "eager")
    dense_int8 = next((r for r in comparison.rows if r["model"] == "dense_int8.pt"), {})
    for row in comparison.rows:
        record = records.get(row["model"], {})
        slow = record.get("int8_slow_widths")
        int8_vs = (row.get("speedup" + eager) / dense_int8["speedup" + eager]
                   if row["model"].endswith("_int8.pt") and dense_int8.get("speedup" + eager)
                   and row.get("speedup" + eager) else None)
        rows.append({
            "model": name, "variant": row["model"].removesuffix(".pt"), "MACs": row["macs"],
            "MACs ÷": row["macs_reduction"],
            **{f"{key} {t.runtime}": row.get(col + t.suffix) for t in targets
               for key, col in (("speed-up b1", "speedup"), ("speed-up b64", "throughput_ratio"),
                                ("efficiency b1", "efficiency"))},
            "int8 ÷ dense int8 (eager b1)": int8_vs,
            "top-1 %": row["top1"],
            "latency asked / predicted / measured": (
                f"{record['asked']:.2f} / {record['predicted']:.3f} / {record['measured']:.3f}"
                + (f" ({record['removed_branches']} branches removed)" if record.get("removed_branches") else "")
                if "asked" in record else None),
            "flags": "; ".join(filter(None, [(f"{t.runtime}: " + row[k + t.suffix]) if row.get(k + t.suffix) else None
                                             for t in targets for k in ("slower", "untimed", "noise")]
                                      + ([f"int8 depthwise widths on the slow kernel path: {', '.join(slow[:3])}"]
                                         if slow else []))) or None,
        })
    return rows


def run_model(name: str, args, data) -> tuple[list[dict], dict]:
    dense, meta = load_dense(name, args.smoke)
    meta = {"dataset": "synthetic" if args.smoke else "cifar10", "num_classes": 10, **meta}
    normalised = with_normalisation(data, meta)
    started = time.perf_counter()
    models = variants(dense, normalised, args.smoke, ROUND_TO.get(name))
    with tempfile.TemporaryDirectory(prefix="prunekit-speed-") as folder:
        paths, records = save_all(models, normalised, meta, Path(folder))
        settings = CompareSettings(runtime="eager" if args.smoke else "eager,onnxruntime", threads=1,
                                   batch_size=8 if args.smoke else 64, repeats=args.repeats)
        comparison = compare_checkpoints(paths, lambda m: data, settings)
    seconds = time.perf_counter() - started
    print(f"{name}: {seconds:.0f} s", flush=True)
    return table_rows(name, comparison, records), {"comparison": comparison.as_dict(), "latency": records,
                                                   "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--quick", action="store_true", help="ResNet-56 only (the acceptance rows, ~2.5 min)")
    which.add_argument("--only", nargs="+", choices=MODELS, metavar="MODEL",
                       help=f"only these models, of {', '.join(MODELS)}")
    parser.add_argument("--smoke", action="store_true", help="a tiny VGG on synthetic data, eager only (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds at batch 1 (default 60; smoke 5)")
    parser.add_argument("--json", metavar="OUT", default=None, help="write the JSON here instead of results/")
    args = parser.parse_args()
    args.repeats = args.repeats or (5 if args.smoke else 60)
    torch.set_num_threads(1)
    if not args.smoke and not (DATA.is_dir() and RESNET56.is_file()):
        raise SystemExit(f"needs the shared CIFAR-10 subset and ResNet-56 weights under {SHARED} (or --smoke)")
    data = (get_data("synthetic", limit_train=256, limit_test=64) if args.smoke
            else get_data("cifar10", root=DATA))
    names = ("vgg11",) if args.smoke else MODELS[:1] if args.quick else tuple(args.only or MODELS)
    load = machine_load().as_dict()
    rows, details = [], {}
    for name in names:
        model_rows, details[name] = run_model(name, args, data)
        rows += model_rows
    payload = {"settings": {"target": TARGET, "models": list(names), "round_to": ROUND_TO, "smoke": args.smoke,
                            "repeats": args.repeats,
                            "threads": 1, "bn_batches": BN_BATCHES}, "machine_before": load,
               "machine_after": machine_load().as_dict(), "rows": rows, "details": details}
    if args.json or args.smoke:
        if args.json:
            Path(args.json).write_text(json.dumps({"hardware": hardware(), **payload}, indent=2, default=str))
        print(markdown_table(rows))
        return
    note = (f"\n\nMachine load before / after: {load} / {payload['machine_after']}. Speed-ups: median of paired "
            "per-round ratios against the dense fp32 model in the same runtime (b1: latency at batch 1; b64: "
            "throughput at batch 64), 1 thread. Top-1: 509 real CIFAR-10 test images, pruned models after BN "
            f"recalibration on {BN_BATCHES} batches of the subset's training images (VGG-11 and MobileNetV2 are "
            "randomly initialised: their top-1 is not meaningful).")
    write_results("speed", payload, markdown_table(rows) + note)


if __name__ == "__main__":
    main()
