"""`prunekit compare` in the terminal: unique row labels, top-1 and top-5 error, both devices in one table,
the weights column beside the file, a dense reference for `report`, and a zoomed sweep with its reference."""

from __future__ import annotations

import copy
import json

import torch

from prunekit.checkpoint import save_checkpoint
from prunekit.cli import main
from prunekit.prune import prune_unstructured

DATA = ["--dataset", "synthetic", "--no-progress"]


def dense_and_pruned(tmp_path, tiny_vgg):
    """``dense/last.pt`` and ``pruned/last.pt`` (60% unstructured) of the tiny VGG, synthetic-data checkpoints."""
    meta = {"dataset": "synthetic", "num_classes": 10}
    dense = save_checkpoint(tiny_vgg, tmp_path / "dense" / "last.pt", meta)
    pruned_model = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned_model, 0.6)
    pruned = save_checkpoint(pruned_model, tmp_path / "pruned" / "last.pt",
                             {**meta, "method": "OMP", "granularity": "unstructured"})
    return dense, pruned


def test_compare_table_labels_errors_devices_and_weights(tmp_path, tiny_vgg, capsys):
    dense, pruned = dense_and_pruned(tmp_path, tiny_vgg)
    assert main(["compare", str(dense), str(pruned), "--device", "cpu,cuda", "--repeats", "3", "--batch-size", "4",
                 "--wide", *DATA]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| model |"))
    for heading in ("top-1 err %", "top-5 err %", "| file |", "| weights |", "latency ms [IQR] cpu",
                    "speed-up cpu", "latency ms [IQR] cuda"):
        assert heading in header, heading
    assert "| dense/last.pt |" in out and "| pruned/last.pt |" in out and "| last.pt |" not in out
    if not torch.cuda.is_available():
        assert "no GPU" in out
    assert "1 thread(s) (single-threaded by default" in out

    assert main(["compare", str(pruned), str(dense), "--json", "--no-timing", *DATA]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["weights_bytes"] == rows[1]["weights_bytes"]  # masks made permanent: same tensors
    assert rows[0]["file_bytes"] > rows[1]["file_bytes"]  # the masked file also stores weight_orig and masks


def test_report_on_a_folder_picks_the_dense_model_as_reference(tmp_path, tiny_vgg, capsys):
    meta = {"dataset": "synthetic", "num_classes": 10}
    run = tmp_path / "run"
    pruned_model = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned_model, 0.6)
    save_checkpoint(pruned_model, run / "a_pruned.pt", {**meta, "method": "OMP", "granularity": "unstructured"})
    save_checkpoint(tiny_vgg, run / "b_dense.pt", meta)
    assert main(["report", str(run), "--no-timing", *DATA]) == 0
    saved = json.loads((run / "compare.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["b_dense.pt", "a_pruned.pt"]
    (run / "compare.json").unlink()
    assert main(["report", str(run), "--no-timing", "--reference", str(run / "a_pruned.pt"), *DATA]) == 0
    saved = json.loads((run / "compare.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["a_pruned.pt", "b_dense.pt"]


def test_device_list_is_checked(tmp_path, tiny_vgg, capsys):
    path = save_checkpoint(tiny_vgg, tmp_path / "m.pt", {"dataset": "synthetic", "num_classes": 10})
    assert main(["compare", str(path), "--device", "cpu,tpu", *DATA]) != 0
    assert "--device cpu,tpu: give cpu, cuda or cpu,cuda" in capsys.readouterr().err


def test_compare_table_fits_100_columns_unless_wide(tmp_path, tiny_vgg, capsys):
    dense, pruned = dense_and_pruned(tmp_path, tiny_vgg)
    argv = ["compare", str(dense), str(pruned), "--device", "cpu,cuda", "--repeats", "3", "--batch-size", "4", *DATA]
    assert main(argv) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert max(len(line) for line in table) <= 100
    header = table[0]
    for heading in ("| model |", "| top-1 % |", "latency ms [IQR] cpu", "speed-up cpu"):
        assert heading in header, heading
    note = next(line for line in out.splitlines() if "more column(s) to fit 100 characters" in line)
    assert "--wide shows every column" in note and "peak mem" in note
    assert main([*argv, "--wide"]) == 0
    wide = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    assert wide[0].count("|") > header.count("|") and "peak mem" in wide[0]


def test_runtime_list_is_checked(tmp_path, tiny_vgg, capsys):
    path = save_checkpoint(tiny_vgg, tmp_path / "m.pt", {"dataset": "synthetic", "num_classes": 10})
    assert main(["compare", str(path), "--runtime", "eager,tensorrtx", *DATA]) != 0
    err = capsys.readouterr().err
    assert "unknown runtime 'tensorrtx'; choose one of: eager, onnxruntime, sparse" in err and "Traceback" not in err
