"""Optimizer and per-step learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from prunekit.config import TrainConfig


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD over every trainable parameter (masked weights train through ``weight_orig``)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                           weight_decay=config.weight_decay, nesterov=config.nesterov and config.momentum > 0)


def lr_factor(step: int, total_steps: int, warmup_steps: int, config: TrainConfig) -> float:
    """Multiplier of the peak lr at optimizer step ``step`` (0-based)."""
    if warmup_steps and step < warmup_steps:
        return (step + 1) / warmup_steps
    if config.schedule == "constant" or total_steps <= warmup_steps:
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    passed = sum(progress >= m for m in config.milestones)
    return config.gamma ** passed


def make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                   steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step ``LambdaLR`` implementing warm-up then cosine/step/constant decay."""
    total = steps_per_epoch * config.epochs
    warmup = round(steps_per_epoch * config.warmup_epochs)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, warmup, config))
