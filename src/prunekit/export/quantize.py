"""int8 post-training static quantization for CPU inference.

Path: PyTorch's FX graph mode quantization, ``torch.ao.quantization.quantize_fx.prepare_fx`` /
``convert_fx`` with ``get_default_qconfig_mapping("x86")``: per-channel symmetric int8 weights, per-tensor
affine uint8 activations (HistogramObserver, 7-bit range on x86 to avoid VPMADDUBSW overflow on CPUs
without VNNI), conv + BatchNorm (+ ReLU) fused, i.e. BN folded into the conv weights, during
``prepare_fx`` (the model is in eval mode). ``convert_fx`` swaps in ``torch.ao.nn.quantized`` modules
whose forward calls the x86 (fbgemm/oneDNN) int8 kernels, so plain eager inference is int8, with no
``torch.compile`` step.

Why this path (checked with torch 2.13): it is the one in core PyTorch that yields real int8 kernels in
eager CPU inference. ``torch.ao.quantization`` warns that it is deprecated in favour of torchao's pt2e
flow, but it is present and working in 2.13. pt2e is no longer in core (``torch.ao.quantization.
quantize_pt2e`` does not exist in 2.13); it lives in the separate ``torchao`` package, which is not a
prunekit dependency and was not measured here. Per torchao's documentation its converted model is a graph
of quantize/dequantize ops around float operators, fused into int8 kernels only when lowered with
``torch.compile`` (Inductor) or ExecuTorch; eager it runs those reference patterns. FX gives int8 kernels
in eager mode with no compile step and no new dependency, so we do not add torchao.

Widths: the x86 int8 depthwise kernel (fbgemm) is fast only for channel counts that are multiples of 8 once
a depthwise conv has more than 100 channels; other widths take a slow path (measured with torch 2.13 on an
AMD EPYC at batch 1: 2.3–7.5 ms instead of 0.2 ms for 101–139 channels at 16×16). A pruned MobileNetV2
with such widths ran 9× *slower* than the dense int8 one; pruned with ``round_to=8`` it ran as fast or
faster. :func:`quantize_model` warns (:func:`slow_int8_widths`) when a model has such layers.

Calibration: :func:`quantize_model` runs the prepared model on batches of real (normalised) training
images; without any batch it raises. Ops the x86 backend has no int8 kernel for (e.g. the ``index_select``
of a ResNet's zero-padding shortcut) run in float between a dequantize and a quantize.

The ``prunekit-int8`` file is a checkpoint-like dict::

    format "prunekit-int8", version 1
    arch        the fp32 architecture the model was quantized from, as in a checkpoint: (name, kwargs,
                channels) for a registry model, (ref, kwargs, channels) for a user model
    state_dict  the quantized GraphModule's state dict, each quantized tensor stored as a plain dict of
                its int8/uint8 codes, scale(s), zero point(s) and axis (see :func:`plain_state`). Checked in
                torch 2.13: a state dict WITH quantized tensors also loads with ``weights_only=True``, but
                through deprecated quantized-tensor rebuilds that warn on every load; plain codes avoid that
    qconfig     {"backend": "x86", "mapping": "default", "input_shape": [1, 3, 32, 32]}
    meta        the source checkpoint's meta + ``quantized: "int8"`` and the calibration details

Loading rebuilds the fp32 model from ``arch``, re-runs ``prepare_fx``/``convert_fx`` with the same
mapping on one dummy batch (it only creates the structure) and loads the saved state dict, which restores
every weight, scale and zero point exactly. The model runs on the CPU only.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable

import torch
from torch import nn

from prunekit.checkpoint import Checkpoint, atomic_save, register_format
from prunekit.errors import PrunekitError
from prunekit.export.common import inference_copy, is_quantized
from prunekit.images import EXAMPLE_INPUT_SIZE

FORMAT = "prunekit-int8"
VERSION = 1
BACKEND = "x86"
INFO_ATTRIBUTE = "prunekit_int8"  # on the quantized GraphModule: {"arch", "qconfig"}; see common.is_quantized


def quantize_model(model: nn.Module, calibration: Iterable, max_batches: int | None = None,
                   backend: str = BACKEND, input_shape: tuple[int, ...] = EXAMPLE_INPUT_SIZE) -> torch.fx.GraphModule:
    """The int8 GraphModule of ``model``, calibrated on ``calibration``.

    ``calibration`` yields input batches (normalised float tensors) or ``(inputs, labels)`` pairs; the first
    ``max_batches`` (all when None) are used. Does not modify ``model``: a CPU copy is made, its masks
    made permanent (pruned weights are plain zeros) and put in eval mode. The result carries
    ``prunekit_int8 = {"arch", "qconfig"}`` for :func:`save_quantized` (``arch`` as
    :func:`prunekit.models.saved_arch` gives it: None for a model whose class cannot be named). Raises PrunekitError when the model cannot be traced by torch.fx or no batch was given.
    """
    from prunekit.models import saved_arch

    if is_quantized(model):
        raise PrunekitError("the model is already quantized; quantize its fp32 checkpoint instead")
    arch = saved_arch(model)
    slow = slow_int8_widths(model)
    if slow and backend == "x86":
        warnings.warn(f"{len(slow)} depthwise conv(s) have widths int8 kernels run slowly ({', '.join(slow[:3])}"
                      f"{', …' if len(slow) > 3 else ''}): above {DEPTHWISE_FAST_UP_TO} channels the x86 int8 "
                      f"depthwise kernel wants multiples of {DEPTHWISE_MULTIPLE}; prune with --round-to "
                      f"{DEPTHWISE_MULTIPLE}", stacklevel=2)
    fp32 = inference_copy(model)
    with _quiet(), _engine(backend):
        prepared = prepare(fp32, backend, input_shape)
        if calibrate(prepared, calibration, max_batches) == 0:
            raise PrunekitError("no calibration data: int8 quantization needs at least one batch of real "
                                "training images (e.g. --calib-batches 8 with --data DIR)")
        quantized = convert(prepared)
    setattr(quantized, INFO_ATTRIBUTE, {"arch": arch, "qconfig": qconfig_record(backend, input_shape)})
    return quantized


#: The x86 int8 depthwise kernel is fast at any width up to this many channels, above it only at multiples of
#: DEPTHWISE_MULTIPLE (see the module doc).
DEPTHWISE_FAST_UP_TO = 100
DEPTHWISE_MULTIPLE = 8


def slow_int8_widths(model: nn.Module) -> list[str]:
    """``name (width)`` of every depthwise Conv2d of ``model`` whose width the x86 int8 kernel runs on its
    slow path (more than :data:`DEPTHWISE_FAST_UP_TO` channels, not a multiple of :data:`DEPTHWISE_MULTIPLE`)."""
    return [f"{name} ({m.out_channels})" for name, m in model.named_modules()
            if isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels
            and m.out_channels > DEPTHWISE_FAST_UP_TO and m.out_channels % DEPTHWISE_MULTIPLE]


def prepare(model: nn.Module, backend: str = BACKEND, input_shape=EXAMPLE_INPUT_SIZE) -> torch.fx.GraphModule:
    """``prepare_fx`` with the default qconfig mapping of ``backend``; an untraceable model raises clearly."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import prepare_fx

    check_backend(backend)
    example = (torch.zeros(input_shape),)
    try:
        return prepare_fx(model, get_default_qconfig_mapping(backend), example)
    except Exception as exc:  # torch.fx raises TraceError, TypeError, RuntimeError, … for untraceable code
        name = (getattr(model, "arch", None) or {}).get("name", type(model).__name__)
        raise PrunekitError(
            f"{name} cannot be quantized: torch.fx could not trace it ({type(exc).__name__}: {exc}). FX graph "
            "mode quantization needs a forward without data-dependent Python control flow"
        ) from None


