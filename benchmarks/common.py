"""Shared benchmark helpers: hardware description, JSON + Markdown output."""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import time

import torch
from torch import nn

from prunekit.evaluation import autocast_for
from prunekit.train.loop import train_epoch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(os.environ.get("PRUNEKIT_SHARED", Path(__file__).resolve().parents[2] / "shared"))


def hardware() -> dict:
    """What produced the numbers: CPU model, cores, threads used, torch version, GPU if any."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": sys.version.split()[0],
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}


def spread(samples: list[float]) -> dict:
    """Median and interquartile range of timing samples."""
    q1, median, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    return {"median": median, "q1": q1, "q3": q3, "n": len(samples)}


SMOKE_HELP = ("smoke run: one tiny row in seconds, written to a temporary folder (benchmarks/results/ is left "
              "alone); CI runs every benchmark this way so none can rot")


def add_smoke_flag(parser) -> None:
    """``--smoke``: every benchmark script takes it (CI runs ``for f in benchmarks/*.py; do python "$f" --smoke``)."""
    parser.add_argument("--smoke", action="store_true", help=SMOKE_HELP)


def results_folder(smoke: bool) -> Path:
    """Where results go: ``benchmarks/results/``, or a new temporary folder for a smoke run."""
    return Path(tempfile.mkdtemp(prefix="prunekit-bench-smoke-")) if smoke else RESULTS


def write_results(name: str, payload: dict, table: str, folder: Path = RESULTS) -> Path:
    """Write ``FOLDER/NAME.json`` (payload + hardware) and ``FOLDER/NAME.md`` (the table), by default into
    ``benchmarks/results/``; print the table."""
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"hardware": hardware(), **payload}
    (folder / f"{name}.json").write_text(json.dumps(payload, indent=2, default=str))
    hw = payload["hardware"]
    header = f"Hardware: {hw['cpu']} ({hw['cpu_count']} CPUs, {hw['torch_threads']} torch threads), " \
             f"torch {hw['torch']}" + (f", GPU {hw['gpu']}" if hw["gpu"] else "") + f"; {hw['date']}\n\n"
    (folder / f"{name}.md").write_text(header + table + "\n")
    print(header + table)
    return folder / f"{name}.json"


def bare_steps(model, optimizer, batches, device) -> float:
    """Seconds for forward+backward+step over pre-made ``batches``."""
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    sync(device)
    start = time.perf_counter()
    for x, y in batches:
        optimizer.zero_grad(set_to_none=True)
        with autocast_for(device):
            logits = model(x)
        loss_fn(logits.float(), y).backward()
        optimizer.step()
    sync(device)
    return time.perf_counter() - start


def pipeline_steps(model, optimizer, scheduler, loader, device, config) -> float:
    """Seconds for one `train_epoch` over ``loader`` (same number of steps as the bare block)."""
    sync(device)
    start = time.perf_counter()
    train_epoch(model, loader, optimizer, scheduler, nn.CrossEntropyLoss(), device, [], 0, config, progress=False)
    sync(device)
    return time.perf_counter() - start


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def premade_batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of ``loader`` materialised before timing: the bare side's inputs."""
    return [(x.clone(), y.clone()) for x, y in loader]
