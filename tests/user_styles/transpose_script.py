"""Transposed convolutions and TorchScript-ed submodules inside ordinary classifiers.

Written for prunekit's test fixtures to mimic code that uses ``nn.ConvTranspose2d`` (whose weight is
laid out (in, out, kh, kw), the opposite of ``nn.Conv2d``) and code that ``torch.jit.script``-s a small
block and then uses it in an eager module. No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class EncDecClassifier(nn.Module):
    """conv down x2 -> ConvTranspose2d up -> conv -> pool -> linear."""

    def __init__(self):
        super().__init__()
        self.enc1 = nn.Sequential(nn.Conv2d(3, 32, 3, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True))
        self.enc2 = nn.Sequential(nn.Conv2d(32, 64, 3, 2, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        self.up = nn.ConvTranspose2d(64, 32, kernel_size=2, stride=2, bias=False)
        self.up_bn = nn.BatchNorm2d(32)
        self.post = nn.Conv2d(32, 48, 3, padding=1, bias=False)
        self.post_bn = nn.BatchNorm2d(48)
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        x = self.enc2(self.enc1(x))
        x = F.relu(self.up_bn(self.up(x)))
        x = F.relu(self.post_bn(self.post(x)))
        x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, 1)
        return self.fc(x.flatten(1))


class UNetSkipClassifier(nn.Module):
    """Tiny U-Net: transposed-conv output is added to (and concatenated with) the encoder skip."""

    def __init__(self):
        super().__init__()
        self.e1 = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.e2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.e3 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.up3 = nn.ConvTranspose2d(64, 32, 3, stride=2, padding=1, output_padding=1)
        self.up3_bn = nn.BatchNorm2d(32)
        self.up2 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.d1 = nn.Sequential(nn.Conv2d(32, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU())
        self.classifier = nn.Linear(32, 10)

    def forward(self, x):
        s1 = self.e1(x)
        s2 = self.e2(s1)
        b = self.e3(s2)
        u = F.relu(self.up3_bn(self.up3(b)) + s2)
        u = self.up2(u)
        u = torch.cat([u, s1], dim=1)
        u = self.d1(u)
        return self.classifier(u.mean(dim=(2, 3)))


class ConvBNReLU(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.bn(self.conv(x)))


class ScriptedBlockNet(nn.Module):
    """Two of the three feature blocks are ``torch.jit.script(ConvBNReLU(...))``."""

    def __init__(self):
        super().__init__()
        self.block1 = torch.jit.script(ConvBNReLU(3, 16))
        self.block2 = ConvBNReLU(16, 32, stride=2)
        self.block3 = torch.jit.script(ConvBNReLU(32, 64, stride=2))
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.block3(self.block2(self.block1(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


@torch.jit.script
def scripted_hswish(x: torch.Tensor) -> torch.Tensor:
    return x * F.relu6(x + 3.0) / 6.0


class ScriptedFnNet(nn.Module):
    """An activation written as a ``@torch.jit.script`` function, between conv-BN pairs."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 24, 3, 1, 1, bias=False), nn.Conv2d(24, 48, 3, 2, 1, bias=False), nn.Conv2d(48, 64, 3, 2, 1, bias=False)])
        self.bns = nn.ModuleList([nn.BatchNorm2d(24), nn.BatchNorm2d(48), nn.BatchNorm2d(64)])
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        for conv, bn in zip(self.convs, self.bns):
            x = scripted_hswish(bn(conv(x)))
        return self.fc(x.mean((2, 3)))
