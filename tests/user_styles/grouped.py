"""Grouped convolutions: ResNeXt, RegNet, channel-multiplier separable, MobileNet-v1, two-tower.

Written for prunekit's test fixtures to mimic the ways CIFAR code uses ``groups=``: groups that are
neither 1 nor the channel count, depthwise with a channel multiplier, and plain depthwise-separable.
No third-party code copied.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn


class XBottleneck(nn.Module):
    """ResNeXt bottleneck: 1x1 reduce -> 3x3 grouped (cardinality) -> 1x1 expand (x2)."""

    expansion = 2

    def __init__(self, in_ch, cardinality, width, stride=1):
        super().__init__()
        gw = cardinality * width
        out_ch = gw * self.expansion
        self.reduce = nn.Conv2d(in_ch, gw, 1, bias=False)
        self.bn_r = nn.BatchNorm2d(gw)
        self.grouped = nn.Conv2d(gw, gw, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn_g = nn.BatchNorm2d(gw)
        self.expand = nn.Conv2d(gw, out_ch, 1, bias=False)
        self.bn_e = nn.BatchNorm2d(out_ch)
        if stride != 1 or in_ch != out_ch:
            self.short = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False), nn.BatchNorm2d(out_ch))
        else:
            self.short = nn.Identity()

    def forward(self, x):
        y = F.relu(self.bn_r(self.reduce(x)))
        y = F.relu(self.bn_g(self.grouped(y)))
        y = self.bn_e(self.expand(y))
        return F.relu(y + self.short(x))


class TinyResNeXt(nn.Module):
    def __init__(self, cardinality=4, width=4, stages=3, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        blocks = []
        in_ch = 16
        for i in range(stages):
            blocks.append(XBottleneck(in_ch, cardinality, width, stride=1 if i == 0 else 2))
            in_ch = cardinality * width * XBottleneck.expansion
            width *= 2
        self.body = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_ch, num_classes)

    def forward(self, x):
        x = self.body(self.stem(x))
        return self.fc(self.pool(x).flatten(1))


class RegXBlock(nn.Module):
    """RegNetX-ish block: bottleneck ratio 1, group width ``gw`` so groups = width // gw."""

    def __init__(self, w_in, w_out, stride, gw=8):
        super().__init__()
        self.a = nn.Conv2d(w_in, w_out, 1, bias=False)
        self.a_bn = nn.BatchNorm2d(w_out)
        self.b = nn.Conv2d(w_out, w_out, 3, stride, 1, groups=w_out // gw, bias=False)
        self.b_bn = nn.BatchNorm2d(w_out)
        self.c = nn.Conv2d(w_out, w_out, 1, bias=False)
        self.c_bn = nn.BatchNorm2d(w_out)
        self.proj = None
        if w_in != w_out or stride != 1:
            self.proj = nn.Conv2d(w_in, w_out, 1, stride, bias=False)
            self.proj_bn = nn.BatchNorm2d(w_out)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        sc = x if self.proj is None else self.proj_bn(self.proj(x))
        x = self.act(self.a_bn(self.a(x)))
        x = self.act(self.b_bn(self.b(x)))
        x = self.c_bn(self.c(x))
        return self.act(x + sc)


class TinyRegNet(nn.Module):
    def __init__(self, widths=(24, 48, 96), depths=(1, 2, 1), gw=8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True))
        layers, w_in = [], 16
        for i, (w, d) in enumerate(zip(widths, depths)):
            for j in range(d):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(RegXBlock(w_in, w, stride, gw))
                w_in = w
        self.trunk = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d((1, 1)), nn.Flatten(), nn.Linear(w_in, 10))

    def forward(self, x):
        return self.head(self.trunk(self.stem(x)))


class MultiplierSepConv(nn.Module):
    """Depthwise with channel multiplier 2 (``Conv2d(c, 2c, 3, groups=c)``) then pointwise."""

    def __init__(self, c, cout, stride=1, multiplier=2):
        super().__init__()
        self.dw = nn.Conv2d(c, multiplier * c, 3, stride=stride, padding=1, groups=c, bias=False)
        self.dw_bn = nn.BatchNorm2d(multiplier * c)
        self.pw = nn.Conv2d(multiplier * c, cout, 1, bias=False)
        self.pw_bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        x = F.relu(self.dw_bn(self.dw(x)))
        return F.relu(self.pw_bn(self.pw(x)))


class MultiplierNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv0 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(16)
        self.seps = nn.Sequential(
            MultiplierSepConv(16, 32, stride=2),
            MultiplierSepConv(32, 64, stride=2),
            MultiplierSepConv(64, 64, stride=1),
        )
        self.linear = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.bn0(self.conv0(x)))
        x = self.seps(x)
        x = F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1)
        return self.linear(x)


def dw_sep(inp, oup, stride):
    return nn.Sequential(
        nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
        nn.BatchNorm2d(inp),
        nn.ReLU(inplace=True),
        nn.Conv2d(inp, oup, 1, 1, 0, bias=False),
        nn.BatchNorm2d(oup),
        nn.ReLU(inplace=True),
    )


class MobileNetV1Tiny(nn.Module):
    cfg = [(32, 1), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2)]

    def __init__(self, num_classes=10):
        super().__init__()
        layers = [nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True)]
        inp = 32
        for oup, s in self.cfg:
            layers.append(dw_sep(inp, oup, s))
            inp = oup
        self.model = nn.Sequential(*layers)
        self.fc = nn.Linear(inp, num_classes)

    def forward(self, x):
        x = self.model(x)
        x = F.avg_pool2d(x, 4)
        x = x.view(-1, 256)
        return self.fc(x)


class TwoTowerNet(nn.Module):
    """AlexNet-style two towers: consecutive ``groups=2`` convs, then a full conv merges the towers."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, padding=1, bias=False)
        self.b1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 64, 3, padding=1, groups=2, bias=False)
        self.b2 = nn.BatchNorm2d(64)
        self.c3 = nn.Conv2d(64, 64, 3, padding=1, groups=2, bias=False)
        self.b3 = nn.BatchNorm2d(64)
        self.c4 = nn.Conv2d(64, 96, 3, padding=1, bias=False)
        self.b4 = nn.BatchNorm2d(96)
        self.fc = nn.Linear(96, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.b1(self.c1(x))), 2)
        x = F.max_pool2d(F.relu(self.b2(self.c2(x))), 2)
        x = F.relu(self.b3(self.c3(x)))
        x = F.relu(self.b4(self.c4(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
