"""A compact sparse checkpoint: its size scales with the non-zero weights, not with the parameter count.

Layout (a ``torch.save``d dict, loadable with ``weights_only=True``; only uint8 and float tensors inside)::

    format    "prunekit-compact"          version  1 (2 for ``binary`` files)
    values    "fp32" | "fp16" | "int8" | "binary"    how the kept values are stored (below)
    arch      as in an ordinary checkpoint (name, kwargs, per-layer channels), None for a user model
    meta      as in an ordinary checkpoint
    masks     {param: {"shape": [...], "bits": uint8}}        the bool masks as packed bits
    binarized the checkpoint's binarization record (layers, method, activations), when it has one
    binary    ``binary`` files: {"bits": uint8, "scales": float32}, every binarized weight's sign bits and
              per-channel scales in one blob each (one storage record, not one per layer)
    tensors   {state-dict key: entry}, one of
              {"shape", "dtype", "dense": tensor}                 small (< DENSE_BELOW elements) or
                                                                  non-float tensors, stored as they are
              {"shape", "dtype", "support": "nonzero", "bits": uint8, "values": ...}
              {"shape", "dtype", "support": "mask", "values": ...}
              {"shape", "dtype", "support": "mask" | "all", "binary": {"bits": [start, stop],
               "scales": [start, stop]}}       a binarized weight (``binary`` files): slices of ``binary``

``bits`` is ``numpy.packbits`` of the flattened support (one bit per weight, C order). A masked weight's
support IS its mask, so its bits are stored once, in ``masks``: the values are the weight at the mask's
True positions, in flat order (kept weights that happen to be zero are stored as zeros). Any other float
tensor's support is its non-zero entries.

Value modes:

* ``fp32`` (default): values in the tensor's own dtype. Lossless: every decoded tensor is bitwise equal to
  the checkpoint's, except that a pruned entry stored as ``-0.0`` (``orig × 0`` keeps orig's sign) comes back
  as ``+0.0`` (``-0.0 == +0.0``, so ``torch.equal`` holds and no output changes).
* ``fp16``: values as float16 (relative error ≤ 2⁻¹¹ inside the fp16 range).
* ``int8``: weights with ≥ 2 dims get 8-bit affine codes per output channel (dim 0) over the channel's
  stored values: ``x ≈ low_c + scale_c · q`` with ``q ∈ [0, 255]`` stored as uint8, ``low_c`` = the channel's
  smallest stored value, ``scale_c = (high_c − low_c) / 255`` (absolute error ≤ ``scale_c / 2``). Vectors
  (biases, BatchNorm parameters and statistics) keep their dtype. This is a storage format only; the
  decoded model computes in float32 (for int8 inference see :mod:`prunekit.export.quantize`).
* ``binary``: for a binarized checkpoint (:mod:`prunekit.binarize`) only. Each binarized weight is stored as
  1 sign bit per kept weight (``1`` = not sign bit, i.e. ``+``; C order over the support) plus one float32
  scale per output channel (``α_c``; 1 for BinaryConnect); a masked weight's support is its mask, stored once
  in ``masks`` (so a pruned + binarized layer costs 1 mask bit per weight + 1 sign bit per kept weight).
  Decoding gives ``scale_c · (±1)``: bitwise equal to the checkpoint's binarized weight (``-0.0`` of an
  all-zero channel included). Every other tensor is stored as in ``fp32`` mode. The fp32 latent weights are
  not kept, so fine-tuning continues from the binarized weights (binarization is idempotent).

The optimizer/``train_state`` of a checkpoint is not kept. :func:`decode` returns the ordinary checkpoint
dict, so :func:`prunekit.checkpoint.load_checkpoint` (and every command) reads a compact file directly.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch import nn

from prunekit.binarize import binarization_spec
from prunekit.checkpoint import FORMAT as CHECKPOINT_FORMAT, VERSION as CHECKPOINT_VERSION
from prunekit.checkpoint import (atomic_save, checkpoint_dict, read_checkpoint_file, register_format,
                                 with_checksum)
from prunekit.errors import PrunekitError

FORMAT = "prunekit-compact"
VERSION = 1
BINARY_VERSION = 2  # files with values "binary"; readers accept both
VALUE_MODES = ("fp32", "fp16", "int8", "binary")
DENSE_BELOW = 64  # elements: smaller tensors stay dense (bits + bookkeeping would cost more than they save)
INT8_LEVELS = 255  # uint8 codes 0..255


def encode(source: nn.Module | dict, values: str = "fp32") -> dict:
    """The compact dict of a model or of an ordinary checkpoint dict (``format == "prunekit"``).

    Does not modify ``source``. A model is described by :func:`prunekit.checkpoint.checkpoint_dict`
    (effective weights, masks, arch); its ``train_state`` is never kept.
    """
    if values not in VALUE_MODES:
        raise PrunekitError(f"unknown value mode {values!r}; use one of {', '.join(VALUE_MODES)}")
    checkpoint = _as_checkpoint_dict(source)
    masks = {name: validate_bool(name, mask) for name, mask in (checkpoint.get("masks") or {}).items()}
    binarized = checkpoint.get("binarized")
    binary = BinaryBlob(binarized_keys(binarized, values))
    tensors = {key: binary.encode(key, t, masks.get(key)) if key in binary.keys else
               encode_tensor(t, "fp32" if values == "binary" else values, masks.get(key))
               for key, t in checkpoint["state_dict"].items()}
    return {
        "format": FORMAT,
        "version": BINARY_VERSION if values == "binary" else VERSION,
        "values": values,
        "arch": checkpoint.get("arch"),
        "meta": dict(checkpoint.get("meta") or {}),
        "masks": {name: {"shape": list(mask.shape), "bits": pack_bits(mask)} for name, mask in masks.items()},
        "tensors": tensors,
        **({"binarized": binarized} if binarized else {}),
        **({"binary": binary.as_dict()} if values == "binary" else {}),
    }


def decode(compact: dict) -> dict:
    """The ordinary checkpoint dict (``format == "prunekit"``) a compact dict stands for.

    ``meta["compact_values"]`` records the value mode, so a lossy (fp16/int8) origin stays visible.
    """
    if not isinstance(compact, dict) or compact.get("format") != FORMAT:
        raise PrunekitError("not a compact prunekit file (format 'prunekit-compact' expected)")
    if compact.get("version") not in (VERSION, BINARY_VERSION):
        raise PrunekitError(f"compact format version {compact.get('version')} is not supported (this prunekit "
                            f"reads versions {VERSION} and {BINARY_VERSION}); upgrade prunekit")
    masks = {name: unpack_bits(entry["bits"], entry["shape"]) for name, entry in compact["masks"].items()}
    state = {key: decode_binary(entry, compact["binary"], masks.get(key)) if "binary" in entry else
             decode_tensor(entry, masks.get(key)) for key, entry in compact["tensors"].items()}
    out = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": compact.get("arch"),
           "state_dict": state, "masks": masks,
           "meta": {**(compact.get("meta") or {}), "compact_values": compact["values"]}, "train_state": None}
    return {**out, "binarized": compact["binarized"]} if compact.get("binarized") else out


def save_compact(source: nn.Module | dict | str | Path, path: str | Path, values: str = "fp32") -> Path:
    """Write the compact file of a model, a checkpoint dict or a checkpoint file to ``path`` (atomic)."""
    return atomic_save(encode(_read_if_path(source), values), path)


def encoded_size(obj: dict) -> int:
    """Bytes ``torch.save`` writes for ``obj`` (the size of the file :func:`save_compact` would write)."""
    buffer = io.BytesIO()
    torch.save(with_checksum(obj), buffer)
    return buffer.tell()


# --- one tensor -----------------------------------------------------------------------------------------


def encode_tensor(tensor: torch.Tensor, values: str, mask: torch.Tensor | None = None) -> dict:
    """One state-dict entry (see the module docstring); ``mask`` (bool, same shape) is the stored support."""
    tensor = tensor.detach().cpu()
    head = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch.")}
    if not tensor.is_floating_point() or tensor.is_quantized or (mask is None and tensor.numel() < DENSE_BELOW):
        return {**head, "dense": tensor.clone()}
    if mask is not None:
        if tuple(mask.shape) != tuple(tensor.shape):
            raise PrunekitError(f"a mask of shape {tuple(mask.shape)} is stored for a tensor of shape "
                                f"{tuple(tensor.shape)}; the checkpoint is inconsistent")
        support, entry = mask, {**head, "support": "mask"}
    else:
        support = tensor != 0
        entry = {**head, "support": "nonzero", "bits": pack_bits(support)}
    return {**entry, **encode_values(tensor, support, values)}


def decode_tensor(entry: dict, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The tensor an :func:`encode_tensor` entry stands for, in its original dtype and shape."""
    if "dense" in entry:
        return entry["dense"]
    shape, dtype = entry["shape"], getattr(torch, entry["dtype"])
    if entry["support"] == "mask":
        if mask is None:
            raise PrunekitError("a tensor is stored on its mask's support but the mask is missing; the file is "
                                "corrupt")
        support = mask
    else:
        support = unpack_bits(entry["bits"], shape)
    out = torch.zeros(shape, dtype=dtype)
    out[support] = decode_values(entry, support).to(dtype)
    return out


