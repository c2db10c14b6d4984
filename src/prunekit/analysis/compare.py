"""Side-by-side comparison of checkpoints: accuracy, size, MACs, memory, speed, and ratios to the first.

Every number comes from the library's own calls, so a row equals what ``prunekit evaluate`` and
``prunekit profile`` report for the same file:

* accuracy: :func:`prunekit.train.evaluate_split` on the chosen split, inputs normalised with the
  checkpoint's own ``meta`` mean/std (the dataset's when the checkpoint records none);
* params, non-zero params (masks applied), MACs, file size, peak memory, latency and throughput:
  :func:`prunekit.measure.profile` with the checkpoint path;
* compact size: what ``prunekit.export.compact`` would write for the checkpoint file (empty for an int8
  model, which is already stored compactly): in the file's own value mode for a compact file, ``binary``
  for a binarized checkpoint, else ``fp32``.

Timing method (see :mod:`prunekit.measure.timing`): eval mode under ``torch.inference_mode``, untimed
warm-up runs, then timed runs (``time.perf_counter``; CUDA synchronised around each run); latency is the
median per image at batch 1 with its interquartile range, throughput the median at ``batch_size``; the CPU
thread count is fixed during the measurement and recorded. Ratios compare each model with the FIRST one.
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from prunekit.checkpoint import Checkpoint, load_checkpoint, read_checkpoint_file
from prunekit.models import arch_label
from prunekit.data import DataBundle
from prunekit.data.normalisation import input_normalisation
from prunekit.measure import profile, time_inference

#: ``ratio column: (measured column, direction)``: the first model's value over this model's (``first/this``),
#: or the inverse for throughput, so > 1 always means "better than the first model".
RATIOS = {
    "speedup": ("latency_ms", "first/this"),
    "throughput_ratio": ("throughput_ips", "this/first"),
    "nonzero_reduction": ("nonzero_params", "first/this"),
    "macs_reduction": ("macs", "first/this"),
    "file_reduction": ("file_bytes", "first/this"),
    "compact_reduction": ("compact_bytes", "first/this"),
    "memory_reduction": ("peak_memory_bytes", "first/this"),
}



@dataclass(frozen=True)
class CompareSettings:
    """How rows are measured. ``timing=False`` skips latency/throughput (counts, memory, accuracy only)."""

    device: str = "cpu"
    threads: int | None = None  # CPU threads during timing (None: torch's current count)
    batch_size: int = 64  # images per batch for the throughput figure
    repeats: int = 50  # timed runs at batch 1; the throughput batch gets max(5, repeats // 5)
    timing: bool = True
    split: str = "test"


@dataclass
class Comparison:
    """Rows (one per model, first = reference) plus how they were measured."""

    rows: list[dict]
    settings: CompareSettings
    hardware: str = ""
    threads: int = 0
    method: str = field(default="")

    def as_dict(self) -> dict:
        return {"rows": self.rows, "settings": asdict(self.settings), "hardware": self.hardware,
                "threads": self.threads, "method": self.method}


def warmup_runs() -> int:
    """The warm-up count :func:`prunekit.measure.time_inference` uses (its default)."""
    return inspect.signature(time_inference).parameters["warmup"].default


def meta_normalisation(meta: dict, data: DataBundle) -> tuple[tuple, tuple]:
    """The checkpoint's own input normalisation (``meta`` mean/std), else the dataset's."""
    return input_normalisation(meta, data.info)


def compact_size(loaded: Checkpoint) -> int | None:
    """Bytes of the compact file :mod:`prunekit.export.compact` would write for this checkpoint (from its
    file when it has one, so meta is kept as ``save_compact`` keeps it); None for an int8 model, which is
    already stored compactly."""
    from prunekit.export.common import is_quantized
    from prunekit.export.compact import encode, encoded_size, natural_values

    if is_quantized(loaded.model):
        return None
    source = read_checkpoint_file(loaded.path) if loaded.path else loaded.model
    return encoded_size(encode(source, natural_values(source)))


def measure_row(loaded: Checkpoint, data: DataBundle, settings: CompareSettings) -> dict:
    """One table row for a loaded checkpoint. Side effect: moves the model to ``settings.device``."""
    path = loaded.path
    result = profile(loaded.model, device=settings.device, checkpoint_path=path, timing=settings.timing,
                     batch_size=settings.batch_size, repeats=settings.repeats, threads=settings.threads)
    mean, std = meta_normalisation(loaded.meta, data)
    metrics = evaluate_model(loaded.model, data, settings.split, mean, std, settings.device)
    iqr = result.latency_iqr_ms or (None, None)
    return {
        "model": Path(path).name if path else "model", "path": str(path) if path else None,
        "arch": arch_label(loaded.arch), "dataset": data.info.name, "synthetic": data.synthetic,
        "split": settings.split, "images": metrics.images,
        "top1": metrics.top1, "top5": metrics.top5,
        "top1_error": 100.0 - metrics.top1, "top5_error": 100.0 - metrics.top5, "loss": metrics.loss,
        "params": result.params, "nonzero_params": result.nonzero_params, "macs": result.macs,
        "file_bytes": result.file_bytes, "compact_bytes": compact_size(loaded),
        "peak_memory_bytes": result.peak_memory_bytes,
        "latency_ms": result.latency_ms, "latency_q1_ms": iqr[0], "latency_q3_ms": iqr[1],
        "throughput_batch": result.throughput_batch, "throughput_ips": result.throughput_ips,
        "device": result.device, "threads": result.threads, "hardware": result.hardware,
    }


def evaluate_model(model: nn.Module, data: DataBundle, split: str, mean, std, device: str):
    """:func:`prunekit.train.evaluate_split`, imported here so the report stays cheap to import."""
    from prunekit.train import evaluate_split

    return evaluate_split(model, data, split, mean, std, device)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Fill the :data:`RATIOS` columns of every row against ``rows[0]`` (None where a value is missing)."""
    if not rows:
        return rows
    first = rows[0]
    for row in rows:
        for column, (key, direction) in RATIOS.items():
            a, b = (first.get(key), row.get(key)) if direction == "first/this" else (row.get(key), first.get(key))
            row[column] = a / b if a is not None and b else None
    return rows


