"""What quantize, prune-channels and shrink tell the user: fp32 → int8 top-1 and size, BN re-estimation with
top-1 before/after, collapse warnings, and shrink's notice on a file that is already small."""

from __future__ import annotations

import json
import re

import pytest
import torch

from prunekit.cli import main
from conftest import run_cli

DATA = ["--limit-train", "256"]


def test_quantize_prints_fp32_and_int8_top1_and_the_size_ratio(base, tmp_path, capsys):
    code, out, _ = run_cli(capsys, ["quantize", base, *DATA, "--calib-batches", "1", "--out", tmp_path / "q.pt"])
    assert code == 0
    line = next(line for line in out.splitlines() if line.startswith("test top-1 fp32"))
    fp32, int8, images = re.search(r"fp32 ([\d.]+)% → int8 ([\d.]+)% on (\d+) SYNTHETIC images", line).groups()
    code, out, _ = run_cli(capsys, ["quantize", base, *DATA, "--calib-batches", "1", "--out", tmp_path / "q.pt", "--json"])
    result = json.loads(out)
    assert (result["fp32_top1"], result["int8_top1"]) == (pytest.approx(float(fp32), abs=0.005),
                                                          pytest.approx(float(int8), abs=0.005))
    assert result["test_images"] == int(images) > 0
    assert result["size_ratio"] == pytest.approx(result["int8_bytes"] / result["fp32_bytes"])
    assert result["int8_bytes"] == (tmp_path / "q.pt").stat().st_size and 0 < result["size_ratio"] < 1


def bn_buffers(path) -> dict:
    from prunekit.checkpoint import load_checkpoint

    model = load_checkpoint(path).model
    return {k: v for k, v in model.state_dict().items() if "running_" in k}


def test_prune_channels_reestimates_bn_by_default_when_the_data_is_known(base, tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint
    from prunekit.data import get_data
    from prunekit.pipeline import with_normalisation
    from prunekit.train.bn import recalibrate_bn
    from prunekit.train.loop import sample_batches

    code, out, _ = run_cli(capsys, ["prune-channels", base, "--ratio", "0.5", *DATA, "--out", tmp_path / "bn.pt"])
    assert code == 0
    assert "BN statistics re-estimated on 2 training batch(es)" in out  # 256 images, batches of 128
    assert re.search(r"test top-1 [\d.]+% → [\d.]+% on \d+ SYNTHETIC images \(BN re-estimated\)", out)
    code, out, _ = run_cli(capsys, ["prune-channels", base, "--ratio", "0.5", *DATA, "--recalibrate-bn", "0",
                                "--out", tmp_path / "raw.pt", "--json"])
    raw = json.loads(out)
    assert raw["bn_recalibration_batches"] == 0 and {"top1_before", "top1_after"} <= set(raw)
    # the default run equals the raw pruned model re-estimated by hand on the same 2 seeded batches, normalised
    # as the checkpoint was trained
    model = load_checkpoint(tmp_path / "raw.pt").model
    data = with_normalisation(get_data("synthetic", limit_train=256), load_checkpoint(base).meta)
    assert recalibrate_bn(model, sample_batches(data, 8, seed=0)) == 2
    by_hand = {k: v for k, v in model.state_dict().items() if "running_" in k}
    default = bn_buffers(tmp_path / "bn.pt")
    assert all(torch.allclose(default[k], by_hand[k], atol=1e-5) for k in by_hand)
    assert not all(torch.equal(default[k], bn_buffers(tmp_path / "raw.pt")[k]) for k in default)


def test_prune_channels_without_known_data_measures_nothing(tiny_vgg, tmp_path, capsys):
    from prunekit.checkpoint import save_checkpoint

    save_checkpoint(tiny_vgg, tmp_path / "plain.pt", {})  # built in Python: no dataset, no folder
    code, out, err = run_cli(capsys, ["prune-channels", tmp_path / "plain.pt", "--ratio", "0.5", "--out",
                                  tmp_path / "small.pt", "--json"])
    result = json.loads(out)
    assert code == 0 and result["bn_recalibration_batches"] == 0 and "top1_after" not in result and not err


def test_a_collapsed_pruned_model_gets_one_warning_line(base, tmp_path, capsys, monkeypatch):
    import prunekit.cli.structured
    from prunekit.evaluation import Metrics

    collapsed = Metrics(10.0, 50.0, 2.3, 100, [100] + [0] * 9)
    monkeypatch.setattr(prunekit.cli.structured, "test_metrics", lambda model, data: collapsed)
    code, _, err = run_cli(capsys, ["prune-channels", base, "--ratio", "0.5", *DATA, "--out", tmp_path / "x.pt"])
    assert code == 0
    warnings = [line for line in err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: the pruned model predicts class 0 for 100% of the 100 images (top-1 10.00%, "
                        "chance 10.0%): it has collapsed to one class; check the input normalisation, the BatchNorm "
                        "statistics (--recalibrate-bn) and the learning rate"]


def test_shrink_on_an_already_small_file_is_a_notice(base, tmp_path, capsys):
    assert main(["prune-channels", str(base), "--ratio", "0.5", *DATA, "--recalibrate-bn", "0", "--out",
                 str(tmp_path / "small.pt")]) == 0
    code, out, err = run_cli(capsys, ["shrink", tmp_path / "small.pt", "--out", tmp_path / "again.pt"])
    assert code == 0 and not err
    assert out.startswith(f"nothing to shrink: {tmp_path / 'small.pt'} is already small") and "no file written" in out
    assert not (tmp_path / "again.pt").exists()
    code, out, _ = run_cli(capsys, ["shrink", base, "--out", tmp_path / "again.pt", "--json"])
    assert code == 0 and json.loads(out)["out"] is None and "no all-zero filter" in json.loads(out)["notice"]


def test_prune_channels_with_remembered_data_gone_prunes_without_it(tiny_vgg, tmp_path, capsys):
    from prunekit.checkpoint import save_checkpoint

    gone = tmp_path / "moved-away"
    save_checkpoint(tiny_vgg, tmp_path / "old.pt", {"dataset": "cifar10", "num_classes": 10, "data_root": str(gone)})
    code, out, err = run_cli(capsys, ["prune-channels", tmp_path / "old.pt", "--ratio", "0.5", "--out",
                                  tmp_path / "small.pt", "--json"])
    assert code == 0 and json.loads(out)["bn_recalibration_batches"] == 0
    assert f"no longer at {gone}" in err and "--data DIR" in err
    code, _, err = run_cli(capsys, ["prune-channels", tmp_path / "old.pt", "--ratio", "0.5", "--recalibrate-bn", "4",
                                "--out", tmp_path / "small.pt"])
    assert code == 2 and "no longer at" in err  # asked for: the one-line data error


def test_evaluate_warns_about_a_model_that_predicts_one_class(tiny_vgg, tmp_path, capsys):
    from prunekit.checkpoint import save_checkpoint

    with torch.no_grad():
        tiny_vgg.classifier.weight.zero_()
        tiny_vgg.classifier.bias.copy_(torch.arange(10.0))  # class 9 wins for every image
    save_checkpoint(tiny_vgg, tmp_path / "one.pt", {"dataset": "synthetic", "num_classes": 10})
    code, _, err = run_cli(capsys, ["evaluate", tmp_path / "one.pt", *DATA])
    assert code == 0 and "warning: the model predicts class 9 for 100% of the" in err
