"""prunekit: prune CIFAR convolutional networks and prove it with measured numbers.

The public API (imported lazily, so ``import prunekit`` and ``prunekit --help`` stay fast)::

    create_model, list_models          the model zoo (models/)
    get_data                           CIFAR-10/100 and synthetic data (data/)
    fit, evaluate_split                training (train/) and evaluation (evaluation.py)
    profile                            params, MACs, size, memory, latency (measure/)
    save_checkpoint, load_checkpoint    checkpoints (checkpoint.py)
    load_weights                       state dicts of other code bases (foreign.py)
    prune_unstructured, plan_channels, prune_channels   pruning (prune/)
    binarize_model                     1-bit weights with a straight-through estimator (binarize.py)
    accelerate                         sparse kernels where they measured faster, per layer (runtime/)
    prepare_for_inference              the model as the eager runtime times it: traced, BN folded (inference.py)
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "create_model": "prunekit.models",
    "list_models": "prunekit.models",
    "get_data": "prunekit.data",
    "fit": "prunekit.train",
    "evaluate_split": "prunekit.evaluation",
    "profile": "prunekit.measure",
    "save_checkpoint": "prunekit.checkpoint",
    "load_checkpoint": "prunekit.checkpoint",
    "load_weights": "prunekit.foreign",
    "prune_unstructured": "prunekit.prune",
    "prune_channels": "prunekit.prune",
    "plan_channels": "prunekit.prune",
    "make_permanent": "prunekit.masking",
    "binarize_model": "prunekit.binarize",
    "accelerate": "prunekit.runtime.sparse",
    "prepare_for_inference": "prunekit.inference",
    "PrunekitError": "prunekit.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'prunekit' has no attribute {name!r}")
