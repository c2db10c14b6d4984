"""Masked retraining of a (pruned or binarized) model, optionally distilled from its dense teacher."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

import prunekit.paths as paths
from prunekit.checkpoint import update_meta
from prunekit.config import TrainConfig
from prunekit.data import DataBundle
from prunekit.errors import PrunekitError
from prunekit.evaluation import evaluate_split
from prunekit.masking import permanent_copy
from prunekit.measure import count_nonzero_parameters
from prunekit.pipeline.inputs import with_normalisation
from prunekit.prune import sparsity_report
from prunekit.train import Callback, fit, resolve_device
from prunekit.train.distill import KnowledgeDistillation


def distillation(train_config: TrainConfig, teacher: nn.Module | None) -> list[Callback]:
    """``[KnowledgeDistillation]`` from ``teacher`` (a mask-free copy is taken) when ``train_config.distill``,
    else ``[]``; distilling without a teacher raises PrunekitError."""
    if not train_config.distill:
        return []
    if teacher is None:
        raise PrunekitError("--distill needs the dense model as teacher; give it with --teacher CKPT")
    return [KnowledgeDistillation(permanent_copy(teacher), train_config.distill_alpha,
                                  train_config.distill_temperature)]


def finetune(model: nn.Module, data: DataBundle, train_config: TrainConfig, run_dir: str | Path,
             resume: dict | None = None, meta: dict | None = None, progress: bool = True,
             callbacks: Sequence[Callback] = (), teacher: nn.Module | None = None) -> dict:
    """Masked retraining of a (pruned) model: ``fit`` in ``run_dir``, then test metrics and sparsity are
    added to ``run_dir/last.pt``'s meta. Masks stay in the model, so pruned weights stay exactly zero
    (also across ``resume``). With ``train_config.distill`` the (dense) ``teacher`` is distilled from.
    Returns ``{"fit": FitResult, "test": Metrics, "sparsity": report}``."""
    meta = dict(meta or {})
    callbacks = [*callbacks, *distillation(train_config, teacher)]
    data = with_normalisation(data, meta)
    result = fit(model, data, train_config, run_dir=run_dir, resume=resume, meta=meta, callbacks=callbacks,
                 progress=progress)
    test = evaluate_split(model, data, "test", device=resolve_device(train_config.device))
    report = sparsity_report(model)
    last = paths.last(run_dir)
    if last.exists():
        update_meta(last, **test.as_test_meta(), sparsity=report["overall"],
                    nonzero_params=count_nonzero_parameters(model), train_seconds=result.seconds)
    return {"fit": result, "test": test, "sparsity": report}
