"""Runs: training, fine-tuning, pruning schedules and binarization as library functions, called by the CLI
handlers and by the experiment runner alike. The only package that joins ``prune/`` and ``train/``.

* :mod:`~prunekit.pipeline.training`: train a model into a run folder, resume a run;
* :mod:`~prunekit.pipeline.finetuning`: masked retraining, optionally distilled;
* :mod:`~prunekit.pipeline.pruning`: one-shot and iterative pruning schedules with retraining;
* :mod:`~prunekit.pipeline.binarization`: binarize and fine-tune with the straight-through estimator;
* :mod:`~prunekit.pipeline.inputs`: what a run takes from its input checkpoint (normalisation, meta).
"""

from prunekit.pipeline.binarization import BinarizeResult, result_stem, run_binarization
from prunekit.pipeline.finetuning import distillation, finetune
from prunekit.pipeline.inputs import inherited_meta, with_normalisation
from prunekit.pipeline.pruning import PruneResult, format_round, prune_step, result_name, run_pruning
from prunekit.pipeline.training import TrainedModel, data_meta, resumed_config, train_model

__all__ = ["BinarizeResult", "PruneResult", "TrainedModel", "data_meta", "distillation", "finetune", "format_round",
           "inherited_meta", "prune_step", "result_name", "result_stem", "resumed_config", "run_binarization",
           "run_pruning", "train_model", "with_normalisation"]
