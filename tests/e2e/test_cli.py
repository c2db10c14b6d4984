"""End-to-end: the real CLI, in-process, on CPU with tiny data."""

from __future__ import annotations

import json

import pytest

from prunekit.cli import main


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_train_evaluate_info_profile_resume(tmp_path, capsys):
    run = tmp_path / "run"
    common = ["--dataset", "synthetic", "--limit-train", "256", "--device", "cpu"]
    assert main(["train", "--model", "vgg11", "--model-cfg", "8,M,16,M,16,16", "--epochs", "1",
                 "--batch-size", "64", "--save", str(run), "--no-progress", *common]) == 0
    out = capsys.readouterr().out
    assert "test top-1" in out and (run / "last.pt").exists()

    evaluated = run_json(capsys, ["evaluate", str(run / "last.pt"), "--json"])
    assert evaluated["images"] == 500 and evaluated["dataset"] == "synthetic" and evaluated["synthetic"]
    info = run_json(capsys, ["info", str(run / "last.pt"), "--json"])
    assert info["model"] == "vgg11" and info["resumable"] and info["meta"]["test_top1"] == evaluated["top1"]
    prof = run_json(capsys, ["profile", str(run / "last.pt"), "--no-timing", "--json"])
    assert prof["params"] == info["params"] and prof["macs"] > 0

    # resume to 2 epochs: continues from epoch 1
    assert main(["train", "--resume", str(run / "last.pt"), "--no-progress", "--epochs", "2", *common]) == 0
    assert "epoch   1" not in capsys.readouterr().out


def test_bad_input_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--model", "vgg12", "--dataset", "synthetic", "--epochs", "0",
                 "--save", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "vgg12" in err and "vgg11" in err and "Traceback" not in err
    assert main(["evaluate", str(tmp_path / "nothing.pt")]) == 2
    assert "not found" in capsys.readouterr().err


def test_models_lists_vgg11_param_count(capsys):
    rows = run_json(capsys, ["models", "--json"])
    assert {r["name"]: r["params"] for r in rows}["vgg11"] == 9_228_362


def test_convert_foreign_weights_keeps_normalisation(tmp_path, capsys):
    import torch

    from prunekit.checkpoint import load_checkpoint
    from prunekit.models import create_model

    source = create_model("resnet20")
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}, tmp_path / "w.th")
    assert main(["convert", "--model", "resnet20", "--weights", str(tmp_path / "w.th"), "--normalize", "imagenet",
                 "--out", str(tmp_path / "r20.pt")]) == 0
    loaded = load_checkpoint(tmp_path / "r20.pt")
    assert loaded.meta["mean"] == [0.485, 0.456, 0.406] and loaded.meta["dataset"] == "cifar10"
    assert all(torch.equal(v, loaded.model.state_dict()[k]) for k, v in source.state_dict().items())
