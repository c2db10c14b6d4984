"""torchrun: before the process group starts, only RANK 0 counts as the main process (header printed once)."""

import pytest

from prunekit.train.distributed import is_main_process


@pytest.mark.parametrize("rank, main", [(None, True), ("0", True), ("1", False), ("3", False)])
def test_rank_decides_before_the_process_group_starts(monkeypatch, rank, main):
    if rank is None:
        monkeypatch.delenv("RANK", raising=False)
    else:
        monkeypatch.setenv("RANK", rank)
    assert is_main_process() is main
