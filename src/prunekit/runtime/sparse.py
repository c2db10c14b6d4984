"""The sparse runtime: :func:`accelerate` swaps each zero-heavy Conv2d/Linear for a sparse twin where that
measured faster, and registers as runtime ``"sparse"`` (``compare --runtime sparse``, ``profile --runtime``).

The modules and their two kernels (torch CSR, native direct convolution) are in
:mod:`prunekit.runtime.sparse_modules`, the native kernel's build in :mod:`prunekit.runtime.native`, the
per-layer measurement and its cache in :mod:`prunekit.runtime.autotune`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from prunekit.masking import permanent_copy
from prunekit.runtime import Runtime, register_runtime
from prunekit.runtime.autotune import DecisionCache, KernelTimer, LayerChoice, cache_path, choose, measure_kernels
from prunekit.runtime.sparse_modules import convertible, sparse_twins, zero_fraction

#: Layers with fewer zeros than this are never tried: CSR loses to dense far below ~80% on a CPU.
MIN_SPARSITY = 0.5


def accelerate(model: nn.Module, example_inputs: torch.Tensor, device: str = "cpu", threads: int | None = None,
               *, timer: KernelTimer = measure_kernels, cache: str | Path | bool = True,
               min_sparsity: float = MIN_SPARSITY) -> nn.Module:
    """A copy of ``model`` computing the same function, with each :func:`convertible` Conv2d/Linear whose
    weight is at least ``min_sparsity`` zero replaced by its sparse twin **only where the twin measured
    faster** on ``device`` for the layer's input in ``example_inputs`` (its batch size included), with
    the fastest of its kernels (``"csr"``, and ``"direct"`` where the native kernel builds here).

    ``model`` may be masked (its masks are made permanent in the copy), binarized, plain with zeros (after
    ``make_permanent``) or loaded from a compact file; it is never changed. ``threads``: CPU threads while
    measuring and the thread count the decisions are cached for (``None``: torch's current count).
    ``timer`` measures a dense layer and its twins (see :data:`prunekit.runtime.autotune.KernelTimer`). ``cache``:
    ``True`` for the default file (:func:`prunekit.runtime.autotune.cache_path`), a path, or ``False`` for
    none; decisions found there are not measured again, new ones are written back atomically.

    The returned model is for inference: in eval mode on ``device``, its parameters frozen (no gradients: the
    direct kernel computes none and refuses an input that requires one); its ``sparse_choices`` attribute lists one
    :class:`~prunekit.runtime.autotune.LayerChoice` per layer tried (every timing and the decision)."""
    threads = threads or torch.get_num_threads()
    accelerated = permanent_copy(model).to(device).eval().requires_grad_(False)
    candidates = {name: layer for name, layer in accelerated.named_modules()
                  if convertible(layer) and zero_fraction(layer) >= min_sparsity}
    shapes = layer_input_shapes(accelerated, candidates, example_inputs.to(device))
    decisions = DecisionCache(cache_path() if cache is True else (cache or None))
    choices = []
    for name, layer in candidates.items():
        if name not in shapes:
            continue  # never called on this input: nothing to measure
        twins = {kernel: twin.to(device) for kernel, twin in sparse_twins(layer, device).items()}
        choice = choose(name, layer, twins, shapes[name], threads, torch.device(device).type, decisions, timer)
        if choice.sparse:
            accelerated.set_submodule(name, twins[choice.kernel])
        choices.append(choice)
    decisions.save()
    accelerated.sparse_choices = choices
    return accelerated


def layer_input_shapes(model: nn.Module, layers: dict[str, nn.Module], example: torch.Tensor) -> dict[str, tuple]:
    """``{name: shape of the first input of that layer}`` in one forward pass of ``example`` (a layer called
    several times keeps its first input's shape)."""
    shapes: dict[str, tuple] = {}

    def recorder(name: str):
        def record(module: nn.Module, args: tuple) -> None:
            shapes.setdefault(name, tuple(args[0].shape))
        return record

    hooks = [layer.register_forward_pre_hook(recorder(name)) for name, layer in layers.items()]
    try:
        with torch.inference_mode():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def describe_choices(choices: list[LayerChoice]) -> str:
    """The per-layer report as a Markdown table: layer, shape, sparsity, the dense and the fastest sparse
    kernel's timings, speed-up, choice (with the kernel when sparse)."""
    lines = ["| layer | weight | input | sparsity | dense ms | sparse ms | speed-up | runs |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for c in choices:
        lines.append(f"| {c.name} | {'×'.join(map(str, c.shape))} | {'×'.join(map(str, c.input_shape))} | "
                     f"{100 * c.sparsity:.1f}% | {c.dense_ms:.3f} | {c.sparse_ms:.3f} | {c.speedup:.2f}× | "
                     f"{f'sparse ({c.kernel})' if c.sparse else 'dense'}{' (cached)' if c.cached else ''} |")
    return "\n".join(lines)


def prepare_sparse(model: nn.Module, example_input: torch.Tensor, device: str = "cpu",
                   threads: int | None = None) -> nn.Module:
    """The runtime contract (:data:`prunekit.runtime.Prepare`): :func:`accelerate` with the default cache."""
    return accelerate(model, example_input, device, threads)


SPARSE = register_runtime(Runtime(
    "sparse", "PyTorch eager with sparse kernels (native direct convolution or torch CSR) where they measured "
    "faster, per layer",
    prepare_sparse, devices=("cpu",), per_batch_size=True))