@torch.inference_mode(False)
@torch.no_grad()
def calibrate(prepared: nn.Module, batches: Iterable, max_batches: int | None = None) -> int:
    """Run ``prepared`` on up to ``max_batches`` batches (observers record ranges); returns how many ran."""
    count = 0
    for batch in batches:
        if max_batches is not None and count >= max_batches:
            break
        inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
        prepared(inputs.detach().to("cpu", torch.float32).contiguous())
        count += 1
    return count


def convert(prepared: nn.Module) -> torch.fx.GraphModule:
    from torch.ao.quantization.quantize_fx import convert_fx

    return convert_fx(prepared)


def qconfig_record(backend: str = BACKEND, input_shape=EXAMPLE_INPUT_SIZE) -> dict:
    """What rebuilds the same quantized structure: backend, mapping, example input shape."""
    return {"backend": backend, "mapping": "default", "input_shape": list(input_shape)}


# --- files --------------------------------------------------------------------------------------------


def int8_dict(quantized: torch.fx.GraphModule, meta: dict | None = None) -> dict:
    """The ``prunekit-int8`` dict of a model from :func:`quantize_model`."""
    from prunekit import __version__

    info = getattr(quantized, INFO_ATTRIBUTE, None)
    if not info:
        raise PrunekitError("this model was not made by prunekit.export.quantize_model; quantize it with that")
    if info["arch"] is None:
        raise PrunekitError("an int8 file rebuilds its model from the fp32 architecture, and this model's class "
                            "cannot be named for import (a torch container or a class defined in a function): "
                            "quantize a registry model or one built from --model path/to/file.py:Class")
    return {"format": FORMAT, "version": VERSION, "arch": info["arch"], "qconfig": info["qconfig"],
            "state_dict": plain_state(quantized.state_dict()),
            "meta": {"prunekit_version": __version__, **(meta or {}), "quantized": "int8"}}


