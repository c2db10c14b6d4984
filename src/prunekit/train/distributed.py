"""Multi-process training through PyTorch's own engine (DistributedDataParallel).

``torchrun --nproc_per_node N -m prunekit train …`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``; the
process group starts lazily the first time training needs it: NCCL on GPUs, gloo on CPU. Each rank
reads its own shard of every epoch's permutation; gradients are averaged by DDP; buffers (BN statistics
and pruning masks) are broadcast from rank 0 each step, so masks stay identical across ranks. Only rank 0
writes checkpoints and logs.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import nn

from prunekit.masking import is_masked


def requested_world_size() -> int:
    """The world size torchrun asked for (1 when not launched by torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: torch.device) -> tuple[int, int, torch.device]:
    """Start the process group if torchrun launched us; returns ``(rank, world_size, device)``.

    Side effects: initialises the default process group once; on CUDA selects the ``LOCAL_RANK`` GPU.
    """
    if requested_world_size() <= 1 and not dist.is_initialized():
        return 0, 1, device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), dist.get_world_size(), device


def is_main_process() -> bool:
    """True on rank 0 and in a single-process run: the process that writes files and logs. Before the process
    group starts, torchrun's ``RANK`` says (so a header printed before training appears once)."""
    if dist.is_initialized():
        return dist.get_rank() == 0
    return int(os.environ.get("RANK", "0")) == 0


def wrap(model: nn.Module, device: torch.device, sync_bn: bool) -> nn.Module:
    """The module the training steps run: DDP around ``model`` when distributed, else ``model``.

    ``sync_bn`` converts BatchNorm layers to SyncBatchNorm in place (same parameters and buffers; they
    save as ordinary BatchNorm2d).
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return model
    if sync_bn:
        if device.type != "cuda":
            from prunekit.errors import PrunekitError
            raise PrunekitError("--sync-bn needs CUDA GPUs (PyTorch's SyncBatchNorm); on CPU drop it: each "
                                "rank then normalises with its own batch statistics")
        if any(is_masked(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            from prunekit.errors import PrunekitError
            raise PrunekitError("--sync-bn cannot convert masked BatchNorm layers; shrink the model first "
                                "(`prunekit shrink`) or train without --sync-bn")
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
