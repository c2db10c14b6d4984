"""Channel splits feeding ``cat`` or ``add``: ShuffleNetV2-like split, DPN dual path, CSP, uneven splits.

Written for prunekit's test fixtures to mimic the ways CIFAR code cuts the channel axis:
``torch.split``, ``chunk``, ``x[:, :c]`` / ``x[:, c:]`` slices that are concatenated back, added to
a residual, or multiplied (GLU). No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def cbr(i, o, k=1, s=1, g=1, act=True):
    layers = [nn.Conv2d(i, o, k, s, k // 2, groups=g, bias=False), nn.BatchNorm2d(o)]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- ShuffleNetV2-like, no shuffle
class SplitUnit(nn.Module):
    """Stride-1: ``torch.split`` in halves, right half goes pw -> dw -> pw, then ``cat`` back."""

    def __init__(self, ch):
        super().__init__()
        half = ch // 2
        self.half = half
        self.branch = nn.Sequential(cbr(half, half), cbr(half, half, 3, g=half, act=False), cbr(half, half))

    def forward(self, x):
        left, right = torch.split(x, self.half, dim=1)
        return torch.cat((left, self.branch(right)), dim=1)


class SplitDownUnit(nn.Module):
    """Stride-2: both branches see the full input, outputs concatenated."""

    def __init__(self, cin, cout):
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(cbr(cin, cin, 3, 2, g=cin, act=False), cbr(cin, mid))
        self.right = nn.Sequential(cbr(cin, mid), cbr(mid, mid, 3, 2, g=mid, act=False), cbr(mid, mid))

    def forward(self, x):
        return torch.cat([self.left(x), self.right(x)], 1)


class SplitNetV2(nn.Module):
    def __init__(self, widths=(48, 96, 192)):
        super().__init__()
        self.stem = cbr(3, 24, 3)
        units, c = [], 24
        for w in widths:
            units += [SplitDownUnit(c, w), SplitUnit(w)]
            c = w
        self.units = nn.Sequential(*units)
        self.last = cbr(c, 256)
        self.fc = nn.Linear(256, 10)

    def forward(self, x):
        x = self.last(self.units(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------- DPN-like dual path
class DualPathBlock(nn.Module):
    """First ``res_ch`` output channels are added to the residual path, the rest are concatenated."""

    def __init__(self, cin, mid, res_ch, inc, stride, first):
        super().__init__()
        self.res_ch = res_ch
        self.c1 = nn.Conv2d(cin, mid, 1, bias=False)
        self.b1 = nn.BatchNorm2d(mid)
        self.c2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=4, bias=False)
        self.b2 = nn.BatchNorm2d(mid)
        self.c3 = nn.Conv2d(mid, res_ch + inc, 1, bias=False)
        self.b3 = nn.BatchNorm2d(res_ch + inc)
        self.sc = None
        if first:
            self.sc = nn.Sequential(nn.Conv2d(cin, res_ch + inc, 1, stride, bias=False), nn.BatchNorm2d(res_ch + inc))

    def forward(self, x):
        out = F.relu(self.b1(self.c1(x)))
        out = F.relu(self.b2(self.c2(out)))
        out = self.b3(self.c3(out))
        x = x if self.sc is None else self.sc(x)
        d = self.res_ch
        residual = x[:, :d] + out[:, :d]
        dense = torch.cat([x[:, d:], out[:, d:]], 1)
        return F.relu(torch.cat([residual, dense], 1))


class TinyDPN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        cfg = [  # (mid, res_ch, inc, blocks, stride)
            (32, 32, 8, 2, 1),
            (64, 64, 16, 2, 2),
        ]
        layers, cin = [], 32
        for mid, res_ch, inc, n, stride in cfg:
            for i in range(n):
                layers.append(DualPathBlock(cin, mid, res_ch, inc, stride if i == 0 else 1, first=i == 0))
                cin = res_ch + inc * (i + 2)
            cin = res_ch + inc * (n + 1)
        self.layers = nn.Sequential(*layers)
        self.linear = nn.Linear(cin, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, 4)
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


# --------------------------------------------------------------------------- CSP
class ResUnit(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = cbr(c, c, 1)
        self.b = cbr(c, c, 3, act=False)

    def forward(self, x):
        return F.relu(x + self.b(self.a(x)))


class CSPStage(nn.Module):
    """Downsample, ``chunk`` in two halves, one half through res units, ``cat``, 1x1 transition."""

    def __init__(self, cin, cout, n=1):
        super().__init__()
        self.down = cbr(cin, cout, 3, 2)
        self.blocks = nn.Sequential(*[ResUnit(cout // 2) for _ in range(n)])
        self.transition = cbr(cout, cout, 1)

    def forward(self, x):
        x = self.down(x)
        part1, part2 = x.chunk(2, dim=1)
        part2 = self.blocks(part2)
        return self.transition(torch.cat([part1, part2], dim=1))


class TinyCSPNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.s1 = CSPStage(16, 32)
        self.s2 = CSPStage(32, 64, n=2)
        self.s3 = CSPStage(64, 128)
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        x = self.s3(self.s2(self.s1(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# --------------------------------------------------------------------------- uneven split, slice-add, GLU
class UnevenSplitNet(nn.Module):
    """``torch.split(x, [8, 24], 1)``: the small part goes through a 5x5, the big one a 3x3, then cat."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 32, 3)
        self.small = cbr(8, 16, 5)
        self.big = cbr(24, 32, 3)
        self.down = cbr(48, 64, 3, 2)
        self.down2 = cbr(64, 64, 3, 2)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        a, b = torch.split(x, [8, 24], dim=1)
        x = torch.cat([self.small(a), self.big(b)], 1)
        x = self.down2(self.down(x))
        return self.fc(x.mean((2, 3)))


