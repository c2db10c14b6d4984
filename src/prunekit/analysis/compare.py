"""Side-by-side comparison of checkpoints: accuracy, size, MACs, memory, speed, and ratios to the first.

Every number comes from the library's own calls, so a row equals what ``prunekit evaluate`` and
``prunekit profile`` report for the same file:

* accuracy: :func:`prunekit.evaluation.evaluate_split` on the chosen split, inputs normalised with the
  checkpoint's own ``meta`` mean/std (the dataset's when the checkpoint records none);
* params, non-zero params (masks applied), MACs, file size, weights size, peak memory:
  :func:`prunekit.measure.profile` with the checkpoint path;
* compact size: what ``prunekit.export.compact`` would write for the checkpoint file (empty for an int8
  model, which is already stored compactly): in the file's own value mode for a compact file, ``binary``
  for a binarized checkpoint, else ``fp32``.

Timing (see :mod:`prunekit.measure.timing`): all models of one table are held in memory and timed
INTERLEAVED (one run of each per round, A B C / C B A …), per runtime (:mod:`prunekit.runtime`) and device; a speed-up is the median of the
per-round ratios against the first model, so drift of a busy machine cancels. Single-threaded by default.
A latency or speed-up whose IQR exceeds 20% of its median is flagged noisy in the row (``noise_<device>``),
and the machine's load just before timing is recorded (``Comparison.machine``). Ratios compare each model
with the FIRST one (:func:`reference_first` puts the dense model first).
"""

from __future__ import annotations

import inspect
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from prunekit.checkpoint import Checkpoint, load_checkpoint, read_checkpoint_file
from prunekit.images import IMAGE_SHAPE, example_input
from prunekit.models import arch_label
from prunekit.data import DataBundle
from prunekit.data.normalisation import input_normalisation
from prunekit.measure import profile, time_inference
from prunekit.measure.profile import deployable
from prunekit.measure.timing import (DEFAULT_TIMING_THREADS, NOISY_IQR, machine_load, noise_note, paired_ratio,
                                     time_interleaved)

#: ``ratio column: (measured column, direction)``: the first model's value over this model's (``first/this``),
#: or the inverse for throughput, so > 1 always means "better than the first model". Speed-up and
#: throughput ratio are computed from paired samples instead (see :func:`time_rows`); their entries here
#: name what they compare.
RATIOS = {
    "speedup": ("latency_ms", "first/this"),
    "throughput_ratio": ("throughput_ips", "this/first"),
    "nonzero_reduction": ("nonzero_params", "first/this"),
    "macs_reduction": ("macs", "first/this"),
    "file_reduction": ("file_bytes", "first/this"),
    "weights_reduction": ("weights_bytes", "first/this"),
    "compact_reduction": ("compact_bytes", "first/this"),
    "memory_reduction": ("peak_memory_bytes", "first/this"),
}
TIMED_RATIOS = ("speedup", "throughput_ratio")
#: Timing columns per runtime and device: ``<key><suffix>`` in every row (see :class:`TimingTarget`); the first
#: target's also without suffix.
TIMING_KEYS = ("latency_ms", "latency_q1_ms", "latency_q3_ms", "latency_spread", "throughput_ips", "speedup",
               "speedup_q1", "speedup_q3", "throughput_ratio", "efficiency", "slower", "untimed", "noise",
               "prepared")


@dataclass(frozen=True)
class TimingTarget:
    """One runtime on one device. ``suffix`` ends the row keys of its timing columns (``latency_ms<suffix>``):
    ``_<device>`` when the table times one runtime, ``_<runtime>_<device>`` when it times several;
    ``tag`` is what the table headings add."""

    runtime: str
    device: str
    suffix: str
    tag: str


