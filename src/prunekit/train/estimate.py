"""How long :func:`prunekit.train.fit` will take, measured before it starts.

A CPU run with the papers' budgets (``train --epochs 160`` on 50,000 images) takes many hours; the user
should know that before the first epoch, not after it. :func:`estimate_fit_seconds` times a few training
steps of a copy of the model at the run's batch size on the run's device (one untimed warm-up step, then
the median of the timed ones) and scales them to the run's epochs, counting each evaluated image as
:data:`EVAL_COST` of a training image (a forward pass only).
"""

from __future__ import annotations

import math
import statistics
import time

import torch
from torch import nn

from prunekit.config import TrainConfig
from prunekit.data import DataBundle
from prunekit.images import IMAGE_SHAPE
from prunekit.masking import permanent_copy

#: Cost of evaluating an image relative to one training step on it (forward only, no backward).
EVAL_COST = 1 / 3


def seconds_per_step(model: nn.Module, config: TrainConfig, device: torch.device, steps: int = 2,
                     image_shape: tuple[int, ...] = IMAGE_SHAPE, num_classes: int = 10) -> float:
    """Median wall seconds of one SGD step (forward, backward, update) at ``config.batch_size`` on a copy of
    ``model`` (masks made permanent: a masked model cannot be deep-copied), after one untimed warm-up step.
    The model itself is left untouched."""
    probe = permanent_copy(model).to(device).train()
    optimizer = torch.optim.SGD(probe.parameters(), lr=0.0)
    x = torch.randn(config.batch_size, *image_shape, device=device)
    y = torch.randint(0, num_classes, (config.batch_size,), device=device)
    times = []
    for _ in range(steps + 1):
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(probe(x), y).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times[1:])


def estimate_fit_seconds(model: nn.Module, data: DataBundle, config: TrainConfig, device: torch.device,
                         start_epoch: int = 0) -> float:
    """Estimated seconds of ``fit(model, data, config)`` from epoch ``start_epoch`` on: per epoch, the
    training steps plus the evaluation of the validation (else test) split."""
    evaluated = len((data.val if data.val is not None else data.test)[1])
    step = seconds_per_step(model, config, device, image_shape=tuple(data.train[0].shape[1:]),
                            num_classes=data.info.num_classes)
    per_epoch = step * (math.ceil(len(data.train[1]) / config.batch_size) + EVAL_COST * evaluated / config.batch_size)
    return max(0, config.epochs - start_epoch) * per_epoch


def describe_estimate(seconds: float, epochs: int, device: torch.device) -> str:
    """``estimated time on this cpu: ~1.6 h (160 epochs × ~36 s, from 2 timed steps)``, plus what to do
    when that is more than an hour."""
    per_epoch = seconds / epochs if epochs else 0.0
    total = f"~{seconds / 3600:.1f} h" if seconds >= 5400 else f"~{seconds / 60:.0f} min" if seconds >= 90 \
        else f"~{seconds:.0f} s"
    line = (f"estimated time on this {device.type}: {total} ({epochs} epochs × ~{per_epoch:.0f} s, "
            "from 2 timed training steps)")
    if seconds >= 3600:
        line += ("; that is a long run: fewer --epochs (or --limit-train N) or a GPU makes it shorter, Ctrl-C "
                 "keeps the finished epochs and --resume RUN/last.pt continues")
    return line