class SliceAddGLUNet(nn.Module):
    """A conv makes 2c channels; ``x[:, :c] + x[:, c:]`` folds them, later ``a * sigmoid(b)`` (GLU)."""

    def __init__(self):
        super().__init__()
        self.c = 32
        self.conv1 = nn.Conv2d(3, 64, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(32, 96, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(96)
        self.conv3 = nn.Conv2d(48, 64, 3, stride=2, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        c = self.c
        x = F.relu(self.bn1(self.conv1(x)))
        x = x[:, :c] + x[:, c:]
        x = self.bn2(self.conv2(x))
        a, b = x.chunk(2, 1)
        x = a * torch.sigmoid(b)
        x = F.relu(self.bn3(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


# --------------------------------------------------------------------------- bounds held by the block
class PartialResidualBlock(nn.Module):
    """Widens ``in_channels`` to ``out_channels``; the input is added to the first ``in_channels`` outputs only:
    ``cat([y[:, 0:self.in_channels] + x, y[:, self.in_channels:]])``."""

    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.in_channels = cin
        self.conv = nn.Sequential(cbr(cin, 2 * cin), cbr(2 * cin, 2 * cin, 3, stride, g=2 * cin), cbr(2 * cin, cout,
                                                                                                          act=False))
        self.pool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        return torch.cat([y[:, 0:self.in_channels] + self.pool(x), y[:, self.in_channels:]], dim=1)


class PartialResidualNet(nn.Module):
    """ReXNet-like widths growing by a few channels per block (16 -> 22 -> 28 -> 36)."""

    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 16, 3)
        self.blocks = nn.Sequential(PartialResidualBlock(16, 22), PartialResidualBlock(22, 28, 2),
                                    PartialResidualBlock(28, 36))
        self.fc = nn.Linear(36, 10)

    def forward(self, x):
        return self.fc(F.relu(self.blocks(self.stem(x))).mean((2, 3)))


class HierarchicalSplitBlock(nn.Module):
    """Res2Net-like: ``split(x, self.width, 1)`` into ``scale`` pieces; piece i (after the first) gets the
    previous piece's output added before its 3x3 conv; the last piece passes through; all concatenated."""

    def __init__(self, channels, width=6, scale=4):
        super().__init__()
        self.width, self.scale = width, scale
        self.reduce = cbr(channels, width * scale)
        self.convs = nn.ModuleList(cbr(width, width, 3) for _ in range(scale - 1))
        self.expand = cbr(width * scale, channels, act=False)

    def forward(self, x):
        pieces = torch.split(self.reduce(x), self.width, 1)
        outputs, previous = [], None
        for piece, conv in zip(pieces, self.convs):
            previous = conv(piece if previous is None else piece + previous)
            outputs.append(previous)
        outputs.append(pieces[-1])
        return F.relu(self.expand(torch.cat(outputs, 1)) + x)


class HierarchicalSplitNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = cbr(3, 24, 3)
        self.blocks = nn.Sequential(HierarchicalSplitBlock(24), HierarchicalSplitBlock(24))
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))