@dataclass(frozen=True)
class CompareSettings:
    """How rows are measured. ``device`` is one device or a comma list (``"cpu,cuda"``): accuracy and memory
    on the first, latency on each. ``timing=False`` skips latency/throughput (counts, memory, accuracy only)."""

    device: str = "cpu"
    threads: int | None = DEFAULT_TIMING_THREADS  # CPU threads during timing (None: torch's current count)
    batch_size: int = 64  # images per batch for the throughput figure
    repeats: int = 50  # timed rounds at batch 1; the throughput batch gets max(5, repeats // 5)
    timing: bool = True
    split: str = "test"
    count: str = "macs"  # convention of the "ops" column (prunekit.measure.counts.CONVENTIONS)
    runtime: str = "eager"  # one registered runtime or a comma list (prunekit.runtime), each timed per device

    @property
    def devices(self) -> list[str]:
        return [d.strip() for d in self.device.split(",") if d.strip()] or ["cpu"]

    @property
    def runtimes(self) -> list[str]:
        return [r.strip() for r in self.runtime.split(",") if r.strip()] or ["eager"]

    @property
    def targets(self) -> list[TimingTarget]:
        """Every (runtime, device) pair timed, runtime-major; the first one's columns are also the plain keys."""
        several_runtimes, several_devices = len(self.runtimes) > 1, len(self.devices) > 1
        return [TimingTarget(runtime, device,
                             f"_{runtime}_{device}" if several_runtimes else f"_{device}",
                             " ".join([runtime] * several_runtimes + [device] * several_devices))
                for runtime in self.runtimes for device in self.devices]


@dataclass
class Comparison:
    """Rows (one per model, first = reference) plus how they were measured."""

    rows: list[dict]
    settings: CompareSettings
    hardware: str = ""
    threads: int = 0
    method: str = field(default="")
    machine: dict | None = None  # measure.timing.MachineLoad.as_dict() just before timing
    unavailable: dict = field(default_factory=dict)  # target suffix (see TimingTarget) -> why it has no timing

    def as_dict(self) -> dict:
        return {"rows": self.rows, "settings": asdict(self.settings), "hardware": self.hardware,
                "threads": self.threads, "method": self.method, "machine": self.machine,
                "unavailable": self.unavailable}

    @property
    def busy(self) -> bool:
        """True when the machine was busy when timing started (see :class:`prunekit.measure.MachineLoad`)."""
        from prunekit.measure.timing import MachineLoad

        return bool(self.machine) and MachineLoad(**self.machine).busy(self.threads or 1)

    def warnings(self) -> list[str]:
        """Plain-language lines about the trustworthiness of the timings, and the shortfall line of every
        structured cut that achieved below half of its target (empty when all looks fine)."""
        from prunekit.measure.timing import MachineLoad

        lines = []
        if self.busy:
            lines.append(f"machine busy while timing ({MachineLoad(**self.machine).describe()}): latencies are "
                         "longer and noisier than on a quiet machine; rows marked noisy cannot be trusted.")
        shortfalls = [f"{row['model']}: {row['cut_shortfall']}" for row in self.rows if row.get("cut_shortfall")]
        return lines + self.flagged(("slower", "untimed", "noise", "prepared")) + shortfalls

    def cuts(self) -> list[str]:
        """``model: cut asked 50.0% of filters, achieved 48.7% …`` for every row whose checkpoint records a
        structured cut (meta ``cut``, written by ``prune-channels``, ``prune --granularity filter`` and the
        experiment runner) that reached its target; a shortfall is in :meth:`warnings` instead."""
        return [f"{row['model']}: cut {row['cut']}" for row in self.rows
                if row.get("cut") and not row.get("cut_shortfall")]

    def notes(self) -> list[str]:
        """The lines printed under the table: :meth:`cuts`, then each of :meth:`warnings` as ``WARNING …``."""
        return self.cuts() + [f"WARNING {line}" for line in self.warnings()]

    def flagged(self, keys: Sequence[str] = ("slower",)) -> list[str]:
        """``model (runtime, device): note`` for every row flag of ``keys`` (e.g. "slower": models measured
        slower than the first one), per timed runtime and device."""
        lines = []
        for row in self.rows:
            for target in self.settings.targets:
                for key in keys:
                    if row.get(key + target.suffix):
                        lines.append(f"{row['model']} ({target.runtime}, {target.device}): {row[key + target.suffix]}")
        return lines


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


def unique_labels(paths: Sequence[str | Path]) -> list[str]:
    """The shortest trailing part of each path that no other path shares: ``runs/a/last.pt`` and
    ``runs/b/last.pt`` become ``a/last.pt`` and ``b/last.pt``; ``dense.pt`` stays ``dense.pt``. The same
    file given twice gets ``#2``, ``#3`` … appended."""
    parts = [Path(p).resolve().parts if p else ("model",) for p in paths]

    def suffix(i: int, k: int) -> str:
        return "/".join(parts[i][-k:])

    labels = []
    for i, own in enumerate(parts):
        others = [j for j in range(len(parts)) if j != i and parts[j] != own]
        k = 1
        while k < len(own) and any(suffix(i, k) == suffix(j, k) for j in others):
            k += 1
        labels.append(suffix(i, k))
    seen: dict[str, int] = {}
    for i, label in enumerate(labels):
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            labels[i] = f"{label} #{seen[label]}"
    return labels


