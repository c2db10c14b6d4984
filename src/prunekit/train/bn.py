"""BatchNorm recalibration: re-estimate running statistics after the network changed (e.g. was pruned)."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


def recalibrate_bn(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> int:
    """Replace every BatchNorm's ``running_mean``/``running_var`` by the exact average of the batch statistics
    of ``batches`` (forwarded in train mode without gradients; cumulative averaging, ``momentum=None``).

    Side effects: only the running statistics (and ``num_batches_tracked``) of BN layers change; parameters,
    other buffers and every module's momentum are as before; ``model`` is left in eval mode. Returns the
    number of batches used (0 leaves the model untouched).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    batches = list(batches)
    if not norms or not batches:
        return 0
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
    model.train()
    try:
        with torch.no_grad():
            for x, _ in batches:
                model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return len(batches)
