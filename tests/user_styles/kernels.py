"""Convolutions written the way downloaded model libraries write them: selective-kernel blocks (branches stacked
on a new axis, a softmax over that axis of a k·C attention view, a split by a width the block holds) and
weight-standardised convs (each filter standardised over its fan-in in forward, with and without a learned gain).
Written for prunekit's tests; no third-party code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SelectiveKernel(nn.Module):
    """``branches`` dilated 3x3 paths, each on its slice of the input (``split_input``) or on all of it; their
    outputs are stacked on axis 1, weighted by a softmax over that axis and summed."""

    def __init__(self, cin: int, cout: int, stride: int = 1, branches: int = 2, split_input: bool = True):
        super().__init__()
        self.in_channels, self.branches, self.split_input = cin, branches, split_input
        path_in = cin // branches if split_input else cin
        self.paths = nn.ModuleList(
            nn.Sequential(nn.Conv2d(path_in, cout, 3, stride, 1 + i, dilation=1 + i, bias=False),
                          nn.BatchNorm2d(cout), nn.ReLU())
            for i in range(branches))
        hidden = max(cout // 4, 8)
        self.reduce = nn.Conv2d(cout, hidden, 1, bias=False)
        self.bn = nn.BatchNorm2d(hidden)
        self.select = nn.Conv2d(hidden, cout * branches, 1)

    def forward(self, x):
        inputs = torch.split(x, self.in_channels // self.branches, 1) if self.split_input else [x] * self.branches
        paths = torch.stack([path(part) for path, part in zip(self.paths, inputs)], dim=1)
        attn = paths.sum(1).mean((2, 3), keepdim=True)
        attn = self.select(F.relu(self.bn(self.reduce(attn))))
        b, c, h, w = attn.shape
        attn = torch.softmax(attn.view(b, self.branches, c // self.branches, h, w), dim=1)
        return torch.sum(paths * attn, dim=1)


class SKBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, split_input: bool):
        super().__init__()
        self.sk = SelectiveKernel(cin, cout, stride, split_input=split_input)
        self.conv = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        shortcut = x if self.down is None else self.down(x)
        return F.relu(self.bn(self.conv(self.sk(x))) + shortcut)


class SKNet(nn.Module):
    """A small SK-ResNet: residual blocks whose 3x3 conv is a selective kernel."""

    def __init__(self, split_input: bool = True, widths=(16, 32)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU())
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            blocks += [SKBlock(cin, width, 1 if i == 0 else 2, split_input), SKBlock(width, width, 1, split_input)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class StandardisedConv(nn.Conv2d):
    """A conv whose forward standardises each filter over its fan-in (zero mean, unit variance), times a learned
    per-filter gain when ``gain``."""

    def __init__(self, *args, gain: bool = True, eps: float = 1e-5, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.ones(self.out_channels, 1, 1, 1)) if gain else None
        self.eps = eps

    def forward(self, x):
        flat = self.weight.reshape(self.out_channels, -1)
        mean = flat.mean(1, keepdim=True)
        var = flat.var(1, unbiased=False, keepdim=True)
        weight = ((flat - mean) / torch.sqrt(var + self.eps)).reshape_as(self.weight)
        if self.gain is not None:
            weight = weight * self.gain
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class NormFreeBlock(nn.Module):
    """Pre-activation residual block without norms: scaled activation, standardised convs, a skip gain."""

    def __init__(self, cin: int, cout: int, stride: int, gain: bool):
        super().__init__()
        self.conv1 = StandardisedConv(cin, cout, 3, stride, 1, gain=gain)
        self.conv2 = StandardisedConv(cout, cout, 3, 1, 1, gain=gain)
        self.down = None if stride == 1 and cin == cout else StandardisedConv(cin, cout, 1, stride, gain=gain)

    def forward(self, x):
        out = F.relu(x) * 1.7
        shortcut = x if self.down is None else self.down(out)
        return self.conv2(F.relu(self.conv1(out)) * 1.7) * 0.2 + shortcut


class NormFreeNet(nn.Module):
    """A small norm-free ResNet built from weight-standardised convs (with a gain, or plain standardisation)."""

    def __init__(self, gain: bool = True, widths=(16, 32)):
        super().__init__()
        self.stem = StandardisedConv(3, widths[0], 3, 1, 1, gain=gain)
        blocks, cin = [], widths[0]
        for i, width in enumerate(widths):
            blocks += [NormFreeBlock(cin, width, 1 if i == 0 else 2, gain), NormFreeBlock(width, width, 1, gain)]
            cin = width
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        return self.fc(F.relu(self.blocks(self.stem(x))).mean((2, 3)))


def sk_whole_input_net() -> SKNet:
    return SKNet(split_input=False)


def standardised_no_gain_net() -> NormFreeNet:
    return NormFreeNet(gain=False)
