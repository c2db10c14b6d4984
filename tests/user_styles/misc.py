"""Other habits of course and paper CIFAR code.

Written for prunekit's test fixtures to mimic: DenseNet growth by ``cat`` in a forward loop,
``nn.ModuleList`` / ``nn.ModuleDict`` iterated in forward, ``x + self.shortcut(x)`` with an empty
``nn.Sequential()``, dropout between convs, forward returning ``(logits, features)``, Mish / Hardswish /
SiLU / ReLU6 activations, ``ceil_mode=True`` max pooling, Inception branches, a conv reused twice.
No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DenseLoopNet(nn.Module):
    """Dense blocks kept as lists of BN-ReLU-conv layers; growth by ``torch.cat`` in a Python loop."""

    def __init__(self, growth=12, layers_per_block=3, init=24):
        super().__init__()
        self.conv0 = nn.Conv2d(3, init, 3, padding=1, bias=False)
        self.blocks = nn.ModuleList()
        self.transitions = nn.ModuleList()
        c = init
        for b in range(3):
            layers = nn.ModuleList()
            for _ in range(layers_per_block):
                layers.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, growth, 3, padding=1, bias=False)))
                c += growth
            self.blocks.append(layers)
            if b < 2:
                out_c = c // 2
                self.transitions.append(nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=True), nn.Conv2d(c, out_c, 1, bias=False), nn.AvgPool2d(2)))
                c = out_c
        self.bn = nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 10)

    def forward(self, x):
        x = self.conv0(x)
        for i, block in enumerate(self.blocks):
            for layer in block:
                new = layer(x)
                x = torch.cat([x, new], 1)
            if i < len(self.transitions):
                x = self.transitions[i](x)
        x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.view(x.size(0), -1))


class ModuleListDictNet(nn.Module):
    """Convs in a ModuleList, norms in a ModuleDict keyed by strings; both looked up in forward."""

    def __init__(self, widths=(16, 32, 64, 64)):
        super().__init__()
        self.widths = list(widths)
        self.convs = nn.ModuleList()
        self.norms = nn.ModuleDict()
        prev = 3
        for i, w in enumerate(widths):
            self.convs.append(nn.Conv2d(prev, w, 3, stride=1 if i == 0 else 2, padding=1, bias=False))
            self.norms[f"bn{i}"] = nn.BatchNorm2d(w)
            prev = w
        self.fc = nn.Linear(prev, 10)

    def forward(self, x):
        for idx in range(len(self.convs)):
            x = self.convs[idx](x)
            x = self.norms["bn" + str(idx)](x)
            x = F.relu(x)
        return self.fc(x.mean(dim=[2, 3]))


class WideDropBlock(nn.Module):
    """Pre-activation wide block, dropout between the convs, shortcut an empty ``nn.Sequential()``."""

    def __init__(self, in_planes, planes, dropout_rate, stride=1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, padding=1, bias=True)
        self.dropout = nn.Dropout(p=dropout_rate)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=True))

    def forward(self, x):
        out = self.dropout(self.conv1(F.relu(self.bn1(x))))
        out = self.conv2(F.relu(self.bn2(out)))
        out = out + self.shortcut(x)
        return out


class TinyWideResNet(nn.Module):
    def __init__(self, widen=2, dropout=0.3):
        super().__init__()
        w = [16, 16 * widen, 32 * widen, 48 * widen]
        self.conv1 = nn.Conv2d(3, w[0], 3, 1, 1, bias=True)
        self.layer1 = nn.Sequential(WideDropBlock(w[0], w[1], dropout, 1), WideDropBlock(w[1], w[1], dropout, 1))
        self.layer2 = WideDropBlock(w[1], w[2], dropout, 2)
        self.layer3 = WideDropBlock(w[2], w[3], dropout, 2)
        self.bn1 = nn.BatchNorm2d(w[3], momentum=0.9)
        self.linear = nn.Linear(w[3], 10)

    def forward(self, x):
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.relu(self.bn1(out))
        out = F.avg_pool2d(out, 8)
        out = out.view(out.size(0), -1)
        return self.linear(out)


class LogitsAndFeatures(nn.Module):
    """Returns a tuple ``(logits, features)`` as knowledge-distillation / center-loss code does."""

    def __init__(self, feat_dim=64):
        super().__init__()
        self.backbone = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
            nn.Conv2d(32, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, feat_dim, 3, padding=1, bias=False), nn.BatchNorm2d(feat_dim), nn.ReLU(inplace=True),
        )
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(feat_dim, 10)

    def forward(self, x):
        feats = F.adaptive_avg_pool2d(self.backbone(x), 1).flatten(1)
        logits = self.fc(self.drop(feats))
        return logits, feats


class ActZooNet(nn.Module):
    """Each stage uses a different activation: Mish, Hardswish, SiLU (module and functional), ReLU6."""

    def __init__(self):
        super().__init__()
        self.s1 = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Mish())
        self.s2 = nn.Sequential(nn.Conv2d(16, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.Hardswish(inplace=True))
        self.s3 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.SiLU())
        self.s4_conv = nn.Conv2d(64, 64, 3, 1, 1, bias=False)
        self.s4_bn = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.s3(self.s2(self.s1(x)))
        x = F.silu(self.s4_bn(self.s4_conv(x))) + F.relu6(x) * 0.5
        x = F.mish(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).squeeze(-1).squeeze(-1))


class CeilPoolNet(nn.Module):
    """Max pools with ``ceil_mode=True`` on odd maps: 32 -valid-> 30 -> 15 -pool-> 8 -valid-> 6 -pool3/2-> 3."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=0, bias=False)  # 32 -> 30
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)  # 15 -> 15
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=0, bias=False)  # 8 -> 6
        self.bn3 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))  # 30 -> 15
        x = self.pool(F.relu(self.bn2(self.conv2(x))))  # 15 -> 8 (7 without ceil_mode)
        x = F.relu(self.bn3(self.conv3(x)))
        x = F.max_pool2d(x, 3, 2, ceil_mode=True)  # 6 -> 3 (2 without ceil_mode)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(torch.flatten(x, 1))


