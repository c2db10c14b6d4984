"""CIFAR VGG as in network slimming (Liu et al. 2017): bias-free 3x3 convs with BN, one linear classifier."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from prunekit.errors import PrunekitError
from prunekit.models.init import init_conv_bn
from prunekit.models.registry import register_model

CFGS: dict[str, list] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}


class VGG(nn.Module):
    """``features`` (Conv3x3-BN-ReLU stacks, MaxPool for 'M') -> global average pool -> ``classifier``.

    ``cfg`` lists conv widths and 'M' for a 2x2 max pool.
    """

    classifier_name = "classifier"

    def __init__(self, cfg: list, num_classes: int = 10):
        super().__init__()
        widths = _check_cfg(cfg)
        self.features = _make_features(cfg)
        self.classifier = nn.Linear(widths[-1], num_classes)
        init_conv_bn(self, linear_std=0.01)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # pooled functionally, as network slimming's VGG does, so module-hook counters (thop) see what
        # they see there: no pooling module
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def _check_cfg(cfg: list) -> list[int]:
    ok = isinstance(cfg, (list, tuple)) and all(
        v == "M" or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in cfg
    )
    widths = [v for v in cfg if v != "M"] if ok else []
    if not widths:
        raise PrunekitError(f"VGG cfg must be a list of positive ints and 'M' with at least one int, got {cfg!r}")
    return widths


def _make_features(cfg: list) -> nn.Sequential:
    layers: list[nn.Module] = []
    in_channels = 3
    for v in cfg:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            continue
        layers += [nn.Conv2d(in_channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(inplace=True)]
        in_channels = v
    return nn.Sequential(*layers)


@register_model
def vgg11(num_classes: int = 10, cfg: list | None = None) -> VGG:
    """VGG-11, network-slimming CIFAR variant (9.23M params for 10 classes)."""
    return VGG(CFGS["vgg11"] if cfg is None else cfg, num_classes)


@register_model
def vgg13(num_classes: int = 10, cfg: list | None = None) -> VGG:
    """VGG-13, network-slimming CIFAR variant."""
    return VGG(CFGS["vgg13"] if cfg is None else cfg, num_classes)


@register_model
def vgg16(num_classes: int = 10, cfg: list | None = None) -> VGG:
    """VGG-16, network-slimming CIFAR variant."""
    return VGG(CFGS["vgg16"] if cfg is None else cfg, num_classes)


@register_model
def vgg19(num_classes: int = 10, cfg: list | None = None) -> VGG:
    """VGG-19, network-slimming CIFAR variant."""
    return VGG(CFGS["vgg19"] if cfg is None else cfg, num_classes)
