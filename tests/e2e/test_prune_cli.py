"""End-to-end: layers, prune (OMP/IMP), sparsity, finetune and plot through the real CLI, in-process on CPU."""

from __future__ import annotations

import csv
import json
import re

import pytest
import torch

from conftest import SYNTHETIC_CLI
from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.cli import main
from prunekit.prune.allocate import target_count
from prunekit.prune.sparsity import effective_weight, sparsity_report

DATA = SYNTHETIC_CLI
CONV_WEIGHTS = 3 * 8 * 9 + 8 * 16 * 9 + 2 * 16 * 16 * 9  # tiny VGG, classifier excluded
ALL_WEIGHTS = CONV_WEIGHTS + 16 * 10


@pytest.fixture
def base(tmp_path, tiny_vgg, tiny_data):
    """The tiny VGG saved as a checkpoint whose meta names its (synthetic) dataset and normalisation."""
    meta = {"dataset": "synthetic", "num_classes": 10, "mean": list(tiny_data.info.mean),
            "std": list(tiny_data.info.std), "test_top1": 10.0, "test_top5": 50.0}
    return save_checkpoint(tiny_vgg, tmp_path / "base.pt", meta)


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def only(folder, pattern):
    found = sorted(folder.glob(pattern))
    assert len(found) == 1, (pattern, found)
    return found[0]


def assert_masked_zero(model, masks):
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = effective_weight(modules[name.rsplit(".", 1)[0]]).detach()
        assert bool((weight[~mask] == 0).all()), name


def test_layers_names_shapes_and_classifier(base, capsys):
    report = run_json(capsys, ["layers", str(base), "--json"])
    rows = {r["name"]: r for r in report["layers"]}
    assert list(rows) == ["features.0", "features.4", "features.8", "features.11", "classifier"]
    assert rows["features.0"]["shape"] == [8, 3, 3, 3] and rows["features.0"]["params"] == 216
    assert rows["classifier"]["classifier"] and not rows["features.0"]["classifier"]
    assert report["params"] == ALL_WEIGHTS and report["overall"] == 0.0
    assert main(["layers", "--model", "resnet20"]) == 0
    assert "layer1.0.conv1" in capsys.readouterr().out


def test_oneshot_prune_sparsity_finetune_and_plots(tmp_path, base, capsys):
    out = tmp_path / "out"
    argv = ["prune", str(base), "--granularity", "unstructured", "--sparsity", "0.8", "--schedule", "oneshot",
            "--finetune-epochs", "1", "--out", str(out), *DATA]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "round 1/1" in printed and "weight sparsity 0.7792" in printed
    result = only(out, "Omp_unstructured_*.pt")
    pruned = load_checkpoint(result)
    meta = pruned.meta
    assert meta["sparsity"] == target_count(0.8, CONV_WEIGHTS) / ALL_WEIGHTS  # classifier spared
    # named by what the target counts (the conv weights in scope: ⌈0.8 n⌉ of them), not the overall 0.7792
    assert target_count(0.8, CONV_WEIGHTS) / CONV_WEIGHTS >= 0.8
    assert result.name == f"Omp_unstructured_0.80_acc_{meta['test_top1']:.2f}.pt"
    assert meta["method"] == "OMP" and meta["granularity"] == "unstructured" and meta["target_sparsity"] == 0.8
    assert meta["dataset"] == "synthetic" and len(meta["rounds"]) == 1 and meta["rounds"][0]["masked_sparsity"] == \
        target_count(0.8, CONV_WEIGHTS) / CONV_WEIGHTS
    assert meta["nonzero_params"] < meta["params"] - 4000
    assert_masked_zero(pruned.model, pruned.masks)

    report = run_json(capsys, ["sparsity", str(result), "--json"])
    assert report["overall"] == meta["sparsity"] and report["zeros"] == target_count(0.8, CONV_WEIGHTS)

    # the same command again resumes from the finished round instead of retraining it
    done = out / "Omp_unstructured_0.80" / "round_1" / "round.pt"
    stamp = done.stat().st_mtime_ns
    assert main(argv) == 0 and done.stat().st_mtime_ns == stamp

    ft = tmp_path / "ft"
    assert main(["finetune", str(result), "--epochs", "1", "--save", str(ft), *DATA]) == 0
    tuned = load_checkpoint(ft / "last.pt")
    assert all(torch.equal(tuned.masks[k], pruned.masks[k]) for k in pruned.masks)
    assert_masked_zero(tuned.model, pruned.masks)
    assert tuned.meta["sparsity"] == meta["sparsity"] and tuned.meta["method"] == "OMP"
    assert main(["finetune", "--resume", str(ft / "last.pt"), "--epochs", "2", *DATA]) == 0
    resumed = load_checkpoint(ft / "last.pt")
    assert resumed.train_state["epoch"] == 2
    assert_masked_zero(resumed.model, pruned.masks)

    png = tmp_path / "plots" / "acc.png"
    assert main(["plot", "accuracy-sparsity", str(base), str(result), str(ft / "last.pt"), "--out", str(png)]) == 0
    rows = list(csv.DictReader(png.with_suffix(".csv").open()))
    assert png.stat().st_size > 1000 and len(rows) == 3
    assert {r["label"] for r in rows} == {"dense", "OMP unstructured"}
    # weight sparsity, as `prunekit run` plots it: 1 − non-zero conv + linear weights / the dense model's
    report = sparsity_report(load_checkpoint(result).model)
    assert meta["dense_weights"] == report["params"]  # unstructured: nothing removed, so the dense count
    assert float(next(r for r in rows if r["source"] == str(result))["sparsity"]) == pytest.approx(report["overall"])

    png = tmp_path / "plots" / "mask.png"
    assert main(["plot", "mask", str(result), "--layer", "features.4", "--out", str(png)]) == 0
    matrix = [[int(v) for v in line.split(",")] for line in png.with_suffix(".csv").read_text().splitlines()]
    assert png.stat().st_size > 1000 and len(matrix) == 16 and len(matrix[0]) == 8 * 9
    assert sum(map(sum, matrix)) == int(pruned.masks["features.4.weight"].sum())


