"""Datasets as uint8 tensors and a device-resident, batch-wise augmenting loader.

``get_data(name)`` gives every split of ``cifar10``, ``cifar100`` or ``synthetic``;
``DeviceLoader`` turns one split into normalised, augmented batches on the training device.
"""

from prunekit.data.cifar import DATASETS, DatasetInfo, load_cifar, resolve_root
from prunekit.data.loader import (
    DATASET_NAMES,
    DataBundle,
    DataInfo,
    DeviceLoader,
    cutout,
    get_data,
    normalize,
    random_crop,
    random_flip,
    split_train_val,
)
from prunekit.data.source import DataSource
from prunekit.data.synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "DATASET_NAMES",
    "DataBundle",
    "DataInfo",
    "DataSource",
    "DatasetInfo",
    "DeviceLoader",
    "cutout",
    "get_data",
    "load_cifar",
    "make_synthetic",
    "normalize",
    "random_crop",
    "random_flip",
    "resolve_root",
    "split_train_val",
]
