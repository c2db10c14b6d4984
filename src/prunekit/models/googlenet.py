"""CIFAR GoogLeNets with the module names of the public code bases, so their checkpoints load:

* ``googlenet``: kuangliu/pytorch-cifar (one 3→192 stem conv, no pool before the first inception block);
* ``googlenet_cifar100``: weiaicunzai/pytorch-cifar100, the GoogLeNet CIFAR-100 students train (three bias-free
  stem convs 3→64→64→192 in ``prelayer``, a max-pool before ``a3``, dropout before ``linear``).

Both share :class:`Inception` (``b1``..``b4`` Sequentials with identical indices).
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.models.registry import register_model


def _conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> list[nn.Module]:
    padding = kernel_size // 2
    return [
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=padding),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(True),
    ]


class Inception(nn.Module):
    """Four branches concatenated: 1x1 | 1x1-3x3 | 1x1-3x3-3x3 | maxpool3x3-1x1."""

    def __init__(self, in_planes, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes, b3_bn_eps: float = 1e-5):
        super().__init__()
        self.b1 = nn.Sequential(*_conv_bn_relu(in_planes, n1x1, 1))
        self.b2 = nn.Sequential(*_conv_bn_relu(in_planes, n3x3red, 1), *_conv_bn_relu(n3x3red, n3x3, 3))
        self.b3 = nn.Sequential(
            *_conv_bn_relu(in_planes, n5x5red, 1),
            *_conv_bn_relu(n5x5red, n5x5, 3),
            *_conv_bn_relu(n5x5, n5x5, 3),
        )
        self.b3[4].eps = b3_bn_eps
        self.b4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), *_conv_bn_relu(in_planes, pool_planes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class GoogLeNet(nn.Module):
    """pre_layers -> a3 b3 -> pool -> a4..e4 -> pool -> a5 b5 -> global pool -> ``linear``."""

    classifier_name = "linear"

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.pre_layers = nn.Sequential(*_conv_bn_relu(3, 192, 3))
        _add_inceptions(self)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.b3(self.a3(self.pre_layers(x)))
        out = self.maxpool(out)
        out = self.e4(self.d4(self.c4(self.b4(self.a4(out)))))
        out = self.maxpool(out)
        out = self.avgpool(self.b5(self.a5(out)))
        return self.linear(torch.flatten(out, 1))


# (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5 (two 3x3), pool projection) of Szegedy et al.'s table 1
INCEPTIONS = {
    "a3": (192, 64, 96, 128, 16, 32, 32), "b3": (256, 128, 128, 192, 32, 96, 64),
    "a4": (480, 192, 96, 208, 16, 48, 64), "b4": (512, 160, 112, 224, 24, 64, 64),
    "c4": (512, 128, 128, 256, 24, 64, 64), "d4": (512, 112, 144, 288, 32, 64, 64),
    "e4": (528, 256, 160, 320, 32, 128, 128),
    "a5": (832, 256, 160, 320, 32, 128, 128), "b5": (832, 384, 192, 384, 48, 128, 128),
}


def _add_inceptions(model: nn.Module, quirk_eps: bool = False) -> None:
    """Add ``a3 b3 maxpool a4..e4 a5 b5`` (registration order as in both public code bases)."""
    for name, widths in INCEPTIONS.items():
        # weiaicunzai's b3 writes nn.BatchNorm2d(n5x5, n5x5): the second argument is eps, so that BN divides
        # by sqrt(var + n5x5); kept, or its checkpoints would give other outputs
        setattr(model, name, Inception(*widths, b3_bn_eps=float(widths[5]) if quirk_eps else 1e-5))
        if name == "b3":
            model.maxpool = nn.MaxPool2d(3, stride=2, padding=1)


class GoogLeNetCifar100(nn.Module):
    """``prelayer`` (3→64→64→192, bias-free 3x3 convs with BN/ReLU) -> maxpool -> a3 b3 -> maxpool -> a4..e4 ->
    maxpool -> a5 b5 -> global pool -> dropout -> ``linear``: weiaicunzai/pytorch-cifar100's layout."""

    classifier_name = "linear"

    def __init__(self, num_classes: int = 100):
        super().__init__()
        self.prelayer = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.Conv2d(64, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), nn.ReLU(True),
            nn.Conv2d(64, 192, 3, padding=1, bias=False), nn.BatchNorm2d(192), nn.ReLU(True),
        )
        _add_inceptions(self, quirk_eps=True)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout2d(p=0.4)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.maxpool(self.prelayer(x))
        out = self.maxpool(self.b3(self.a3(out)))
        out = self.maxpool(self.e4(self.d4(self.c4(self.b4(self.a4(out))))))
        out = self.dropout(self.avgpool(self.b5(self.a5(out))))
        return self.linear(torch.flatten(out, 1))


@register_model
def googlenet_cifar100(num_classes: int = 10) -> GoogLeNetCifar100:
    """GoogLeNet of weiaicunzai/pytorch-cifar100 (3-conv stem, pool before a3; 6.40M params at 100 classes)."""
    return GoogLeNetCifar100(num_classes)


@register_model
def googlenet(num_classes: int = 10) -> GoogLeNet:
    """GoogLeNet, kuangliu/pytorch-cifar variant (3x3 stem, two 3x3 convs for the 5x5 branch)."""
    return GoogLeNet(num_classes)
