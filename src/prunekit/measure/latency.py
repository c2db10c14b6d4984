"""Latency tables: how long every prunable layer takes at a grid of widths, measured on the device it will run on.

A :class:`LatencyTable` predicts a pruned model's latency without building it: the model's measured
latency is split into the time of its Conv2d / Linear calls, each looked up at its new (input, output) width,
plus a constant *overhead* (everything else: activations, additions, pooling, Python per-op cost; BatchNorm
where it is not folded), ``overhead = measured dense latency − Σ layer time at full width``, of which
``fixed_ms`` stays constant and the rest shrinks with the layers' output activations (activations touch every
output value). The dense latency is that of the model as the eager runtime runs it
(:func:`prunekit.inference.prepare_for_inference`: traced, BatchNorm folded into the convolutions).
``fixed_ms`` starts at 0 and is fitted from a measured pruned model (:meth:`LatencyTable.calibrate`). The
allocation in
:mod:`prunekit.prune.allocate` spends that prediction; the pruning pipeline then measures the real model.

What is measured, for every distinct layer shape (in/out channels, kernel, stride, padding, groups, input
height and width; layers of one shape share an entry): the layer alone, in eval mode under
``torch.inference_mode`` on a random input of ``batch_size`` images, at every width pair of a grid
(:func:`width_grid`: every output width up to 32 channels, then a step that keeps 32 points; 16 points on
the input axis), the median
of ``repeats`` timed runs after warm-up, on ``threads`` CPU threads. A width between grid points is looked
up at the next grid width above it (conservative, and it keeps the steps). A depthwise conv is measured on
its diagonal (in = out = groups).

Cache: one JSON file per layer shape and measuring context, under ``$PRUNEKIT_CACHE/latency`` (default
``~/.cache/prunekit/latency``), named by a hash of device, hardware, torch version, threads, batch size and
layer shape; written atomically, so a table is measured once per machine and reused. A file whose key does
not match (an edited file) is measured again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from prunekit.images import IMAGE_SHAPE
from prunekit.measure.timing import DEFAULT_TIMING_THREADS, time_inference

#: Output widths measured per layer at most: above 32 channels the step grows (64 channels: every 2nd width).
GRID_POINTS = 32
#: Input widths measured per layer at most (the steps are read along the output axis, so this one is coarser).
INPUT_GRID_POINTS = 16
#: Timed runs per width pair of a layer (median kept), after LAYER_WARMUP untimed ones.
LAYER_REPEATS = 15
LAYER_WARMUP = 3
#: A width counts as a "step" when it runs at least this much faster than the grid width just below it.
STEP_GAIN = 0.03


def cache_folder() -> Path:
    """Where latency entries are cached: ``$PRUNEKIT_CACHE/latency``, else ``~/.cache/prunekit/latency``."""
    root = os.environ.get("PRUNEKIT_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "prunekit") / "latency"


def width_grid(full: int, points: int = GRID_POINTS) -> list[int]:
    """The widths a layer of ``full`` channels is measured at: multiples of ``ceil(full / points)`` and
    ``full`` itself (``width_grid(16) == [1, 2, ..., 16]``, ``width_grid(64) == [2, 4, ..., 64]``)."""
    step = max(1, -(-full // points))
    return sorted({*range(step, full + 1, step), full})


@dataclass(frozen=True)
class LayerShape:
    """Everything a Conv2d / Linear call's time depends on besides the batch. ``height``/``width``: input size."""

    kind: str  # "conv" | "linear"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    groups: int = 1
    height: int = 1
    width: int = 1

    @property
    def depthwise(self) -> bool:
        return self.kind == "conv" and self.groups > 1 and self.groups == self.in_channels == self.out_channels

    def build(self, cin: int, cout: int) -> nn.Module:
        """The layer at widths (``cin``, ``cout``) (a depthwise conv: ``cout`` channels, in = groups = out)."""
        if self.kind == "linear":
            return nn.Linear(cin, cout)
        if self.depthwise:
            cin = cout
        groups = cout if self.depthwise else self.groups
        return nn.Conv2d(cin, cout, self.kernel, self.stride, self.padding, groups=groups, bias=False)

    def input_size(self, cin: int) -> tuple[int, ...]:
        return (cin,) if self.kind == "linear" else (cin, self.height, self.width)

    def grid(self) -> tuple[list[int], list[int]]:
        """(input widths, output widths) measured; a grouped (not depthwise) conv only at full width."""
        if self.kind == "conv" and self.groups > 1 and not self.depthwise:
            return [self.in_channels], [self.out_channels]
        outs = width_grid(self.out_channels)
        return ([self.in_channels] if self.depthwise else width_grid(self.in_channels, INPUT_GRID_POINTS)), outs


