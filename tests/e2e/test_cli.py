"""End-to-end: the real CLI, in-process, on CPU with tiny data."""

from __future__ import annotations

import json

import pytest
import torch

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
    from prunekit.checkpoint import load_checkpoint

    first = load_checkpoint(run / "last.pt").meta["history"]
    assert main(["train", "--resume", str(run / "last.pt"), "--no-progress", "--epochs", "2", *common]) == 0
    printed = capsys.readouterr().out
    assert "epoch   1" not in printed and "epoch   2" in printed
    resumed = load_checkpoint(run / "last.pt")
    assert resumed.train_state["epoch"] == 2 and [h["epoch"] for h in resumed.meta["history"]] == [1, 2]
    assert resumed.meta["history"][0] == first[0]  # epoch 1 kept as it was, not trained again
    assert len((run / "metrics.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


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


def test_save_every_epoch_keeps_one_checkpoint_per_epoch(tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--model", "vgg11", "--model-cfg", "8,M,16", "--epochs", "2", "--batch-size", "64",
                 "--save", str(run), "--save-every-epoch", "--no-progress", "--dataset", "synthetic",
                 "--limit-train", "128", "--device", "cpu"]) == 0
    assert sorted(p.name for p in run.glob("epoch_*.pt")) == ["epoch_1.pt", "epoch_2.pt"]
    snapshots = [load_checkpoint(run / f"epoch_{k}.pt") for k in (1, 2)]
    assert [s.meta["epoch"] for s in snapshots] == [1, 2]
    last = load_checkpoint(run / "last.pt").model.state_dict()
    assert all(torch.equal(v, last[k]) for k, v in snapshots[1].model.state_dict().items())
    assert not all(torch.equal(v, last[k]) for k, v in snapshots[0].model.state_dict().items())


def test_export_onnx_from_the_cli(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from prunekit.checkpoint import save_checkpoint
    from prunekit.models import create_model

    torch.manual_seed(0)
    path = save_checkpoint(create_model("vgg11", num_classes=10, cfg=[8, "M", 16]), tmp_path / "m.pt")
    result = run_json(capsys, ["export", str(path), "--format", "onnx", "--out", str(tmp_path / "m.onnx"),
                               "--json"])
    assert (tmp_path / "m.onnx").stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left
    assert any(isinstance(v, float) and v <= 1e-4 for v in result.values()), result
    assert main(["export", str(path), "--format", "onnx", "--out", str(tmp_path / "n.onnx")]) == 0
    assert "onnx" in capsys.readouterr().out.lower()


@pytest.mark.parametrize("text, expected", [
    (None, "dataset"),
    ("dataset", "dataset"),
    ("imagenet", ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))),
    ("0.5,0.5,0.5,0.25,0.25,0.25", ((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))),
])
def test_normalize_parsing(text, expected):
    from prunekit.data import DATASETS
    from prunekit.data.normalisation import input_normalisation, parse_normalisation

    info = DATASETS["cifar10"]
    own = ((0.4914, 0.4822, 0.4465), (0.247, 0.2435, 0.2616))
    assert (tuple(info.mean), tuple(info.std)) == own
    expected = own if expected == "dataset" else expected
    assert parse_normalisation(text, info) == expected
    # the checkpoint's own statistics are used unless --normalize is given, which wins
    saved = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    chosen = input_normalisation(saved, info, text)
    assert chosen == (((0.1, 0.2, 0.3), (0.4, 0.5, 0.6)) if text is None else expected)
    assert input_normalisation({}, info, text) == expected


@pytest.mark.parametrize("text", ["1,2,3", "imagenett", "a,b,c,d,e,f"])
def test_bad_normalize_is_a_clear_error(tmp_path, capsys, text):
    from prunekit.models import create_model

    torch.save(create_model("resnet20").state_dict(), tmp_path / "w.th")
    assert main(["convert", "--model", "resnet20", "--weights", str(tmp_path / "w.th"), "--normalize", text,
                 "--out", str(tmp_path / "r20.pt")]) == 2
    err = capsys.readouterr().err
    assert "--normalize" in err and "imagenet" in err and "Traceback" not in err
    assert not (tmp_path / "r20.pt").exists()


def test_a_registered_criterion_is_reachable_from_the_cli(tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint, save_checkpoint
    from prunekit.models import create_model
    from prunekit.prune import importance

    @importance.register_criterion("test_last_first")
    def last_first(model, graph, seed):
        """Scores every prunable channel by its id: the highest ids go first... inverted: lowest id kept."""
        return {cid: -float(cid) for cid, ch in graph.channels.items() if ch.prunable}

    try:
        torch.manual_seed(0)
        save_checkpoint(create_model("vgg11", num_classes=10, cfg=[8, "M", 16]), tmp_path / "m.pt")
        assert main(["prune-channels", str(tmp_path / "m.pt"), "--ratio", "0.5", "--criterion", "test_last_first",
                     "--out", str(tmp_path / "small.pt")]) == 0
        small = load_checkpoint(tmp_path / "small.pt")
        assert small.meta["prune_channels"]["criterion"] == "test_last_first"
        assert [m.out_channels for m in small.model.features if isinstance(m, torch.nn.Conv2d)] == [4, 8]
        capsys.readouterr()
        assert main(["prune-channels", str(tmp_path / "m.pt"), "--ratio", "0.5", "--criterion", "no_such",
                     "--out", str(tmp_path / "x.pt")]) == 2
        assert "test_last_first" in capsys.readouterr().err  # the error lists registered criteria
    finally:
        importance.CRITERIA.pop("test_last_first")
