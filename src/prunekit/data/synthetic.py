"""A tiny CIFAR-shaped dataset on which a small CNN learns well but not perfectly, so pruning shows a cost.

It exists so that demos and end-to-end tests train a real network in seconds with no files. Classes come
in pairs: both classes of a pair share one smooth, strong *coarse* colour pattern (a tiny CNN learns which
pair an image belongs to in an epoch or two), and the two differ only in finer *textures* (4-pixel colour
blobs), several per class. An image is the coarse pattern of its pair plus one of its class's textures at
a random contrast between 0 and 1, shifted together by a few pixels, plus per-pixel Gaussian noise. High
contrast textures are easy, faint ones are hard and the faintest are guesses, so accuracy depends on how
finely a model tells textures apart: the slim VGG-11 of ``prunekit demo`` stays well below 100 %, and
removing filters or weights shows up as lost points. Nearest class mean finds the pair but not the class.

Everything is drawn from seeded generators: the patterns from ``pattern_seed`` only, the images from
``seed``. Generation is vectorised (well under a second for the demo's 3,000 images).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IMAGE_SIZE = 32
MAX_SHIFT = 4  # pixels, each direction
PATTERN_SIZE = IMAGE_SIZE + 2 * MAX_SHIFT  # patterns are larger than an image so shifted windows fit
COARSE_GRID = 4  # the coarse pattern: a COARSE_GRID x COARSE_GRID grid of colours, smoothly upsampled
COARSE_AMPLITUDE = 50.0  # grey levels for one standard deviation of the coarse pattern
TEXTURE_GRID = 10  # a texture: a TEXTURE_GRID x TEXTURE_GRID grid of colours (4-pixel blobs), upsampled
TEXTURE_AMPLITUDE = 40.0  # grey levels for one standard deviation of a texture at full contrast
TEXTURES_PER_CLASS = 8  # sub-patterns per class; an image shows one of them
NOISE_STD = 30.0  # grey levels


def _smooth_patterns(count: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """``count`` random colour grids, bilinearly upsampled: float (count, 3, PATTERN_SIZE, PATTERN_SIZE)."""
    coarse = torch.randn(count, 3, grid, grid, generator=generator)
    return F.interpolate(coarse, size=(PATTERN_SIZE, PATTERN_SIZE), mode="bilinear", align_corners=False)


def class_patterns(num_classes: int, pattern_seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The coarse pattern and the textures of every class in grey levels around 0, deterministic from
    ``pattern_seed``: float (num_classes, 3, 40, 40) and (num_classes, TEXTURES_PER_CLASS, 3, 40, 40), the
    textures at full contrast.

    Classes ``2k`` and ``2k + 1`` share their coarse pattern (an odd last class has its own) and differ
    only in their textures. Bigger than an image by ``MAX_SHIFT`` on each side so shifted windows stay
    inside it.
    """
    generator = torch.Generator().manual_seed(pattern_seed)
    coarse = _smooth_patterns((num_classes + 1) // 2, COARSE_GRID, generator)[torch.arange(num_classes) // 2]
    textures = _smooth_patterns(num_classes * TEXTURES_PER_CLASS, TEXTURE_GRID, generator)
    textures = textures.view(num_classes, TEXTURES_PER_CLASS, 3, PATTERN_SIZE, PATTERN_SIZE)
    return COARSE_AMPLITUDE * coarse, TEXTURE_AMPLITUDE * textures


def make_synthetic(
    n: int, num_classes: int = 10, seed: int = 0, *, pattern_seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images ``uint8 (n, 3, 32, 32)`` and labels ``int64 (n,)``, deterministic from ``seed``.

    Labels are balanced (counts differ by at most one) and shuffled; each image shows one of its class's
    textures, drawn uniformly, at a contrast drawn uniformly from [0, 1]. The class patterns depend only on
    ``pattern_seed``, so splits drawn with different ``seed`` values (use a different one for the test
    split) share the same classes but no images.
    """
    generator = torch.Generator().manual_seed(seed)
    labels = (torch.arange(n) % num_classes)[torch.randperm(n, generator=generator)]
    offsets = torch.randint(0, 2 * MAX_SHIFT + 1, (n, 2), generator=generator)
    noise = torch.randn(n, 3, IMAGE_SIZE, IMAGE_SIZE, generator=generator) * NOISE_STD
    texture = torch.randint(0, TEXTURES_PER_CLASS, (n,), generator=generator)
    contrast = torch.rand(n, 1, 1, 1, generator=generator)
    coarse, textures = class_patterns(num_classes, pattern_seed)
    windows = _shifted_windows(coarse, labels, offsets)
    windows += contrast * _shifted_windows(textures.flatten(0, 1), labels * TEXTURES_PER_CLASS + texture, offsets)
    images = (128.0 + windows + noise).round().clamp(0, 255)
    return images.to(torch.uint8), labels


def _shifted_windows(patterns: torch.Tensor, which: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """For image i, the 32x32 window of ``patterns[which[i]]`` starting at ``offsets[i]``."""
    span = torch.arange(IMAGE_SIZE)
    rows = (offsets[:, 0, None] + span)[:, None, :, None]
    cols = (offsets[:, 1, None] + span)[:, None, None, :]
    return patterns[which[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
