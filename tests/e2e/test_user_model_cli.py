"""End-to-end: a user's own model (``--model file.py:Class`` / ``package.module:factory``) through every command."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from prunekit.cli import main

USER_MODEL = textwrap.dedent('''
    from torch import nn


    class Net(nn.Module):
        """conv/bn/relu/pool twice, then a linear classifier; ``width`` sets the channels."""

        def __init__(self, width=16, num_classes=10):
            super().__init__()
            self.features = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
                nn.Conv2d(width, 2 * width, 3, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(2 * width, num_classes)

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))


    def make_net(width=8):
        return Net(width=width)


    def not_a_model():
        return 42


    def broken(width=8):
        raise ValueError("width too small")


    CONSTANT = 3
''')

DATA = ["--dataset", "synthetic", "--limit-train", "128"]


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "usernet.py"
    path.write_text(USER_MODEL)
    return path


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


def assert_plain_file(path: Path) -> dict:
    """The file loads with weights_only=True and holds no nn.Module anywhere."""
    raw = torch.load(path, map_location="cpu", weights_only=True)

    def walk(value):
        assert not isinstance(value, nn.Module), f"{path} holds a module"
        if isinstance(value, dict):
            for v in value.values():
                walk(v)
        elif isinstance(value, (list, tuple)):
            for v in value:
                walk(v)

    walk(raw)
    return raw


def test_user_model_through_every_command(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ref = f"{model_file}:Net"
    torch.manual_seed(0)
    from prunekit.models import resolve_model

    source = resolve_model(ref, 10, {"width": 8})
    torch.save({"state_dict": source.state_dict()}, tmp_path / "W.pt")

    # convert: foreign weights of a user model → a prunekit checkpoint
    assert main(["convert", "--model", ref, "--model-kwargs", '{"width": 8}', "--weights", str(tmp_path / "W.pt"),
                 "--dataset", "cifar10", "--out", str(tmp_path / "dense.pt")]) == 0
    raw = assert_plain_file(tmp_path / "dense.pt")
    assert raw["arch"]["ref"] == ref and raw["arch"]["kwargs"] == {"width": 8, "num_classes": 10}
    assert raw["arch"]["channels"]["features.0"] == {"kind": "Conv2d", "in_channels": 3, "out_channels": 8,
                                                     "groups": 1}

    # evaluate: from the checkpoint alone, and from --model/--weights
    evaluated = run_json(capsys, ["evaluate", str(tmp_path / "dense.pt"), "--dataset", "synthetic", "--json"])
    assert 0.0 <= evaluated["top1"] <= 100.0 and evaluated["images"] > 0
    capsys.readouterr()
    assert main(["evaluate", "--model", ref, "--model-kwargs", '{"width": 8}', "--weights", str(tmp_path / "W.pt"),
                 "--dataset", "synthetic"]) == 0
    assert "top-1" in capsys.readouterr().out

    # layers and info read it without --model
    layers = run_json(capsys, ["layers", str(tmp_path / "dense.pt"), "--json"])
    assert "features.0" in json.dumps(layers)
    info = run_json(capsys, ["info", str(tmp_path / "dense.pt"), "--json"])
    assert info["model"] == ref

    # prune-channels: physically smaller, reloads without --model
    pruned = run_json(capsys, ["prune-channels", str(tmp_path / "dense.pt"), "--ratio", "0.5",
                               "--out", str(tmp_path / "pruned.pt"), "--json"])
    assert pruned["after"]["params"] < pruned["before"]["params"]
    raw = assert_plain_file(tmp_path / "pruned.pt")
    assert raw["arch"]["ref"] == ref and raw["arch"]["channels"]["features.0"]["out_channels"] == 4

    # finetune the pruned model
    capsys.readouterr()
    assert main(["finetune", str(tmp_path / "pruned.pt"), "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                 "--save", str(tmp_path / "ft"), "--no-progress", *DATA]) == 0
    assert "test top-1" in capsys.readouterr().out
    raw = assert_plain_file(tmp_path / "ft" / "last.pt")
    assert raw["arch"]["channels"]["fc"]["in_features"] == 8

    # profile and compare
    prof = run_json(capsys, ["profile", str(tmp_path / "ft" / "last.pt"), "--no-timing", "--json"])
    dense_prof = run_json(capsys, ["profile", str(tmp_path / "dense.pt"), "--no-timing", "--json"])
    assert prof["params"] < dense_prof["params"] and prof["macs"] < dense_prof["macs"]
    compared = run_json(capsys, ["compare", str(tmp_path / "dense.pt"), str(tmp_path / "ft" / "last.pt"),
                                 "--dataset", "synthetic", "--no-timing", "--json"])
    rows = compared["rows"]
    assert [r["arch"] for r in rows] == [ref, ref] and rows[1]["params"] < rows[0]["params"]

    # quantize (int8) and export (compact): both store the arch and load back through load_checkpoint
    capsys.readouterr()
    assert main(["quantize", str(tmp_path / "ft" / "last.pt"), "--calib-batches", "1", "--batch-size", "32",
                 "--out", str(tmp_path / "int8.pt"), *DATA]) == 0
    raw = assert_plain_file(tmp_path / "int8.pt")
    assert raw["format"] == "prunekit-int8" and raw["arch"]["ref"] == ref
    int8_eval = run_json(capsys, ["evaluate", str(tmp_path / "int8.pt"), "--json", "--dataset", "synthetic"])
    assert int8_eval["images"] == evaluated["images"]
    assert main(["export", str(tmp_path / "ft" / "last.pt"), "--format", "compact",
                 "--out", str(tmp_path / "small.pt")]) == 0
    raw = assert_plain_file(tmp_path / "small.pt")
    assert raw["format"] == "prunekit-compact" and raw["arch"]["ref"] == ref

    from prunekit.checkpoint import load_checkpoint

    for name in ("dense.pt", "pruned.pt", "ft/last.pt", "int8.pt", "small.pt"):
        loaded = load_checkpoint(tmp_path / name)
        assert loaded.arch["ref"] == ref
        assert loaded.model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_train_user_model_and_relative_path(tmp_path, model_file, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "usernet.py:Net", "--model-kwargs", '{"width": 4}', "--epochs", "1",
                 "--batch-size", "64", "--save", "run", "--no-progress", "--device", "cpu", *DATA]) == 0
    raw = assert_plain_file(tmp_path / "run" / "last.pt")
    assert raw["arch"]["ref"] == "usernet.py:Net"  # stored as given
    # from another working directory the file is neither there nor beside the checkpoint (it is one folder
    # up): loading says which file is missing and how to point at it again
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--dataset", "synthetic"]) == 2
    err = capsys.readouterr().err
    assert "usernet.py not found" in err and "--model" in err and len(err.strip().splitlines()) == 1
    # --model points at it again
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--model", f"{model_file}:Net",
                 "--dataset", "synthetic"]) == 0
    # a file beside the checkpoint is found there
    (tmp_path / "run" / "usernet.py").write_text(USER_MODEL)
    assert main(["evaluate", str(tmp_path / "run" / "last.pt"), "--dataset", "synthetic"]) == 0


def test_package_factory_reference(tmp_path, capsys, monkeypatch):
    package = tmp_path / "site" / "mymodels"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(USER_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--model", "mymodels.nets:make_net", "--model-kwargs", '{"width": 4}', "--epochs", "1",
                 "--batch-size", "64", "--save", "run", "--no-progress", "--device", "cpu", *DATA]) == 0
    raw = assert_plain_file(tmp_path / "run" / "last.pt")
    assert raw["arch"]["ref"] == "mymodels.nets:make_net" and raw["arch"]["kwargs"] == {"width": 4}
    prof = run_json(capsys, ["profile", str(tmp_path / "run" / "last.pt"), "--no-timing", "--json"])
    assert prof["params"] > 0


@pytest.mark.parametrize("ref, kwargs, expected", [
    ("missing.py:Net", None, "model file missing.py not found"),
    ("{file}:Nope", None, "has no attribute 'Nope'"),
    ("{file}:CONSTANT", None, "is an object of type int, not a class or function"),
    ("{file}:broken", None, "raised ValueError: width too small"),
    ("{file}:not_a_model", None, "returned an object of type int, not a torch.nn.Module"),
    ("{file}:Net", '{"width": 8', "is not valid JSON"),
    ("{file}:Net", "[8]", "must be a JSON object"),
    ("{file}:Net", '{"depth": 3}', "raised TypeError"),
    ("no_such_package_xyz.mod:f", None, "cannot import module 'no_such_package_xyz.mod'"),
    ("{file}", None, "names a file but no class"),
])
def test_bad_references_are_one_line_errors(tmp_path, model_file, capsys, ref, kwargs, expected):
    argv = ["profile", "--model", ref.format(file=model_file), "--no-timing"]
    if kwargs is not None:
        argv += ["--model-kwargs", kwargs]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert expected in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_registry_name_unchanged(capsys):
    prof = run_json(capsys, ["profile", "--model", "resnet20", "--no-timing", "--json"])
    assert prof["params"] == 269_722
