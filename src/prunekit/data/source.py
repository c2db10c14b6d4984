"""Where a checkpoint's data came from, so that later commands load the same data without being told again.

A :class:`DataSource` is written into a checkpoint's meta as flat keys (``dataset``, ``data_root``,
``val_split``, ``data_seed``, ``limit_train``) by every command that trains; commands that read a checkpoint
rebuild it with :meth:`DataSource.from_meta` and load exactly the same splits, offline.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path

from prunekit.data.cifar import resolve_root
from prunekit.data.loader import DataBundle, get_data
from prunekit.errors import PrunekitError


@dataclass(frozen=True)
class DataSource:
    """The settings :func:`prunekit.data.get_data` needs to rebuild a run's splits.

    ``root`` is an absolute folder (``None``: ``$PRUNEKIT_DATA`` or the cache at load time; always ``None``
    for ``synthetic``); ``seed`` chooses the validation split (and the synthetic images).
    """

    dataset: str = "cifar10"
    root: str | None = None
    val_split: float = 0.0
    seed: int = 0
    limit_train: int | None = None

    @classmethod
    def from_meta(cls, meta: dict) -> DataSource:
        """The source a checkpoint's meta records; fields it lacks (older checkpoints) take the defaults."""
        return cls(dataset=meta.get("dataset") or "cifar10", root=meta.get("data_root"),
                   val_split=float(meta.get("val_split") or 0.0), seed=int(meta.get("data_seed", meta.get("seed", 0))),
                   limit_train=meta.get("limit_train"))

    def resolved(self) -> DataSource:
        """This source with ``root`` made absolute (what a checkpoint records); ``None`` for synthetic."""
        if self.dataset == "synthetic":
            return replace(self, root=None)
        return replace(self, root=os.path.abspath(resolve_root(self.root)))

    def meta(self) -> dict:
        """The checkpoint meta entries that :meth:`from_meta` reads back."""
        source = self.resolved()
        return {"dataset": source.dataset, "data_root": source.root, "val_split": source.val_split,
                "data_seed": source.seed, "limit_train": source.limit_train}

    def check_root(self) -> None:
        """Fail in one line when a remembered ``root`` no longer exists (moved, deleted, another machine)."""
        if self.root is not None and not Path(self.root).exists():
            raise PrunekitError(f"the {self.dataset} data this checkpoint was made with is no longer at {self.root}; "
                                "pass --data DIR (the folder holding it) to use another copy")

    def load(self, limit_test: int | None = None) -> DataBundle:
        """The splits (CIFAR may be downloaded, see :func:`prunekit.data.get_data`)."""
        return get_data(self.dataset, root=self.root, val_split=self.val_split, seed=self.seed,
                        limit_train=self.limit_train, limit_test=limit_test)
