"""``profile(model)``: every static and measured cost of a model in one record."""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.images import EXAMPLE_INPUT_SIZE
from prunekit.masking import has_masks, has_transforms, permanent_copy
from prunekit.measure.counts import (count_macs, count_nonzero_parameters, count_ops, count_parameters,
                                     serialized_size)
from prunekit.measure.timing import (DEFAULT_TIMING_THREADS, machine_load, noise_note, peak_inference_memory,
                                     static_bytes, time_inference)


@dataclass
class Profile:
    params: int
    nonzero_params: int
    macs: int  # multiply-accumulates per image, conv + linear
    file_bytes: int  # the checkpoint file, or the serialised state dict when no file is given
    weights_bytes: int  # the deployable model's tensors (masks made permanent; int8 packed weights)
    peak_memory_bytes: int  # batch-1 inference: weights + buffers + peak live activations
    device: str
    threads: int
    latency_ms: float | None = None  # per image at batch 1, median
    latency_iqr_ms: tuple[float, float] | None = None
    throughput_batch: int | None = None
    throughput_ips: float | None = None  # images per second at ``throughput_batch``, median
    hardware: str = ""
    count: str = "macs"  # the counting convention of ``ops`` (see prunekit.measure.counts.CONVENTIONS)
    ops: int | None = None  # operations per image under ``count`` (equals ``macs`` for "macs")
    latency_spread: float | None = None  # IQR / median of the batch-1 latency
    noise: str | None = None  # the warning when the latency is noisy (IQR > 20% of median)
    machine: dict | None = None  # machine_load() just before timing: busy CPUs, steal, load average
    runtime: str = "eager"  # the runtime whose model the memory and timing figures measure

    def as_dict(self) -> dict:
        return asdict(self)


def hardware_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{platform.processor() or platform.machine()} ({os.cpu_count()} CPUs)"


def deployable(model: nn.Module) -> nn.Module:
    """``model`` itself, or for a masked or binarized model a copy with its masks and binarized weights made
    permanent (same outputs)."""
    if has_masks(model) or has_transforms(model):
        return permanent_copy(model)
    return model


def prepared(runtime, model: nn.Module, batch_size: int, input_size, device: torch.device,
             threads: int | None) -> nn.Module:
    """``model`` as ``runtime`` (a :class:`prunekit.runtime.Runtime`, or None for eager) runs it, prepared for
    batches of ``batch_size``; raises when that runtime does not run a PyTorch module. Eager is the eager
    runtime's preparation (:func:`prunekit.inference.prepare_for_inference`, a copy), as compare and latency
    targets time it; the runtime registry is not imported here (it imports measure)."""
    example = torch.randn(batch_size, *input_size[1:], device=device)
    if runtime is None:
        from prunekit.inference import prepare_for_inference

        return prepare_for_inference(model, example, device.type)
    runnable = runtime.prepare(model, example, device.type, threads)
    if not isinstance(runnable, nn.Module):
        raise PrunekitError(f"profile measures memory of PyTorch modules only; runtime {runtime.name!r} is not "
                            "one: time it with `compare --runtime` instead")
    return runnable


def profile(model: nn.Module, input_size=EXAMPLE_INPUT_SIZE, device: str | torch.device = "cpu",
            checkpoint_path: str | Path | None = None, timing: bool = True, batch_size: int = 64,
            repeats: int = 50, threads: int | None = DEFAULT_TIMING_THREADS, count: str = "macs",
            runtime=None) -> Profile:
    """Measure ``model``: params, non-zero params, MACs, the operations under convention ``count`` (``ops``),
    size, peak memory and (if ``timing``) latency at batch 1 and throughput at ``batch_size``. Side effect:
    moves the model to ``device`` and eval mode.

    A masked model is measured as it would be deployed: memory and time on a copy whose masks are made
    permanent (the ``weight_orig * weight_mask`` re-parametrisation is a training device that would
    otherwise add a multiplication per layer and a second copy of every weight). Timing is single-threaded
    unless ``threads`` says otherwise (``None``: torch's current count); a noisy latency carries ``noise``.

    ``runtime``: a :class:`prunekit.runtime.Runtime` (e.g. ``get_runtime("sparse")``) whose prepared model
    the weights, peak memory and timing figures measure, prepared once for batch 1 (latency, memory) and
    once for ``batch_size`` (throughput); counts (params, MACs, file size) stay those of ``model``. None:
    eager, the model as :func:`prunekit.inference.prepare_for_inference` prepares it (BatchNorm folded where
    it traces), like ``get_runtime("eager")``."""
    device = torch.device(device)
    model = model.to(device).eval()
    threads = threads or torch.get_num_threads()
    deployed = prepared(runtime, deployable(model), 1, input_size, device, threads)
    result = Profile(
        params=count_parameters(model),
        nonzero_params=count_nonzero_parameters(model),
        macs=count_macs(model, input_size),
        count=count,
        ops=count_ops(model, count, input_size),
        file_bytes=Path(checkpoint_path).stat().st_size if checkpoint_path else serialized_size(model),
        weights_bytes=static_bytes(deployed),
        peak_memory_bytes=peak_inference_memory(deployed, 1, device, tuple(input_size[1:])),
        device=device.type,
        threads=threads,
        hardware=hardware_name(device),
        runtime=runtime.name if runtime is not None else "eager",
    )
    if timing:
        result.machine = machine_load().as_dict()
        single = time_inference(deployed, 1, device, repeats=repeats, threads=threads, input_size=tuple(input_size[1:]))
        batched_model = prepared(runtime, deployable(model), batch_size, input_size, device, threads)
        batched = time_inference(batched_model, batch_size, device, repeats=max(5, repeats // 5), threads=threads,
                                 input_size=tuple(input_size[1:]))
        result.latency_ms = single.per_image_ms
        result.latency_iqr_ms = (single.q1_ms, single.q3_ms)
        result.latency_spread = single.spread
        result.noise = noise_note(single.spread, threads) if single.noisy else None
        result.throughput_batch = batch_size
        result.throughput_ips = batched.images_per_second
    return result
