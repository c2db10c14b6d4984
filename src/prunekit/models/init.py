"""Weight initialisation shared by the model families."""

from __future__ import annotations

from torch import nn


def init_conv_bn(model: nn.Module, linear_std: float | None = None) -> None:
    """Kaiming-normal (fan-out) convolutions, BN scale 1 and shift 0; with ``linear_std``, Linear weights
    N(0, std²) and zero biases (otherwise PyTorch's default). Modifies ``model`` in place."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
