"""Input normalisations by name, for weights trained with something other than the dataset's statistics."""

from __future__ import annotations

from prunekit.data.cifar import DATASETS

# name -> (mean, std): the one table of named normalisations (``--normalize NAME``); where each comes from is
# in NORMALISATION_SOURCES
NORMALISATIONS: dict[str, tuple[tuple, tuple]] = {
    "cifar10": (DATASETS["cifar10"].mean, DATASETS["cifar10"].std),
    # the most copied CIFAR constants (kuangliu/pytorch-cifar, rethinking-network-pruning, many courses): the
    # right mean with a std that is not CIFAR-10's per-pixel std
    "cifar10-common": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (DATASETS["cifar100"].mean, DATASETS["cifar100"].std),
    # the public akamaster CIFAR ResNets were trained on ImageNet-normalised inputs
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
NORMALISATION_SOURCES = {
    "cifar10": "CIFAR-10 training-set statistics",
    "cifar10-common": "the widely copied CIFAR-10 constants (std 0.2023, 0.1994, 0.2010)",
    "cifar100": "CIFAR-100 training-set statistics",
    "imagenet": "ImageNet statistics (torchvision)",
}


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
        mean, std = NORMALISATIONS[text]
        return tuple(mean), tuple(std)
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6 or any(v <= 0 for v in values[3:]):
        raise PrunekitError(f"--normalize {text!r}: use dataset, {', '.join(NORMALISATIONS)}, or six numbers "
                            "m1,m2,m3,s1,s2,s3 (positive std)")
    return tuple(values[:3]), tuple(values[3:])


def normalisation_name(mean, std) -> str | None:
    """The :data:`NORMALISATIONS` name of ``(mean, std)`` (to 4 decimals), or None."""
    key = tuple(round(float(v), 4) for v in (*mean, *std))
    for name, (m, s) in NORMALISATIONS.items():
        if tuple(round(float(v), 4) for v in (*m, *s)) == key:
            return name
    return None


def better_normalisation(scores: dict[str, float], chosen: str, margin: float = 2.0) -> str | None:
    """The preset in ``scores`` (name -> top-1 %) that beats ``chosen``'s score by more than ``margin``
    points, best first; None when the chosen one is within ``margin`` of the best."""
    best = max(scores, key=scores.get)
    return best if best != chosen and scores[best] > scores[chosen] + margin else None
