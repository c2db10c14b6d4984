"""Helpers every exporter shares: an inference copy of a model, and telling int8 models apart."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.masking import permanent_copy

QUANTIZED_MODULES = ("torch.ao.nn.quantized", "torch.ao.nn.intrinsic.quantized")


def inference_copy(model: nn.Module) -> nn.Module:
    """A CPU, float32, eval-mode copy of ``model`` with its masks made permanent (pruned weights are plain
    zeros, no hooks). ``model`` is not modified."""
    return permanent_copy(model).cpu().float().eval()


def is_quantized(model: nn.Module) -> bool:
    """True for a model holding quantized modules or tensors (e.g. from ``quantize_model``)."""
    if hasattr(model, "prunekit_int8"):
        return True
    if any(type(m).__module__.startswith(QUANTIZED_MODULES) for m in model.modules()):
        return True
    return any(isinstance(t, torch.Tensor) and t.is_quantized for t in model.state_dict().values())