def encode_values(tensor: torch.Tensor, support: torch.Tensor, values: str) -> dict:
    """The kept values (``tensor[support]``, flat C order) in the ``values`` mode."""
    kept = tensor[support]
    if values == "fp16":
        return {"values": kept.to(torch.float16)}
    if values == "int8" and tensor.dim() >= 2:
        return affine_codes(kept, _channel_of_each(support))
    return {"values": kept.clone()}


def decode_values(entry: dict, support: torch.Tensor) -> torch.Tensor:
    if "codes" not in entry:
        return entry["values"]
    channel = _channel_of_each(support)
    return entry["low"][channel] + entry["scale"][channel] * entry["codes"].to(torch.float32)


def affine_codes(kept: torch.Tensor, channel: torch.Tensor) -> dict:
    """uint8 codes with a per-channel ``low`` and ``scale`` (float32): ``x ≈ low[c] + scale[c] · q``."""
    kept = kept.to(torch.float32)
    channels = int(channel.max()) + 1 if channel.numel() else 0
    inf = torch.full((channels,), torch.inf)
    low = inf.scatter_reduce(0, channel, kept, "amin")
    high = (-inf).scatter_reduce(0, channel, kept, "amax")
    empty = torch.isinf(low)  # a channel with no stored value
    low, high = torch.where(empty, 0.0, low), torch.where(empty, 0.0, high)
    scale = (high - low) / INT8_LEVELS
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    codes = torch.round((kept - low[channel]) / scale[channel]).clamp_(0, INT8_LEVELS).to(torch.uint8)
    return {"codes": codes, "low": low, "scale": scale}