def layer_shapes(model: nn.Module, input_size=IMAGE_SHAPE) -> dict[str, LayerShape]:
    """{module name: its :class:`LayerShape`} for every Conv2d and Linear ``model`` calls on one image."""
    shapes: dict[str, LayerShape] = {}
    hooks = []

    def record(name: str):
        def hook(module, inputs, output):
            x = inputs[0]
            if isinstance(module, nn.Conv2d):
                shapes[name] = LayerShape("conv", module.in_channels, module.out_channels, tuple(module.kernel_size),
                                          tuple(module.stride), tuple(module.padding), module.groups,
                                          x.shape[-2], x.shape[-1])
            else:
                shapes[name] = LayerShape("linear", module.in_features, module.out_features)
        return hook

    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            hooks.append(module.register_forward_hook(record(name)))
    try:
        with torch.inference_mode():
            model.eval()(torch.zeros(1, *input_size, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


@dataclass
class LayerCurve:
    """Measured milliseconds per batch of one layer shape: ``ms[i][j]`` at (``inputs[i]``, ``outputs[j]``)."""

    inputs: list[int]
    outputs: list[int]
    ms: list[list[float]]

    def at(self, cin: int, cout: int) -> float:
        """Time at the next measured widths at or above (``cin``, ``cout``); 0 when either width is 0 (a layer
        of a removed residual branch: a :class:`~prunekit.models.layers.ZeroWidthLayer` computes no product)."""
        if cin == 0 or cout == 0:
            return 0.0
        return self.ms[_index_at_or_above(self.inputs, cin)][_index_at_or_above(self.outputs, cout)]

    def steps(self) -> list[int]:
        """Output widths (at full input) that run at least :data:`STEP_GAIN` faster than the grid width below."""
        row = self.ms[-1]
        return [self.outputs[j] for j in range(1, len(row)) if row[j] < (1 - STEP_GAIN) * row[j - 1]]


def _positions(shape: LayerShape) -> int:
    """Output positions per image per channel of a layer (H×W after the conv; 1 for a Linear)."""
    if shape.kind == "linear":
        return 1
    h = (shape.height + 2 * shape.padding[0] - shape.kernel[0]) // shape.stride[0] + 1
    w = (shape.width + 2 * shape.padding[1] - shape.kernel[1]) // shape.stride[1] + 1
    return h * w


def _index_at_or_above(grid: list[int], value: int) -> int:
    return next((i for i, w in enumerate(grid) if w >= value), len(grid) - 1)


@dataclass
class LatencyTable:
    """Per-layer latency of one model on one device (see the module doc). ``layers``: {module name: shape
    key}; ``curves``: {shape key: curve}; ``dense_ms``: the whole model, measured; ``context``: device,
    hardware, torch version, threads, batch size; ``cached``: how many shapes came from the cache."""

    layers: dict[str, str]
    shapes: dict[str, LayerShape]
    curves: dict[str, LayerCurve]
    dense_ms: float
    context: dict
    cached: int = 0
    build_s: float = 0.0
    full: dict[str, tuple[int, int]] = field(default_factory=dict)  # module -> (in, out) at full width

    fixed_ms: float = 0.0  # the part of the overhead that does not shrink with the activations (see predict)

    @property
    def overhead_ms(self) -> float:
        """The measured dense latency not spent in the tabled layers."""
        return self.dense_ms - sum(self.layer_ms(name, *self.full[name]) for name in self.layers)

    def grid_for(self, full: int) -> list[int]:
        """The widths a channel group of ``full`` channels may take: those the table measures."""
        return width_grid(full)

    def layer_ms(self, name: str, cin: int, cout: int) -> float:
        """Predicted milliseconds per batch of layer ``name`` at input width ``cin``, output width ``cout``."""
        return self.curves[self.layers[name]].at(cin, cout)

    def activation_fraction(self, widths: dict[str, tuple[int, int]]) -> float:
        """Output activations of the tabled layers at ``widths`` over those at full width (what BatchNorm,
        activations and additions touch)."""
        full = sum(self.full[n][1] * _positions(self.shapes[k]) for n, k in self.layers.items())
        kept = sum(widths.get(n, self.full[n])[1] * _positions(self.shapes[k]) for n, k in self.layers.items())
        return kept / full if full else 1.0

    def predict(self, widths: dict[str, tuple[int, int]] | None = None) -> float:
        """Predicted latency (ms per batch) with the given {layer: (in, out)} widths, the rest at full width:
        the layers' tabled times plus ``fixed_ms`` plus the rest of the overhead scaled by
        :meth:`activation_fraction`. ``predict()`` is the measured dense latency."""
        widths = widths or {}
        variable = (self.overhead_ms - self.fixed_ms) * self.activation_fraction(widths)
        return self.fixed_ms + variable + sum(self.layer_ms(n, *widths.get(n, self.full[n])) for n in self.layers)

    def calibrate(self, widths: dict[str, tuple[int, int]], measured_fraction: float) -> None:
        """Fit ``fixed_ms`` so that :meth:`predict` of ``widths`` is ``measured_fraction`` of the dense latency
        (a pruned model measured against the dense one), clamped to [0, overhead]. Side effect: sets
        ``fixed_ms``."""
        active = self.activation_fraction(widths)
        if active >= 1.0:
            return
        layers = sum(self.layer_ms(n, *widths.get(n, self.full[n])) for n in self.layers)
        fixed = (measured_fraction * self.dense_ms - layers - self.overhead_ms * active) / (1.0 - active)
        self.fixed_ms = min(max(fixed, 0.0), self.overhead_ms)

    def rows(self) -> list[dict]:
        """One row per distinct layer shape: layers using it, full-width ms, ms at half width, the steps."""
        rows = []
        for key, curve in self.curves.items():
            names = [n for n, k in self.layers.items() if k == key]
            shape = self.shapes[key]
            half = curve.at(max(1, shape.in_channels // 2), max(1, shape.out_channels // 2))
            rows.append({"layers": _name_range(names), "count": len(names), "shape": describe(shape),
                         "full_ms": curve.ms[-1][-1], "half_ms": half,
                         "steps": ", ".join(map(str, curve.steps())) or "none"})
        return rows

    def as_dict(self) -> dict:
        return {"context": self.context, "dense_ms": self.dense_ms, "overhead_ms": self.overhead_ms,
                "fixed_ms": self.fixed_ms,
                "cached": self.cached, "build_s": self.build_s, "layers": self.layers,
                "shapes": {k: asdict(s) for k, s in self.shapes.items()},
                "curves": {k: asdict(c) for k, c in self.curves.items()}}


def describe(shape: LayerShape) -> str:
    """``conv 16→32 3x3 /2 @32x32`` or ``linear 64→10``."""
    if shape.kind == "linear":
        return f"linear {shape.in_channels}→{shape.out_channels}"
    stride = f" /{shape.stride[0]}" if shape.stride[0] > 1 else ""
    dw = " depthwise" if shape.depthwise else ""
    return (f"conv {shape.in_channels}→{shape.out_channels} {shape.kernel[0]}x{shape.kernel[1]}{stride}{dw} "
            f"@{shape.height}x{shape.width}")


def _name_range(names: list[str]) -> str:
    return names[0] if len(names) == 1 else f"{names[0]} … {names[-1]}"


def measuring_context(device: str, threads: int | None, batch_size: int) -> dict:
    """What a cached entry is valid for: device, hardware, torch version, threads and batch size."""
    from prunekit.measure.profile import hardware_name

    return {"device": device, "hardware": hardware_name(torch.device(device)), "torch": str(torch.__version__),
            "threads": threads or torch.get_num_threads(), "batch_size": batch_size}


def entry_key(context: dict, shape: LayerShape) -> str:
    """The cache key of one layer shape measured in ``context``."""
    text = json.dumps({"context": context, "shape": asdict(shape), "grid": shape.grid()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def measure_curve(shape: LayerShape, context: dict, repeats: int = LAYER_REPEATS, warmup: int = LAYER_WARMUP
                  ) -> LayerCurve:
    """Time ``shape`` at every width pair of its grid (median of ``repeats`` runs each, see the module doc)."""
    inputs, outputs = shape.grid()
    device, threads, batch = context["device"], context["threads"], context["batch_size"]
    ms = []
    for cin in inputs:
        row = []
        for cout in outputs:
            layer = shape.build(cin, cout).to(device)
            row.append(time_inference(layer, batch, device, warmup=warmup, repeats=repeats, threads=threads,
                                      input_size=shape.input_size(cout if shape.depthwise else cin)).median_ms)
        ms.append(row)
    return LayerCurve(inputs, outputs, ms)


def cached_curve(shape: LayerShape, context: dict, measure: Callable[[LayerShape, dict], LayerCurve] = measure_curve,
                 folder: Path | None = None, refresh: bool = False) -> tuple[LayerCurve, bool]:
    """(curve, came from the cache): read the cached entry of ``shape`` in ``context``, else measure and
    cache it (atomic write). An unreadable or mismatching cache file is measured again and replaced;
    ``refresh`` measures and replaces it whatever it holds."""
    from prunekit.atomic import atomic_write_text

    key = entry_key(context, shape)
    path = (folder or cache_folder()) / f"{key}.json"
    try:
        saved = json.loads(path.read_text())
        if saved.get("key") == key and not refresh:
            return LayerCurve(**saved["curve"]), True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    curve = measure(shape, context)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"key": key, "context": context, "shape": asdict(shape),
                                        "curve": asdict(curve)}))
    return curve, False


def dense_latency(model: nn.Module, context: dict, repeats: int = 30) -> float:
    """The whole model's median milliseconds per batch in ``context`` (measured, never cached), prepared as the
    eager runtime prepares it (:func:`prunekit.inference.prepare_for_inference`: BatchNorm folded), as the
    pruned models it is compared with are."""
    from prunekit.images import example_input
    from prunekit.inference import prepare_for_inference

    prepared = prepare_for_inference(model, example_input(), context["device"])
    return time_inference(prepared, context["batch_size"], context["device"], repeats=repeats,
                          threads=context["threads"]).median_ms


def build_latency_table(model: nn.Module, device: str = "cpu", threads: int | None = DEFAULT_TIMING_THREADS,
                        batch_size: int = 1, input_size=IMAGE_SHAPE, folder: Path | None = None,
                        measure: Callable[[LayerShape, dict], LayerCurve] = measure_curve) -> LatencyTable:
    """The :class:`LatencyTable` of ``model`` (see the module doc): layer curves from the cache where they
    are, else measured and cached; the dense latency measured now. When cached layers add up to more than
    the dense model measured now (a negative overhead: entries measured on a busier machine, or under
    conditions that no longer hold), the predictions would be nonsense, so every curve read from the cache is
    measured again and its cache entry replaced. Side effects: puts ``model`` in eval mode on ``device``; writes cache files."""
    start = time.perf_counter()
    model = model.to(device).eval()
    context = measuring_context(device, threads, batch_size)
    shapes = layer_shapes(model, input_size)
    keys = {name: entry_key(context, shape) for name, shape in shapes.items()}
    dense_ms = dense_latency(model, context)
    by_key = {keys[n]: s for n, s in shapes.items()}
    curves, from_cache = {}, set()
    for key, shape in by_key.items():
        curves[key], hit = cached_curve(shape, context, measure, folder)
        if hit:
            from_cache.add(key)

    def table_of(cached: int) -> LatencyTable:
        return LatencyTable(keys, by_key, curves, dense_ms, context, cached,
                            full={n: (s.in_channels, s.out_channels) for n, s in shapes.items()})

    table = table_of(len(from_cache))
    if table.overhead_ms < 0 and from_cache:  # cached entries no longer hold here: measure those again
        for key in from_cache:
            curves[key], _ = cached_curve(by_key[key], context, measure, folder, refresh=True)
        table = table_of(0)
    table.build_s = time.perf_counter() - start
    return table
