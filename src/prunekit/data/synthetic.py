"""A tiny CIFAR-shaped dataset made of noise around per-class colour patterns.

It exists so that demos and end-to-end tests train a real network in seconds with no files: each
class is a fixed, smooth random colour pattern; an image is its class pattern shifted by a few
pixels plus per-pixel Gaussian noise. A small CNN learns it well above chance in an epoch or two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
MAX_SHIFT = 4  # pixels, each direction
PATTERN_GRID = 4  # the class pattern is a PATTERN_GRID x PATTERN_GRID grid of colours, smoothly upsampled
PATTERN_AMPLITUDE = 50.0  # grey levels for one standard deviation of the pattern
NOISE_STD = 30.0  # grey levels


def class_patterns(num_classes: int, pattern_seed: int = 0) -> torch.Tensor:
    """The smooth colour pattern of every class: float (num_classes, 3, 40, 40), about unit std.

    Bigger than an image by ``MAX_SHIFT`` on each side so shifted windows stay inside it.
    """
    generator = torch.Generator().manual_seed(pattern_seed)
    coarse = torch.randn(num_classes, 3, PATTERN_GRID, PATTERN_GRID, generator=generator)
    size = IMAGE_SIZE + 2 * MAX_SHIFT
    return F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)


def make_synthetic(
    n: int, num_classes: int = 10, seed: int = 0, *, pattern_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``uint8 (n, 3, 32, 32)`` and labels ``int64 (n,)``, deterministic from ``seed``.

    Labels are balanced (counts differ by at most one) and shuffled. The class patterns depend only
    on ``pattern_seed``, so splits drawn with different ``seed`` values (use a different one for the
    test split) share the same classes but no images.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator)
    noise = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * NOISE_STD
    patterns = _shifted_windows(class_patterns(num_classes, pattern_seed), labels, offsets)
    images = (128.0 + PATTERN_AMPLITUDE * patterns + noise).round().clamp(0, 255)
    return images.to(torch.uint8), labels


def _shifted_windows(patterns: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """For image i, the 32x32 window of ``patterns[labels[i]]`` starting at ``offsets[i]``."""
    span = torch.arange(IMAGE_SIZE)
    rows = (offsets[:, 0, None] + span)[:, None, :, None]
    cols = (offsets[:, 1, None] + span)[:, None, None, :]
    return patterns[labels[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
