"""Datasets as tensors, and a loader that keeps a whole split on the training device.

:func:`get_data` returns every split as ``(images uint8 (N, 3, 32, 32), labels int64 (N,))``.
:class:`DeviceLoader` moves one split to the device once and cuts batches from it; augmentation
(random crop, horizontal flip, cutout) runs batch-wise on the device with a seeded
``torch.Generator`` on that device. There is no worker pool and no per-image Python loop.

Augmentation order for a training batch:

1. random crop on the uint8 images: zero-pad (black) by ``crop_padding``, take a 32x32 window at a
   random offset per image (the usual ``RandomCrop(32, padding=4)``);
2. horizontal flip, probability 0.5 per image;
3. normalisation to float32, ``(x / 255 - mean) / std``;
4. cutout, *after* normalisation: a ``cutout`` x ``cutout`` square, fully inside the image at a
   random position per image, is set to 0, i.e. to the dataset mean colour (as in DeVries &
   Taylor's reference code, which applies Cutout after Normalize).
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from prunekit.data.cifar import DATASETS, load_cifar
from prunekit.data.synthetic import make_synthetic
from prunekit.errors import PrunekitError

DATASET_NAMES = ("cifar10", "cifar100", "synthetic")
SYNTHETIC_TRAIN_SIZE = 2000  # images
SYNTHETIC_TEST_SIZE = 500  # images
SYNTHETIC_CLASSES = 10

Split = tuple[torch.Tensor, torch.Tensor]  # (images uint8 (N, 3, H, W), labels int64 (N,))


@dataclass(frozen=True)
class DataInfo:
    """What a model and a report need to know about a dataset; ``mean``/``std`` on [0, 1] pixels."""

    name: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]


@dataclass
class DataBundle:
    """The splits of one dataset, all on the CPU. ``val`` is None when no validation split was asked."""

    info: DataInfo
    train: Split
    val: Split | None
    test: Split
    synthetic: bool


def get_data(
    dataset: str,
    root: str | os.PathLike | None = None,
    val_split: float = 0.0,
    seed: int = 0,
    download: bool = True,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> DataBundle:
    """Load ``dataset`` (``cifar10``, ``cifar100`` or ``synthetic``) as a :class:`DataBundle`.

    ``val_split`` (in [0, 1)) of the training images, chosen with ``seed``, become the validation
    split; both splits keep the original order. ``limit_train`` / ``limit_test`` then keep the first
    N images of the train / test split. ``synthetic`` has 2,000 train and 500 test images of 10
    classes, or just enough train images to satisfy ``limit_train`` and exactly ``limit_test`` test
    images when limits are given. CIFAR may be downloaded (see :func:`prunekit.data.load_cifar`).
    """
    if dataset not in DATASET_NAMES:
        raise PrunekitError(f"Unknown dataset {dataset!r}. Valid names: {', '.join(DATASET_NAMES)}.")
    if not 0.0 <= val_split < 1.0:
        raise PrunekitError(f"val_split must be in [0, 1), got {val_split}. Use e.g. 0.1 for 10%.")
    for name, limit in (("limit_train", limit_train), ("limit_test", limit_test)):
        if limit is not None and limit < 1:
            raise PrunekitError(f"{name} must be a positive number of images or None, got {limit}.")
    if dataset == "synthetic":
        info, train_full, test = _synthetic_splits(seed, val_split, limit_train, limit_test)
    else:
        info, train_full, test = _cifar_splits(dataset, root, download)
    train, val = split_train_val(train_full, val_split, seed)
    return DataBundle(info, _first(train, limit_train), val, _first(test, limit_test), dataset == "synthetic")


def split_train_val(split: Split, fraction: float, seed: int) -> tuple[Split, Split | None]:
    """Move a seeded random ``fraction`` of ``split`` to a validation split; both keep their order.

    At least one image goes to validation when ``fraction > 0``; ``fraction == 0`` gives ``None``.
    """
    images, labels = split
    n = len(labels)
    if fraction == 0:
        return split, None
    n_val = max(1, round(n * fraction))
    if n_val >= n:
        raise PrunekitError(f"val_split={fraction} leaves no training images out of {n}; use a smaller one.")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = order[:n_val].sort().values, order[n_val:].sort().values
    return (images[train_idx], labels[train_idx]), (images[val_idx], labels[val_idx])


def _first(split: Split, limit: int | None) -> Split:
    return split if limit is None else (split[0][:limit], split[1][:limit])


def _cifar_splits(name: str, root: str | os.PathLike | None, download: bool) -> tuple[DataInfo, Split, Split]:
    train_images, train_labels, names = load_cifar(name, root, train=True, download=download)
    test_images, test_labels, _ = load_cifar(name, root, train=False, download=download)
    spec = DATASETS[name]
    info = DataInfo(name, spec.num_classes, spec.mean, spec.std, tuple(names))
    return info, (train_images, train_labels), (test_images, test_labels)


def _synthetic_splits(
    seed: int, val_split: float, limit_train: int | None, limit_test: int | None
) -> tuple[DataInfo, Split, Split]:
    """Train and test from disjoint seed streams (2s and 2s+1); mean/std measured on train."""
    n_train = SYNTHETIC_TRAIN_SIZE if limit_train is None else math.ceil(limit_train / (1.0 - val_split))
    n_test = SYNTHETIC_TEST_SIZE if limit_test is None else limit_test
    train = make_synthetic(n_train, SYNTHETIC_CLASSES, seed=2 * seed)
    test = make_synthetic(n_test, SYNTHETIC_CLASSES, seed=2 * seed + 1)
    pixels = train[0].to(torch.float32).div(255)
    mean = tuple(round(v, 4) for v in pixels.mean(dim=(0, 2, 3)).tolist())
    std = tuple(round(v, 4) for v in pixels.std(dim=(0, 2, 3)).tolist())
    names = tuple(f"class{i}" for i in range(SYNTHETIC_CLASSES))
    return DataInfo("synthetic", SYNTHETIC_CLASSES, mean, std, names), train, test


# --- augmentation: pure functions on batches (B, C, H, W), random numbers from `generator` -------


def normalize(
    batch_uint8: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """``(x / 255 - mean) / std`` per channel, as a new float32 tensor."""
    device = batch_uint8.device
    mean_t = torch.as_tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    std_t = torch.as_tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)
    return batch_uint8.to(torch.float32, copy=True).div_(255.0).sub_(mean_t).div_(std_t)


def random_crop(batch: torch.Tensor, padding: int, generator: torch.Generator) -> torch.Tensor:
    """Zero-pad by ``padding`` and take a window of the input size at a random offset per image.

    Offsets are uniform in ``[0, 2 * padding]`` on each axis, independently per image.
    """
    if padding == 0:
        return batch.clone()
    b, c, h, w = batch.shape
    device = batch.device
    padded = batch.new_zeros(b, c, h + 2 * padding, w + 2 * padding)
    padded[:, :, padding : padding + h, padding : padding + w] = batch
    dy = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    dx = torch.randint(0, 2 * padding + 1, (b,), generator=generator, device=device)
    rows = (dy[:, None] + torch.arange(h, device=device))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=device))[:, None, None, :]
    images = torch.arange(b, device=device)[:, None, None, None]
    channels = torch.arange(c, device=device)[None, :, None, None]
    return padded[images, channels, rows, cols]


def random_flip(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image left-right with probability 0.5."""
    flip = torch.rand(batch.shape[0], generator=generator, device=batch.device) < 0.5
    return torch.where(flip[:, None, None, None], batch.flip(3), batch)


