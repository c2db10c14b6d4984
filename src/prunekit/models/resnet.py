"""The original CIFAR ResNets (He et al. 2016) with option-A shortcuts.

Module names match akamaster/pytorch_resnet_cifar10, so its public checkpoints
load with ``strict=True`` once the ``module.`` prefix is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.layers import ZeroPadShortcut  # noqa: F401  (re-exported: it lived here)
from prunekit.models.registry import register_model


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); option-A shortcut when the shape changes."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        if stride != 1 or in_planes != planes:
            self.shortcut = ZeroPadShortcut(in_planes, planes, stride)
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """conv1-bn1-relu -> layer1/2/3 (widths 16/32/64, (depth-2)/6 blocks each) -> pool -> ``linear``."""

    classifier_name = "linear"

    def __init__(self, depth: int, num_classes: int = 10):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise PrunekitError(f"CIFAR ResNet depth must be 6n+2 with n >= 1 (20, 32, 44, 56, 110), got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = _make_stage(16, 16, blocks, stride=1)
        self.layer2 = _make_stage(16, 32, blocks, stride=2)
        self.layer3 = _make_stage(32, 64, blocks, stride=2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(torch.flatten(self.pool(out), 1))


def _make_stage(in_planes: int, planes: int, blocks: int, stride: int) -> nn.Sequential:
    layers = [BasicBlock(in_planes, planes, stride)]
    layers += [BasicBlock(planes, planes, 1) for _ in range(blocks - 1)]
    return nn.Sequential(*layers)


@register_model
def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for CIFAR, option-A shortcuts (269,722 params for 10 classes)."""
    return CifarResNet(20, num_classes)


@register_model
def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for CIFAR, option-A shortcuts."""
    return CifarResNet(32, num_classes)


@register_model
def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 for CIFAR, option-A shortcuts."""
    return CifarResNet(44, num_classes)


@register_model
def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for CIFAR, option-A shortcuts (853,018 params for 10 classes)."""
    return CifarResNet(56, num_classes)


@register_model
def resnet110(num_classes: int = 10) -> CifarResNet:
    """ResNet-110 for CIFAR, option-A shortcuts."""
    return CifarResNet(110, num_classes)
