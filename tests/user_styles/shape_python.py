"""Models whose ``forward`` does Python arithmetic and branching on tensor sizes.

Written for prunekit's test fixtures to mimic common styles: ``int(x.size(1) * 0.5)``,
``if x.size(2) != y.size(2)``, ``x.view(x.size(0), -1)``, ``F.avg_pool2d(out, out.size(3))``,
``out.shape[-1]``, and a network-slimming style ``ChannelSelection`` layer that indexes channels
with a numpy ``argwhere`` over an ``indexes`` parameter. No third-party code copied.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(cin, cout, stride=1):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class HalfMixNet(nn.Module):
    """Half the channels (``int(x.size(1) * 0.5)``) go through an extra conv, the rest pass."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 32)
        self.mix = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.down = conv_bn(32, 64, stride=2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        half = int(x.size(1) * 0.5)
        x = torch.cat([self.mix(x[:, :half]), x[:, half:]], dim=1)
        x = self.down(x)
        x = F.avg_pool2d(x, x.size(3))
        return self.fc(x.view(x.size(0), -1))


class SizeCheckBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.proj = nn.Conv2d(cin, cout, 1, bias=False) if cin != cout else None

    def forward(self, x):
        y = self.body(x)
        if x.size(2) != y.size(2):
            x = F.avg_pool2d(x, kernel_size=x.size(2) // y.size(2))
        if x.size(1) != y.size(1):
            x = self.proj(x)
        return F.relu(x + y)


class SizeCheckResNet(nn.Module):
    """Residual net that decides the shortcut at run time from ``x.size(...)`` comparisons."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.blocks = nn.Sequential(
            SizeCheckBlock(16, 16, 1),
            SizeCheckBlock(16, 32, 2),
            SizeCheckBlock(32, 64, 2),
        )
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        out = self.blocks(self.stem(x))
        out = F.avg_pool2d(out, out.size(3))
        out = out.view(out.size(0), -1)
        return self.fc(out)


class ShapeIndexNet(nn.Module):
    """Uses ``out.shape[-1]``, ``out.shape[2:]`` and ``x.size()`` unpacking in forward."""

    def __init__(self):
        super().__init__()
        self.f1 = conv_bn(3, 24)
        self.f2 = conv_bn(24, 48, 2)
        self.f3 = conv_bn(48, 48, 2)
        self.out = nn.Linear(48, 10)

    def forward(self, x):
        n, c, h, w = x.size()
        assert (h, w) == (32, 32), "CIFAR input expected"
        out = self.f3(self.f2(self.f1(x)))
        out = F.avg_pool2d(out, kernel_size=out.shape[2:])
        out = out.reshape(n, out.shape[1])
        return self.out(out)


class DynamicWidthHead(nn.Module):
    """Head averages over ``out.shape[-1]`` and reads ``x.shape[1]`` to split two pooling flavours."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(conv_bn(3, 16), nn.MaxPool2d(2), conv_bn(16, 32), nn.MaxPool2d(2), conv_bn(32, 32))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        out = self.features(x)
        c = out.shape[1]
        k = c // 2
        avg = F.avg_pool2d(out[:, :k], out.shape[-1])
        mx = F.max_pool2d(out[:, k:], out.shape[-1])
        out = torch.cat((avg, mx), 1).flatten(1)
        return self.fc(out)


class ChannelSelection(nn.Module):
    """Keep the channels whose ``indexes`` entry is non-zero (network-slimming style)."""

    def __init__(self, num_channels):
        super().__init__()
        self.indexes = nn.Parameter(torch.ones(num_channels))

    def forward(self, input_tensor):
        selected_index = np.squeeze(np.argwhere(self.indexes.data.cpu().numpy()))
        if selected_index.size == 1:
            selected_index = np.resize(selected_index, (1,))
        output = input_tensor[:, selected_index, :, :]
        return output


class PreActSelectBlock(nn.Module):
    """Pre-activation bottleneck-free block: BN -> select -> ReLU -> conv, twice."""

    def __init__(self, inplanes, planes, cfg=None, stride=1, downsample=None):
        super().__init__()
        cfg = cfg or [inplanes, planes]
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.select = ChannelSelection(inplanes)
        self.conv1 = nn.Conv2d(cfg[0], cfg[1], 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cfg[1])
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cfg[1], planes, 3, padding=1, bias=False)
        self.downsample = downsample

    def forward(self, x):
        residual = x
        out = self.bn1(x)
        out = self.select(out)
        out = self.relu(out)
        out = self.conv1(out)
        out = self.bn2(out)
        out = self.relu(out)
        out = self.conv2(out)
        if self.downsample is not None:
            residual = self.downsample(x)
        out += residual
        return out


class SlimPreResNet(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.layer1 = PreActSelectBlock(16, 16)
        self.layer2 = PreActSelectBlock(16, 32, stride=2, downsample=nn.Conv2d(16, 32, 1, stride=2, bias=False))
        self.layer3 = PreActSelectBlock(32, 64, stride=2, downsample=nn.Conv2d(32, 64, 1, stride=2, bias=False))
        self.bn = nn.BatchNorm2d(64)
        self.select = ChannelSelection(64)
        self.relu = nn.ReLU(inplace=True)
        self.avgpool = nn.AvgPool2d(8)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.conv1(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        x = self.bn(x)
        x = self.select(x)
        x = self.relu(x)
        x = self.avgpool(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)
