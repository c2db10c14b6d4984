"""What sweeps and sensitivity analyses share: prune a fresh copy, evaluate it, describe the point.

No retraining happens anywhere here: each point is the loaded model, deep-copied, masked by
:func:`prunekit.prune.compute_masks` and evaluated as is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prunekit.config import PruneConfig
from prunekit.data import DataBundle
from prunekit.errors import PrunekitError
from prunekit.masking import permanent_copy
from prunekit.measure import count_nonzero_parameters, count_parameters
from prunekit.prune import apply_masks, compute_masks, sparsity_report

BYTES_PER_WEIGHT = 4  # 32-bit floats: the memory footprint of the non-zero parameters


@dataclass
class Evaluator:
    """Evaluates a model on one split of ``data`` with a fixed normalisation, on ``device``."""

    data: DataBundle
    mean: tuple
    std: tuple
    device: torch.device
    split: str = "test"

    def __call__(self, model: nn.Module):
        from prunekit.evaluation import evaluate_split

        return evaluate_split(model, self.data, self.split, self.mean, self.std, self.device)

    def example_inputs(self) -> torch.Tensor:
        """One zero image of the data's shape on the device (for tracing coupled channels)."""
        return torch.zeros(1, *self.data.test[0].shape[1:], device=self.device)

    def describe(self) -> dict:
        images = getattr(self.data, self.split)
        return {"dataset": self.data.info.name, "synthetic": self.data.synthetic, "split": self.split,
                "images": len(images[1]) if images is not None else 0, "mean": list(self.mean),
                "std": list(self.std)}


def pruned_copy(model: nn.Module, config: PruneConfig, example_inputs: torch.Tensor) -> nn.Module:
    """A deep copy of ``model`` with ``compute_masks(config)`` applied; ``model`` itself is untouched. An
    already masked model is copied with its masks made permanent: its zeros score lowest and stay pruned."""
    pruned = permanent_copy(model)
    apply_masks(pruned, compute_masks(pruned, config, example_inputs=example_inputs))
    return pruned


def point_record(model: nn.Module, evaluate: Evaluator) -> dict:
    """Accuracy, achieved sparsity and non-zero parameters (count and 32-bit bytes) of ``model``."""
    metrics = evaluate(model)
    nonzero = count_nonzero_parameters(model)
    return {"sparsity": sparsity_report(model)["overall"], "params": count_parameters(model),
            "nonzero_params": nonzero, "nonzero_bytes": BYTES_PER_WEIGHT * nonzero,
            "top1": metrics.top1, "top5": metrics.top5, "loss": metrics.loss}


def weight_counts(model: nn.Module) -> tuple[int, int]:
    """``(weights, non-zero weights)`` of the conv + linear layers (masks applied): the quantity behind
    "weight sparsity" everywhere in prunekit (biases and BN parameters are not counted)."""
    report = sparsity_report(model)
    return report["params"], report["params"] - report["zeros"]


def dense_weights(model: nn.Module, meta: dict) -> int:
    """The conv + linear weights of the dense model ``model`` was pruned from: ``meta["dense_weights"]`` when the
    checkpoint records it (every pruning command does), else ``model``'s own count, which is right only while no
    filter was physically removed; a physically pruned checkpoint without the record raises a one-line error."""
    if meta.get("dense_weights"):
        return int(meta["dense_weights"])
    if meta.get("filter_sparsity") or meta.get("prune_channels"):
        raise PrunekitError("this physically pruned checkpoint does not record its dense model's weight count "
                            "(written by an older prunekit); prune it again to plot its weight sparsity")
    return weight_counts(model)[0]


def accuracy_point(label: str, model: nn.Module, meta: dict, dense: int, source: str) -> dict:
    """One point of the accuracy-sparsity figure: the meta's test accuracy against weight sparsity,
    1 − non-zero conv + linear weights / ``dense`` (the dense model's conv + linear weights), so masked zeros
    and physically removed filters count alike."""
    return {"label": label, "sparsity": 1.0 - weight_counts(model)[1] / dense, "top1": meta.get("test_top1"),
            "top5": meta.get("test_top5"), "source": source}


def rate_key(rate: float) -> float:
    """Rates as keys: rounded so a value read back from CSV matches the one computed."""
    return round(float(rate), 6)