def is_unpruned(loaded: Checkpoint) -> bool:
    """True for a float checkpoint no pruning, quantisation or export produced (a dense reference)."""
    from prunekit.export.common import is_quantized

    meta = loaded.meta
    derived = any(meta.get(k) for k in ("method", "granularity", "quantized", "prune_config", "compact_values", "cut",
                                        "prune_channels"))  # prune-channels --latency-target writes no "cut"
    return not derived and not is_quantized(loaded.model)


def reference_first(paths: Sequence[str | Path], reference: str | Path | None = None) -> list[Path]:
    """``paths`` with the reference of the ratios moved to the front: ``reference`` when given (it must be
    one of ``paths``, compared as resolved files), else the dense/unpruned checkpoint with the most
    non-zero parameters (else simply the one with the most). Loads every checkpoint once."""
    from prunekit.errors import PrunekitError
    from prunekit.measure import count_nonzero_parameters

    paths = [Path(p) for p in paths]
    if not paths:
        return paths
    if reference is not None:
        matches = [p for p in paths if p.resolve() == Path(reference).resolve()]
        if not matches:
            raise PrunekitError(f"--reference {reference} is not one of the checkpoints compared: "
                                + ", ".join(p.name for p in paths))
        index = paths.index(matches[0])
    else:
        scores = []
        for p in paths:
            loaded = load_checkpoint(p)
            scores.append((is_unpruned(loaded), count_nonzero_parameters(loaded.model)))
        index = max(range(len(paths)), key=lambda i: (scores[i], -i))
    return [paths[index]] + paths[:index] + paths[index + 1:]


def measure_row(loaded: Checkpoint, data: DataBundle, settings: CompareSettings) -> dict:
    """One table row for a loaded checkpoint, without timing (see :func:`time_rows`). Side effect: moves
    the model to the first of ``settings.devices``."""
    path = loaded.path
    device = settings.devices[0]
    result = profile(loaded.model, device=device, checkpoint_path=path, timing=False, threads=settings.threads,
                     count=settings.count)
    mean, std = meta_normalisation(loaded.meta, data)
    metrics = evaluate_model(loaded.model, data, settings.split, mean, std, device)
    cut = loaded.meta.get("cut") or {}  # asked vs achieved of a structured cut (PlanOutcome.as_record)
    return {
        "model": Path(path).name if path else "model", "path": str(path) if path else None,
        "arch": arch_label(loaded.arch), "dataset": data.info.name, "synthetic": data.synthetic,
        "split": settings.split, "images": metrics.images,
        "top1": metrics.top1, "top5": metrics.top5,
        "top1_error": 100.0 - metrics.top1, "top5_error": 100.0 - metrics.top5, "loss": metrics.loss,
        "params": result.params, "nonzero_params": result.nonzero_params, "macs": result.macs,
        "count": result.count, "ops": result.ops,
        "file_bytes": result.file_bytes, "weights_bytes": result.weights_bytes,
        "compact_bytes": compact_size(loaded), "peak_memory_bytes": result.peak_memory_bytes,
        "throughput_batch": settings.batch_size if settings.timing else None,
        "device": device, "threads": result.threads, "hardware": result.hardware,
        "cut": cut.get("shortfall") or cut.get("summary"), "cut_shortfall": cut.get("shortfall"),  # PlanOutcome.line
        **{k: None for k in TIMING_KEYS},
    }


def evaluate_model(model: nn.Module, data: DataBundle, split: str, mean, std, device: str):
    """:func:`prunekit.evaluation.evaluate_split`, imported here so the report stays cheap to import."""
    from prunekit.evaluation import evaluate_split

    return evaluate_split(model, data, split, mean, std, device)


def add_ratios(rows: list[dict]) -> list[dict]:
    """Fill the untimed :data:`RATIOS` columns of every row against ``rows[0]`` (None where a value is
    missing); the timed ones come from :func:`time_rows`."""
    if not rows:
        return rows
    first = rows[0]
    for row in rows:
        for column, (key, direction) in RATIOS.items():
            if column in TIMED_RATIOS:
                continue
            a, b = (first.get(key), row.get(key)) if direction == "first/this" else (row.get(key), first.get(key))
            row[column] = a / b if a is not None and b else None
    return rows


