"""Channel shuffle in ShuffleNet v1 / v2 units, written several ways (and the identity g = 1).

Written for prunekit's test fixtures to mimic common spellings of the shuffle:
``x.view(N, g, C // g, H, W).transpose(1, 2).contiguous().view(N, C, H, W)`` and
``x.reshape(N, g, C // g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W)``, plus a module form.
No third-party code copied.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def shuffle_view_transpose(x, groups):
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w)
    x = x.transpose(1, 2).contiguous()
    return x.view(n, c, h, w)


def shuffle_reshape_permute(x, g):
    N, C, H, W = x.shape
    return x.reshape(N, g, C // g, H, W).permute(0, 2, 1, 3, 4).reshape(N, C, H, W)


class ShuffleLayer(nn.Module):
    def __init__(self, groups):
        super().__init__()
        self.groups = groups

    def forward(self, x):
        b, c, h, w = x.shape
        per = c // self.groups
        return x.view(b, self.groups, per, h, w).transpose(1, 2).flatten(1, 2)


# --------------------------------------------------------------------------- ShuffleNet v1
class V1Unit(nn.Module):
    """Grouped 1x1 -> shuffle -> dw 3x3 -> grouped 1x1; add (stride 1) or cat with avg-pooled input."""

    def __init__(self, cin, cout, stride, groups, shuffle_fn, first_grouped=True):
        super().__init__()
        self.stride = stride
        self.groups = groups
        self.shuffle_fn = shuffle_fn
        mid = cout // 4
        if stride == 2:
            cout = cout - cin
        g1 = groups if first_grouped else 1
        self.conv1 = nn.Conv2d(cin, mid, 1, groups=g1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = nn.Conv2d(mid, cout, 1, groups=groups, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.shuffle_fn(out, self.groups)
        out = self.bn2(self.conv2(out))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            return F.relu(torch.cat([out, F.avg_pool2d(x, 3, stride=2, padding=1)], 1))
        return F.relu(out + x)


class ShuffleV1Tiny(nn.Module):
    def __init__(self, groups=2, shuffle_fn=shuffle_view_transpose, widths=(48, 96, 192)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 24, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(24)
        units, cin = [], 24
        for i, w in enumerate(widths):
            units.append(V1Unit(cin, w, 2, groups, shuffle_fn, first_grouped=i > 0))
            units.append(V1Unit(w, w, 1, groups, shuffle_fn))
            cin = w
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.units(x)
        x = F.avg_pool2d(x, 4)
        return self.fc(x.view(x.size(0), -1))


def shufflev1_g2_view_transpose():
    return ShuffleV1Tiny(groups=2, shuffle_fn=shuffle_view_transpose)


def shufflev1_g4_reshape_permute():
    return ShuffleV1Tiny(groups=4, shuffle_fn=shuffle_reshape_permute, widths=(64, 128, 256))


# --------------------------------------------------------------------------- ShuffleNet v2
class V2Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.stride = stride
        branch = cout // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False),
                nn.BatchNorm2d(cin),
                nn.Conv2d(cin, branch, 1, bias=False),
                nn.BatchNorm2d(branch),
                nn.ReLU(inplace=True),
            )
        else:
            self.branch1 = nn.Sequential()
        bin_ = cin if stride > 1 else branch
        self.branch2 = nn.Sequential(
            nn.Conv2d(bin_, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
            nn.Conv2d(branch, branch, 3, stride, 1, groups=branch, bias=False),
            nn.BatchNorm2d(branch),
            nn.Conv2d(branch, branch, 1, bias=False),
            nn.BatchNorm2d(branch),
            nn.ReLU(inplace=True),
        )
        self.shuffle = ShuffleLayer(2)

    def forward(self, x):
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return self.shuffle(out)


class ShuffleV2Tiny(nn.Module):
    def __init__(self, repeats=(2, 2, 1), channels=(24, 48, 96, 192, 256)):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(3, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU(inplace=True))
        stages, cin = [], channels[0]
        for n, cout in zip(repeats, channels[1:4]):
            seq = [V2Block(cin, cout, 2)] + [V2Block(cout, cout, 1) for _ in range(n - 1)]
            stages.append(nn.Sequential(*seq))
            cin = cout
        self.stage2, self.stage3, self.stage4 = stages
        self.conv5 = nn.Sequential(nn.Conv2d(cin, channels[-1], 1, bias=False), nn.BatchNorm2d(channels[-1]), nn.ReLU(inplace=True))
        self.fc = nn.Linear(channels[-1], 10)

    def forward(self, x):
        x = self.conv1(x)
        x = self.stage2(x)
        x = self.stage3(x)
        x = self.stage4(x)
        x = self.conv5(x)
        x = x.mean([2, 3])
        return self.fc(x)


# --------------------------------------------------------------------------- identity shuffle g = 1
class ShuffleG1Net(nn.Module):
    """Shuffle with one group is a no-op reshape chain; both spellings are used once each."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.n1 = nn.BatchNorm2d(32)
        self.c2 = nn.Conv2d(32, 64, 3, 2, 1, bias=False)
        self.n2 = nn.BatchNorm2d(64)
        self.c3 = nn.Conv2d(64, 64, 3, 2, 1, bias=False)
        self.n3 = nn.BatchNorm2d(64)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = F.relu(self.n1(self.c1(x)))
        x = shuffle_view_transpose(x, 1)
        x = F.relu(self.n2(self.c2(x)))
        x = shuffle_reshape_permute(x, 1)
        x = F.relu(self.n3(self.c3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))
