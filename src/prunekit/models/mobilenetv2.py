"""CIFAR MobileNetV2 of kuangliu/pytorch-cifar (stride-1 stem and second stage; names kept)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.models.registry import register_model

# (expansion, out_planes, num_blocks, stride) per stage.
CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


class Block(nn.Module):
    """Inverted residual: 1x1 expand -> 3x3 depthwise -> 1x1 project, plus a shortcut when stride is 1.

    ``shortcut`` is an identity, a 1x1 conv + BN (channel change), or None for
    stride 2 (no residual); the choice is fixed here, never made on tensor values.
    """

    def __init__(self, in_planes: int, out_planes: int, expansion: int, stride: int):
        super().__init__()
        planes = expansion * in_planes
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, groups=planes, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes) if stride == 1 else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is not None:
            out = out + self.shortcut(x)
        return out


def _shortcut(in_planes: int, out_planes: int) -> nn.Module:
    if in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, bias=False), nn.BatchNorm2d(out_planes))


class MobileNetV2(nn.Module):
    """conv1-bn1-relu -> ``layers`` (17 Blocks) -> conv2 1x1 to 1280 -> bn2-relu -> pool -> ``linear``."""

    classifier_name = "linear"

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        self.layers = _make_layers(32)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(1280)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(F.relu(self.bn1(self.conv1(x))))
        out = self.avgpool(F.relu(self.bn2(self.conv2(out))))
        return self.linear(torch.flatten(out, 1))


def _make_layers(in_planes: int) -> nn.Sequential:
    blocks = []
    for expansion, out_planes, num_blocks, stride in CFG:
        for i in range(num_blocks):
            blocks.append(Block(in_planes, out_planes, expansion, stride if i == 0 else 1))
            in_planes = out_planes
    return nn.Sequential(*blocks)


@register_model
def mobilenetv2(num_classes: int = 10) -> MobileNetV2:
    """MobileNetV2, kuangliu/pytorch-cifar variant for 32x32 inputs."""
    return MobileNetV2(num_classes)
