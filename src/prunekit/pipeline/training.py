"""Training a model into a run folder: what ``prunekit train`` and the experiment runner's baseline share, and the
one way a train or fine-tune run is resumed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from torch import nn

import prunekit.paths as paths
import prunekit.train as training_loop
from prunekit.checkpoint import Checkpoint, update_meta
from prunekit.config import TrainConfig
from prunekit.data import DataBundle
from prunekit.evaluation import Metrics, evaluate_split
from prunekit.train import Callback, FitResult
from prunekit.train.distributed import is_main_process


@dataclass
class TrainedModel:
    """What :func:`train_model` produced: the fit (history, seconds) and, in the main process, the test
    evaluation (``None`` in the other processes of a distributed run)."""

    fit: FitResult
    test: Metrics | None


def data_meta(data: DataBundle) -> dict:
    """What a checkpoint trained on ``data`` records about it: synthetic or not, classes, the input
    normalisation (mean/std) and the number of training images."""
    return {"synthetic": data.synthetic, "num_classes": data.info.num_classes, "mean": list(data.info.mean),
            "std": list(data.info.std), "train_images": len(data.train[1])}


def resumed_config(checkpoint: Checkpoint, epochs: int | None = None) -> TrainConfig:
    """The training config saved in a resumable ``checkpoint`` (see
    :func:`prunekit.checkpoint.resume_point`), with ``epochs`` replaced when given: a resumed run may extend
    (or shorten) its schedule."""
    config = TrainConfig(**checkpoint.train_state["config"])
    return config if epochs is None else config.model_copy(update={"epochs": epochs})


def train_model(model: nn.Module, data: DataBundle, config: TrainConfig, run_dir: str | Path,
                resume: dict | None = None, meta: dict | None = None, callbacks: Sequence[Callback] = (),
                progress: bool = True) -> TrainedModel:
    """``fit`` ``model`` in ``run_dir`` (continuing the ``resume`` train state when given), then, in the main
    process, evaluate it on the test split and add the test metrics and the training seconds to
    ``run_dir/last.pt``'s meta. Side effects: ``model`` is trained in place; ``run_dir`` holds ``fit``'s files."""
    # looked up at call time, so a replaced prunekit.train.fit (a test's interruption) is the one called
    result = training_loop.fit(model, data, config, run_dir=run_dir, resume=resume, meta=meta,
                               callbacks=list(callbacks), progress=progress)
    if not is_main_process():
        return TrainedModel(result, None)
    test = evaluate_split(model, data, "test", device=next(model.parameters()).device)
    if paths.last(run_dir).exists():
        update_meta(paths.last(run_dir), **test.as_test_meta(), train_seconds=result.seconds)
    return TrainedModel(result, test)
