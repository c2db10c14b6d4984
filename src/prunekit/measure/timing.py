"""Latency, throughput and peak memory of inference, measured like a benchmark on a machine that may be busy.

Method: every model is put in eval mode under ``torch.inference_mode``; ``warmup`` untimed runs each, then
``repeats`` timed rounds with ``time.perf_counter`` (CUDA: synchronised before and after each run). When
several models are timed together (:func:`time_interleaved`) each round runs every model once, A B C then
C B A alternately, so slow drift of the machine (another process starting, clock changes) hits all models
alike; a speed-up is then the median of the per-round ratios (:func:`paired_ratio`), in which that drift
cancels. We report medians and interquartile ranges (IQR) and flag a number as *noisy* when its IQR is
wider than :data:`NOISY_IQR` of its median.

Threads: timing runs single-threaded unless told otherwise (:data:`DEFAULT_TIMING_THREADS`): batch-1
latency of a CIFAR network gains little from more threads, and on a shared 2-core machine a second
thread competing with other work made one latency 400× slower than with one thread.
:func:`machine_load` samples ``/proc/stat`` (busy and stolen CPU time) and the load average, so a report can
say when the machine was busy.
"""

from __future__ import annotations

import os
import statistics
import time
import weakref
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from prunekit.images import IMAGE_SHAPE

#: A timing whose interquartile range exceeds this fraction of its median is flagged as noisy.
NOISY_IQR = 0.20
#: CPU threads while timing, unless the caller says otherwise.
DEFAULT_TIMING_THREADS = 1


def quartiles(samples: Sequence[float]) -> tuple[float, float, float]:
    """``(q1, median, q3)`` of ``samples`` (all three equal for a single sample)."""
    if len(samples) == 1:
        return (samples[0],) * 3
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return q1, statistics.median(samples), q3


def spread(median: float, q1: float, q3: float) -> float:
    """The IQR as a fraction of the median (0 for a zero median)."""
    return (q3 - q1) / median if median else 0.0


def noise_note(fraction: float, threads: int | None = None, what: str | None = None,
               quartiles: tuple[float, float, float] | None = None) -> str:
    """The plain-language warning printed beside a noisy number: ``what`` names the measurement whose IQR it
    is (``speed-up``), ``quartiles`` (q1, median, q3) give the numbers the percentage comes from, so a reader
    can check it against a table's brackets."""
    fix = "rerun on a quiet machine" + (" or with --threads 1" if threads != 1 else "")
    if quartiles:
        q1, median, q3 = quartiles
        return (f"noisy: {what + ' ' if what else ''}IQR [{q1:.3g}–{q3:.3g}] = {100 * fraction:.0f}% of median "
                f"{median:.3g} — {fix}")
    return f"noisy: {what + ' ' if what else ''}IQR {100 * fraction:.0f}% of median — {fix}"