class InceptionLite(nn.Module):
    def __init__(self, cin, c1, c3r, c3, c5r, c5, cp):
        super().__init__()

        def cbr(i, o, k):
            return nn.Sequential(nn.Conv2d(i, o, k, padding=k // 2, bias=False), nn.BatchNorm2d(o), nn.ReLU(True))

        self.b1 = cbr(cin, c1, 1)
        self.b2 = nn.Sequential(cbr(cin, c3r, 1), cbr(c3r, c3, 3))
        self.b3 = nn.Sequential(cbr(cin, c5r, 1), cbr(c5r, c5, 3), cbr(c5, c5, 3))
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), cbr(cin, cp, 1))

    def forward(self, x):
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class TinyGoogLeNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(True))
        self.a3 = InceptionLite(32, 16, 16, 24, 8, 8, 8)  # 56
        self.b3 = InceptionLite(56, 24, 24, 32, 8, 16, 16)  # 88
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a4 = InceptionLite(88, 32, 24, 48, 8, 16, 16)  # 112
        self.linear = nn.Linear(112, 10)

    def forward(self, x):
        out = self.maxpool(self.pre(x))
        out = self.b3(self.a3(out))
        out = self.maxpool(out)
        out = self.a4(out)
        out = F.adaptive_avg_pool2d(out, 1)
        return self.linear(out.view(out.size(0), -1))


class SharedConvNet(nn.Module):
    """One 3x3 conv applied twice in a row (weight sharing, recurrent-residual style), separate BNs."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.shared = nn.Conv2d(32, 32, 3, 1, 1, bias=False)
        self.bn_a = nn.BatchNorm2d(32)
        self.bn_b = nn.BatchNorm2d(32)
        self.down = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.stem(x)
        h = F.relu(self.bn_a(self.shared(x)))
        h = F.relu(self.bn_b(self.shared(h)) + x)
        h = self.down(h)
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))
