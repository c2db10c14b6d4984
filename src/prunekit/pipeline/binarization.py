"""Binarize a checkpoint's model and fine-tune it with the straight-through estimator: where
:mod:`prunekit.binarize` meets the training loop (the way :mod:`prunekit.pipeline.pruning` joins pruning and
training).

There is no second loop: the binarized model trains in :func:`prunekit.pipeline.finetuning.finetune` (``fit``), whose
optimizer holds the latent fp32 weights while every forward pass uses the binarized ones. A masked model
stays masked, so the result of ``prune`` then ``binarize`` is ternary (0 or ±α).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from torch import nn

import prunekit.paths as paths
from prunekit.binarize import BinarizeConfig, binarize_model, select_layers
from prunekit.checkpoint import resume_point, save_checkpoint
from prunekit.config import TrainConfig
from prunekit.data import DataBundle
from prunekit.measure import count_nonzero_parameters
from prunekit.evaluation import evaluate_split
from prunekit.pipeline.finetuning import finetune
from prunekit.pipeline.inputs import inherited_meta, with_normalisation
from prunekit.train import Callback, resolve_device

METHOD_LABELS = {"bwn": "BWN", "binaryconnect": "BinaryConnect"}


@dataclass
class BinarizeResult:
    """Test top-1 of the fp32 source, of the binarized model before and after fine-tuning, and the result."""

    model: nn.Module
    path: Path
    layers: list[str]
    fp32_top1: float
    binarized_top1: float
    test_top1: float
    test_top5: float
    meta: dict = field(default_factory=dict)


def result_stem(config: BinarizeConfig, top1: float) -> str:
    """``Bin_bwn_acc_85.10`` (``Bin_bwn_sign_acc_…`` with sign activations)."""
    sign = "_sign" if config.activations == "sign" else ""
    return f"Bin_{config.method}{sign}_acc_{top1:.2f}"


def run_binarization(model: nn.Module, data: DataBundle, config: BinarizeConfig, train_config: TrainConfig,
                     out_dir: str | Path, name: str | None = None, meta: dict | None = None, progress: bool = True,
                     callbacks: Sequence[Callback] = ()) -> BinarizeResult:
    """Binarize ``model`` as ``config`` says, fine-tune it for ``config.finetune_epochs`` (``train_config``'s
    epochs are replaced) and save ``out_dir/<name or Bin_bwn_acc_XX.XX>.pt``.

    ``meta`` is the source checkpoint's (its normalisation is used). Side effects: ``model`` is binarized and
    trained in place; the fine-tuning run folder ``out_dir/<work name>/`` holds ``fit``'s resumable
    ``last.pt`` (running the same command again resumes it) and metrics.
    """
    data = with_normalisation(data, meta)
    meta = inherited_meta(meta or {}, data)
    device = resolve_device(train_config.device)
    fp32 = evaluate_split(model, data, "test", device=device)
    layers = select_layers(model, config.layers, config.keep_first_last)
    binarize_model(model, layers, config.method, config.activations)
    before = evaluate_split(model, data, "test", device=device)
    work = Path(out_dir) / (paths.checked_name(name) if name else f"Bin_{config.method}_{config.activations}")
    if config.finetune_epochs:
        resumed = resume_point(work)
        if resumed is not None:
            model = resumed.model
        train_config = train_config.model_copy(update={"epochs": config.finetune_epochs})
        finetune(model, data, train_config, work, resume=resumed.train_state if resumed else None,
                 meta={**meta, "binarize_config": config.model_dump(mode="json")}, progress=progress,
                 callbacks=callbacks)
    after = evaluate_split(model, data, "test", device=device)
    label = METHOD_LABELS[config.method] + (" + sign activations" if config.activations == "sign" else "")
    result_meta = {
        **meta, "method": f"{meta['method']} + {label}" if meta.get("method") else label,
        "binarize_config": config.model_dump(mode="json"), "binarized_layers": layers,
        "train_config": train_config.model_dump(mode="json") if config.finetune_epochs else None,
        "fp32_top1": fp32.top1, "binarized_top1": before.top1, **after.as_test_meta(),
        "nonzero_params": count_nonzero_parameters(model),
    }
    stem = paths.checked_name(name) if name else result_stem(config, after.top1)
    path = save_checkpoint(model, Path(out_dir) / f"{stem}.pt", result_meta)
    return BinarizeResult(model=model, path=path, layers=layers, fp32_top1=fp32.top1, binarized_top1=before.top1,
                          test_top1=after.top1, test_top5=after.top5, meta=result_meta)
