"""Benchmark: training throughput on one GPU, and the latency speed-up of a channel-pruned model.

For VGG-11, ResNet-56 and a channel-pruned VGG-11 (the classic `64,M,128,M,256,256,M,256,256,M,256,256`
configuration), on 50,000 synthetic 32×32 images held on the GPU: epoch time and images/s of prunekit's
training loop (`train_epoch`: bf16 autocast, channels_last, device-resident batch-wise augmentation),
with and without `torch.compile`, against the bare forward+backward+step on pre-made tensors on the
same GPU. Then inference latency (batch 1 and 256) of the pruned VGG-11 against the dense one.
Records the GPU model. CI has no GPU: run it where one is lent (`--device cpu --quick` is a smoke run).

    python benchmarks/gpu_throughput.py [--quick] [--device cuda|cpu] [--images 50000]
"""

from __future__ import annotations

import argparse

import torch

from common import add_smoke_flag, bare_steps, pipeline_steps, premade_batches, results_folder, write_results
from prunekit.report.tables import markdown_table
from prunekit.config import TrainConfig
from prunekit.data import DeviceLoader, make_synthetic
from prunekit.measure import count_macs, time_inference
from prunekit.models import create_model
from prunekit.train.optim import make_optimizer, make_scheduler

PRUNED_VGG11 = [64, "M", 128, "M", 256, 256, "M", 256, 256, "M", 256, 256]
MODELS = {"vgg11": dict(name="vgg11"), "resnet56": dict(name="resnet56"),
          "vgg11-pruned": dict(name="vgg11", cfg=PRUNED_VGG11)}


def build(spec: dict, device: torch.device):
    spec = dict(spec)
    model = create_model(spec.pop("name"), **spec).to(device)
    return model.to(memory_format=torch.channels_last) if device.type == "cuda" else model


def measure_training(spec: dict, images, labels, device, batch: int, compiled: bool) -> dict:
    """One warm-up epoch (compilation happens there), then one timed epoch of each side."""
    torch.manual_seed(0)
    model = build(spec, device)
    config = TrainConfig(epochs=3, batch_size=batch, device=device.type, log_every=10**9)
    optimizer = make_optimizer(model, config)
    loader = DeviceLoader(images, labels, batch, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, device=device,
                          drop_last=True, channels_last=device.type == "cuda")
    scheduler = make_scheduler(optimizer, config, len(loader))
    step_model = torch.compile(model) if compiled else model
    pipeline_steps(step_model, optimizer, scheduler, loader, device, config)
    epoch_seconds = pipeline_steps(step_model, optimizer, scheduler, loader, device, config)
    premade = premade_batches(loader)
    bare_steps(step_model, optimizer, premade[:3], device)
    bare_seconds = bare_steps(step_model, optimizer, premade, device)
    seen = len(loader) * batch
    return {"model": spec_name(spec), "compile": compiled, "epoch_s": epoch_seconds,
            "images/s": seen / epoch_seconds, "bare images/s": seen / bare_seconds,
            "loop/bare": bare_seconds / epoch_seconds}


def spec_name(spec: dict) -> str:
    return next(k for k, v in MODELS.items() if v == spec)


def measure_latency(device, quick: bool, batches: tuple[int, ...] = (1, 256)) -> list[dict]:
    rows = []
    dense, pruned = build(MODELS["vgg11"], device), build(MODELS["vgg11-pruned"], device)
    reduction = count_macs(dense) / count_macs(pruned)
    for batch in batches:
        repeats = 10 if quick else 100
        t_dense = time_inference(dense, batch, device, repeats=repeats)
        t_pruned = time_inference(pruned, batch, device, repeats=repeats)
        rows.append({"batch": batch, "dense ms": t_dense.median_ms, "pruned ms": t_pruned.median_ms,
                     "speed-up": t_dense.median_ms / t_pruned.median_ms, "MACs reduction": reduction})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="1,024 images, no compile: a smoke run")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # --quick on 64 images
        args.quick, args.images = True, 64
    device = torch.device(args.device)
    n = (args.images if args.smoke else 1024) if args.quick else args.images
    batch = min(args.batch_size, n // 4)
    images, labels = make_synthetic(n, seed=0)
    specs = [MODELS["vgg11-pruned"]] if args.smoke else MODELS.values()
    training = [measure_training(spec, images, labels, device, batch, compiled)
                for spec in specs for compiled in ((False,) if args.quick else (False, True))]
    latency = measure_latency(device, args.quick, (1,) if args.smoke else (1, 256))
    table = (markdown_table(training) + f"\n\n{n:,} synthetic images, batch {batch}, {device}"
             + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "")
             + ".\n\nInference latency, channel-pruned VGG-11 against dense:\n\n" + markdown_table(latency))
    write_results("gpu_throughput" + ("_quick" if args.quick else ""),
                  {"images": n, "batch_size": batch, "device": str(device), "training": training,
                   "latency": latency}, table, results_folder(args.smoke))


if __name__ == "__main__":
    main()
