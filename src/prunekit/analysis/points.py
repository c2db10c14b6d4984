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
        from prunekit.train import evaluate_split

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


def rate_key(rate: float) -> float:
    """Rates as keys: rounded so a value read back from CSV matches the one computed."""
    return round(float(rate), 6)