def save_quantized(quantized: torch.fx.GraphModule, path: str | Path, meta: dict | None = None) -> Path:
    """Write ``quantized`` (from :func:`quantize_model`) as a ``prunekit-int8`` file, atomically."""
    return atomic_save(int8_dict(quantized, meta), path)


def load_quantized(raw: dict, path: str | Path | None = None):
    """The :class:`prunekit.checkpoint.Checkpoint` of a ``prunekit-int8`` dict; ``.model`` is the int8
    GraphModule (CPU, eval mode), ``meta["quantized"] == "int8"``."""
    from prunekit.checkpoint import rebuild
    from prunekit.models import build_model

    if raw.get("version") != VERSION:
        raise PrunekitError(f"int8 format version {raw.get('version')} is not supported (this prunekit reads "
                            f"version {VERSION}); upgrade prunekit")
    qconfig = raw["qconfig"]
    fp32 = (rebuild(raw["arch"], path) if path else build_model(raw["arch"])).eval()
    arch = {**raw["arch"], "ref": fp32.arch["ref"]} if "ref" in raw["arch"] else raw["arch"]  # as found
    with _quiet(), _engine(qconfig["backend"]):
        prepared = prepare(fp32, qconfig["backend"], tuple(qconfig["input_shape"]))
        calibrate(prepared, [torch.zeros(qconfig["input_shape"])])  # structure only; values come from the file
        quantized = convert(prepared)
        _load_state(quantized, quantized_state(raw["state_dict"]), path)
    setattr(quantized, INFO_ATTRIBUTE, {"arch": arch, "qconfig": qconfig})
    meta = {**(raw.get("meta") or {}), "quantized": "int8"}
    return Checkpoint(model=quantized.eval(), arch=arch, masks={}, meta=meta,
                      path=Path(path) if path else None)


def plain_state(state: dict) -> dict:
    """A quantized state dict with every quantized tensor as a plain dict (its int8/uint8 codes, scale(s),
    zero point(s), axis), so the file holds no quantized tensors: reading it needs none of PyTorch's
    deprecated quantized-tensor (de)serialisation. ``_metadata`` (module versions, which decide how
    quantized modules load their state) is kept under ``"_metadata"``."""
    out = {key: _plain(value) for key, value in state.items()}
    out["_metadata"] = dict(getattr(state, "_metadata", {}))
    return out


def quantized_state(plain: dict) -> OrderedDict:
    """Inverse of :func:`plain_state`: the state dict ``load_state_dict`` takes."""
    state = OrderedDict((key, _quantized(value)) for key, value in plain.items() if key != "_metadata")
    state._metadata = OrderedDict(plain.get("_metadata", {}))
    return state


def _plain(value):
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if not (isinstance(value, torch.Tensor) and value.is_quantized):
        return value
    if value.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
        return {"qtensor": value.int_repr(), "scale": value.q_scale(), "zero_point": value.q_zero_point()}
    return {"qtensor": value.int_repr(), "scales": value.q_per_channel_scales(),
            "zero_points": value.q_per_channel_zero_points(), "axis": value.q_per_channel_axis()}


def _quantized(value):
    # The codes' dtype (int8, uint8, int32) decides the quantized dtype (qint8, quint8, qint32).
    if isinstance(value, tuple):
        return tuple(_quantized(v) for v in value)
    if not (isinstance(value, dict) and "qtensor" in value):
        return value
    if "scale" in value:
        return torch._make_per_tensor_quantized_tensor(value["qtensor"], value["scale"], value["zero_point"])
    return torch._make_per_channel_quantized_tensor(value["qtensor"], value["scales"], value["zero_points"],
                                                    value["axis"])


def check_backend(backend: str) -> None:
    engines = torch.backends.quantized.supported_engines
    if backend not in engines:
        raise PrunekitError(f"quantization backend {backend!r} is not available in this PyTorch build "
                            f"(available: {', '.join(e for e in engines if e != 'none')})")


def _load_state(quantized: nn.Module, state: dict, path) -> None:
    try:
        quantized.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError) as exc:
        raise PrunekitError(f"{path or 'the int8 file'} does not match its own architecture ({exc}); "
                            "it was written by another prunekit/PyTorch version or is corrupt") from None


@contextmanager
def _engine(backend: str):
    """Use ``backend``'s kernels while preparing/converting (packed weights are engine-specific)."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = backend
    try:
        yield
    finally:
        torch.backends.quantized.engine = previous


@contextmanager
def _quiet():
    # torch.ao.quantization warns on every call that it is deprecated (see the module docstring) and that
    # reduce_range will be renamed; neither is actionable for a prunekit user.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r".*reduce_range will be deprecated.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        warnings.filterwarnings("ignore", message=r".*TypedStorage is deprecated.*")
        yield


register_format(FORMAT, load_quantized)
