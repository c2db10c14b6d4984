"""Pruning: scores, allocation and masks; it never imports the training loop.

``compute_masks`` dispatches a :class:`prunekit.config.PruneConfig` to its granularity's method object
(:mod:`prunekit.prune.granularity`): ``unstructured`` (magnitude, :mod:`prunekit.prune.unstructured`) or
``filter`` (whole conv filters, :mod:`prunekit.prune.channels`, imported on first use). How much goes where
is :mod:`prunekit.prune.allocate`'s.
"""

from __future__ import annotations

import importlib

from torch import nn

from prunekit.prune.mask import Masks, apply_masks, extract_masks, make_permanent, sparsity_of
from prunekit.prune.sparsity import sparsity_report
from prunekit.prune.unstructured import prune_unstructured, unstructured_masks

_CHANNEL_EXPORTS = ("plan_channels", "prune_channels", "filter_masks", "filter_sparsity", "shrink")

__all__ = ["Masks", "apply_masks", "compute_masks", "extract_masks", "make_permanent", "prune_unstructured",
           "sparsity_of", "sparsity_report", "unstructured_masks", *_CHANNEL_EXPORTS]


def compute_masks(model: nn.Module, config, progress: float = 1.0, example_inputs=None, batches=None) -> Masks:
    """The masks ``config`` asks for at ``progress`` ∈ (0, 1] of its target; does not modify ``model``.

    ``example_inputs`` (a batch the model accepts) is needed by filter pruning to trace coupled channels;
    ``batches`` (labelled ``(inputs, labels)`` pairs) by data-driven criteria such as ``taylor``.
    """
    from prunekit.prune.granularity import get_granularity

    return get_granularity(config.granularity).masks(model, config, progress, example_inputs, batches)


def __getattr__(name: str):
    if name in _CHANNEL_EXPORTS:
        return getattr(importlib.import_module("prunekit.prune.channels"), name)
    raise AttributeError(f"module 'prunekit.prune' has no attribute {name!r}")