def _channel_of_each(support: torch.Tensor) -> torch.Tensor:
    """The output channel (dim-0 index) of each True entry of ``support``, in flat order."""
    per_channel = support.reshape(support.shape[0], -1).sum(dim=1)
    return torch.repeat_interleave(torch.arange(support.shape[0]), per_channel)


# --- binarized weights (values "binary") ---------------------------------------------------------------


def binarized_keys(binarized: dict | None, values: str) -> set[str]:
    """The state-dict keys stored as sign bits + scales: every binarized layer's weight in ``binary`` mode."""
    if values != "binary":
        return set()
    if not binarized:
        raise PrunekitError("--values binary stores binarized weights; this checkpoint is not binarized (run "
                            "`prunekit binarize CKPT` first)")
    return {f"{layer}.weight" for layer in binarized.get("layers") or []}


class BinaryBlob:
    """Collects the sign bits and channel scales of every binarized weight into one uint8 and one float32
    tensor (so the file holds two storage records for them, not two per layer)."""

    def __init__(self, keys: set[str]):
        self.keys, self.bits, self.scales = keys, [], []
        self.bit_count = self.scale_count = 0

    def encode(self, key: str, tensor: torch.Tensor, mask: torch.Tensor | None) -> dict:
        tensor = tensor.detach().cpu()
        support = mask if mask is not None else torch.ones(tensor.shape, dtype=torch.bool)
        scales = binary_scales(key, tensor, support)
        bits = pack_bits(~torch.signbit(tensor[support]))
        entry = {"shape": list(tensor.shape), "dtype": str(tensor.dtype).removeprefix("torch."),
                 "support": "mask" if mask is not None else "all",
                 "binary": {"bits": [self.bit_count, self.bit_count + bits.numel()],
                            "scales": [self.scale_count, self.scale_count + scales.numel()]}}
        self.bits.append(bits)
        self.scales.append(scales)
        self.bit_count += bits.numel()
        self.scale_count += scales.numel()
        return entry

    def as_dict(self) -> dict:
        return {"bits": torch.cat(self.bits) if self.bits else torch.zeros(0, dtype=torch.uint8),
                "scales": torch.cat(self.scales) if self.scales else torch.zeros(0)}