def compare_checkpoints(paths: Sequence[str | Path], data_for: Callable[[dict], DataBundle],
                        settings: CompareSettings = CompareSettings(), progress: bool = False) -> Comparison:
    """Measure every checkpoint in ``paths`` (in order; the first is the reference for the ratios).

    ``data_for(meta)`` returns the :class:`DataBundle` to evaluate a checkpoint with that ``meta`` on
    (typically its own dataset). Models are loaded one at a time and released after measuring.
    """
    from tqdm.auto import tqdm

    rows = []
    for path in tqdm(list(paths), desc="compare", unit="model", disable=not progress, leave=False):
        loaded = load_checkpoint(path)
        rows.append(measure_row(loaded, data_for(loaded.meta), settings))
    add_ratios(rows)
    threads = rows[0]["threads"] if rows else (settings.threads or torch.get_num_threads())
    hardware = rows[0]["hardware"] if rows else ""
    comparison = Comparison(rows, settings, hardware, threads)
    comparison.method = method_text(comparison)
    return comparison


def method_text(comparison: Comparison) -> str:
    """The footer that says how the numbers were measured (printed under every table)."""
    s = comparison.settings
    parts = [f"Accuracy: {s.split} split, each model normalised with its checkpoint's own mean/std. "
             "MACs: multiply-accumulates per image of conv + linear layers (torch.utils.flop_counter / 2). "
             "Non-zero: parameters not exactly zero, masks applied. Sizes: 1 kB = 1000 bytes; file = checkpoint "
             "on disk; compact = prunekit.export.compact file (empty for int8 models); peak mem = weights + "
             "buffers + peak live tensors of one batch-1 inference."]
    if s.timing:
        parts.append(f"Timing on {comparison.hardware or s.device}, device {s.device}, {comparison.threads} "
                     f"thread(s), eval mode under torch.inference_mode: {warmup_runs()} untimed warm-up runs, then "
                     f"{s.repeats} timed runs at batch 1 (latency = median per image, [IQR] = 25th–75th "
                     f"percentile) and {max(5, s.repeats // 5)} at batch {s.batch_size} (img/s = median "
                     "throughput); CUDA is synchronised around every run.")
    else:
        parts.append("Timing skipped (--no-timing).")
    parts.append("Ratios: against the first model; > 1 means better (faster, smaller, fewer).")
    return " ".join(parts)



def comparison_from_dict(data: dict | list) -> Comparison:
    """A :class:`Comparison` from its saved JSON (``compare.json``); a bare list of rows is accepted too."""
    if isinstance(data, list):
        data = {"rows": data}
    known = CompareSettings.__dataclass_fields__
    settings = CompareSettings(**{k: v for k, v in (data.get("settings") or {}).items() if k in known})
    return Comparison(list(data.get("rows") or []), settings, data.get("hardware", ""), data.get("threads", 0),
                      data.get("method", ""))


def save_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write ``comparison`` as JSON (the ``compare.json`` of a run folder), atomically."""
    import json

    from prunekit.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(comparison.as_dict(), indent=2, default=str))


COMPARE_CSV_COLUMNS = ["model", "path", "arch", "dataset", "synthetic", "split", "images", "top1", "top5",
                       "top1_error", "top5_error", "loss", "params", "nonzero_params", "macs", "file_bytes",
                       "compact_bytes", "peak_memory_bytes", "latency_ms", "latency_q1_ms", "latency_q3_ms",
                       "throughput_batch", "throughput_ips", *RATIOS, "device", "threads", "hardware"]


def save_comparison_csv(comparison: Comparison, path: str | Path) -> Path:
    """Write the raw (unformatted) rows as CSV, atomically; empty cells for missing values."""
    from prunekit.atomic import atomic_write_csv

    return atomic_write_csv(path, comparison.rows, COMPARE_CSV_COLUMNS)
