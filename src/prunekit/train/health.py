"""Signs that a trained, pruned or quantized model has collapsed, phrased as one warning line.

Two signs, judged on an evaluation's :class:`prunekit.evaluation.Metrics`: one class predicted for most
images (:data:`MAJORITY_SHARE`; a class count of 2 needs more, see :func:`majority_limit`), or top-1 at
chance (:data:`CHANCE_FACTOR` × 100/classes or less) while a reference accuracy (training top-1, the model
before pruning, the fp32 model) is clearly above chance. Neither stops a command: the model is saved and
the warning says what to check.
"""

from __future__ import annotations

MAJORITY_SHARE = 0.5  # one class predicted for more than this fraction of the images: collapsed
CHANCE_FACTOR = 1.5  # top-1 at most this × chance counts as "at chance" (509 test images: chance ± 1.3 points)
ABOVE_CHANCE_FACTOR = 3.0  # a reference at least this × chance is "clearly learned something"


def majority_limit(classes: int) -> float:
    """The share of images one class may get before it counts as a collapse: :data:`MAJORITY_SHARE`, or
    1.5 / classes when that is higher (two classes: 75%)."""
    return max(MAJORITY_SHARE, 1.5 / classes)


def collapse_warning(metrics, reference: tuple[str, float] | None = None, what: str = "the model") -> str | None:
    """One ``warning: …`` line when ``metrics`` (with ``predicted`` counts) show a collapse, else None.

    ``reference`` is ``(label, top-1 percent)`` of an accuracy that should have carried over, e.g.
    ``("training top-1", 97.0)``; without it only the one-class sign is judged.
    """
    counts = getattr(metrics, "predicted", None)
    if not counts or not metrics.images:
        return None
    classes, images = len(counts), metrics.images
    chance = 100.0 / classes
    top_class = max(range(classes), key=counts.__getitem__)
    share = counts[top_class] / images
    if classes > 1 and share > majority_limit(classes):
        return (f"warning: {what} predicts class {top_class} for {100 * share:.0f}% of the {images} images "
                f"(top-1 {metrics.top1:.2f}%, chance {chance:.1f}%): it has collapsed to one class; check the "
                "input normalisation, the BatchNorm statistics (--recalibrate-bn) and the learning rate")
    if reference is not None:
        label, top1 = reference
        if metrics.top1 <= CHANCE_FACTOR * chance and top1 >= ABOVE_CHANCE_FACTOR * chance:
            return (f"warning: {what} scores {metrics.top1:.2f}% top-1 on {images} images, chance level "
                    f"({chance:.1f}%), while its {label} is {top1:.2f}%; it has lost what it learned: check "
                    "the input normalisation, the BatchNorm statistics (--recalibrate-bn) and the learning rate")
    return None
