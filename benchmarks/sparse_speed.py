"""Benchmark: what the sparse runtime (``prunekit.accelerate``) buys for unstructured pruning on a CPU.

VGG-11, VGG-16 and ResNet-56 (10 classes, random init, seed 0; random weights are fine for speed: the
kernels' time depends on shapes and sparsity, not on values) pruned with prunekit's global unstructured
magnitude pruning (``prune_unstructured(scope="global")``, classifier spared) at 80/90/95%, then:

* the dense model: the pruned model with masks made permanent (zeros in dense weights: what eager runs);
* the accelerated model: ``accelerate(pruned, example batch, threads=1, cache=False)``: every decision is
  measured now, for that batch size (per-layer choices and both timings in the JSON);
* speed-up: both timed interleaved (``time_interleaved``: warm-up, alternating order, 1 thread), the median
  of per-round ratios dense/sparse with its quartiles; outputs compared (max relative difference);
* peak inference memory at batch 1 (``peak_inference_memory``: weights + peak live tensors);
* the machine's load before each row (``machine_load``): the numbers were taken on a shared machine.

    python benchmarks/sparse_speed.py [--quick] [--only MODEL ...] [--sparsity S ...] [--batch B ...]
                                      [--smoke] [--json OUT]

``--quick``: 90% only. ``--only``/``--sparsity``/``--batch``: just those rows (e.g. the acceptance rows:
``--only vgg11 --sparsity 0.9 0.95 --batch 1``); a partial run prints its table and writes only ``--json``.
``--smoke``: one tiny row (VGG-11, 90%, batch 1, few repeats), a few seconds, printed
(and written only to ``--json OUT``). Otherwise writes ``benchmarks/results/sparse_speed.{json,md}``
(``--json OUT``: the JSON there instead, no Markdown).
"""

from __future__ import annotations

import argparse
import functools
import json
import time

import torch

from common import write_results
from prunekit import accelerate, create_model, prune_unstructured
from prunekit.atomic import atomic_write_text
from prunekit.images import IMAGE_SHAPE
from prunekit.masking import permanent_copy
from prunekit.measure.timing import machine_load, paired_ratio, peak_inference_memory, time_interleaved
from prunekit.report.tables import markdown_table
from prunekit.runtime.autotune import measure_kernels
from prunekit.runtime.native import native_unavailable
from prunekit.runtime.sparse_modules import DirectSparseConv2d, SparseConv2d, SparseLinear

MODELS = ("vgg11", "vgg16", "resnet56")
SPARSITIES = (0.8, 0.9, 0.95)
BATCHES = (1, 64)
THREADS = 1
#: (warm-up, timed rounds) of the whole-model timing and of each layer's autotune, per batch size.
REPEATS = {1: ((10, 60), (5, 31)), 64: ((2, 10), (2, 11))}
SMOKE_REPEATS = {1: ((2, 5), (1, 3))}


def pruned_model(name: str, sparsity: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10).eval()
    prune_unstructured(model, sparsity=sparsity, scope="global")
    return model


def relative_difference(dense: torch.nn.Module, fast: torch.nn.Module, x: torch.Tensor) -> float:
    with torch.inference_mode():
        expected, actual = dense(x), fast(x)
    return float((actual - expected).abs().max() / expected.abs().max())


def measure_row(name: str, sparsity: float, batch: int, repeats: dict) -> dict:
    """One model × sparsity × batch: autotune, interleaved timing, output check, memory at batch 1."""
    (warmup, rounds), (layer_warmup, layer_rounds) = repeats[batch]
    pruned = pruned_model(name, sparsity)
    dense = permanent_copy(pruned).eval()
    x = torch.randn(batch, *IMAGE_SHAPE)
    load = machine_load()
    start = time.perf_counter()
    timer = functools.partial(measure_kernels, warmup=layer_warmup, repeats=layer_rounds)
    fast = accelerate(pruned, x, threads=THREADS, timer=timer, cache=False)
    autotune_s = time.perf_counter() - start
    dense_t, fast_t = time_interleaved([dense, fast], batch, warmup=warmup, repeats=rounds, threads=THREADS)
    ratio = paired_ratio(dense_t, fast_t)
    sparse_layers = sum(isinstance(m, (SparseConv2d, SparseLinear)) for m in fast.modules())
    direct_layers = sum(isinstance(m, DirectSparseConv2d) for m in fast.modules())
    row = {"model": name, "sparsity": sparsity, "batch": batch, "threads": THREADS,
           "layers_tried": len(fast.sparse_choices), "layers_sparse": sparse_layers,
           "layers_direct": direct_layers,
           "dense_ms": dense_t.median_ms, "sparse_ms": fast_t.median_ms, "speedup": ratio.median,
           "speedup_q1": ratio.q1, "speedup_q3": ratio.q3, "rounds": rounds, "autotune_s": autotune_s,
           "max_relative_difference": relative_difference(dense, fast, x[:8]), "machine": load.as_dict(),
           "machine_busy": load.busy(THREADS), "choices": [c.as_dict() for c in fast.sparse_choices]}
    if batch == 1:
        row["peak_memory_dense"] = peak_inference_memory(dense)
        row["peak_memory_sparse"] = peak_inference_memory(fast)
    return row


