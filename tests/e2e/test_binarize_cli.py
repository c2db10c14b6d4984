"""End-to-end: prune → binarize (STE fine-tuning) → export --values binary → info / sparsity / evaluate / profile
/ compare, through the real CLI in-process on CPU; and the experiment variant."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import SYNTHETIC_CLI
from prunekit.binarize import binarization_spec
from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main
from prunekit.experiment import load_experiment

DATA = SYNTHETIC_CLI


def run_json(capsys, argv):
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 0
    return json.loads(capsys.readouterr().out)


def test_prune_binarize_export_and_inspect(tmp_path, base, capsys):
    assert main(["prune", str(base), "--sparsity", "0.5", "--out", str(tmp_path / "pruned"), *DATA]) == 0
    (pruned,) = (tmp_path / "pruned").glob("Omp_*.pt")
    out = tmp_path / "bin"
    assert main(["binarize", str(pruned), "--finetune-epochs", "1", "--out", str(out), *DATA]) == 0
    printed = capsys.readouterr().out
    assert "test top-1: fp32" in printed and "after 1 STE epoch(s)" in printed
    (result,) = out.glob("Bin_bwn_acc_*.pt")
    loaded = load_checkpoint(result)
    assert loaded.meta["binarized_top1"] is not None and loaded.meta["method"] == "OMP + BWN"
    assert binarization_spec(loaded.model)["layers"] == ["features.4", "features.8", "features.11"]
    for key, mask in loaded.masks.items():  # pruned weights stay exactly zero, the rest ±α
        module = loaded.model.get_submodule(key.rsplit(".", 1)[0])
        weight = module.weight.detach()
        assert torch.all(weight[~mask] == 0)
        if key != "classifier.weight" and key != "features.0.weight":
            assert torch.all(weight[mask] != 0) and weight.abs().unique().numel() <= weight.shape[0] + 1

    binary = tmp_path / "binary.pt"
    exported = run_json(capsys, ["export", result, "--format", "compact", "--values", "binary", "--out", binary,
                                 "--json"])
    assert exported["compact_bytes"] == binary.stat().st_size < exported["weights_bytes"]
    layers = exported["binarized_layers"]  # ternary: 1 mask bit per weight + 1 sign bit per kept one + scales
    assert layers["layers"] == 3 and layers["payload_bytes"] * 14 < layers["fp32_bytes"]

    info = run_json(capsys, ["info", binary, "--json"])
    assert info["binarized"]["method"] == "bwn" and info["masked_tensors"] == len(loaded.masks)
    sparsity = run_json(capsys, ["sparsity", binary, "--json"])
    assert {r["name"]: r["binarized"] for r in sparsity["layers"]} == {
        "features.0": None, "features.4": "bwn", "features.8": "bwn", "features.11": "bwn", "classifier": None}

    a = run_json(capsys, ["evaluate", result, "--device", "cpu", "--json"])
    b = run_json(capsys, ["evaluate", binary, "--device", "cpu", "--json"])
    assert a["top1"] == b["top1"] and a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    profiled = run_json(capsys, ["profile", binary, "--no-timing", "--json"])
    assert profiled["file_bytes"] == binary.stat().st_size

    compared = run_json(capsys, ["compare", base, pruned, binary, "--no-timing", "--json"])
    rows = compared["rows"]
    assert rows[2]["file_bytes"] == binary.stat().st_size
    assert rows[2]["compact_bytes"] < rows[1]["compact_bytes"] and rows[2]["file_reduction"] > 1.5


def test_binarize_errors_are_one_line(tmp_path, base, capsys):
    assert main(["binarize", str(base), "--layers", "layer9.*", "--out", str(tmp_path / "x"), *DATA]) == 2
    assert "matches no conv/linear layer" in capsys.readouterr().err
    assert main(["export", str(base), "--format", "compact", "--values", "binary", "--out",
                 str(tmp_path / "b.pt")]) == 2
    assert "prunekit binarize" in capsys.readouterr().err
    out = tmp_path / "bin"
    assert main(["binarize", str(base), "--method", "binaryconnect", "--activations", "sign", "--no-keep-first-last",
                 "--out", str(out), *DATA]) == 0
    (result,) = out.glob("Bin_binaryconnect_sign_acc_*.pt")
    spec = binarization_spec(load_checkpoint(result).model)
    assert spec["activations"] == "sign" and "features.0" in spec["layers"] and "classifier" in spec["layers"]
    capsys.readouterr()
    assert main(["binarize", str(result), "--out", str(tmp_path / "again"), *DATA]) == 2
    assert "binarized already" in capsys.readouterr().err


def test_experiment_variant_binarizes():
    experiment = load_experiment({"name": "b", "baseline": {"model": "vgg11"},
                                  "variants": [{"name": "bin", "binarize": {"method": "binaryconnect",
                                                                            "finetune_epochs": 2}}]})
    assert experiment.variants[0].binarize.finetune_epochs == 2
    from prunekit.errors import PrunekitError

    with pytest.raises(PrunekitError, match="binarize.method"):
        load_experiment({"name": "b", "baseline": {"model": "vgg11"},
                         "variants": [{"name": "bin", "binarize": {"method": "xnor"}}]})


def test_binarize_again_resumes_the_finished_fine_tuning(tmp_path, base, capsys):
    from prunekit.binarize import latent_weights

    argv = ["binarize", str(base), "--finetune-epochs", "1", "--name", "b", "--out", str(tmp_path / "o"), *DATA]
    assert main(argv) == 0
    first = latent_weights(load_checkpoint(tmp_path / "o" / "b.pt").model)
    assert "epoch   1" in capsys.readouterr().out
    assert main(argv) == 0
    assert "epoch   1" not in capsys.readouterr().out  # the run folder's last.pt is finished: nothing retrained
    second = latent_weights(load_checkpoint(tmp_path / "o" / "b.pt").model)
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_experiment_run_with_a_binarize_variant(tmp_path, capsys):
    import yaml

    train = {"epochs": 1, "batch_size": 64, "lr": 0.05, "device": "cpu"}
    experiment = {"name": "bin", "data": {"dataset": "synthetic", "limit_train": 256, "limit_test": 128},
                  "baseline": {"model": "vgg11", "model_kwargs": {"cfg": [8, "M", 16, "M", 16, 16]}, "train": train},
                  "variants": [{"name": "pruned_bwn", "prune": {"granularity": "unstructured", "sparsity": 0.5},
                                "binarize": {"finetune_epochs": 1}}],
                  "accuracy_sparsity_plot": False, "compare": {"timing": False}}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment))
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    (result,) = (run / "models" / "pruned_bwn").glob("Bin_bwn_acc_*.pt")  # the variant names the folder
    loaded = load_checkpoint(result)
    assert binarization_spec(loaded.model)["method"] == "bwn" and loaded.masks
    rows = json.loads((run / "compare.json").read_text())["rows"]
    assert [r["model"] for r in rows] == ["00_baseline.pt", result.name]
