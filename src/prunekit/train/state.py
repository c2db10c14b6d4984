"""The resumable state of a training run, typed: what ``last.pt`` stores as its ``train_state``."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import torch


@dataclass
class TrainState:
    """Everything :func:`prunekit.train.fit` needs to continue a run exactly where it stopped.

    ``epoch`` counts finished epochs; ``optimizer``/``scheduler``/``loader`` are their ``state_dict()``s,
    ``rng_cpu`` the CPU generator state after the last finished epoch; ``history`` holds one metrics record
    per finished epoch; ``best`` is the record of the best validation epoch (``best_top1`` its top-1);
    ``config`` the run's :class:`prunekit.config.TrainConfig` as JSON. Stored in a checkpoint as a plain
    dict (:meth:`as_dict`), so the file loads with ``weights_only=True``.
    """

    epoch: int = 0
    optimizer: dict | None = None
    scheduler: dict | None = None
    loader: dict | None = None
    rng_cpu: torch.Tensor | None = None
    history: list[dict] = field(default_factory=list)
    best_top1: float = -math.inf
    best: dict | None = None
    config: dict | None = None

    @classmethod
    def from_dict(cls, saved: dict) -> "TrainState":
        """The state a checkpoint's ``train_state`` dict describes (older files may lack the best entries)."""
        return cls(epoch=saved["epoch"], optimizer=saved["optimizer"], scheduler=saved["scheduler"],
                   loader=saved["loader"], rng_cpu=saved["rng_cpu"], history=list(saved.get("history", [])),
                   best_top1=saved.get("best_top1", -math.inf), best=saved.get("best"), config=saved.get("config"))

    def as_dict(self) -> dict:
        """The plain dict a checkpoint stores (no copies: the tensors are the captured ones)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def restore(self, optimizer, scheduler, loader) -> None:
        """Load the saved optimizer, scheduler, loader and CPU RNG states into the live objects."""
        optimizer.load_state_dict(self.optimizer)
        scheduler.load_state_dict(self.scheduler)
        loader.load_state_dict(self.loader)
        torch.set_rng_state(self.rng_cpu)

    def add_epoch(self, record: dict) -> bool:
        """Append ``record``; True when it is the best validation epoch so far (never without a val split)."""
        self.history.append(record)
        if "val_top1" in record and record["val_top1"] > self.best_top1:
            self.best_top1, self.best = record["val_top1"], record
            return True
        return False

    def capture(self, epoch: int, optimizer, scheduler, loader) -> None:
        """Record the live states after ``epoch`` finished epochs."""
        self.epoch = epoch
        self.optimizer, self.scheduler = optimizer.state_dict(), scheduler.state_dict()
        self.loader, self.rng_cpu = loader.state_dict(), torch.get_rng_state()
