"""Evaluation: top-1/top-5 accuracy and loss of a model on a loader or on a data split.

Its own module, outside :mod:`prunekit.train`, so that analysis and reports measure accuracy without importing
the training loop; the loop imports it for its per-epoch validation.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.checkpoint import TEST_META_KEYS
from prunekit.data import DataBundle, DeviceLoader


def autocast_for(device: torch.device):
    """bf16 autocast on CUDA, nothing elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


@dataclass
class Metrics:
    top1: float  # percent
    top5: float  # percent
    loss: float
    images: int
    predicted: list[int] | None = None  # images predicted as each class (top-1), not part of as_dict

    def as_dict(self, prefix: str = "") -> dict:
        """The four numbers (``top1``, ``top5``, ``loss``, ``images``) under ``prefix``: one metrics row."""
        return {f"{prefix}{k}": v for k, v in asdict(self).items() if k != "predicted"}

    def as_test_meta(self) -> dict:
        """This test-split evaluation as checkpoint meta: ``{key: value}`` for the :data:`TEST_META_KEYS`."""
        return dict(zip(TEST_META_KEYS, (self.top1, self.top5, self.loss, self.images)))


@torch.inference_mode()
def evaluate(model: nn.Module, loader: DeviceLoader, device: torch.device | None = None) -> Metrics:
    """Top-1/top-5 accuracy (percent) and mean cross-entropy over the whole loader. Puts ``model`` in eval mode."""
    device = device or next(model.parameters()).device
    model.eval()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    top1 = torch.zeros((), device=device, dtype=torch.int64)
    top5 = torch.zeros((), device=device, dtype=torch.int64)
    predicted = None
    images = 0
    for x, y in loader:
        with autocast_for(device):
            logits = model(x)
        logits = logits.float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
        k = min(5, logits.shape[1])
        ranked = logits.topk(k, dim=1).indices
        hits = ranked == y[:, None]
        top1 += hits[:, 0].sum()
        top5 += hits.any(dim=1).sum()
        counts = torch.bincount(ranked[:, 0], minlength=logits.shape[1])
        predicted = counts if predicted is None else predicted + counts
        images += y.numel()
    if images == 0:
        return Metrics(float("nan"), float("nan"), float("nan"), 0)
    return Metrics(100.0 * top1.item() / images, 100.0 * top5.item() / images, loss_sum.item() / images, images,
                   predicted.tolist())


def evaluate_split(model: nn.Module, data: DataBundle, split: str = "test", mean=None, std=None,
                   device: torch.device | str = "cpu", batch_size: int = 500) -> Metrics:
    """Evaluate on ``data``'s ``split`` (train/val/test), normalised with ``mean``/``std`` (default: the
    dataset's). Side effect: moves ``model`` to ``device``."""
    from prunekit.errors import PrunekitError

    images = getattr(data, split)
    if images is None:
        raise PrunekitError(f"the data has no {split!r} split; use --val-split F to hold out a validation set")
    device = torch.device(device)
    loader = DeviceLoader(*images, batch_size, mean=mean or data.info.mean, std=std or data.info.std,
                          train=False, device=device, channels_last=device.type == "cuda")
    return evaluate(model.to(device), loader, device)
