"""Two-process gloo training on CPU: identical ranks, and the same result as one process."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from prunekit.config import TrainConfig
from prunekit.data import get_data
from prunekit.prune.mask import apply_masks, extract_masks
from prunekit.train import fit

# No augmentation and no BatchNorm: then two ranks with half batches each compute exactly the gradient of
# one process with the whole batch (DDP averages the two half-batch means), up to float summation order.
CONFIG = TrainConfig(epochs=2, batch_size=32, lr=0.05, device="cpu", seed=1, augment=False)


def masked_model():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
                                torch.nn.Conv2d(8, 16, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(16, 10))
    generator = torch.Generator().manual_seed(0)
    apply_masks(model, {"3.weight": torch.rand(model[3].weight.shape, generator=generator) > 0.5})
    return model


def train_rank(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model = masked_model()
    data = get_data("synthetic", limit_train=128, limit_test=32)
    fit(model, data, CONFIG, run_dir=os.path.join(out, "run"), progress=False)
    torch.save({"state": model.state_dict(), "masks": extract_masks(model)}, os.path.join(out, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.long
def test_two_gloo_ranks_match_each_other_and_one_process(tmp_path):
    mp.spawn(train_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for key, value in rank0["state"].items():
        assert torch.equal(value, rank1["state"][key]), key
    for key, mask in rank0["masks"].items():
        assert torch.equal(mask, rank1["masks"][key])
    assert (tmp_path / "run" / "last.pt").exists()  # written once, by rank 0

    single = masked_model()
    fit(single, get_data("synthetic", limit_train=128, limit_test=32), CONFIG, progress=False)
    for key, value in single.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(value, rank0["state"][key], atol=2e-4, rtol=1e-3), key
    mask = rank0["masks"]["3.weight"]
    assert torch.equal(extract_masks(single)["3.weight"], mask)
    effective = rank0["state"]["3.weight_orig"] * rank0["state"]["3.weight_mask"]
    assert torch.all(effective[~mask] == 0) and torch.count_nonzero(effective[mask]) == mask.sum()
