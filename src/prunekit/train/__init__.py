"""Training and evaluation (knows nothing about pruning)."""

from prunekit.train.callbacks import Callback, SlimmingRegularizer
from prunekit.train.loop import (FitResult, Metrics, evaluate, evaluate_split, fit,
                                 resolve_device, train_step)
from prunekit.train.state import TrainState
from prunekit.train.writers import CheckpointWriter, MetricsWriter

__all__ = ["Callback", "CheckpointWriter", "FitResult", "MetricsWriter", "TrainState", "Metrics", "SlimmingRegularizer", "evaluate", "evaluate_split", "fit",
           "resolve_device", "train_step"]
