"""Masks as values: which weights of which tensor are kept.

A mask is a bool tensor shaped like the weight it belongs to (True = kept). A masked model keeps its
original parameter (``weight_orig``) and a ``weight_mask`` buffer through ``torch.nn.utils.prune``'s
re-parametrisation, so optimizers stay valid and the effective weight ``weight_orig * weight_mask`` is
exactly zero where pruned, whatever momentum and weight decay do to ``weight_orig``. Masks are keyed by
parameter name, e.g. ``"features.0.weight"``. Making pruning permanent is the explicit step
:func:`make_permanent`.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunekit.errors import PrunekitError

Masks = dict[str, torch.Tensor]


def split_param_name(name: str) -> tuple[str, str]:
    """``"layer1.0.conv1.weight"`` → ``("layer1.0.conv1", "weight")``."""
    module_name, _, param = name.rpartition(".")
    return module_name, param


def is_masked(module: nn.Module, param: str = "weight") -> bool:
    return hasattr(module, f"{param}_mask") and hasattr(module, f"{param}_orig")


def validate_mask(name: str, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Return ``mask`` as a bool tensor; raise if it is not 0/1 or has the wrong shape."""
    if tuple(mask.shape) != tuple(shape):
        raise PrunekitError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise PrunekitError(f"mask for {name!r} must hold only 0 and 1")
        mask = mask.bool()
    return mask


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Mask ``model`` in place: each named weight is re-parametrised as ``orig * mask``.

    Side effects: for every entry, the module's parameter ``<param>`` is replaced by ``<param>_orig``
    (same tensor, so existing values are kept) plus a ``<param>_mask`` buffer and a forward pre-hook.
    A tensor that is already masked gets the product of its old and new mask (masks only shrink).
    The effective weight is recomputed immediately. Returns ``model``.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        module_name, param = split_param_name(name)
        module = modules.get(module_name)
        if module is None or not (hasattr(module, param) or is_masked(module, param)):
            raise PrunekitError(f"mask names {name!r}, which is not a parameter of this model")
        current = getattr(module, param)
        mask = validate_mask(name, mask.to(current.device), current.shape)
        torch_prune.custom_from_mask(module, param, mask.to(current.dtype))
    return model


def extract_masks(model: nn.Module) -> Masks:
    """The bool masks of every masked parameter of ``model``; empty when nothing is masked."""
    masks: Masks = {}
    for module_name, module in model.named_modules():
        for buffer_name, buffer in module.named_buffers(recurse=False):
            if buffer_name.endswith("_mask"):
                param = buffer_name[: -len("_mask")]
                prefix = f"{module_name}." if module_name else ""
                masks[f"{prefix}{param}"] = buffer.detach().bool().cpu().clone()
    return masks


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every masked ``x_orig``/``x_mask`` pair replaced by ``x = orig * mask``.

    The result loads into an unmasked model of the same architecture; pruned entries are exactly zero.
    """
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.endswith("_mask") and key[: -len("_mask")] + "_orig" in state:
            continue
        if key.endswith("_orig") and key[: -len("_orig")] + "_mask" in state:
            base = key[: -len("_orig")]
            out[base] = (value * state[base + "_mask"]).detach().clone()
            continue
        out[key] = value
    return out


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove every mask re-parametrisation in place, keeping the zeros in plain parameters."""
    for module in model.modules():
        for buffer_name in [n for n, _ in module.named_buffers(recurse=False) if n.endswith("_mask")]:
            torch_prune.remove(module, buffer_name[: -len("_mask")])
    return model


def permanent_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every mask made permanent (plain parameters holding the zeros, no
    hooks); ``model`` is not modified. Same device and dtype.

    A masked module's ``weight`` attribute is the product ``orig * mask`` of the last forward, which
    ``copy.deepcopy`` refuses (not a leaf tensor); the copy gets a detached clone, and ``make_permanent``
    then recomputes it from the copied ``weight_orig`` and ``weight_mask``.
    """
    import copy

    memo = {}
    for module in model.modules():
        for name, value in list(vars(module).items()):
            if isinstance(value, torch.Tensor) and is_masked(module, name):
                memo[id(value)] = value.detach().clone()
    return make_permanent(copy.deepcopy(model, memo))


def sparsity_of(masks: Masks) -> float:
    """Fraction of pruned entries over all masked tensors (0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    return 0.0 if total == 0 else sum(int((~m).sum()) for m in masks.values()) / total
