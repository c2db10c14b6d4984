"""DenseNet-40 for CIFAR as used by network slimming (Liu et al. 2017): no bottleneck, compression 1."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.init import init_conv_bn
from prunekit.models.registry import register_model


class BasicLayer(nn.Module):
    """BN -> ReLU -> Conv3x3 (growth_rate channels); output is ``cat([x, new], 1)``."""

    def __init__(self, in_channels: int, growth_rate: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, growth_rate, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv1(F.relu(self.bn1(x)))], 1)


class Transition(nn.Module):
    """BN -> ReLU -> Conv1x1 (channel count kept) -> AvgPool2d(2)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pool = nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.conv1(F.relu(self.bn1(x))))


class DenseNet(nn.Module):
    """conv1 -> dense1 -> trans1 -> dense2 -> trans2 -> dense3 -> bn -> relu -> pool -> ``fc``."""

    classifier_name = "fc"

    def __init__(self, depth: int = 40, growth_rate: int = 12, num_classes: int = 10):
        super().__init__()
        if depth < 7 or (depth - 4) % 3 or growth_rate < 1:
            raise PrunekitError(
                f"DenseNet depth must be 3n+4 with n >= 1 (e.g. 40) and growth_rate >= 1, got {depth}, {growth_rate}"
            )
        n = (depth - 4) // 3
        channels = 2 * growth_rate
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        self.dense1, channels = _make_block(channels, growth_rate, n)
        self.trans1 = Transition(channels, channels)
        self.dense2, channels = _make_block(channels, growth_rate, n)
        self.trans2 = Transition(channels, channels)
        self.dense3, channels = _make_block(channels, growth_rate, n)
        self.bn = nn.BatchNorm2d(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_conv_bn(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trans1(self.dense1(self.conv1(x)))
        out = self.dense3(self.trans2(self.dense2(out)))
        out = self.pool(F.relu(self.bn(out)))
        return self.fc(torch.flatten(out, 1))


def _make_block(in_channels: int, growth_rate: int, layers: int) -> tuple[nn.Sequential, int]:
    block = nn.Sequential(*(BasicLayer(in_channels + i * growth_rate, growth_rate) for i in range(layers)))
    return block, in_channels + layers * growth_rate


@register_model
def densenet40(num_classes: int = 10, depth: int = 40, growth_rate: int = 12) -> DenseNet:
    """DenseNet-40 (growth 12, no bottleneck, compression 1), network-slimming CIFAR variant."""
    return DenseNet(depth, growth_rate, num_classes)
