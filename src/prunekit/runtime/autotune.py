"""Per-layer autotune: keep a sparse layer only where it measured faster than the dense one.

For each candidate layer, :func:`choose` times the dense layer and its sparse twin on the layer's own input
shape (a :data:`PairTimer`; the default, :func:`measure_pair`, interleaves the two like every prunekit
timing) and keeps the sparse one only when it is at least :data:`MIN_GAIN` faster. The decision and both
timings are cached on disk (:class:`DecisionCache`), keyed by everything that changes the answer: the layer's
shape, its sparsity, the input shape (batch included), threads, device and torch version, so a second
``accelerate`` of the same model on the same machine measures nothing.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from prunekit.atomic import atomic_write_text
from prunekit.measure.timing import time_interleaved

#: Sparse must be at least this much faster (dense_ms / sparse_ms ≥ 1 + MIN_GAIN) to be chosen: a tie
#: within timing noise keeps the dense layer, which has no risk of being slower.
MIN_GAIN = 0.05
CACHE_FILE = "sparse_autotune.json"

#: ``timer(dense, sparse, input_shape, threads) -> (dense_ms, sparse_ms)``: median time of one call of each
#: module on a batch of ``input_shape``. Tests inject a fake one.
PairTimer = Callable[[nn.Module, nn.Module, tuple, "int | None"], "tuple[float, float]"]


@dataclass
class LayerChoice:
    """The autotune's decision for one layer, with the measurements behind it."""

    name: str
    kind: str  # "conv" or "linear"
    shape: list[int]  # the dense weight's shape
    input_shape: list[int]
    sparsity: float
    dense_ms: float
    sparse_ms: float
    sparse: bool  # True: the sparse module replaced the dense one
    cached: bool = False  # True: read from the cache, not measured now

    @property
    def speedup(self) -> float:
        """dense_ms / sparse_ms (> 1: the sparse module is faster)."""
        return self.dense_ms / self.sparse_ms if self.sparse_ms else float("inf")

    def as_dict(self) -> dict:
        return {**asdict(self), "speedup": self.speedup}


def measure_pair(dense: nn.Module, sparse: nn.Module, input_shape: tuple, threads: int | None,
                 warmup: int = 3, repeats: int = 15) -> tuple[float, float]:
    """Median ms of ``dense`` and ``sparse`` on a random batch of ``input_shape``, timed interleaved
    (:func:`prunekit.measure.timing.time_interleaved`; same side effects: eval mode, threads for the call)."""
    device = next(iter(sparse.buffers())).device
    dense_t, sparse_t = time_interleaved([dense, sparse], input_shape[0], device, warmup, repeats, threads,
                                         tuple(input_shape[1:]))
    return dense_t.median_ms, sparse_t.median_ms


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
    """Cached ``{key: {"dense_ms", "sparse_ms"}}`` in one JSON file. ``path=None``: nothing is read or written.
    :meth:`save` rewrites the file atomically, merged with what another process may have written since."""

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

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def put(self, key: str, dense_ms: float, sparse_ms: float) -> None:
        self.entries[key] = {"dense_ms": dense_ms, "sparse_ms": sparse_ms}

    def save(self) -> None:
        if self.path is not None:
            atomic_write_text(self.path, json.dumps({**self._read(), **self.entries}, indent=1, sort_keys=True))


def choose(name: str, dense: nn.Module, sparse: nn.Module, input_shape: tuple, threads: int | None,
           device: str, cache: DecisionCache, timer: PairTimer = measure_pair) -> LayerChoice:
    """Decide between ``dense`` and its twin ``sparse`` for inputs of ``input_shape``: from ``cache`` when it
    knows the key, else by ``timer`` (and the result is put into ``cache``, not yet saved)."""
    kind = "linear" if isinstance(dense, nn.Linear) else "conv"
    key = decision_key(kind, dense.weight.shape, input_shape, sparse.sparsity, threads, device, dense)
    entry = cache.get(key)
    cached = entry is not None
    if not cached:
        dense_ms, sparse_ms = timer(dense, sparse, tuple(input_shape), threads)
        cache.put(key, dense_ms, sparse_ms)
        entry = cache.get(key)
    dense_ms, sparse_ms = entry["dense_ms"], entry["sparse_ms"]
    return LayerChoice(name, kind, list(dense.weight.shape), list(input_shape), sparse.sparsity, dense_ms,
                       sparse_ms, sparse=dense_ms >= (1 + MIN_GAIN) * sparse_ms, cached=cached)
