"""Training (knows nothing about pruning; evaluation lives in :mod:`prunekit.evaluation`)."""

from prunekit.train.callbacks import Callback, SlimmingRegularizer
from prunekit.train.loop import FitResult, fit, resolve_device, train_step
from prunekit.train.state import TrainState
from prunekit.train.writers import CheckpointWriter, MetricsWriter

__all__ = ["Callback", "CheckpointWriter", "FitResult", "MetricsWriter", "TrainState", "SlimmingRegularizer", "fit",
           "resolve_device", "train_step"]
