"""Benchmark: what shipping a compressed model buys — compact sparse files, int8 CPU inference, both with
physical pruning.

1. Size. VGG-11 (random init, seed 0: file sizes do not depend on the weight values, only on how many are
   non-zero), 80% global unstructured magnitude sparsity over its convs (``prune_unstructured``; the
   classifier is spared). Compact file (fp32 lossless / fp16 / int8 values) vs the dense fp32 weights
   (``torch.save`` of the plain state dict), and vs the masked prunekit checkpoint (weights + bool masks).
   Targets: lossless ≤ 25%, fp16 ≤ 15% of the dense weights.
2. int8. The pretrained ResNet-56 (../shared/pretrained, ImageNet normalisation) quantized with
   ``prunekit.export.quantize_model`` (FX graph mode, x86 backend, calibrated on training images):
   top-1 on the 509 real test images (target: within 1 point of fp32) and CPU latency at batch 1 and 64
   (target: ≥ 2× faster at batch 64). ONNX Runtime fp32 is timed beside them when installed.
3. Pruned + int8. The same ResNet-56 physically pruned with ``prune_channels(ratio=0.3)`` (30% of the
   filters of every coupled group, L1; NOT fine-tuned, so its accuracy drop is the pruning's, not the
   quantization's), then quantized: combined file-size reduction and speed-up against the dense fp32 model.

Timing: ``prunekit.measure.time_inference`` (eval, inference_mode, warm-up, median; torch threads fixed to
``--threads``). The models of one batch size are timed in alternating rounds (fp32, int8, …, fp32, int8,
…) and each reports the median of its round medians with the spread over rounds, so background load hits
all alike; the 1-minute load average before and after timing is recorded.

    python benchmarks/compression.py [--quick] [--threads 2] [--calib-batches 8]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from pathlib import Path

import torch

from common import SHARED, add_smoke_flag, results_folder, spread, write_results
from prunekit.checkpoint import checkpoint_dict, save_checkpoint
from prunekit.foreign import load_weights
from prunekit.report.tables import markdown_table
from prunekit.data.normalisation import NORMALISATIONS
from prunekit.data import DeviceLoader, get_data
from prunekit.export import decode, encode, encoded_size, quantize_model, save_quantized
from prunekit.images import IMAGE_SHAPE
from prunekit.measure import count_nonzero_parameters, count_parameters, time_inference
from prunekit.models import create_model
from prunekit.prune import prune_channels, prune_unstructured

DATA = SHARED / "data" / "cifar10-subset"
RESNET56 = SHARED / "pretrained" / "resnet56-4bfd9763.th"


def state_dict_bytes(model) -> int:
    """Bytes of ``torch.save(plain state dict)`` of an unmasked model: the dense fp32 baseline."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def size_section() -> tuple[list[dict], dict]:
    torch.manual_seed(0)
    dense = create_model("vgg11").eval()
    dense_bytes = state_dict_bytes(dense)
    model = create_model("vgg11").eval()
    model.load_state_dict(dense.state_dict())
    prune_unstructured(model, sparsity=0.8)
    checkpoint = checkpoint_dict(model)
    rows = [{"model": "VGG-11 dense fp32 weights", "bytes": dense_bytes, "of_dense": 1.0, "target": ""},
            {"model": "VGG-11 80% masked, prunekit checkpoint", "bytes": encoded_size(checkpoint),
             "of_dense": encoded_size(checkpoint) / dense_bytes, "target": ""}]
    targets = {"fp32": 0.25, "fp16": 0.15, "int8": None}
    for values, target in targets.items():
        compact = encode(checkpoint, values)
        size = encoded_size(compact)
        row = {"model": f"VGG-11 80% compact {values}", "bytes": size, "of_dense": size / dense_bytes,
               "target": f"≤ {target:.0%}" if target else "", "met": None if target is None else size / dense_bytes <= target}
        if values == "fp32":
            decoded = decode(compact)["state_dict"]
            row["lossless"] = all(torch.equal(decoded[k], v) for k, v in checkpoint["state_dict"].items())
        rows.append(row)
    info = {"params": count_parameters(model), "nonzero_params": count_nonzero_parameters(model),
            "weights_note": "random init (seed 0): sizes depend only on the non-zero count, not on values"}
    return rows, info