def table(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        memory = (f"{r['peak_memory_dense'] / 2**20:.1f} → {r['peak_memory_sparse'] / 2**20:.1f} MiB "
                  f"({100 * r['peak_memory_sparse'] / r['peak_memory_dense']:.0f}%)" if "peak_memory_dense" in r else "")
        lines.append({
            "model": r["model"], "global sparsity": f"{100 * r['sparsity']:.0f}%", "batch": r["batch"],
            "sparse layers (direct)": f"{r['layers_sparse']}/{r['layers_tried']} ({r['layers_direct']})",
            "dense ms": f"{r['dense_ms']:.2f}",
            "sparse ms": f"{r['sparse_ms']:.2f}",
            "speed-up [IQR]": f"**{r['speedup']:.2f}×** [{r['speedup_q1']:.2f}–{r['speedup_q3']:.2f}]",
            "max rel. diff": f"{r['max_relative_difference']:.1e}", "peak memory, batch 1": memory,
            "busy CPUs (others)": f"{r['machine']['busy_cpus']:.1f} of {r['machine']['cpus']}"})
    notes = ("\n\nRandom-init models, global unstructured magnitude pruning (classifier spared), 1 thread. "
             "Speed-up: median of interleaved per-round ratios dense/sparse (> 1: sparse faster), quartiles in "
             "brackets. Sparse layers: layers the autotune replaced / layers tried (≥ 50% zeros); in brackets, how "
             "many of them use the native direct kernel (the others torch CSR). "
             "Busy CPUs: CPUs' worth of other work just before the row.")
    return markdown_table(lines) + notes


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="90%% sparsity only")
    parser.add_argument("--smoke", action="store_true", help="one tiny row (CI)")
    parser.add_argument("--only", nargs="+", choices=MODELS, metavar="MODEL", help=f"only these models ({', '.join(MODELS)})")
    parser.add_argument("--sparsity", nargs="+", type=float, metavar="S", help="only these sparsities (0.8 0.9 0.95)")
    parser.add_argument("--batch", nargs="+", type=int, choices=BATCHES, metavar="B", help="only these batch sizes (1 64)")
    parser.add_argument("--json", help="write the JSON here instead of benchmarks/results/sparse_speed.{json,md}")
    args = parser.parse_args(argv)
    if any(not 0 < s < 1 for s in args.sparsity or ()):
        parser.error("--sparsity takes fractions between 0 and 1, e.g. 0.9 for 90%")
    torch.set_num_threads(THREADS)  # every timing sets it too; this makes the results' hardware line say so
    if args.smoke:
        plan, repeats = [("vgg11", 0.9, 1)], SMOKE_REPEATS
    else:
        sparsities = args.sparsity or ((0.9,) if args.quick else SPARSITIES)
        plan = [(m, s, b) for m in args.only or MODELS for s in sparsities for b in args.batch or BATCHES]
        repeats = REPEATS
    partial = bool(args.only or args.sparsity or args.batch)
    rows = []
    for name, sparsity, batch in plan:
        rows.append(measure_row(name, sparsity, batch, repeats))
        r = rows[-1]
        print(f"{name} {sparsity:.0%} batch {batch}: {r['speedup']:.2f}× ({r['layers_sparse']}/{r['layers_tried']} "
              f"sparse, autotune {r['autotune_s']:.0f} s)", flush=True)
    payload = {"threads": THREADS, "quick": args.quick, "smoke": args.smoke, "rows": rows,
               "native_kernel": native_unavailable() or "available"}
    if args.json or args.smoke or partial:  # a smoke or partial run never replaces the committed results
        if args.json:
            atomic_write_text(args.json, json.dumps(payload, indent=2, default=str))
        print(table(rows))
    else:
        write_results("sparse_speed", payload, table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