def binary_scales(key: str, tensor: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``α_c`` of each output channel: the magnitude every stored entry of channel ``c`` must share."""
    magnitude = torch.where(support, tensor.abs(), 0).reshape(tensor.shape[0], -1)
    alpha = magnitude.max(dim=1).values.to(torch.float32)
    expected = alpha.reshape(-1, *[1] * (tensor.dim() - 1)).expand_as(tensor)
    if not torch.equal(tensor.abs()[support].to(torch.float32), expected[support]):
        raise PrunekitError(f"{key} is not binary (its kept weights are not ±α per output channel); the "
                            "checkpoint's binarization record is inconsistent")
    return alpha


def decode_binary(entry: dict, blob: dict, mask: torch.Tensor | None) -> torch.Tensor:
    """The binarized tensor of a ``binary`` entry: ``scale_c · (±1)`` on its support, ``+0.0`` elsewhere."""
    shape, dtype = entry["shape"], getattr(torch, entry["dtype"])
    if entry["support"] == "mask" and mask is None:
        raise PrunekitError("a binarized tensor is stored on its mask's support but the mask is missing; the file "
                            "is corrupt")
    support = mask if entry["support"] == "mask" else torch.ones(shape, dtype=torch.bool)
    (b0, b1), (s0, s1) = entry["binary"]["bits"], entry["binary"]["scales"]
    count = int(support.sum())
    positive = torch.from_numpy(np.unpackbits(blob["bits"][b0:b1].numpy(), count=count).astype(bool))
    scale = blob["scales"][s0:s1][_channel_of_each(support)]
    out = torch.zeros(shape, dtype=dtype)
    out[support] = (scale * torch.where(positive, 1.0, -1.0)).to(dtype)
    return out


def binary_payload(compact: dict) -> dict[str, dict]:
    """Per binarized weight of a ``binary`` compact dict: ``{"sign_bytes", "mask_bytes", "scale_bytes",
    "payload_bytes", "fp32_bytes"}`` (``fp32_bytes`` = its element count × 4)."""
    rows = {}
    for key, entry in compact["tensors"].items():
        if "binary" not in entry:
            continue
        (b0, b1), (s0, s1) = entry["binary"]["bits"], entry["binary"]["scales"]
        mask = compact["masks"].get(key)
        row = {"sign_bytes": b1 - b0, "mask_bytes": int(mask["bits"].numel()) if mask else 0,
               "scale_bytes": 4 * (s1 - s0), "fp32_bytes": 4 * int(np.prod(entry["shape"]))}
        row["payload_bytes"] = row["sign_bytes"] + row["mask_bytes"] + row["scale_bytes"]
        rows[key] = row
    return rows


def natural_values(raw: dict | nn.Module) -> str:
    """The value mode a file (raw dict) or model is best shipped in: a compact file's own, ``binary`` for a
    binarized checkpoint or model, else ``fp32``."""
    if isinstance(raw, nn.Module):
        return "binary" if binarization_spec(raw) else "fp32"
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return raw.get("values", "fp32")
    return "binary" if isinstance(raw, dict) and raw.get("binarized") else "fp32"


# --- bits ---------------------------------------------------------------------------------------------


def pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """One bit per entry of a bool tensor (flattened, C order, ``numpy.packbits`` big-endian bit order)."""
    return torch.from_numpy(np.packbits(mask.detach().cpu().numpy().reshape(-1)))


def unpack_bits(bits: torch.Tensor, shape: list[int] | tuple[int, ...]) -> torch.Tensor:
    """The bool tensor of ``shape`` that :func:`pack_bits` packed."""
    count = int(np.prod(shape, dtype=np.int64))
    flat = np.unpackbits(bits.numpy(), count=count).astype(bool)
    return torch.from_numpy(flat).reshape(tuple(shape))


def validate_bool(name: str, mask: torch.Tensor) -> torch.Tensor:
    if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
        raise PrunekitError(f"mask for {name!r} must hold only 0 and 1")
    return mask.detach().cpu().bool()


# --- sources ------------------------------------------------------------------------------------------


def _as_checkpoint_dict(source: nn.Module | dict) -> dict:
    if isinstance(source, nn.Module):
        return checkpoint_dict(source) if _describable(source) else _user_model_dict(source)
    if isinstance(source, dict) and source.get("format") == FORMAT:
        return decode(source)
    if isinstance(source, dict) and source.get("format") == CHECKPOINT_FORMAT:
        return source
    fmt = source.get("format") if isinstance(source, dict) else type(source).__name__
    hint = " (an int8 model is already compact; ship it as it is)" if fmt == "prunekit-int8" else ""
    raise PrunekitError(f"cannot make a compact file from {fmt!r}: give a model or a prunekit checkpoint{hint}")


def _describable(model: nn.Module) -> bool:
    """True when ``checkpoint_dict`` can describe the model (a registry model, not a quantized graph)."""
    return not any(t.is_quantized for t in model.state_dict().values() if isinstance(t, torch.Tensor))


def _user_model_dict(model: nn.Module) -> dict:
    # A quantized graph has no float architecture of its own: its tensors are stored as they are.
    state = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "arch": None, "state_dict": state,
            "masks": {}, "meta": {}}


def _read_if_path(source):
    return read_checkpoint_file(source) if isinstance(source, (str, Path)) else source


register_format(FORMAT, lambda raw, path: decode(raw))