def int8_section(args, tmp: Path) -> tuple[list[dict], dict]:
    data = get_data("cifar10", root=DATA)
    mean, std = NORMALISATIONS["imagenet"]
    dense = load_weights(create_model("resnet56"), RESNET56).eval()
    pruned = prune_channels(load_weights(create_model("resnet56"), RESNET56).eval(), torch.randn(1, *IMAGE_SHAPE),
                            ratio=0.3).eval()
    calibration = DeviceLoader(*data.train, 64, mean=mean, std=std, train=False)
    reestimate_batchnorm(pruned, calibration, args.calib_batches)
    models = {"resnet56 fp32": dense, "resnet56 int8": quantize_model(dense, calibration, args.calib_batches),
              "resnet56-pruned30 fp32": pruned,
              "resnet56-pruned30 int8": quantize_model(pruned, calibration, args.calib_batches)}
    meta = {"dataset": "cifar10", "mean": list(mean), "std": list(std)}
    files = {}
    for name, model in models.items():
        path = tmp / f"{name.replace(' ', '_')}.pt"
        files[name] = (save_quantized(model, path, meta) if "int8" in name else save_checkpoint(model, path, meta))
    onnx = onnx_model(dense, tmp, args) if not args.quick else None
    if onnx is not None:
        models["resnet56 fp32 ONNX Runtime"] = onnx
        files["resnet56 fp32 ONNX Runtime"] = tmp / "resnet56.onnx"
    x, y = next(iter(DeviceLoader(*data.test, len(data.test[1]), mean=mean, std=std, train=False)))
    rows = [accuracy_row(name, model, x, y, files[name]) for name, model in models.items()]
    load = {"before": os.getloadavg()[0]}
    timings = {batch: interleaved(models, batch, args, args.threads) for batch in (1, 64)}
    load["after"] = os.getloadavg()[0]
    add_speed(rows, timings)
    calib_images = min(args.calib_batches * 64, len(data.train[1]))
    info = {"test_images": len(y), "calibration_images": calib_images, "load_average_1min": load,
            "params": {"dense": count_parameters(dense), "pruned": count_parameters(pruned)}}
    if max(load.values()) > os.cpu_count() and args.threads > 1:  # contended: threads wait on each other
        single = [{"model": r["model"], "top1": r["top1"], "file_bytes": r["file_bytes"]} for r in rows]
        add_speed(single, {batch: interleaved(models, batch, args, 1) for batch in (1, 64)})
        info["one_thread_rows"] = single
        load["after_one_thread"] = os.getloadavg()[0]
    return rows, info