def test_iterative_ratios_with_rewinding(tmp_path, base, capsys):
    ratios = tmp_path / "ratios.yaml"
    ratios.write_text("default: 0.5\nfeatures.0: 0.2\n")
    out = tmp_path / "out"
    assert main(["prune", str(base), "--ratios", str(ratios), "--schedule", "iterative", "--iterations", "2",
                 "--finetune-epochs", "1", "--rewind-to", str(base), "--out", str(out), *DATA]) == 0
    printed = capsys.readouterr().out
    assert "round 1/2" in printed and "round 2/2" in printed
    result = load_checkpoint(only(out, "Imp_unstructured_*_acc_*.pt"))
    assert [r["round"] for r in result.meta["rounds"]] == [1, 2]
    assert int((~result.masks["features.0.weight"]).sum()) == target_count(0.2, 216)
    assert int((~result.masks["features.8.weight"]).sum()) == target_count(0.5, 16 * 16 * 9)
    assert "classifier.weight" not in result.masks
    first = load_checkpoint(out / "Imp_unstructured_ratios" / "round_1" / "round.pt").masks
    assert all(bool((result.masks[k] <= first[k]).all()) for k in first)  # masks only shrink
    assert int((~first["features.8.weight"]).sum()) == target_count(1 - 0.5 ** 0.5, 16 * 16 * 9)

    assert run_json(capsys, ["sparsity", str(only(out, "Imp_*.pt")), "--json"])["overall"] == \
        pytest.approx(result.meta["sparsity"])


def test_bad_inputs_are_clear_errors(tmp_path, base, capsys):
    ratios = tmp_path / "ratios.yaml"
    ratios.write_text("featurs.4: 0.5\n")
    assert main(["prune", str(base), "--ratios", str(ratios), "--out", str(tmp_path), *DATA]) == 2
    err = capsys.readouterr().err
    assert "Did you mean 'features.4'" in err and "Traceback" not in err
    assert main(["prune", str(base), "--sparsity", "1.2", "--out", str(tmp_path), *DATA]) == 2
    assert "[0, 1)" in capsys.readouterr().err
    assert main(["plot", "mask", str(base), "--layer", "features.5", "--out", str(tmp_path / "m.png")]) == 2
    assert "Valid layers" in capsys.readouterr().err


def test_filter_granularity_shrinks_the_model(tmp_path, base, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(base), "--granularity", "filter", "--sparsity", "0.25", "--schedule", "oneshot",
                 "--finetune-epochs", "1", "--out", str(out), *DATA]) == 0
    printed = capsys.readouterr().out
    assert "filter sparsity" in printed and "MACs" in printed
    path = only(out, "Omp_filter_*_acc_*.pt")
    meta = load_checkpoint(path).meta
    assert re.fullmatch(rf"Omp_filter_{meta['filter_sparsity']:.2f}_acc_{meta['test_top1']:.2f}\.pt", path.name)
    assert meta["params"] < meta["dense_params"] and meta["macs"] < meta["dense_macs"]