def runs_on(model: nn.Module, device: torch.device, input_size=IMAGE_SHAPE, batch_size: int = 1) -> bool:
    """True when ``model`` runs a batch of ``batch_size`` on ``device`` (an int8 model runs on the CPU only)."""
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(batch_size, *input_size, device=device))
        return True
    except (RuntimeError, NotImplementedError):
        return False


def prepare_models(models: list[nn.Module], target: TimingTarget, threads: int | None, batch_size: int = 1
                   ) -> tuple[list[object | None], list[str | None]]:
    """Every model prepared for ``target.runtime`` on ``target.device`` (see :mod:`prunekit.runtime`) from an
    example batch of ``batch_size`` images, or None with the one-line reason where it cannot run there (an int8
    model on CUDA or in ONNX Runtime). The models are not changed (every runtime prepares a copy)."""
    from prunekit.errors import PrunekitError
    from prunekit.runtime import get_runtime

    runtime, device = get_runtime(target.runtime), torch.device(target.device)
    example = example_input(batch_size)
    prepared, reasons = [], []
    for model in models:
        try:
            runnable = runtime.prepare(model, example, target.device, threads)
            reason = None if runs_on(runnable, device, batch_size=batch_size) else f"does not run on {target.device}"
        except (PrunekitError, RuntimeError, NotImplementedError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        prepared.append(None if reason else runnable)
        reasons.append(reason)
    return prepared, reasons


def preparation_notes(prepared: list) -> list[str | None]:
    """For each prepared model, a note when the eager runtime prepared it differently from the first one (one
    traced and BatchNorm-folded, the other run as it is: see :mod:`prunekit.inference`), so that its speed-up
    mixes inference optimisations; else None."""
    from prunekit.inference import PREPARED_AS, describe_preparation

    kinds = [getattr(runnable, PREPARED_AS, None) for runnable in prepared]
    return [f"prepared {describe_preparation(kind)}, the reference {describe_preparation(kinds[0])}: this "
            "speed-up mixes inference optimisations" if kind and kinds[0] and kind != kinds[0] else None
            for kind in kinds]


def slower_note(speedup: float, reference: str) -> str:
    """The flag a model measured slower than the reference carries in the table, the report and the warnings."""
    return f"SLOWER than {reference}: {speedup:.2f}× its speed in this runtime"


def time_rows(rows: list[dict], models: list[nn.Module], target: TimingTarget, settings: CompareSettings) -> None:
    """Time all ``models`` interleaved in ``target``'s runtime and device and fill each row's
    ``<key><target.suffix>`` timing columns: latency per image at batch 1 (median, quartiles, spread),
    throughput at ``settings.batch_size``, the speed-up / throughput ratio against ``models[0]`` as medians of
    paired per-round ratios, the efficiency (speed-up ÷ MACs reduction: 1 means the speed-up equals the MACs
    saved) and ``slower`` (:func:`slower_note`) when the speed-up is below 1. A model the runtime cannot run
    gets ``untimed`` (why). A row whose latency, throughput or either ratio has an IQR over 20% of its median
    gets ``noise``; one the eager runtime prepared differently from the first (:func:`preparation_notes`) gets
    ``prepared``. Side effect: moves the models to the CPU afterwards."""
    from prunekit.runtime import get_runtime

    threads = settings.threads
    prepared, reasons = prepare_models(models, target, threads)
    batch_prepared = prepared
    if get_runtime(target.runtime).per_batch_size and settings.batch_size != 1:  # its choices depend on the batch
        batch_prepared, batch_reasons = prepare_models(models, target, threads, settings.batch_size)
        reasons = [a or b for a, b in zip(reasons, batch_reasons)]
    for row, reason in zip(rows, reasons):
        row["untimed" + target.suffix] = reason
    for row, note in zip(rows, preparation_notes(prepared)):
        row["prepared" + target.suffix] = note
    usable = [i for i, reason in enumerate(reasons) if reason is None]
    if usable:
        fill_timings(rows, [prepared[i] for i in usable], [batch_prepared[i] for i in usable], usable, target,
                     settings)
    for model in models:
        model.to("cpu")


def fill_timings(rows: list[dict], runnables: list, batch_runnables: list, indices: list[int],
                 target: TimingTarget, settings: CompareSettings) -> None:
    """The timing columns of ``rows[i]`` for ``i`` in ``indices`` (``runnables`` prepared for batch 1 and
    ``batch_runnables`` for ``settings.batch_size``, in the same order); ratios only when the first row is among
    them."""
    threads, device = settings.threads, torch.device(target.device)
    single = dict(zip(indices, time_interleaved(runnables, 1, device, repeats=settings.repeats, threads=threads)))
    batched = dict(zip(indices, time_interleaved(batch_runnables, settings.batch_size, device,
                                                 repeats=max(5, settings.repeats // 5), threads=threads)))
    reference = indices[0] if indices[0] == 0 else None
    for i in indices:
        row, t = rows[i], single[i]
        values = {"latency_ms": t.per_image_ms, "latency_q1_ms": t.q1_ms, "latency_q3_ms": t.q3_ms,
                  "latency_spread": t.spread, "throughput_ips": batched[i].images_per_second}
        b = batched[i]
        spreads = {"latency": (t.spread, (t.q1_ms / t.batch_size, t.per_image_ms, t.q3_ms / t.batch_size)),
                   f"batch-{b.batch_size} time": (b.spread, (b.q1_ms, b.median_ms, b.q3_ms))}
        if reference is not None:
            speedup = paired_ratio(single[reference], t)
            throughput = paired_ratio(batched[reference], b)
            macs = row.get("macs_reduction")
            values.update(speedup=speedup.median, speedup_q1=speedup.q1, speedup_q3=speedup.q3,
                          throughput_ratio=throughput.median,
                          efficiency=speedup.median / macs if macs else None,
                          slower=slower_note(speedup.median, rows[0]["model"])
                          if i != reference and speedup.median < 1 else None)
            spreads.update({"speed-up": (speedup.spread, (speedup.q1, speedup.median, speedup.q3)),
                            "throughput ratio": (throughput.spread, (throughput.q1, throughput.median, throughput.q3))})
        what, (worst, quartiles) = max(spreads.items(), key=lambda item: item[1][0])
        values["noise"] = noise_note(worst, threads, what, quartiles) if worst > NOISY_IQR else None
        row.update({f"{k}{target.suffix}": v for k, v in values.items()})


def mirror_first_target(rows: list[dict], target: TimingTarget) -> None:
    """Copy the first target's ``<key><suffix>`` timing columns to the plain keys (``latency_ms`` …)."""
    for row in rows:
        for key in TIMING_KEYS:
            row[key] = row.get(key + target.suffix)


def target_unavailable(target: TimingTarget) -> str | None:
    """Why ``target`` cannot be timed here (:meth:`prunekit.runtime.Runtime.unavailable`), else None."""
    from prunekit.runtime import get_runtime

    return get_runtime(target.runtime).unavailable(target.device)


def compare_checkpoints(paths: Sequence[str | Path], data_for: Callable[[dict], DataBundle],
                        settings: CompareSettings = CompareSettings(), progress: bool = False) -> Comparison:
    """Measure every checkpoint in ``paths`` (in order; the first is the reference for the ratios).

    ``data_for(meta)`` returns the :class:`DataBundle` to evaluate a checkpoint with that ``meta`` on
    (typically its own dataset). Every model (as deployed: masks made permanent) stays in memory until all
    are timed together, interleaved, on each device of ``settings.devices``; a device that is not there
    (CUDA without a GPU) is recorded in ``Comparison.unavailable`` and its columns stay empty. With several
    ``settings.runtimes`` every model is timed in each runtime (per device), always against the first model
    in the same runtime, so each speed-up measures the pruning and not the runtime.
    """
    from tqdm.auto import tqdm

    rows, deployed = [], []
    for path in tqdm(list(paths), desc="compare", unit="model", disable=not progress, leave=False):
        loaded = load_checkpoint(path)
        rows.append(measure_row(loaded, data_for(loaded.meta), settings))
        deployed.append(deployable(loaded.model))
    for row, label in zip(rows, unique_labels([row["path"] for row in rows])):
        row["model"] = label
    add_ratios(rows)
    comparison = Comparison(rows, settings, rows[0]["hardware"] if rows else "",
                            settings.threads or torch.get_num_threads())
    if settings.timing and rows:
        comparison.machine = machine_load().as_dict()
        for target in settings.targets:
            why = target_unavailable(target)
            if why:
                comparison.unavailable[target.suffix[1:]] = why
            else:
                time_rows(rows, deployed, target, settings)
        mirror_first_target(rows, settings.targets[0])
    comparison.method = method_text(comparison)
    return comparison


def method_text(comparison: Comparison) -> str:
    """The footer that says how the numbers were measured (printed under every table)."""
    s = comparison.settings
    parts = [f"Accuracy: {s.split} split, each model normalised with its checkpoint's own mean/std. "
             "MACs: multiply-accumulates per image of conv + linear layers (torch.utils.flop_counter / 2). "
             "Non-zero: parameters not exactly zero, masks applied. Sizes: 1 kB = 1000 bytes; file = checkpoint "
             "on disk (a training checkpoint also holds optimizer state); weights = the deployable model's "
             "tensors (masks made permanent, int8 packed); compact = prunekit.export.compact file (empty for "
             "int8 models); peak mem = weights + buffers + peak live tensors of one batch-1 inference."]
    if s.timing:
        threads = comparison.threads
        parts.append(f"Timing on {comparison.hardware or s.device}, device(s) {', '.join(s.devices)}, "
                     f"{threads} thread(s){' (single-threaded by default; --threads N to change)' if threads == 1 else ''}, "
                     f"eval mode under torch.inference_mode: {warmup_runs()} untimed warm-up runs per model, then "
                     f"{s.repeats} timed runs at batch 1 (latency = median per image, [IQR] = 25th–75th "
                     f"percentile) and {max(5, s.repeats // 5)} at batch {s.batch_size} (img/s = median "
                     "throughput), all models interleaved round by round; speed-up = median of the per-round "
                     "ratios to the first model, so machine drift cancels; noisy = IQR over "
                     f"{100 * NOISY_IQR:.0f}% of the median; CUDA is synchronised around every run.")
        parts.append(runtime_text(s.runtimes))
        if comparison.machine:
            from prunekit.measure.timing import MachineLoad

            parts.append(f"Machine before timing: {MachineLoad(**comparison.machine).describe()}.")
    else:
        parts.append("Timing skipped (--no-timing).")
    parts.append("Ratios: against the first model; > 1 means better (faster, smaller, fewer).")
    return " ".join(parts)


def runtime_text(names: list[str]) -> str:
    """What the footer says about the runtimes: each one's description, and how speed-ups pair within one."""
    from prunekit.runtime import get_runtime

    described = "; ".join(f"{name} = {get_runtime(name).description}" for name in names)
    return (f"Runtime(s): {described}. Every model is timed in each runtime and compared with the first model "
            "in the same runtime (same inference optimisations for both). Efficiency = speed-up ÷ MACs reduction "
            "(1 = the speed-up equals the MACs saved). SLOWER marks a model measured slower than the first one.")


def comparison_from_dict(data: dict | list) -> Comparison:
    """A :class:`Comparison` from its saved JSON (``compare.json``); a bare list of rows is accepted too."""
    if isinstance(data, list):
        data = {"rows": data}
    known = CompareSettings.__dataclass_fields__
    settings = CompareSettings(**{k: v for k, v in (data.get("settings") or {}).items() if k in known})
    return Comparison(list(data.get("rows") or []), settings, data.get("hardware", ""), data.get("threads", 0),
                      data.get("method", ""), data.get("machine"), dict(data.get("unavailable") or {}))


def save_comparison(comparison: Comparison, path: str | Path) -> Path:
    """Write ``comparison`` as JSON (the ``compare.json`` of a run folder), atomically."""
    import json

    from prunekit.atomic import atomic_write_text

    return atomic_write_text(path, json.dumps(comparison.as_dict(), indent=2, default=str))


COMPARE_CSV_COLUMNS = ["model", "path", "arch", "dataset", "synthetic", "split", "images", "top1", "top5",
                       "top1_error", "top5_error", "loss", "params", "nonzero_params", "macs", "file_bytes",
                       "weights_bytes", "compact_bytes", "peak_memory_bytes", "latency_ms", "latency_q1_ms",
                       "latency_q3_ms", "latency_spread", "throughput_batch", "throughput_ips", *RATIOS,
                       "speedup_q1", "speedup_q3", "efficiency", "slower", "untimed", "noise", "prepared", "device", "threads",
                       "hardware", "cut", "cut_shortfall"]


def save_comparison_csv(comparison: Comparison, path: str | Path) -> Path:
    """Write the raw (unformatted) rows as CSV, atomically; empty cells for missing values. With several
    devices or runtimes, each further one's timing columns follow as ``<key><suffix>`` (see :class:`TimingTarget`)."""
    from prunekit.atomic import atomic_write_csv

    extra = [k + t.suffix for t in comparison.settings.targets[1:] for k in TIMING_KEYS]
    return atomic_write_csv(path, comparison.rows, COMPARE_CSV_COLUMNS + extra)
