"""Multiplicative gates: squeeze-and-excitation in many spellings, MBConv+SE+swish, attention masks.

Written for prunekit's test fixtures to mimic how CIFAR code writes channel gates:
``x * s.view(N, C, 1, 1)``, 1x1-conv SE, ``s.expand_as(x)``, ``torch.mul``, ``x * torch.sigmoid(...)``,
hard-sigmoid, an EfficientNet-ish MBConv with SE and swish, and ``trunk * (1 + mask)`` residual
attention. No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# --------------------------------------------------------------------------- SE flavours
class SELinearView(nn.Module):
    """AdaptiveAvgPool -> Linear -> ReLU -> Linear -> Sigmoid -> view(N, C, 1, 1); ``x * s``."""

    def __init__(self, channel, reduction=4):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y


class SEConv(nn.Module):
    """SE written with 1x1 convolutions on the pooled map."""

    def __init__(self, ch, r=4):
        super().__init__()
        self.squeeze = nn.Conv2d(ch, ch // r, 1)
        self.excite = nn.Conv2d(ch // r, ch, 1)

    def forward(self, x):
        w = F.adaptive_avg_pool2d(x, (1, 1))
        w = F.relu(self.squeeze(w))
        w = torch.sigmoid(self.excite(w))
        return x * w


class SEExpandAs(nn.Module):
    """SE with ``x.mean((2, 3))`` squeeze and ``s.expand_as(x)`` before the product."""

    def __init__(self, planes, hidden=8):
        super().__init__()
        self.l1 = nn.Linear(planes, hidden)
        self.l2 = nn.Linear(hidden, planes)

    def forward(self, x):
        s = x.mean(dim=(2, 3))
        s = torch.sigmoid(self.l2(F.relu(self.l1(s))))
        s = s.unsqueeze(-1).unsqueeze(-1)
        return x * s.expand_as(x)


class SETorchMul(nn.Module):
    def __init__(self, c, r=4):
        super().__init__()
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.down = nn.Linear(c, c // r)
        self.up = nn.Linear(c // r, c)

    def forward(self, x):
        z = torch.flatten(self.gap(x), 1)
        z = torch.sigmoid(self.up(torch.relu(self.down(z))))
        return torch.mul(x, z[:, :, None, None])


class SEHard(nn.Module):
    """MobileNetV3-ish: hard-sigmoid gate, width rounded to a multiple of 8."""

    def __init__(self, c):
        super().__init__()
        mid = max(8, (c // 4 + 7) // 8 * 8)
        self.fc1 = nn.Conv2d(c, mid, 1)
        self.fc2 = nn.Conv2d(mid, c, 1)
        self.gate = nn.Hardsigmoid()

    def forward(self, x):
        s = x.mean((2, 3), keepdim=True)
        s = self.gate(self.fc2(F.relu(self.fc1(s))))
        return s * x


class SEGatedBlock(nn.Module):
    """Basic residual block with a pluggable SE module applied before the addition."""

    def __init__(self, cin, cout, stride, se_factory):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.se = se_factory(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = self.se(out)
        out += self.shortcut(x)
        return F.relu(out)


class SEResNetTiny(nn.Module):
    def __init__(self, se_factory, widths=(16, 32, 64)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(SEGatedBlock(cin, w, 1 if i == 0 else 2, se_factory))
            cin = w
        self.layers = nn.Sequential(*blocks)
        self.linear = nn.Linear(cin, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layers(out)
        out = F.avg_pool2d(out, out.size(3))
        return self.linear(out.view(out.size(0), -1))


def se_linear_view_net():
    return SEResNetTiny(SELinearView)


def se_conv_net():
    return SEResNetTiny(SEConv)


def se_expand_as_net():
    return SEResNetTiny(SEExpandAs)


def se_torch_mul_net():
    return SEResNetTiny(lambda c: SETorchMul(c, r=8))


def se_hard_net():
    return SEResNetTiny(SEHard)


class InlineSigmoidVGG(nn.Module):
    """Plain VGG where the gate is written inline: ``x * torch.sigmoid(fc2(relu(fc1(pool))))``."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True), nn.MaxPool2d(2),
        )
        self.fc1 = nn.Linear(64, 16)
        self.fc2 = nn.Linear(16, 64)
        self.conv_last = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn_last = nn.BatchNorm2d(64)
        self.classifier = nn.Linear(64, 10)

    def forward(self, x):
        x = self.features(x)
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
        x = x * torch.sigmoid(self.fc2(F.relu(self.fc1(pooled))))[..., None, None]
        x = F.relu(self.bn_last(self.conv_last(x)))
        return self.classifier(F.adaptive_avg_pool2d(x, 1).flatten(1))


# --------------------------------------------------------------------------- MBConv + SE + swish
class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class MBConv(nn.Module):
    def __init__(self, cin, cout, expand, stride, se_ratio=0.25):
        super().__init__()
        mid = cin * expand
        self.use_res = stride == 1 and cin == cout
        self.expand = None
        if expand != 1:
            self.expand = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), Swish())
        self.dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn_dw = nn.BatchNorm2d(mid)
        n_se = max(1, int(cin * se_ratio))
        self.se_reduce = nn.Conv2d(mid, n_se, 1)
        self.se_expand = nn.Conv2d(n_se, mid, 1)
        self.project = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn_proj = nn.BatchNorm2d(cout)
        self.swish = Swish()

    def forward(self, inputs):
        x = inputs if self.expand is None else self.expand(inputs)
        x = self.swish(self.bn_dw(self.dw(x)))
        s = F.adaptive_avg_pool2d(x, 1)
        s = self.se_expand(self.swish(self.se_reduce(s)))
        x = torch.sigmoid(s) * x
        x = self.bn_proj(self.project(x))
        if self.use_res:
            x = x + inputs
        return x


class EffNetTiny(nn.Module):
    # (expand, out, stride)
    settings = [(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 40, 2), (4, 64, 2)]

    def __init__(self, num_classes=10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), Swish())
        blocks, c = [], 16
        for e, o, s in self.settings:
            blocks.append(MBConv(c, o, e, s))
            c = o
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Sequential(nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128), Swish())
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(128, num_classes)

    def forward(self, x):
        x = self.head(self.blocks(self.stem(x)))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(self.dropout(x))


# --------------------------------------------------------------------------- residual attention
class AttentionStage(nn.Module):
    """Trunk branch and a soft-mask branch of the same width; output ``trunk * (1 + mask)``."""

    def __init__(self, ch):
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
            nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True),
        )
        self.mask_down = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(ch, ch, 3, padding=1, bias=False), nn.BatchNorm2d(ch), nn.ReLU(inplace=True))
        self.mask_out = nn.Sequential(nn.Conv2d(ch, ch, 1, bias=False), nn.BatchNorm2d(ch))

    def forward(self, x):
        trunk = self.trunk(x)
        m = self.mask_down(x)
        m = F.interpolate(m, size=trunk.shape[-2:], mode="nearest")
        mask = torch.sigmoid(self.mask_out(m))
        return trunk * (1 + mask)


class ResidualAttentionTiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.att1 = AttentionStage(32)
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.att2 = AttentionStage(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.att1(self.pre(x))
        x = nn.functional.max_pool2d(x, 2)
        x = self.att2(self.down(x))
        return self.fc(torch.mean(x, dim=(2, 3)))
