"""Channels-last blocks as modern model libraries write them: ``permute(0, 2, 3, 1)``, LayerNorm and a
Linear MLP on the last axis, a per-channel layer scale ``gamma``, tokens by ``flatten(2).transpose(1, 2)``,
a 1x1-conv MLP with ``gamma.reshape(1, -1, 1, 1)``, and a global response norm in a channels-last MLP. Written
for prunekit's tests; no third-party code."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor (permute, normalise, permute back)."""

    def forward(self, x):
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class NextBlock(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, Linear MLP (4x), layer scale, residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(F.gelu(self.pwconv1(self.norm(x))))
        x = self.gamma * x
        return shortcut + x.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    """ConvNeXt-like: patchify stem + LayerNorm2d, two stages, LayerNorm2d + stride-2 conv downsampling."""

    def __init__(self, dims=(16, 32)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0]))
        self.stage1 = nn.Sequential(NextBlock(dims[0]), NextBlock(dims[0]))
        self.down = nn.Sequential(LayerNorm2d(dims[0]), nn.Conv2d(dims[0], dims[1], 2, 2))
        self.stage2 = nn.Sequential(NextBlock(dims[1]), NextBlock(dims[1]))
        self.head_norm = nn.LayerNorm(dims[1])
        self.fc = nn.Linear(dims[1], 10)

    def forward(self, x):
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.fc(self.head_norm(x.mean((2, 3))))


class ConvMlpBlock(nn.Module):
    """BatchNorm, 1x1-conv MLP, layer scale as ``x.mul(gamma.reshape(1, -1, 1, 1))`` and a learned
    per-channel bias ``x + self.bias`` on the hidden width."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(dim)
        self.fc1 = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.hidden_bias = nn.Parameter(torch.full((1, 3 * dim, 1, 1), 0.1))
        self.fc2 = nn.Conv2d(3 * dim, dim, 1)
        self.gamma = nn.Parameter(torch.full((dim,), 0.3))

    def forward(self, x):
        y = self.fc2(F.gelu(self.fc1(self.norm(x)) + self.hidden_bias))
        return x + y.mul(self.gamma.reshape(1, -1, 1, 1))


class LayerScaleConvNet(nn.Module):
    """Conv stem, two ConvMlpBlocks per stage, plain conv downsampling."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 3, 2, 1)
        self.stage1 = nn.Sequential(ConvMlpBlock(24), ConvMlpBlock(24))
        self.down = nn.Conv2d(24, 48, 3, 2, 1)
        self.stage2 = nn.Sequential(ConvMlpBlock(48), ConvMlpBlock(48))
        self.fc = nn.Linear(48, 10)

    def forward(self, x):
        return self.fc(self.stage2(self.down(self.stage1(self.stem(x)))).mean((2, 3)))


class TokenMixerNet(nn.Module):
    """Conv patches, then tokens ``x.flatten(2).transpose(1, 2)``: a per-token MLP with layer scale
    ``x * self.ls[None, None, :]``, back to NCHW by ``transpose(1, 2).reshape(n, c, h, w)``, then a conv."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.patch = nn.Conv2d(3, dim, 4, 4)
        self.norm = nn.BatchNorm2d(dim)
        self.mlp_in = nn.Linear(dim, 2 * dim)
        self.mlp_out = nn.Linear(2 * dim, dim)
        self.ls = nn.Parameter(torch.full((dim,), 0.2))
        self.conv = nn.Conv2d(dim, 64, 3, 2, 1)
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        x = self.norm(self.patch(x))
        n, c, h, w = x.shape
        tokens = x.flatten(2).transpose(1, 2)
        tokens = tokens + self.mlp_out(F.gelu(self.mlp_in(tokens))) * self.ls[None, None, :]
        x = tokens.transpose(1, 2).reshape(n, c, h, w)
        return self.fc(F.relu(self.conv(x)).mean((2, 3)))


class GlobalResponseNorm(nn.Module):
    """Global response norm on a channels-last tensor: each channel's L2 norm over the positions, divided by its
    mean over the channels, scales the input: ``x + bias + weight * x * norm``."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1.0, 1.0, dim))
        self.bias = nn.Parameter(torch.linspace(0.5, -0.5, dim))
        self.eps = eps

    def forward(self, x):
        norm = x.norm(p=2, dim=(1, 2), keepdim=True)
        norm = norm / (norm.mean(dim=-1, keepdim=True) + self.eps)
        return x + self.bias + self.weight * x * norm


class NextV2Block(nn.Module):
    """Depthwise 7x7, channels-last LayerNorm, Linear MLP (4x) with a global response norm after the activation
    (no layer scale), residual."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.grn = GlobalResponseNorm(4 * dim)
        self.pwconv2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        shortcut = x
        x = self.dwconv(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.grn(F.gelu(self.pwconv1(self.norm(x)))))
        return shortcut + x.permute(0, 3, 1, 2)


class TinyConvNeXtV2(TinyConvNeXt):
    """TinyConvNeXt with NextV2Blocks."""

    def __init__(self, dims=(16, 32)):
        super().__init__(dims)
        self.stage1 = nn.Sequential(NextV2Block(dims[0]), NextV2Block(dims[0]))
        self.stage2 = nn.Sequential(NextV2Block(dims[1]), NextV2Block(dims[1]))
