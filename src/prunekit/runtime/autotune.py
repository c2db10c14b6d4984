"""Per-layer autotune: keep a sparse layer only where it measured faster than the dense one.

For each candidate layer, :func:`choose` times the dense layer and its sparse twins (one per kernel:
``"csr"``, ``"direct"``, see :mod:`prunekit.runtime.sparse_modules`) on the layer's own input shape (a
:data:`KernelTimer`; the default, :func:`measure_kernels`, interleaves them like every prunekit timing) and
keeps the fastest twin only when it is at least :data:`MIN_GAIN` faster than dense. The decision's timings
are cached on disk (:class:`DecisionCache`), keyed by everything that changes the answer: the layer's shape,
its sparsity, the input shape (batch included), threads, device and torch version, so a second
``accelerate`` of the same model on the same machine measures nothing. An entry that lacks a kernel available
now (say, the native kernel was built since) is measured again.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from prunekit.atomic import atomic_write_text
from prunekit.measure.timing import paired_ratio, time_interleaved

#: Sparse must be at least this much faster (dense_ms / sparse_ms ≥ 1 + MIN_GAIN) to be chosen: a tie
#: within timing noise keeps the dense layer, which has no risk of being slower.
MIN_GAIN = 0.05
CACHE_FILE = "sparse_autotune.json"

#: Name of the dense layer in a cached entry and in :attr:`LayerChoice.kernel_ms`.
DENSE = "dense"

#: ``timer(modules, input_shape, threads) -> [ms, ...]``: median time of one call of each module (the dense
#: layer first, then its sparse twins) on a batch of ``input_shape``, in the same order. Tests inject a fake one.
KernelTimer = Callable[[list, tuple, "int | None"], "list[float]"]


@dataclass
class LayerChoice:
    """The autotune's decision for one layer, with the measurements behind it."""

    name: str
    kind: str  # "conv" or "linear"
    shape: list[int]  # the dense weight's shape
    input_shape: list[int]
    sparsity: float
    dense_ms: float
    sparse_ms: float  # the fastest sparse kernel's
    sparse: bool  # True: the sparse module replaced the dense one
    cached: bool = False  # True: read from the cache, not measured now
    kernel: str = "csr"  # the fastest sparse kernel (the one used when ``sparse``)
    kernel_ms: dict = field(default_factory=dict)  # every module timed: {"dense": ms, "csr": ms, ...}

    @property
    def speedup(self) -> float:
        """dense_ms / sparse_ms (> 1: the sparse module is faster)."""
        return self.dense_ms / self.sparse_ms if self.sparse_ms else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def measure_kernels(modules: list[nn.Module], input_shape: tuple, threads: int | None,
                    warmup: int = 3, repeats: int = 15) -> list[float]:
    """ms of each module on a random batch of ``input_shape``, timed interleaved
    (:func:`prunekit.measure.timing.time_interleaved`; same side effects: eval mode, threads for the call):
    the first module's (dense) median, and for each other module that median divided by its median per-round
    speed-up over the first (:func:`prunekit.measure.timing.paired_ratio`), so a burst of other work during
    some rounds, which slows both modules of a round alike, does not decide the choice."""
    device = next(iter(modules[-1].buffers())).device
    dense, *others = time_interleaved(modules, input_shape[0], device, warmup, repeats, threads,
                                      tuple(input_shape[1:]))
    return [dense.median_ms] + [dense.median_ms / paired_ratio(dense, other).median for other in others]


def cache_path() -> Path:
    """``$PRUNEKIT_CACHE/sparse_autotune.json``, else ``~/.cache/prunekit/sparse_autotune.json``."""
    root = os.environ.get("PRUNEKIT_CACHE") or Path.home() / ".cache" / "prunekit"
    return Path(root) / CACHE_FILE


def decision_key(kind: str, shape, input_shape, sparsity: float, threads: int | None, device: str,
                 layer: nn.Module | None = None) -> str:
    """The cache key: everything that changes which module is faster. Sparsity is rounded to 0.1%; a
    convolution's stride, padding and dilation are part of its shape."""
    geometry = ""
    if isinstance(layer, nn.Conv2d):
        geometry = f"s{tuple(layer.stride)}p{tuple(layer.padding)}d{tuple(layer.dilation)}b{layer.bias is not None}"
    return (f"{kind}{list(shape)}{geometry}|in{list(input_shape)}|sparsity{sparsity:.3f}|threads{threads}"
            f"|{device}|torch{torch.__version__}")


class DecisionCache:
    """Cached ``{key: {"dense": ms, kernel: ms, ...}}`` in one JSON file. ``path=None``: nothing is read or
    written. :meth:`save` rewrites the file atomically, merged with what another process may have written since."""

    def __init__(self, path: str | Path | None):
        self.path = None if path is None else Path(path)
        self.entries: dict[str, dict] = self._read()

    def _read(self) -> dict:
        if self.path is None or not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}  # a damaged cache is only lost time: it is measured again and rewritten
        return data if isinstance(data, dict) else {}

    def get(self, key: str, names) -> dict | None:
        """The cached timings of ``key`` when they cover every module in ``names``, else None."""
        entry = self.entries.get(key)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(name), (int, float)) for name in names):
            return None
        return {name: float(entry[name]) for name in names}

    def put(self, key: str, timings: dict[str, float]) -> None:
        self.entries[key] = dict(timings)

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({**self._read(), **self.entries}, indent=1, sort_keys=True))


def choose(name: str, dense: nn.Module, twins: dict[str, nn.Module], input_shape: tuple, threads: int | None,
           device: str, cache: DecisionCache, timer: KernelTimer = measure_kernels) -> LayerChoice:
    """Decide between ``dense`` and its sparse ``twins`` (``{kernel: module}``, at least one) for inputs of
    ``input_shape``: from ``cache`` when it has a timing of every module, else by ``timer`` (the timings are
    put into ``cache``, not yet saved). The fastest twin is chosen when it beats dense by :data:`MIN_GAIN`.
    A twin's ``kernel_version`` (the native kernel's build name; empty for torch's) is part of the cache key,
    so a changed kernel is measured anew."""
    kind = "linear" if isinstance(dense, nn.Linear) else "conv"
    sparsity = next(iter(twins.values())).sparsity
    key = decision_key(kind, dense.weight.shape, input_shape, sparsity, threads, device, dense)
    key += "".join(f"|{kernel}:{twin.kernel_version}" for kernel, twin in twins.items() if twin.kernel_version)
    names = [DENSE, *twins]
    timings = cache.get(key, names)
    cached = timings is not None
    if not cached:
        timings = dict(zip(names, timer([dense, *twins.values()], tuple(input_shape), threads)))
        cache.put(key, timings)
    kernel = min(twins, key=timings.__getitem__)
    dense_ms, sparse_ms = timings[DENSE], timings[kernel]
    return LayerChoice(name, kind, list(dense.weight.shape), list(input_shape), sparsity, dense_ms, sparse_ms,
                       sparse=dense_ms >= (1 + MIN_GAIN) * sparse_ms, cached=cached, kernel=kernel,
                       kernel_ms=timings)
