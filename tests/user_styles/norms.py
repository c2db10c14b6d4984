"""Normalisation written the way downloaded model libraries write it: a norm layer with its own forward that
calls ``F.batch_norm`` / ``F.group_norm`` then an activation, stock GroupNorm, affine InstanceNorm, and a
functional norm on parameters the block owns. Written for prunekit's tests; no third-party code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BatchNormAct(nn.BatchNorm2d):
    """BatchNorm2d + activation in one layer: its forward calls F.batch_norm itself."""

    def __init__(self, channels: int, act: bool = True):
        super().__init__(channels)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x):
        training = self.training and self.track_running_stats
        x = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, training,
                         self.momentum, self.eps)
        return self.act(x)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm + SiLU in one layer, F.group_norm called with the layer's own num_groups."""

    def forward(self, x):
        return F.silu(F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps))


class PreActBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.norm1 = BatchNormAct(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.norm2 = BatchNormAct(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.down = nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None

    def forward(self, x):
        pre = self.norm1(x)
        shortcut = self.down(pre) if self.down is not None else x
        return self.conv2(self.norm2(self.conv1(pre))) + shortcut


class BNActResNet(nn.Module):
    """Pre-activation ResNet whose every norm is a BatchNormAct (F.batch_norm inside the layer)."""

    def __init__(self, widths=(16, 32, 64)):
        super().__init__()
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks += [PreActBlock(cin, w, 1 if i == 0 else 2), PreActBlock(w, w, 1)]
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.norm = BatchNormAct(cin)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = self.norm(self.blocks(self.stem(x)))
        return self.fc(x.mean((2, 3)))


class MBConvBNAct(nn.Module):
    """Inverted residual (expand, depthwise, SE, project) with BatchNormAct norms; no act after project."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4):
        super().__init__()
        mid = cin * expand
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = BatchNormAct(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = BatchNormAct(mid)
        self.se_reduce = nn.Conv2d(mid, max(4, mid // 8), 1)
        self.se_expand = nn.Conv2d(max(4, mid // 8), mid, 1)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = BatchNormAct(cout, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.bn2(self.conv_dw(self.bn1(self.conv_pw(x))))
        y = y * torch.sigmoid(self.se_expand(F.relu(self.se_reduce(y.mean((2, 3), keepdim=True)))))
        y = self.bn3(self.conv_pwl(y))
        return y + x if self.residual else y


class BNActEffNet(nn.Module):
    """EfficientNet-like: stem, four MBConv blocks, 1x1 head conv; every norm a BatchNormAct."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), BatchNormAct(16))
        self.blocks = nn.Sequential(MBConvBNAct(16, 16, 1), MBConvBNAct(16, 24, 2), MBConvBNAct(24, 24, 1),
                                    MBConvBNAct(24, 40, 2))
        self.head = nn.Sequential(nn.Conv2d(40, 128, 1, bias=False), BatchNormAct(128))
        self.fc = nn.Linear(128, 10)

    def forward(self, x):
        return self.fc(self.head(self.blocks(self.stem(x))).mean((2, 3)))


class GNBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, groups: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.gn1 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.gn2 = GroupNormAct(groups, cout)
        self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.GroupNorm(groups, cout)) \
            if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x):
        return F.relu(self.gn2(self.conv2(F.relu(self.gn1(self.conv1(x))))) + self.down(x))


class GroupNormResNet(nn.Module):
    """ResNet with GroupNorm(8, C) everywhere (stock and a GroupNormAct subclass): whole groups go."""

    def __init__(self, widths=(16, 32, 64), groups: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.GroupNorm(groups, widths[0]),
                                  nn.ReLU())
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(GNBlock(cin, w, 1 if i == 0 else 2, groups))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        return self.fc(self.blocks(self.stem(x)).mean((2, 3)))


class InstanceNormNet(nn.Module):
    """VGG-like with affine InstanceNorm2d layers and one F.instance_norm on parameters the model owns."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1)
        self.in1 = nn.InstanceNorm2d(16, affine=True)
        self.conv2 = nn.Conv2d(16, 32, 3, 2, 1)
        self.scale = nn.Parameter(torch.ones(32))
        self.shift = nn.Parameter(torch.zeros(32))
        self.conv3 = nn.Conv2d(32, 64, 3, 2, 1)
        self.in3 = nn.InstanceNorm2d(64, affine=True)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.in1(self.conv1(x)))
        x = F.relu(F.instance_norm(self.conv2(x), weight=self.scale, bias=self.shift))
        x = F.relu(self.in3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))