@dataclass
class Timing:
    batch_size: int
    median_ms: float  # per batch
    q1_ms: float
    q3_ms: float
    repeats: int
    samples: list[float] = field(default_factory=list, repr=False)  # ms per batch, in timing order

    @classmethod
    def from_samples(cls, batch_size: int, samples: list[float]) -> "Timing":
        q1, median, q3 = quartiles(samples)
        return cls(batch_size, median, q1, q3, len(samples), list(samples))

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch_size

    @property
    def images_per_second(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms

    @property
    def spread(self) -> float:
        """IQR / median."""
        return spread(self.median_ms, self.q1_ms, self.q3_ms)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_IQR


@dataclass
class Ratio:
    """A speed-up: the median of paired per-round ratios ``reference / other`` with its quartiles."""

    median: float
    q1: float
    q3: float

    @property
    def spread(self) -> float:
        return spread(self.median, self.q1, self.q3)

    @property
    def noisy(self) -> bool:
        return self.spread > NOISY_IQR


def paired_ratio(reference: Timing, other: Timing) -> Ratio:
    """Speed-up of ``other`` over ``reference`` as the median of the per-round ratios of two timings taken
    in the same :func:`time_interleaved` call (> 1: ``other`` is faster). Drift that slows both models in
    one round cancels in that round's ratio."""
    if len(reference.samples) != len(other.samples) or not reference.samples:
        raise ValueError("paired_ratio needs two timings from the same time_interleaved call")
    q1, median, q3 = quartiles([a / b for a, b in zip(reference.samples, other.samples)])
    return Ratio(median, q1, q3)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed_run(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    start = time.perf_counter()
    model(x)
    _sync(device)
    return 1000.0 * (time.perf_counter() - start)


def time_interleaved(models: Sequence[nn.Module], batch_size: int, device: torch.device | str = "cpu",
                     warmup: int = 10, repeats: int = 50, threads: int | None = DEFAULT_TIMING_THREADS,
                     input_size=IMAGE_SHAPE) -> list[Timing]:
    """Time every model on the same random batch, interleaved: ``repeats`` rounds, each running every model
    once (forward order on even rounds, reverse on odd ones, so no model always runs first). Returns one
    :class:`Timing` per model whose ``samples`` are aligned by round (see :func:`paired_ratio`).

    Side effects: puts the models in eval mode; sets torch's CPU thread count to ``threads`` (``None``:
    leave it) for the duration and restores it afterwards."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    x = torch.randn(batch_size, *input_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    samples: list[list[float]] = [[] for _ in models]
    order = list(range(len(models)))
    try:
        with torch.inference_mode():
            for model in models:
                model.eval()
                for _ in range(warmup):
                    model(x)
            for r in range(repeats):
                for i in order if r % 2 == 0 else order[::-1]:
                    samples[i].append(_timed_run(models[i], x, device))
    finally:
        torch.set_num_threads(previous_threads)
    return [Timing.from_samples(batch_size, s) for s in samples]


def time_inference(model: nn.Module, batch_size: int, device: torch.device | str = "cpu", warmup: int = 10,
                   repeats: int = 50, threads: int | None = DEFAULT_TIMING_THREADS, input_size=IMAGE_SHAPE) -> Timing:
    """Median wall time of ``model(x)`` for a random batch of ``batch_size`` images on ``device`` (one model
    of :func:`time_interleaved`; same side effects)."""
    return time_interleaved([model], batch_size, device, warmup, repeats, threads, input_size)[0]


# --- is the machine busy? --------------------------------------------------------------------------------

@dataclass
class MachineLoad:
    """How busy the CPUs were just before timing: ``busy_cpus`` (CPUs' worth of time used by everything
    else, from ``/proc/stat`` over a short idle interval of ours), ``steal`` (fraction of time a hypervisor
    gave to other guests), ``load1`` (1-minute load average); None where the OS does not say."""

    cpus: int
    busy_cpus: float | None = None
    steal: float | None = None
    load1: float | None = None

    def busy(self, threads: int = 1) -> bool:
        """True when the others leave fewer than ``threads`` CPUs free, or more than 5% of time is stolen."""
        others = self.busy_cpus if self.busy_cpus is not None else self.load1
        return ((others is not None and self.cpus - others < threads - 0.25)
                or (self.steal is not None and self.steal > 0.05))

    def describe(self) -> str:
        parts = []
        if self.busy_cpus is not None:
            parts.append(f"other work used {self.busy_cpus:.1f} of {self.cpus} CPUs")
        if self.load1 is not None:
            parts.append(f"load average {self.load1:.2f}")
        if self.steal:
            parts.append(f"{100 * self.steal:.0f}% of CPU time stolen by the hypervisor")
        return ", ".join(parts) or f"{self.cpus} CPUs"

    def as_dict(self) -> dict:
        return {"cpus": self.cpus, "busy_cpus": self.busy_cpus, "steal": self.steal, "load1": self.load1}


def _cpu_times() -> list[int] | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    return [int(v) for v in fields[1:]] if fields and fields[0] == "cpu" else None


def machine_load(interval: float = 0.25) -> MachineLoad:
    """Sample how busy the machine is (sleeps ``interval`` seconds, so our own process adds nothing)."""
    cpus = os.cpu_count() or 1
    try:
        load1 = os.getloadavg()[0]
    except (OSError, AttributeError):
        load1 = None
    before = _cpu_times()
    if before is None:
        return MachineLoad(cpus, None, None, load1)
    time.sleep(interval)
    after = _cpu_times() or before
    delta = [b - a for a, b in zip(before, after)]
    total = sum(delta[:8]) or 1  # user nice system idle iowait irq softirq steal (guest is inside user)
    idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
    steal = delta[7] / total if len(delta) > 7 else None
    return MachineLoad(cpus, cpus * (total - idle) / total, steal, load1)


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created during a forward pass and frees them when collected.

    ``known``: storages (``data_ptr``) counted elsewhere, e.g. the model's weights and the input, which an
    op may return as an alias (``to`` on the right device, a slice) and which must not be counted twice."""

    def __init__(self, known: set[int] = frozenset()):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set(known)

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            # a sparse tensor's memory is its component tensors, which are tracked (or are buffers) already
            if isinstance(t, torch.Tensor) and t.layout == torch.strided:
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen.add(key)
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._release, key, nbytes)
        return out


def static_tensors(model: nn.Module) -> list[torch.Tensor]:
    """The parameters, buffers and state-dict tensors (an int8 model's packed weights) of ``model``."""
    tensors = list(model.parameters()) + list(model.buffers())
    return tensors + [t for t in model.state_dict().values() if isinstance(t, torch.Tensor)]


def static_bytes(model: nn.Module) -> int:
    """Bytes of :func:`static_tensors`, each storage counted once."""
    tensors = static_tensors(model)
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.dtype) if not t.is_quantized else id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def peak_inference_memory(model: nn.Module, batch_size: int = 1, device: torch.device | str = "cpu",
                          input_size=IMAGE_SHAPE) -> int:
    """Peak bytes held during one inference: parameters and buffers plus the largest set of live tensors.

    CUDA: from the caching allocator's peak statistics. CPU: every tensor the forward creates is tracked
    through a dispatch mode until Python frees it (a view shares its base's storage and is counted once).
    """
    device = torch.device(device)
    model.eval()
    static = static_bytes(model)
    x = torch.randn(batch_size, *input_size, device=device)
    input_bytes = x.numel() * x.element_size()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        with torch.inference_mode():
            model(x)
        torch.cuda.synchronize(device)
        return static + input_bytes + torch.cuda.max_memory_allocated(device) - base
    known = {t.untyped_storage().data_ptr() for t in [x, *static_tensors(model)] if not t.is_quantized}
    tracker = _LiveTensorBytes(known)
    with torch.inference_mode(), tracker:
        model(x)
    return static + input_bytes + tracker.peak
