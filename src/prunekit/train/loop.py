"""The training loop: short, device-resident, extended through callbacks.

It knows nothing about pruning: a masked model trains here unchanged because its masks live in the model
(forward pre-hooks), and pruning-specific behaviour (e.g. the slimming regulariser) plugs in as a callback.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import torch
from torch import nn
from tqdm.auto import tqdm

import prunekit.paths as paths
import prunekit.train.distributed as distributed
from prunekit.config import TrainConfig
from prunekit.data import DataBundle, DeviceLoader
from prunekit.evaluation import autocast_for, evaluate
from prunekit.train.callbacks import Callback, SlimmingRegularizer
from prunekit.train.optim import make_optimizer, make_scheduler
from prunekit.train.state import TrainState
from prunekit.train.writers import CheckpointWriter, MetricsWriter

#: The training progress bar moves every batch and shows loss/accuracy at least this often (seconds).
PROGRESS_SECONDS = 2.0


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU; ``cuda`` without a GPU raises a clear error."""
    from prunekit.errors import PrunekitError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise PrunekitError("--device cuda was asked for but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and every CUDA device) global generators with ``seed``.
    Call it before building a model so its initialisation is reproducible."""
    import numpy as np

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


DIVERGED_LOSS = 1e3  # nats per image: no learning model gets near it (chance on 100 classes is 4.6)


def diverged_loss(record: dict) -> tuple[str, float] | None:
    """``(key, value)`` of the first loss in an epoch ``record`` (training, then validation/test) that is NaN,
    infinite or above :data:`DIVERGED_LOSS`; None when all are sane (a split of 0 images has no loss)."""
    for key in sorted((k for k in record if k.endswith("loss")), key=lambda k: k != "train_loss"):
        value = record[key]
        if record.get(key.removesuffix("loss") + "images") == 0:
            continue
        if not math.isfinite(value) or value > DIVERGED_LOSS:
            return key, value
    return None


def check_finite(record: dict, config: TrainConfig, run_dir: str | Path | None) -> None:
    """PrunekitError when the epoch's training or evaluation loss is NaN, infinite or above
    :data:`DIVERGED_LOSS`: the run stops before that epoch is saved, so ``last.pt`` keeps the last good epoch."""
    from prunekit.errors import PrunekitError

    diverged = diverged_loss(record)
    if diverged is None:
        return
    saved = run_dir is not None and paths.last(run_dir).exists()
    kept = f"{paths.last(run_dir)} keeps the last good epoch ({record['epoch'] - 1})" if saved else "nothing was saved"
    raise PrunekitError(f"training diverged in epoch {record['epoch']}: the {diverged[0].replace('_', ' ')} is "
                        f"{diverged[1]:.4g}; {kept}. Lower the learning rate (--lr {config.lr}) or check the data "
                        "and model")


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, optimizer: torch.optim.Optimizer,
               loss_fn, device: torch.device, callbacks: Iterable[Callback] = ()) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step; returns (summed loss, number correct) as device tensors (no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    with autocast_for(device):
        logits = model(x)
    loss = loss_fn(logits.float(), y)
    for cb in callbacks:
        hook = getattr(cb, "training_loss", None)  # duck-typed callbacks may not have it
        if hook is not None:
            loss = hook(x, logits.float(), y, loss)
    loss.backward()
    for cb in callbacks:
        cb.after_backward(model)
    optimizer.step()
    return loss.detach() * y.numel(), (logits.detach().argmax(1) == y).sum()


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)
    best: dict | None = None  # the history record of the best validation epoch
    seconds: float = 0.0


def make_loaders(data: DataBundle, config: TrainConfig, device: torch.device,
                 rank: int = 0, world_size: int = 1) -> tuple[DeviceLoader, DeviceLoader | None, DeviceLoader]:
    """Training loader (augmented, sharded across ranks) plus evaluation loaders for val and test.

    ``config.batch_size`` is the global batch: each of ``world_size`` ranks takes an equal part."""
    from prunekit.errors import PrunekitError

    if config.batch_size % world_size:
        raise PrunekitError(f"batch size {config.batch_size} does not split evenly over {world_size} processes")
    common = dict(mean=data.info.mean, std=data.info.std, device=device, channels_last=device.type == "cuda")
    train = DeviceLoader(*data.train, config.batch_size // world_size, train=True, seed=config.seed,
                         crop_padding=4 if config.augment else 0, flip=config.augment, cutout=config.cutout,
                         rank=rank, world_size=world_size, **common)
    val = DeviceLoader(*data.val, 500, train=False, **common) if data.val is not None else None
    test = DeviceLoader(*data.test, 500, train=False, **common)
    return train, val, test


def sample_batches(data: DataBundle, count: int, batch_size: int = 128, seed: int = 0,
                   device: torch.device | str = "cpu") -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` normalised, unaugmented batches of the training split in a seeded random order (the same
    images for the same seed): data for BN recalibration and data-driven pruning criteria."""
    if count <= 0:
        return []
    images, labels = data.train
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:count * batch_size]
    loader = DeviceLoader(images[order], labels[order], batch_size, mean=data.info.mean, std=data.info.std,
                          train=False, device=torch.device(device))
    return list(loader)


