"""Option-A (parameter-free) ResNet shortcuts that grow channels by zero padding.

Written for prunekit's test fixtures to mimic common CIFAR ResNet code: a ``LambdaLayer`` wrapping
``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``, a ``torch.cat([x,
torch.zeros_like(x)], 1)`` shortcut, asymmetric padding (all new channels at the end), and padding
computed from run-time sizes. No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LambdaLayer(nn.Module):
    def __init__(self, lambd):
        super().__init__()
        self.lambd = lambd

    def forward(self, x):
        return self.lambd(x)


class _Block(nn.Module):
    def __init__(self, in_planes, planes, stride, shortcut):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = shortcut

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += self.shortcut(x)
        out = F.relu(out)
        return out


def lambda_pad_shortcut(in_planes, planes, stride):
    if stride == 1 and in_planes == planes:
        return nn.Sequential()
    return LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0))


class ZerosCat(nn.Module):
    """Subsample by stride, then double the channels with ``torch.zeros_like``."""

    def __init__(self, stride):
        super().__init__()
        self.stride = stride

    def forward(self, x):
        x = x[:, :, :: self.stride, :: self.stride]
        return torch.cat([x, torch.zeros_like(x)], 1)


def zeros_cat_shortcut(in_planes, planes, stride):
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    assert planes == 2 * in_planes
    return ZerosCat(stride)


def asym_pad_shortcut(in_planes, planes, stride):
    if stride == 1 and in_planes == planes:
        return nn.Identity()
    extra = planes - in_planes
    return LambdaLayer(lambda x: F.pad(F.avg_pool2d(x, 1, stride), [0, 0, 0, 0, 0, extra]))


class CifarResNetA(nn.Module):
    """ResNet-8/14-style CIFAR net (16-32-64) with a configurable parameter-free shortcut."""

    def __init__(self, shortcut_fn, num_blocks=(1, 1, 1), num_classes=10):
        super().__init__()
        self.in_planes = 16
        self.conv1 = nn.Conv2d(3, 16, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        layers = []
        for planes, n, stride in zip((16, 32, 64), num_blocks, (1, 2, 2)):
            for s in [stride] + [1] * (n - 1):
                layers.append(_Block(self.in_planes, planes, s, shortcut_fn(self.in_planes, planes, s)))
                self.in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(64, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, out.size()[3])
        out = out.view(out.size(0), -1)
        return self.linear(out)


def resnet_lambda_pad():
    return CifarResNetA(lambda_pad_shortcut, num_blocks=(2, 2, 2))


def resnet_zeros_like_cat():
    return CifarResNetA(zeros_cat_shortcut)


def resnet_pad_asymmetric():
    return CifarResNetA(asym_pad_shortcut)


class PyramidBlock(nn.Module):
    """Pre-activation block whose width grows a little each time; shortcut pads by run-time difference."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.stride = stride

    def forward(self, x):
        out = self.conv1(self.bn0(x))
        out = self.conv2(F.relu(self.bn1(out)))
        out = self.bn2(out)
        shortcut = x if self.stride == 1 else F.avg_pool2d(x, 2)
        missing = out.size(1) - shortcut.size(1)
        if missing > 0:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, missing))
        return out + shortcut


class TinyPyramidNet(nn.Module):
    def __init__(self, start=16, alpha=48, n=4):
        super().__init__()
        self.conv = nn.Conv2d(3, start, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(start)
        blocks, c = [], start
        for i in range(n):
            nxt = int(round(start + alpha * (i + 1) / n))
            blocks.append(PyramidBlock(c, nxt, 2 if i in (1, 3) else 1))
            c = nxt
        self.blocks = nn.Sequential(*blocks)
        self.bn_final = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.blocks(self.bn(self.conv(x)))
        x = F.relu(self.bn_final(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