def reestimate_batchnorm(model, batches, count: int) -> None:
    """Recompute BN running statistics on ``count`` unlabelled training batches (no weight changes): after
    removing 30% of the filters the stored statistics no longer describe the activations."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches
    model.train()
    with torch.no_grad():
        for index, (x, _) in enumerate(batches):
            if index == count:
                break
            model(x)
    model.eval()


def onnx_model(model, tmp: Path, args):
    from prunekit.export import OnnxRuntimeModel, export_onnx
    from prunekit.export.onnx import has_onnxruntime

    if not has_onnxruntime():
        return None
    export_onnx(model, tmp / "resnet56.onnx")
    return OnnxRuntimeModel(tmp / "resnet56.onnx", threads=args.threads)


def accuracy_row(name: str, model, x, y, path: Path) -> dict:
    with torch.inference_mode():
        predictions = torch.cat([model(chunk).argmax(1) for chunk in x.split(128)])
    return {"model": name, "top1": 100.0 * float((predictions == y).float().mean()), "file_bytes": path.stat().st_size}


def interleaved(models: dict, batch: int, args, threads: int) -> dict[str, dict]:
    """Per model: the spread of its round medians, rounds alternating between the models."""
    repeats = (10 if args.quick else 20) if batch == 1 else (3 if args.quick else 5)
    models = {name: with_threads(model, threads) for name, model in models.items()}
    medians = {name: [] for name in models}
    for _ in range(rounds(args)):
        for name, model in models.items():
            timing = time_inference(model, batch, "cpu", warmup=3, repeats=repeats, threads=threads)
            medians[name].append(timing.median_ms)
    return {name: spread(samples) for name, samples in medians.items()}


def with_threads(model, threads: int):
    """ONNX Runtime has its own thread pool, fixed when its session is made: a new session per count."""
    from prunekit.export import OnnxRuntimeModel

    if isinstance(model, OnnxRuntimeModel) and model.threads != threads:
        return OnnxRuntimeModel(model.path, threads=threads)
    return model


def rounds(args) -> int:
    return 2 if args.quick else 3


def add_speed(rows: list[dict], timings: dict) -> None:
    reference = rows[0]["model"]
    for row in rows:
        for batch, by_model in timings.items():
            t = by_model[row["model"]]
            row[f"b{batch}_ms"] = t["median"]
            row[f"b{batch}_iqr"] = f"{t['q1']:.1f}–{t['q3']:.1f}"
            row[f"speedup_b{batch}"] = by_model[reference]["median"] / t["median"]
    first = rows[0]
    for row in rows:
        row["top1_delta"] = row["top1"] - first["top1"]
        row["size_reduction"] = first["file_bytes"] / row["file_bytes"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer timing runs and calibration batches, no ONNX")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--calib-batches", type=int, default=None, help="batches of 64 images (default 8, quick 2)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    args.calib_batches = args.calib_batches or (2 if args.quick else 8)
    torch.set_num_threads(args.threads)
    if args.smoke:  # the compact-size rows only: no data, no timing
        size_rows, size_info = size_section()
        write_results("compression", {"size": {"rows": size_rows, **size_info}},
                      markdown_table(size_rows, ["model", "bytes", "of_dense", "target", "met"]), results_folder(True))
        return
    if not (DATA / "cifar-10-batches-py").is_dir() or not RESNET56.is_file():
        sys.exit(f"needs the shared data and pretrained ResNet-56 under {SHARED}")
    size_rows, size_info = size_section()
    with tempfile.TemporaryDirectory() as tmp:
        speed_rows, speed_info = int8_section(args, Path(tmp))
    targets = targets_met(size_rows, speed_rows)
    payload = {"config": {"quick": args.quick, "threads": args.threads, "calib_batches": args.calib_batches,
                          "calib_batch_size": 64},
               "size": {"rows": size_rows, **size_info}, "int8": {"rows": speed_rows, **speed_info},
               "targets": targets}
    write_results("compression", payload, tables(size_rows, speed_rows, speed_info, targets, args))


def targets_met(size_rows: list[dict], speed_rows: list[dict]) -> dict:
    by_name = {r["model"]: r for r in speed_rows}
    int8 = by_name["resnet56 int8"]
    return {
        "compact_fp32_le_25pct": next(r["met"] for r in size_rows if r["model"].endswith("compact fp32")),
        "compact_fp16_le_15pct": next(r["met"] for r in size_rows if r["model"].endswith("compact fp16")),
        "int8_top1_within_1pt": abs(int8["top1_delta"]) <= 1.0,
        "int8_speedup_b64_ge_2x": int8["speedup_b64"] >= 2.0,
    }


def tables(size_rows, speed_rows, info, targets, args) -> str:
    size = markdown_table([{**r, "of_dense": f"{100 * r['of_dense']:.1f}%"} for r in size_rows],
                          ["model", "bytes", "of_dense", "target", "met", "lossless"])
    columns = ["model", "top1", "top1_delta", "file_bytes", "size_reduction", "b1_ms", "b1_iqr", "speedup_b1",
               "b64_ms", "b64_iqr", "speedup_b64"]
    speed = markdown_table(speed_rows, columns)
    if info.get("one_thread_rows"):
        speed += ("\n\nSame models, 1 torch thread (timed because the machine was contended, see below):\n\n"
                  + markdown_table(info["one_thread_rows"], ["model"] + columns[5:]))
    load = info["load_average_1min"]
    notes = (f"Accuracy: {info['test_images']} real CIFAR-10 test images; int8 calibrated on "
             f"{info['calibration_images']} training images. Pruned = prune_channels(ratio=0.3), no fine-tuning; "
             "its BN statistics re-estimated on the calibration images (no weight update). "
             f"Timing: ms per batch (median of {rounds(args)} alternating rounds, [q1–q3] over rounds), "
             f"{args.threads} torch threads; speed-ups and size reductions vs resnet56 fp32 (file = prunekit "
             f"checkpoint / int8 file / .onnx). 1-min load average {load['before']:.1f} → {load['after']:.1f} on "
             f"{os.cpu_count()} CPUs (a background training shares them; > CPUs means contended timings).")
    met = ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in targets.items())
    return f"## Compact size (VGG-11, 80% unstructured)\n\n{size}\n\n## int8 (ResNet-56)\n\n{speed}\n\n{notes}\n\n" \
           f"Targets met — {met}"


if __name__ == "__main__":
    main()
