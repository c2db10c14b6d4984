"""Callbacks that extend :func:`prunekit.train.fit` without touching the loop."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

import prunekit.paths as paths
from prunekit.train.distributed import is_main_process


class Callback:
    """Hooks into :func:`fit`; override what you need. Every hook may mutate the model in place.

    Order per epoch: ``after_backward`` after every backward pass; then, once the epoch is trained and
    evaluated, ``on_state`` of every callback (writers: checkpoints, metrics), then ``on_epoch_end`` of
    every callback (so a callback that interrupts the run never loses the finished epoch).
    """

    def on_fit_start(self, model: nn.Module, config) -> None:
        """Called once before the first epoch (also when resuming), with the run's TrainConfig."""

    def training_loss(self, x: torch.Tensor, logits: torch.Tensor, y: torch.Tensor,
                      loss: torch.Tensor) -> torch.Tensor:
        """Called on every training batch before ``backward``: returns the loss to minimise (default: ``loss``
        unchanged). Callbacks chain in order (e.g. knowledge distillation mixes in a teacher's term)."""
        return loss

    def after_backward(self, model: nn.Module) -> None:
        """Called after ``loss.backward()``, before the optimizer step (e.g. to edit gradients)."""

    def on_state(self, model: nn.Module, record: dict, state, is_best: bool) -> None:
        """Called after each epoch with its record and the resumable :class:`prunekit.train.state.TrainState`;
        ``is_best`` when the epoch has the best validation top-1 so far."""

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        """Called after each epoch with its metrics record."""


class SlimmingRegularizer(Callback):
    """Network slimming (Liu et al. 2017): adds the subgradient of ``λ·Σ|γ|`` to every BN scale's gradient."""

    def __init__(self, strength: float):
        self.strength = strength

    def after_backward(self, model: nn.Module) -> None:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None:
                if module.weight.grad is not None:
                    module.weight.grad.add_(self.strength * torch.sign(module.weight.detach()))


class EpochSnapshots(Callback):
    """Keeps ``epoch_N.pt`` after every epoch (rewinding points for lottery tickets); rank 0 only."""

    def __init__(self, model, run_dir: Path, meta: dict):
        self.model, self.run_dir, self.meta = model, Path(run_dir), meta

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        from prunekit.checkpoint import save_checkpoint

        if is_main_process():
            save_checkpoint(self.model, paths.epoch_snapshot(self.run_dir, epoch + 1), {**self.meta, "epoch": epoch + 1})


class PrintEpoch(Callback):
    """Prints one line of metrics per epoch (rank 0 only), ending in ``note`` (e.g. `` (SYNTHETIC data)``)."""

    def __init__(self, note: str = ""):
        self.note = note

    def on_epoch_end(self, epoch: int, record: dict) -> None:
        if is_main_process():
            print(format_record(record) + self.note, flush=True)


def format_record(record: dict) -> str:
    evaluated = ", ".join(f"{k} {record[k]:.2f}" for k in record if k.endswith("_top1") and k != "train_top1")
    return (f"epoch {record['epoch']:>3}: train loss {record['train_loss']:.4f} acc {record['train_top1']:.2f}% | "
            f"{evaluated} | {record['images_per_second']:.0f} img/s")
