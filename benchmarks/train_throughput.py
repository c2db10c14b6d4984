"""Benchmark: overhead of prunekit's training loop against a bare forward+backward+step.

Both sides train VGG-11 at batch 128 in the same process with the same model and optimizer. The pipeline
side runs `prunekit.train.loop.train_epoch` over a `DeviceLoader` (device-resident uint8 data, seeded
batch-wise crop/flip, normalisation, per-step lr schedule, on-device metric accumulation); the bare side
loops `zero_grad / forward / backward / step` over pre-made float tensors. Blocks of steps alternate
(pipeline, bare, pipeline, …) so background load affects both alike; we report the median images/s of
each side over the blocks and overhead = bare / pipeline − 1 (target ≤ 5%).

    python benchmarks/train_throughput.py [--quick] [--device cpu|cuda] [--threads 2]
"""

from __future__ import annotations

import argparse
import torch

from common import add_smoke_flag, bare_steps, pipeline_steps, premade_batches, results_folder, spread, write_results
from prunekit.report.tables import markdown_table
from prunekit.config import TrainConfig
from prunekit.data import DeviceLoader, make_synthetic
from prunekit.models import create_model
from prunekit.train.optim import make_optimizer, make_scheduler


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, a smoke run")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=None, help="steps per block (default 8, quick 2)")
    parser.add_argument("--blocks", type=int, default=None, help="alternating blocks per side (default 7, quick 2)")
    add_smoke_flag(parser)
    args = parser.parse_args()
    if args.smoke:  # one block of one step at batch 8
        args.quick, args.steps, args.blocks, args.batch_size = True, 1, 1, 8
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    steps = args.steps or (2 if args.quick else 8)
    blocks = args.blocks or (2 if args.quick else 7)
    batch = args.batch_size

    torch.manual_seed(0)
    model = create_model("vgg11").to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    config = TrainConfig(epochs=blocks + 1, batch_size=batch, device=device.type, log_every=10**9)
    optimizer = make_optimizer(model, config)
    images, labels = make_synthetic(steps * batch, seed=0)
    loader = DeviceLoader(images, labels, batch, mean=(0.5,) * 3, std=(0.25,) * 3, train=True, device=device,
                          drop_last=True, channels_last=device.type == "cuda")
    scheduler = make_scheduler(optimizer, config, len(loader))
    premade = premade_batches(loader)

    bare_steps(model, optimizer, premade[:2], device)  # warm-up both paths
    pipeline_steps(model, optimizer, scheduler, loader, device, config)
    pipe_ips, bare_ips = [], []
    for _ in range(blocks):
        pipe_ips.append(steps * batch / pipeline_steps(model, optimizer, scheduler, loader, device, config))
        bare_ips.append(steps * batch / bare_steps(model, optimizer, premade, device))
    pipe, bare = spread(pipe_ips), spread(bare_ips)
    overhead = bare["median"] / pipe["median"] - 1
    rows = [{"side": "bare forward+backward+step", "images/s (median)": bare["median"],
             "IQR": f"{bare['q1']:.1f}–{bare['q3']:.1f}"},
            {"side": "prunekit training loop", "images/s (median)": pipe["median"],
             "IQR": f"{pipe['q1']:.1f}–{pipe['q3']:.1f}"}]
    table = markdown_table(rows) + f"\n\nVGG-11, batch {batch}, {device}, {blocks} alternating blocks of {steps} " \
                                   f"steps per side. Pipeline overhead: {100 * overhead:.2f}% (target ≤ 5%)."
    write_results("train_throughput" + ("_quick" if args.quick else ""),
                  {"model": "vgg11", "batch_size": batch, "device": str(device), "steps_per_block": steps,
                   "blocks": blocks, "pipeline_ips": pipe, "bare_ips": bare, "overhead": overhead}, table,
                  results_folder(args.smoke))


if __name__ == "__main__":
    main()
