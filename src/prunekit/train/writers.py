"""The callbacks that write a run folder: checkpoints (``last.pt``, ``best.pt``) and metrics files.

:func:`prunekit.train.fit` adds them when it is given a ``run_dir`` (rank 0 only); every file goes through
the one atomic writer and is named by :mod:`prunekit.paths`.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from torch import nn

import prunekit.paths as paths
from prunekit.atomic import atomic_write_text
from prunekit.checkpoint import atomic_save, checkpoint_dict
from prunekit.train.callbacks import Callback


class CheckpointWriter(Callback):
    """``last.pt`` after every epoch (with the resumable ``train_state``) and ``best.pt`` on the best
    validation top-1. ``meta`` is saved in both, with the history and the epoch added."""

    def __init__(self, run_dir: str | Path, meta: dict | None = None):
        self.run_dir, self.meta = Path(run_dir), dict(meta or {})

    def on_state(self, model: nn.Module, record: dict, state, is_best: bool) -> None:
        meta = {**self.meta, "history": state.history, "epoch": record["epoch"]}
        atomic_save(checkpoint_dict(model, meta, state.as_dict()), paths.last(self.run_dir))
        if is_best:
            atomic_save(checkpoint_dict(model, {**meta, "best_val_top1": record["val_top1"]}), paths.best(self.run_dir))


class MetricsWriter(Callback):
    """``config.json`` when training starts; ``metrics.csv`` and ``metrics.json`` (rewritten whole) after
    every epoch."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = Path(run_dir)

    def on_fit_start(self, model: nn.Module, config) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(paths.train_config(self.run_dir), json.dumps(config.model_dump(), indent=2))

    def on_state(self, model: nn.Module, record: dict, state, is_best: bool) -> None:
        write_metrics(self.run_dir, state.history)


def write_metrics(run_dir: Path, history: list[dict]) -> None:
    """Per-epoch metrics as ``metrics.csv`` and ``metrics.json``."""
    keys = list(dict.fromkeys(k for rec in history for k in rec))
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    atomic_write_text(paths.metrics_csv(run_dir), table.getvalue())
    atomic_write_text(paths.metrics_json(run_dir), json.dumps(history, indent=2))
