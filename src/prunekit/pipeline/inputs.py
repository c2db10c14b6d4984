"""What a run takes from its input checkpoint: the input normalisation it was trained with and the metadata a
derived checkpoint inherits (shared by fine-tuning, pruning and binarization)."""

from __future__ import annotations

import dataclasses

from prunekit.checkpoint import derived_meta
from prunekit.data import DataBundle
from prunekit.data.normalisation import input_normalisation


def with_normalisation(data: DataBundle, meta: dict | None) -> DataBundle:
    """``data`` normalised as the checkpoint was trained (``meta`` mean/std), else unchanged."""
    if not ((meta or {}).get("mean") and (meta or {}).get("std")):
        return data
    mean, std = input_normalisation(meta, data.info)
    return dataclasses.replace(data, info=dataclasses.replace(data.info, mean=mean, std=std))


def inherited_meta(meta: dict, data: DataBundle) -> dict:
    """The input checkpoint's meta as :func:`prunekit.checkpoint.derived_meta` keeps it; dataset and
    normalisation filled in."""
    kept = derived_meta(meta)
    kept.setdefault("dataset", data.info.name)
    kept.setdefault("num_classes", data.info.num_classes)
    kept.setdefault("mean", list(data.info.mean))
    kept.setdefault("std", list(data.info.std))
    return kept
