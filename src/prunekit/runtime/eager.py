"""The eager PyTorch runtime: the model itself, in eval mode."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.runtime import Runtime, register_runtime


def prepare_eager(model: nn.Module, example_input: torch.Tensor, device: str = "cpu",
                  threads: int | None = None) -> nn.Module:
    """``model`` on ``device`` in eval mode (side effect: moves ``model``; no copy is made)."""
    return model.to(device).eval()


EAGER = register_runtime(Runtime("eager", "PyTorch eager mode", prepare_eager))
