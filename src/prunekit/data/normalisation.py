"""Input normalisations by name, for weights trained with something other than the dataset's statistics."""

from __future__ import annotations

# the public akamaster CIFAR ResNets were trained on ImageNet-normalised inputs
NORMALISATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}


def input_normalisation(meta: dict | None, info, override: str | None = None) -> tuple[tuple, tuple]:
    """The one rule for the ``(mean, std)`` a checkpoint is evaluated (or calibrated, or retrained) with:
    ``override`` (``--normalize``) when given, else the checkpoint's own (``meta`` mean/std, the inputs it
    was trained on), else the dataset's (``info``)."""
    if override is not None:
        return parse_normalisation(override, info)
    meta = meta or {}
    if meta.get("mean") and meta.get("std"):
        return tuple(meta["mean"]), tuple(meta["std"])
    return tuple(info.mean), tuple(info.std)


def parse_normalisation(text: str | None, info) -> tuple[tuple, tuple]:
    """``(mean, std)`` for ``--normalize``: ``dataset``/None (``info``'s), a name in :data:`NORMALISATIONS`, or
    six comma-separated numbers ``m1,m2,m3,s1,s2,s3``."""
    from prunekit.errors import PrunekitError

    if text in (None, "dataset"):
        return tuple(info.mean), tuple(info.std)
    if text in NORMALISATIONS:
        return NORMALISATIONS[text]
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6:
        raise PrunekitError(f"--normalize {text!r}: use dataset, imagenet, or six numbers m1,m2,m3,s1,s2,s3")
    return tuple(values[:3]), tuple(values[3:])