def cutout(batch: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Set a ``size`` x ``size`` square, fully inside each image at a random position, to 0."""
    b, _, h, w = batch.shape
    if size == 0:
        return batch.clone()
    if not 0 < size <= min(h, w):
        raise PrunekitError(f"cutout size must be in [0, {min(h, w)}], got {size}.")
    device = batch.device
    top = torch.randint(0, h - size + 1, (b, 1), generator=generator, device=device)
    left = torch.randint(0, w - size + 1, (b, 1), generator=generator, device=device)
    ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
    in_rows = (ys >= top) & (ys < top + size)  # (B, H)
    in_cols = (xs >= left) & (xs < left + size)  # (B, W)
    square = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return batch.masked_fill(square, 0)


# --- the loader ---------------------------------------------------------------------------------


class DeviceLoader:
    """Batches ``(x float32 normalised (B, 3, H, W), y int64 (B,))`` cut from one split on ``device``.

    The split is moved to ``device`` once, as uint8. In train mode every epoch (every ``iter()``)
    draws a seeded permutation and augments batch-wise (see the module docstring); in eval mode the
    order is the stored order and nothing is random.

    Distributed (``world_size > 1``): all ranks use the same ``seed``, so they draw the same
    permutation; it is cut to a multiple of ``world_size`` and rank ``r`` takes positions
    ``r, r + world_size, ...`` (disjoint, equal shards; the remainder is dropped). Augmentation on
    each rank uses its own stream, derived from the epoch's draw and the rank. In eval mode rank
    ``r`` takes images ``r, r + world_size, ...`` so every image is evaluated exactly once (shards
    may differ in size by one).

    Per epoch the loader's generator advances by a fixed amount when ``iter()`` is called, however
    many batches are then consumed; :meth:`state_dict` therefore captures exactly where the next
    epoch starts.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        batch_size: int,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        crop_padding: int = 4,
        flip: bool = True,
        cutout: int = 0,
        drop_last: bool = False,
        channels_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        _check_loader_args(images, labels, batch_size, mean, std, crop_padding, cutout, rank, world_size)
        self.device = torch.device(device)
        self.images = images.to(self.device)
        self.labels = labels.to(self.device, torch.int64)
        self.batch_size = batch_size
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.train = train
        self.seed = seed
        self.crop_padding = crop_padding
        self.flip = flip
        self.cutout_size = cutout
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0  # training epochs started
        self._generator = torch.Generator(device=self.device).manual_seed(seed)
        if len(self) == 0:
            raise PrunekitError(
                f"This loader would yield no batches: {self._shard_size()} images per rank, "
                f"batch_size={batch_size}, drop_last={drop_last}. Use a smaller batch size."
            )

    def __len__(self) -> int:
        """Number of batches per epoch on this rank."""
        n = self._shard_size()
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if not self.train:
            order = torch.arange(self.rank, len(self.labels), self.world_size, device=self.device)
            return self._batches(order, None)
        return self._batches(*self._plan_epoch())

    def state_dict(self) -> dict[str, object]:
        """Where the next epoch starts: the epoch counter and the generator state."""
        return {"epoch": self.epoch, "generator": self._generator.get_state(), "seed": self.seed}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore :meth:`state_dict` so the next epoch draws what the saved loader would have."""
        try:
            epoch, generator_state = int(state["epoch"]), state["generator"]
            self._generator.set_state(generator_state.cpu())
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise PrunekitError(
                f"Invalid DeviceLoader state ({type(exc).__name__}: {exc}); it must come from "
                f"DeviceLoader.state_dict(). Start the run afresh or use the matching checkpoint."
            ) from None
        self.epoch = epoch

    def _shard_size(self) -> int:
        n = len(self.labels)
        if self.train:
            return n // self.world_size
        return len(range(self.rank, n, self.world_size))

    def _plan_epoch(self) -> tuple[torch.Tensor, torch.Generator]:
        """This rank's image order for the epoch and the generator for its augmentation."""
        n = len(self.labels)
        permutation = torch.randperm(n, generator=self._generator, device=self.device)
        epoch_seed = int(torch.randint(0, 2**62, (1,), generator=self._generator, device=self.device).item())
        self.epoch += 1
        used = permutation[: (n // self.world_size) * self.world_size]
        augment = torch.Generator(device=self.device).manual_seed(epoch_seed + self.rank)
        return used[self.rank :: self.world_size], augment

    def _batches(
        self, order: torch.Tensor, augment: torch.Generator | None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start : start + self.batch_size]
            yield self._batch(index, augment), self.labels[index]

    def _batch(self, index: torch.Tensor, augment: torch.Generator | None) -> torch.Tensor:
        x = self.images[index]
        if augment is not None and self.crop_padding:
            x = random_crop(x, self.crop_padding, augment)
        if augment is not None and self.flip:
            x = random_flip(x, augment)
        x = normalize(x, self.mean, self.std)
        if augment is not None and self.cutout_size:
            x = cutout(x, self.cutout_size, augment)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x


def _check_loader_args(
    images, labels, batch_size, mean, std, crop_padding, cutout_size, rank, world_size
) -> None:
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise PrunekitError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}.")
    if labels.shape != (images.shape[0],):
        raise PrunekitError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}.")
    if len(mean) != images.shape[1] or len(std) != images.shape[1]:
        raise PrunekitError(f"mean and std need one value per channel ({images.shape[1]}).")
    if batch_size < 1:
        raise PrunekitError(f"batch_size must be at least 1, got {batch_size}.")
    if crop_padding < 0 or not 0 <= cutout_size <= min(images.shape[2:]):
        raise PrunekitError(f"crop_padding must be >= 0 and cutout in [0, {min(images.shape[2:])}].")
    if world_size < 1 or not 0 <= rank < world_size:
        raise PrunekitError(
            f"Need world_size >= 1 and 0 <= rank < world_size, got rank={rank}, world_size={world_size}."
        )
