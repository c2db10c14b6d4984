"""Classifier heads that flatten in different ways, including literal feature sizes.

Written for prunekit's test fixtures to mimic common CIFAR heads: ``x.view(-1, 1024)`` with a literal
int, ``x.view(-1, 16 * 5 * 5)`` LeNet-style, ``torch.flatten(x, 1)``, ``x.reshape(x.shape[0], -1)``,
and ``nn.Flatten()`` followed by ``nn.Linear`` inside a Sequential. No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LiteralViewNet(nn.Module):
    """Three conv-BN-ReLU-pool stages to 64 x 4 x 4, then ``x.view(-1, 1024)`` (literal)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(32)
        self.conv3 = nn.Conv2d(32, 64, 3, padding=1)
        self.bn3 = nn.BatchNorm2d(64)
        self.pool = nn.MaxPool2d(2, 2)
        self.fc1 = nn.Linear(1024, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.bn1(self.conv1(x))))
        x = self.pool(F.relu(self.bn2(self.conv2(x))))
        x = self.pool(F.relu(self.bn3(self.conv3(x))))
        x = x.view(-1, 1024)
        x = F.relu(self.fc1(x))
        return self.fc2(x)


class LeNetBN(nn.Module):
    """LeNet-5 for CIFAR (valid convs) with ``x.view(-1, 16 * 5 * 5)`` and BatchNorm added."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.bn1 = nn.BatchNorm2d(6)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.bn2 = nn.BatchNorm2d(16)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
        x = x.view(-1, 16 * 5 * 5)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


class TorchFlattenNet(nn.Module):
    """Spatial 2x2 kept into the head: ``torch.flatten(x, 1)`` then a two-layer MLP with dropout."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(32, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(48, 48, 3, padding=1, bias=False), nn.BatchNorm2d(48), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.3), nn.Linear(48 * 2 * 2, 64), nn.ReLU(True), nn.Linear(64, 10))

    def forward(self, x):
        x = self.features(x)
        x = torch.flatten(x, 1)
        return self.classifier(x)


class ReshapeHeadNet(nn.Module):
    """``x.reshape(x.shape[0], -1)`` after a 4x4 average pool over a 4x4 map."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 24, 3, 1, 1, bias=False), nn.BatchNorm2d(24), nn.ReLU(),
            nn.Conv2d(24, 48, 3, 2, 1, bias=False), nn.BatchNorm2d(48), nn.ReLU(),
            nn.Conv2d(48, 96, 3, 2, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU(),
            nn.Conv2d(96, 96, 3, 2, 1, bias=False), nn.BatchNorm2d(96), nn.ReLU(),
        )
        self.linear = nn.Linear(96, 10)

    def forward(self, x):
        x = self.body(x)
        x = F.avg_pool2d(x, 4)
        x = x.reshape(x.shape[0], -1)
        return self.linear(x)


def flatten_sequential_net():
    """Everything, head included, in one ``nn.Sequential``; ``nn.Flatten`` then ``nn.Linear`` on 2x2 maps."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False),
        nn.BatchNorm2d(16),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1, bias=False),
        nn.BatchNorm2d(32),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1, bias=False),
        nn.BatchNorm2d(64),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(4),
        nn.Flatten(),
        nn.Linear(64 * 2 * 2, 10),
    )
