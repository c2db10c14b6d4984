"""Training and evaluation (knows nothing about pruning)."""

from prunekit.train.callbacks import Callback, SlimmingRegularizer
from prunekit.train.loop import (FitResult, Metrics, evaluate, evaluate_split, fit,
                                 resolve_device, train_step)

__all__ = ["Callback", "FitResult", "Metrics", "SlimmingRegularizer", "evaluate", "evaluate_split", "fit",
           "resolve_device", "train_step"]
