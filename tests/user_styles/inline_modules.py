"""Models that build throw-away modules inside ``forward``.

Written for prunekit's test fixtures to mimic a common style in course and blog CIFAR code:
``nn.ReLU(inplace=True)(x)``, ``nn.MaxPool2d(2, 2)(out)``, ``nn.AvgPool2d(2)(x)``, ``nn.Flatten()(x)``
appear in the forward pass instead of being registered in ``__init__``. No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class InlineVGG(nn.Module):
    """Small VGG: convs+BN registered, every ReLU / MaxPool / Flatten made on the fly."""

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(64)
        self.conv4 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.bn4 = nn.BatchNorm2d(64)
        self.classifier = nn.Linear(64 * 2 * 2, num_classes)

    def forward(self, x):
        out = nn.ReLU(inplace=True)(self.bn1(self.conv1(x)))
        out = nn.MaxPool2d(2, 2)(out)
        out = nn.ReLU(inplace=True)(self.bn2(self.conv2(out)))
        out = nn.MaxPool2d(2, 2)(out)
        out = nn.ReLU(inplace=True)(self.bn3(self.conv3(out)))
        out = nn.MaxPool2d(2, 2)(out)
        out = nn.ReLU(inplace=True)(self.bn4(self.conv4(out)))
        out = nn.MaxPool2d(kernel_size=2, stride=2)(out)
        out = nn.Flatten()(out)
        return self.classifier(out)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes, planes, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x):
        out = nn.ReLU(inplace=True)(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.shortcut is None else self.shortcut(x)
        out = out + identity
        return nn.ReLU(inplace=True)(out)


class InlineResNet18ish(nn.Module):
    """ResNet-18 layout (2-2-2-2 BasicBlocks) at 1/8 width; ReLU and AvgPool made in forward."""

    def __init__(self, blocks=(2, 2, 2, 2), widths=(8, 16, 32, 64), num_classes=10):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = self._make_layer(widths[0], blocks[0], stride=1)
        self.layer2 = self._make_layer(widths[1], blocks[1], stride=2)
        self.layer3 = self._make_layer(widths[2], blocks[2], stride=2)
        self.layer4 = self._make_layer(widths[3], blocks[3], stride=2)
        self.linear = nn.Linear(widths[3] * BasicBlock.expansion, num_classes)

    def _make_layer(self, planes, num_blocks, stride):
        strides = [stride] + [1] * (num_blocks - 1)
        layers = []
        for s in strides:
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes * BasicBlock.expansion
        return nn.Sequential(*layers)

    def forward(self, x):
        out = nn.ReLU(inplace=True)(self.bn1(self.conv1(x)))
        out = self.layer1(out)
        out = self.layer2(out)
        out = self.layer3(out)
        out = self.layer4(out)
        out = nn.AvgPool2d(4)(out)
        out = out.view(out.size(0), -1)
        return self.linear(out)


class AvgDownNet(nn.Module):
    """Downsampling by ``nn.AvgPool2d(2)(x)`` between stages, convs kept in a Sequential list."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, 24, 3, padding=1), nn.BatchNorm2d(24))
        self.stage2 = nn.Sequential(nn.Conv2d(24, 48, 3, padding=1), nn.BatchNorm2d(48))
        self.stage3 = nn.Sequential(nn.Conv2d(48, 64, 3, padding=1), nn.BatchNorm2d(64))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = nn.AvgPool2d(2)(F.relu(self.stage1(x)))
        x = nn.AvgPool2d(2)(F.relu(self.stage2(x)))
        x = F.relu(self.stage3(x))
        x = nn.AdaptiveAvgPool2d((1, 1))(x)
        return self.fc(nn.Flatten()(x))


class PairsNet(nn.Module):
    """ModuleList of (conv, bn) pairs; pooling module built inside the loop each time."""

    def __init__(self, cfg=(16, 32, 48)):
        super().__init__()
        self.convs = nn.ModuleList()
        self.bns = nn.ModuleList()
        cin = 3
        for c in cfg:
            self.convs.append(nn.Conv2d(cin, c, 3, padding=1, bias=False))
            self.bns.append(nn.BatchNorm2d(c))
            cin = c
        self.head = nn.Linear(cin * 4 * 4, 10)

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = nn.MaxPool2d(2, 2)(nn.ReLU()(bn(conv(x))))
        return self.head(torch.flatten(x, start_dim=1))