def fit(model: nn.Module, data: DataBundle, config: TrainConfig, run_dir: str | Path | None = None,
        resume: TrainState | dict | None = None, callbacks: Iterable[Callback] = (), meta: dict | None = None,
        progress: bool = True) -> FitResult:
    """Train ``model`` in place for ``config.epochs`` epochs.

    Side effects: moves the model to the training device; when ``run_dir`` is given writes
    ``last.pt`` every epoch (with the resumable ``train_state``), ``best.pt`` on the best validation
    top-1 (only when the data has a validation split), ``metrics.csv``/``metrics.json`` and
    ``config.json`` (through :class:`CheckpointWriter` and :class:`MetricsWriter`). ``resume`` is the
    :class:`TrainState` (or its dict, a checkpoint's ``train_state``) of ``last.pt``: optimizer, scheduler,
    epoch, RNG and loader state are restored so the run continues exactly.

    Under ``torchrun`` each process trains its shard through DistributedDataParallel and only rank 0
    writes files or shows progress (see :mod:`prunekit.train.distributed`).
    """
    rank, world_size, device = distributed.setup(resolve_device(config.device))
    torch.manual_seed(config.seed)
    prepare(model, device)
    callbacks = run_callbacks(callbacks, config, run_dir if rank == 0 else None, meta)
    train_loader, val_loader, test_loader = make_loaders(data, config, device, rank, world_size)
    optimizer = make_optimizer(model, config)
    scheduler = make_scheduler(optimizer, config, len(train_loader))
    state = TrainState.from_dict(resume) if isinstance(resume, dict) else resume or TrainState()
    if resume:
        state.restore(optimizer, scheduler, train_loader)
    state.config = config.model_dump(mode="json")
    step_model = distributed.wrap(model, device, config.sync_bn)
    step_model = torch.compile(step_model) if config.compile else step_model
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    eval_loader, split = (val_loader, "val") if val_loader is not None else (test_loader, "test")
    notify(callbacks, "on_fit_start", model, config)
    started = time.perf_counter()
    for epoch in range(state.epoch, config.epochs):
        record = train_epoch(step_model, train_loader, optimizer, scheduler, loss_fn, device, callbacks,
                             epoch, config, progress and rank == 0)
        record["lr"] = scheduler.get_last_lr()[0]
        record.update(evaluate(model, eval_loader, device).as_dict(f"{split}_"))
        check_finite(record, config, run_dir)
        is_best = state.add_epoch(record)
        state.capture(epoch + 1, optimizer, scheduler, train_loader)
        notify(callbacks, "on_state", model, record, state, is_best)
        # after saving: a callback that interrupts never loses the finished epoch
        notify(callbacks, "on_epoch_end", epoch, record)
    return FitResult(history=state.history, best=state.best, seconds=time.perf_counter() - started)


def notify(callbacks: Iterable[Callback], hook: str, *args) -> None:
    """Call ``hook`` on every callback that has it (duck-typed callbacks may define only some hooks)."""
    for cb in callbacks:
        method = getattr(cb, hook, None)
        if method is not None:
            method(*args)


def prepare(model: nn.Module, device: torch.device) -> None:
    """Move ``model`` to ``device`` (channels-last memory on CUDA)."""
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)


def run_callbacks(callbacks: Iterable[Callback], config: TrainConfig, run_dir: str | Path | None,
                  meta: dict | None) -> list[Callback]:
    """The caller's callbacks, then the slimming regulariser when ``config`` asks for it, then the run
    folder writers when there is a ``run_dir`` (writers run their ``on_state`` before anyone's
    ``on_epoch_end`` all the same)."""
    callbacks = list(callbacks)
    if config.sparsity_reg > 0:
        callbacks.append(SlimmingRegularizer(config.sparsity_reg))
    if run_dir:
        callbacks += [CheckpointWriter(run_dir, meta), MetricsWriter(run_dir)]
    return callbacks


def train_epoch(model, loader, optimizer, scheduler, loss_fn, device, callbacks, epoch: int,
                config: TrainConfig, progress: bool) -> dict:
    """One pass over ``loader``; returns the epoch's mean training loss/accuracy and wall time."""
    model.train()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen = 0
    started = last_shown = time.perf_counter()
    bar = tqdm(total=len(loader), desc=f"epoch {epoch + 1}/{config.epochs}", disable=not progress,
               leave=False, dynamic_ncols=True, mininterval=PROGRESS_SECONDS / 2)
    for step, (x, y) in enumerate(loader):
        batch_loss, batch_correct = train_step(model, x, y, optimizer, loss_fn, device, callbacks)
        scheduler.step()
        loss_sum += batch_loss
        correct += batch_correct
        seen += y.numel()
        if progress:
            bar.update(1)  # every batch; tqdm redraws at most every mininterval
            now = time.perf_counter()
            if (step + 1) % config.log_every == 0 or now - last_shown >= PROGRESS_SECONDS or step + 1 == len(loader):
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{100 * correct.item() / seen:.1f}%")
                last_shown = now
    bar.close()
    seconds = time.perf_counter() - started
    return {"epoch": epoch + 1, "train_loss": loss_sum.item() / max(seen, 1),
            "train_top1": 100.0 * correct.item() / max(seen, 1), "epoch_seconds": seconds,
            "images_per_second": seen / seconds if seconds else float("nan")}
