"""The original CIFAR ResNets (He et al. 2016) with option-A shortcuts.

Module names match akamaster/pytorch_resnet_cifar10, so its public checkpoints
load with ``strict=True`` once the ``module.`` prefix is stripped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.registry import register_model


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride``, then pick or zero each output channel.

    ``source_index[j]`` is the input channel copied into output channel j, or -1
    for an all-zero channel. The default pads ``(out - in) // 2`` zero channels
    before the input and the rest after, exactly akamaster's
    ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``.
    The index is a non-persistent buffer: state dicts stay identical to
    akamaster's, and channel surgery edits it through ``channel_config``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, source_index: list[int] | None = None):
        super().__init__()
        if source_index is None:
            source_index = _default_source_index(in_channels, out_channels)
        source_index = [int(i) for i in source_index]
        _check_source_index(in_channels, out_channels, stride, source_index)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.source_index = source_index
        # The zero channel is appended at position in_channels, so -1 maps there.
        gather = [in_channels if i < 0 else i for i in source_index]
        self.register_buffer("gather_index", torch.tensor(gather, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        x = torch.cat([x, torch.zeros_like(x[:, :1])], 1)
        return x.index_select(1, self.gather_index)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _default_source_index(in_channels: int, out_channels: int) -> list[int]:
    if out_channels < in_channels:
        raise PrunekitError(
            f"ZeroPadShortcut({in_channels}, {out_channels}) cannot zero-pad to fewer channels; "
            "pass source_index to choose which input channels to keep"
        )
    before = (out_channels - in_channels) // 2
    after = out_channels - in_channels - before
    return [-1] * before + list(range(in_channels)) + [-1] * after


def _check_source_index(in_channels: int, out_channels: int, stride: int, source_index: list[int]) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise PrunekitError(f"ZeroPadShortcut stride must be a positive int, got {stride!r}")
    if len(source_index) != out_channels:
        raise PrunekitError(
            f"ZeroPadShortcut source_index has {len(source_index)} entries but out_channels is {out_channels}; "
            "give one entry per output channel"
        )
    bad = [i for i in source_index if not -1 <= i < in_channels]
    if bad:
        raise PrunekitError(
            f"ZeroPadShortcut source_index entries {bad} are outside [-1, {in_channels - 1}] "
            f"for in_channels={in_channels}"
        )


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
