"""Latency, throughput and peak memory of inference, measured like a benchmark.

Method: the model is put in eval mode under ``torch.inference_mode``; ``warmup`` untimed runs, then
``repeats`` timed runs with ``time.perf_counter`` (CUDA: synchronised before and after each run);
we report the median and the interquartile range. The CPU thread count is fixed for the measurement
(``threads``, default ``torch.get_num_threads()``) and recorded.
"""

from __future__ import annotations

import statistics
import time
import weakref
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode


@dataclass
class Timing:
    batch_size: int
    median_ms: float  # per batch
    q1_ms: float
    q3_ms: float
    repeats: int

    @property
    def per_image_ms(self) -> float:
        return self.median_ms / self.batch_size

    @property
    def images_per_second(self) -> float:
        return 1000.0 * self.batch_size / self.median_ms


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_inference(model: nn.Module, batch_size: int, device: torch.device | str = "cpu", warmup: int = 10,
                   repeats: int = 50, threads: int | None = None, input_size=(3, 32, 32)) -> Timing:
    """Median wall time of ``model(x)`` for a random batch of ``batch_size`` images on ``device``."""
    device = torch.device(device)
    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    model.eval()
    x = torch.randn(batch_size, *input_size, device=device)
    if device.type == "cuda":
        x = x.contiguous(memory_format=torch.channels_last)
    samples = []
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(x)
            for _ in range(repeats):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                samples.append(1000.0 * (time.perf_counter() - start))
    finally:
        torch.set_num_threads(previous_threads)
    q1, _, q3 = statistics.quantiles(samples, n=4) if len(samples) > 1 else (samples[0],) * 3
    return Timing(batch_size, statistics.median(samples), q1, q3, repeats)


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created during a forward pass and frees them when collected."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._seen: set[int] = set()

    def _release(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._seen.discard(key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self._seen:
                    self._seen.add(key)
                    nbytes = storage.nbytes()
                    self.live += nbytes
                    self.peak = max(self.peak, self.live)
                    weakref.finalize(t, self._release, key, nbytes)
        return out


def static_bytes(model: nn.Module) -> int:
    """Bytes of the parameters, buffers and state-dict tensors (an int8 model's packed weights), each
    storage counted once."""
    tensors = list(model.parameters()) + list(model.buffers())
    tensors += [t for t in model.state_dict().values() if isinstance(t, torch.Tensor)]
    seen, total = set(), 0
    for t in tensors:
        key = (t.untyped_storage().data_ptr(), t.dtype) if not t.is_quantized else id(t)
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def peak_inference_memory(model: nn.Module, batch_size: int = 1, device: torch.device | str = "cpu",
                          input_size=(3, 32, 32)) -> int:
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
    tracker = _LiveTensorBytes()
    with torch.inference_mode(), tracker:
        model(x)
    return static + input_bytes + tracker.peak
