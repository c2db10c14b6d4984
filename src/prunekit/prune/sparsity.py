"""Sparsity reports: how many weights of each prunable layer are exactly zero.

Works on any nn.Module, masked or not; it reads the weights the forward pass uses (``orig * mask`` for
a masked tensor), so a report is right even between an optimizer step and the next forward.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.masking import effective_weight, is_masked  # noqa: F401  (effective_weight re-exported)
from prunekit.models.layers import classifier_name, prunable_layers


def find_classifier(model: nn.Module) -> str | None:
    """``classifier_name(model)``, or None for a model with no declared classifier and no nn.Linear."""
    try:
        return classifier_name(model)
    except PrunekitError:
        if isinstance(getattr(model, "classifier_name", None), str):
            raise  # a declared but wrong name is a bug to report, not a missing classifier
        return None


def layer_row(name: str, module: nn.Module, classifier: str | None) -> dict:
    weight = effective_weight(module).detach()
    zeros = int((weight == 0).sum())
    return {"name": name, "type": type(module).__name__, "shape": list(weight.shape), "params": weight.numel(),
            "zeros": zeros, "sparsity": zeros / weight.numel(), "masked": is_masked(module),
            "classifier": name == classifier}


def sparsity_report(model: nn.Module) -> dict:
    """Zeros / total of the weight of every prunable layer (Conv2d, Linear), and overall.

    Returns ``{"layers": [{name, type, shape, params, zeros, sparsity, masked, classifier}], "params",
    "zeros", "overall", "overall_without_classifier"}``; ``overall`` counts every prunable weight tensor,
    the classifier included. Biases and BN parameters are not counted. Does not modify the model.
    """
    classifier = find_classifier(model)
    rows = [layer_row(name, module, classifier) for name, module in prunable_layers(model).items()]
    body = [r for r in rows if not r["classifier"]]
    return {"layers": rows, "params": sum(r["params"] for r in rows), "zeros": sum(r["zeros"] for r in rows),
            "overall": _fraction(rows), "overall_without_classifier": _fraction(body)}


def _fraction(rows: list[dict]) -> float:
    total = sum(r["params"] for r in rows)
    return sum(r["zeros"] for r in rows) / total if total else 0.0


def layer_mask_matrix(model: nn.Module, layer: str) -> torch.Tensor:
    """The kept (True) / pruned (False) pattern of ``layer``'s weight as a 2-D bool tensor on the CPU.

    One row per output channel (filter), ``in × kh × kw`` columns. Uses the layer's mask when it is
    masked, else the non-zero pattern of its weight. An unknown name raises, listing the valid ones.
    """
    layers = prunable_layers(model)
    if layer not in layers:
        close = difflib.get_close_matches(layer, list(layers), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise PrunekitError(f"no prunable layer {layer!r}.{hint} Valid layers: {', '.join(layers)}")
    module = layers[layer]
    kept = module.weight_mask.bool() if is_masked(module) else effective_weight(module) != 0
    return kept.detach().cpu().reshape(kept.shape[0], -1)


SHORTFALL_TOLERANCE = 0.01  # per-layer rounding alone moves a filter target by less than this on CIFAR nets


def filter_target_shortfall(asked: float | None, achieved: float | None) -> str | None:
    """A one-line warning when filter pruning reached clearly less than ``asked`` (fractions of filters),
    with the reason; None when it reached the target (within :data:`SHORTFALL_TOLERANCE`) or none was set."""
    if asked is None or achieved is None or achieved >= asked - SHORTFALL_TOLERANCE:
        return None
    return (f"warning: asked for filter sparsity {asked:.4f}, achieved {achieved:.4f}: the allocation stops short "
            "because every channel group keeps at least one channel (no layer may lose all its filters) and "
            "coupled channels (residual streams, concatenations) are removed only together")
