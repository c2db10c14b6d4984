"""Checkpoints remember their data: later commands find it offline without --data (issue 17)."""

from __future__ import annotations

import json
import pickle
import shutil

import numpy as np
import pytest

from prunekit.cli import main
from conftest import REAL_DATA

TINY = ["--model", "vgg11", "--model-cfg", "8,M,16,M,16,16", "--batch-size", "64", "--device", "cpu", "--no-progress"]


def write_fake_cifar10(root, n_train: int = 40, n_test: int = 30) -> None:
    """``root/cifar-10-batches-py`` in the official pickle format, random pixels, 10 classes."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        n = n_test if name == "test_batch" else n_train
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), b"labels": [i % 10 for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"label_names": [f"c{i}".encode() for i in range(10)]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))


@pytest.fixture
def offline_data(tmp_path, monkeypatch):
    """A private copy of CIFAR-10 (the real subset when present, else a fake) and no network or cache."""
    from prunekit.errors import PrunekitError

    root = tmp_path / "cifar"
    if (REAL_DATA / "cifar-10-batches-py").is_dir():
        shutil.copytree(REAL_DATA / "cifar-10-batches-py", root / "cifar-10-batches-py")
    else:
        write_fake_cifar10(root)

    def no_network(*_args, **_kwargs):
        raise PrunekitError("offline (test): no download")

    monkeypatch.setattr("prunekit.data.cifar._download", no_network)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("PRUNEKIT_DATA", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    return root


def run_json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_evaluate_resume_prune_finetune_find_the_data_offline(tmp_path, capsys, offline_data):
    from prunekit.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--data", str(offline_data), "--val-split", "0.25",
                 "--limit-train", "96", "--seed", "3", "--save", str(run)]) == 0
    meta = load_checkpoint(run / "last.pt").meta
    assert (meta["dataset"], meta["data_root"], meta["val_split"], meta["data_seed"], meta["limit_train"]) == (
        "cifar10", str(offline_data), 0.25, 3, 96)
    capsys.readouterr()
    # a wrong guess (no remembered folder) would fail here: the cache is empty and downloading raises
    test = run_json(capsys, ["evaluate", str(run / "last.pt"), "--json"])
    n_test = 509 if (REAL_DATA / "cifar-10-batches-py").is_dir() else 30
    assert test["images"] == n_test and test["top1"] == pytest.approx(meta["test_top1"])
    val = run_json(capsys, ["evaluate", str(run / "last.pt"), "--split", "val", "--json"])
    n_train = 5085 if n_test == 509 else 200
    assert val["images"] == round(0.25 * n_train)  # the remembered split, not the default 0

    assert main(["train", "--resume", str(run / "last.pt"), "--epochs", "2", "--no-progress"]) == 0
    resumed = load_checkpoint(run / "last.pt")
    assert resumed.train_state["epoch"] == 2 and resumed.meta["train_images"] == 96

    assert main(["prune", str(run / "last.pt"), "--sparsity", "0.5", "--out", str(tmp_path / "pruned"),
                 "--name", "p", "--no-progress", "--device", "cpu"]) == 0
    pruned = tmp_path / "pruned" / "p.pt"
    assert load_checkpoint(pruned).meta["data_root"] == str(offline_data)
    ft = tmp_path / "ft"
    assert main(["finetune", str(pruned), "--epochs", "1", "--save", str(ft), "--no-progress",
                 "--device", "cpu"]) == 0
    assert main(["finetune", "--resume", str(ft / "last.pt"), "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(ft / "last.pt").train_state["epoch"] == 2


def test_convert_evaluate_remembers_and_a_moved_folder_is_one_line(tmp_path, capsys, offline_data):
    import torch

    from prunekit.models import create_model

    weights = tmp_path / "w.pt"
    torch.save(create_model("vgg11", num_classes=10, cfg=[8, "M", 16]).state_dict(), weights)
    out = tmp_path / "c.pt"
    assert main(["convert", "--model", "vgg11", "--model-kwargs", '{"cfg": [8, "M", 16]}', "--weights",
                 str(weights), "--out", str(out), "--evaluate", "--data", str(offline_data)]) == 0
    capsys.readouterr()
    assert run_json(capsys, ["evaluate", str(out), "--json"])["dataset"] == "cifar10"

    offline_data.rename(tmp_path / "moved")
    assert main(["evaluate", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"no longer at {offline_data}" in err and "--data" in err
    assert main(["evaluate", str(out), "--data", str(tmp_path / "moved"), "--json"]) == 0  # told otherwise


def test_foreign_weights_without_normalize_get_a_hint(tmp_path, capsys, offline_data):
    import torch

    from prunekit.models import create_model

    weights = tmp_path / "w.pt"
    torch.save(create_model("vgg11", num_classes=10, cfg=[8, "M", 16]).state_dict(), weights)
    base = ["evaluate", "--model", "vgg11", "--model-kwargs", '{"cfg": [8, "M", 16]}', "--weights", str(weights),
            "--data", str(offline_data)]
    assert main(base) == 0
    assert "--normalize imagenet" in capsys.readouterr().out
    assert main([*base, "--normalize", "imagenet"]) == 0
    assert "hint" not in capsys.readouterr().out
