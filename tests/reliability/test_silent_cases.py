"""The last silent and misleading cases of issue 25, one test each: every case now ends in a one-line error
naming the flag or file, or in a stated behaviour pinned here.

 1 train diverging (--lr 1e6)          6 prune_channels: no prunable conv     11 fresh unreadable lock file
 2 train --save ''                     7 prune_channels: ratio and plan        12 plan on a changed model
 3 prune --out ''                      8 export --out ''                       13 plan on a model pruned already
 4 prune --name ../../x                9 a folder given as checkpoint          14 plan on a different model
 5 a key twice in a ratio YAML        10 a folder given as ratio file          15 kill -9 litter of export/
                                                                                  quantize/prune-channels
Plus: the run-folder lock is taken before any data loads.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from test_reliability_catalogue import DATA, FAST, TINY, one_line_error, run_cli, write_lock

from prunekit.cli import main
from prunekit.errors import PrunekitError


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """``last.pt`` of a finished 1-epoch run of a tiny VGG on synthetic data."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, *DATA, *FAST, "--save", str(run)]) == 0
    return run / "last.pt"


def dead_pid() -> int:
    """The pid of a process that has exited."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


# --- 1: divergence ------------------------------------------------------------------------------------------

def test_1_training_that_diverges_at_once_stops_and_saves_nothing(tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--lr", "1e6", "--save", run])
    assert code == 2
    line = one_line_error(err)
    assert "diverged in epoch 1" in line and "nothing was saved" in line and "--lr 1000000.0" in line
    assert not (run / "last.pt").exists() and "saved" not in out


@pytest.mark.parametrize("record, named", [
    ({"epoch": 2, "train_loss": 2.1, "test_loss": float("nan"), "test_images": 500}, "test loss is nan"),
    ({"epoch": 2, "train_loss": 7e24, "test_loss": 2.3, "test_images": 500}, "train loss is 7e+24"),
    ({"epoch": 2, "train_loss": 2.1, "val_loss": float("inf"), "val_images": 50}, "val loss is inf"),
])
def test_1_divergence_is_judged_on_evaluation_loss_and_size_too(tmp_path, record, named):
    from prunekit.config import TrainConfig
    from prunekit.train.loop import check_finite

    with pytest.raises(PrunekitError, match=re.escape(named)):
        check_finite(record, TrainConfig(), tmp_path)


def test_1_sane_losses_and_an_empty_split_pass():
    from prunekit.config import TrainConfig
    from prunekit.train.loop import DIVERGED_LOSS, check_finite

    check_finite({"epoch": 1, "train_loss": DIVERGED_LOSS, "test_loss": 4.6, "test_images": 10}, TrainConfig(), None)
    check_finite({"epoch": 1, "train_loss": 2.0, "val_loss": float("nan"), "val_images": 0}, TrainConfig(), None)


# --- 2, 3, 8: empty paths -----------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["train", *TINY, *DATA, *FAST, "--save", ""], "--save"),
    (["prune", "CKPT", "--sparsity", "0.5", "--out", ""], "--out"),
    (["export", "CKPT", "--format", "compact", "--out", ""], "--out"),
    (["prune", "CKPT", "--sparsity", "0.5", "--out", "o", "--name", ""], "--name"),
])
def test_2_3_8_an_empty_path_is_refused_by_name(trained, tmp_path, capsys, monkeypatch, argv, flag):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, [trained if a == "CKPT" else a for a in argv])
    assert code == 2
    line = one_line_error(err)
    assert f"{flag} is empty ('')" in line and "busy" not in line and "compact" not in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no default folder appeared


# --- 4: --name ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["../../x", "a/b", "/tmp/x", "..", "./"])
def test_4_name_is_a_file_name_not_a_path(trained, tmp_path, capsys, name):
    out = tmp_path / "deep" / "out"
    code, _, err = run_cli(capsys, ["prune", trained, "--sparsity", "0.5", "--out", out, "--name", name, *DATA,
                                    "--finetune-epochs", "0", "--device", "cpu", "--no-progress"])
    assert code == 2
    assert f"--name {name!r} is not a plain file name" in one_line_error(err)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == []


def test_4_checked_name_keeps_plain_names():
    from prunekit.paths import checked_name

    assert checked_name("pruned80.pt") == "pruned80" and checked_name("a.b") == "a.b"


# --- 5, 9, 10: files ----------------------------------------------------------------------------------------

def test_5_a_key_twice_in_a_ratio_file_names_both_lines(trained, tmp_path, capsys):
    ratios = tmp_path / "ratios.yaml"
    ratios.write_text("features.0: 0.2\nfeatures.4: 0.5\nfeatures.0: 0.7\n")
    code, _, err = run_cli(capsys, ["prune-channels", trained, "--ratios", ratios, "--out", tmp_path / "x.pt"])
    assert code == 2
    line = one_line_error(err)
    assert "'features.0' appears twice (lines 1 and 3)" in line and str(ratios) in line
    assert not (tmp_path / "x.pt").exists()


def test_5_nested_duplicates_too_and_distinct_keys_load(tmp_path):
    from prunekit.prune.allocate import load_ratio_file

    nested = tmp_path / "nested.yaml"
    nested.write_text("prune_ratios:\n  features.0.weight: 0.2\n  features.0.weight: 0.3\n")
    with pytest.raises(PrunekitError, match=r"lines 2 and 3"):
        load_ratio_file(nested)
    fine = tmp_path / "fine.yaml"
    fine.write_text("features.0: 0.2\ndefault: 0.5\n")
    assert load_ratio_file(fine) == {"features.0": 0.2, "default": 0.5}


def test_9_a_folder_given_as_checkpoint_is_called_a_folder(trained, capsys):
    code, _, err = run_cli(capsys, ["prune-channels", trained.parent, "--ratio", "0.5", "--out", "unused.pt"])
    assert code == 2
    line = one_line_error(err)
    assert f"checkpoint {trained.parent} is a folder, not a file" in line and f"e.g. {trained}" in line
    assert "not found" not in line


def test_10_a_folder_given_as_ratio_file_is_called_a_folder(trained, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["prune-channels", trained, "--ratios", tmp_path, "--out", tmp_path / "x.pt"])
    assert code == 2
    line = one_line_error(err)
    assert f"ratio file {tmp_path} is a folder, not a file" in line and "not found" not in line


# --- 11: locks ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("content", ["", "garbage{"])
def test_11_a_fresh_unreadable_lock_file_is_named_not_blamed_on_a_writer(tmp_path, capsys, content):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".prunekit.lock").write_text(content)
    code, _, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--save", run])
    assert code == 2
    line = one_line_error(err)
    assert f"its lock file {run / '.prunekit.lock'} is unreadable" in line and "delete" in line
    assert "being written by" not in line
    assert (run / ".prunekit.lock").read_text() == content  # left for the user to judge


def test_lock_comes_before_the_data(trained, tmp_path, capsys, monkeypatch):
    """Two prunes into one --out: the second fails at once, without loading any data."""
    import prunekit.cli.prune

    def no_data(*args, **kwargs):
        raise AssertionError("data loaded before the lock was taken")

    monkeypatch.setattr(prunekit.cli.prune, "data_for", no_data)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(tmp_path / "out", other.pid)
        code, _, err = run_cli(capsys, ["prune", trained, "--sparsity", "0.5", "--out", tmp_path / "out"])
    finally:
        other.kill()
        other.wait()
    assert code == 2 and f"process {other.pid}" in one_line_error(err)


def test_a_folder_the_lock_created_goes_again_when_nothing_was_written(tmp_path):
    from prunekit.lock import run_lock

    with run_lock(tmp_path / "new" / "run"):
        assert (tmp_path / "new" / "run" / ".prunekit.lock").is_file()
    assert list(tmp_path.iterdir()) == []  # e.g. the data failed to load after the lock was taken
    with run_lock(tmp_path / "new" / "run"):
        (tmp_path / "new" / "run" / "last.pt").write_text("kept")
    assert [p.name for p in (tmp_path / "new" / "run").iterdir()] == ["last.pt"]
    (tmp_path / "old").mkdir()
    with run_lock(tmp_path / "old"):
        pass
    assert (tmp_path / "old").is_dir()  # not created by the lock: left alone


# --- 6, 7, 12-14: prune_channels ---------------------------------------------------------------------------

def tiny(last: int = 16) -> nn.Module:
    from prunekit.models import create_model

    torch.manual_seed(0)
    return create_model("vgg11", num_classes=10, cfg=[8, "M", 16, "M", 16, last])


def test_6_nothing_to_prune_warns_and_returns_the_model_unchanged():
    from prunekit import prune_channels

    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.warns(UserWarning, match="removed nothing and returns the model unchanged"):
        assert prune_channels(model, torch.zeros(1, 3, 32, 32), ratio=0.5) is model
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_6_a_zero_ratio_asks_for_nothing_and_does_not_warn(recwarn):
    from prunekit import prune_channels

    prune_channels(tiny(), ratio=0.0)
    assert not [w for w in recwarn if "removed nothing" in str(w.message)]


def test_7_a_plan_and_a_ratio_together_are_refused():
    from prunekit import plan_channels, prune_channels

    model = tiny()
    plan = plan_channels(model, ratio=0.5)
    with pytest.raises(PrunekitError, match="give a plan or a target"):
        prune_channels(model, ratio=0.25, plan=plan)
    assert model.features[0].out_channels == 8  # untouched


@pytest.mark.parametrize("case", ["changed", "pruned already", "different"])
def test_12_13_14_a_plan_for_another_model_is_refused_by_layer(case):
    from prunekit import plan_channels, prune_channels

    model = tiny()
    plan = plan_channels(model, ratio=0.5)
    if case == "changed":
        model.features[0] = nn.Conv2d(3, 12, 3, padding=1)
        target, layer = model, "features.0.weight: 8×3×3×3 in the plan, 12×3×3×3 here"
    elif case == "pruned already":
        prune_channels(model, plan=plan)
        target, layer = model, "features.0.weight: 8×3×3×3 in the plan, 4×3×3×3 here"
    else:
        target, layer = tiny(last=32), "features.11.weight: 16×16×3×3 in the plan, 32×16×3×3 here"
    shapes = {k: v.shape for k, v in target.state_dict().items()}
    with pytest.raises(PrunekitError, match="made for another model") as err:
        prune_channels(target, plan=plan)
    assert layer in str(err.value) and "plan_channels(model" in str(err.value)
    assert {k: v.shape for k, v in target.state_dict().items()} == shapes


def test_a_plan_still_applies_to_its_own_model():
    from prunekit import plan_channels, prune_channels

    model = tiny()
    plan = plan_channels(model, ratio=0.5)
    prune_channels(model, plan=plan)
    assert model.features[0].out_channels == 8 - len(plan.removed["features.0"])


# --- 15: kill -9 litter ----------------------------------------------------------------------------------

def litter(folder: Path, name: str, pid: int | None, age_s: float = 60.0) -> Path:
    """A temporary file as a killed atomic write of ``name`` leaves it (``pid`` None: the older naming)."""
    path = folder / (f".{name}.{pid}-ab12cd34.tmp" if pid is not None else f".{name}.ab12cd34.tmp")
    path.write_bytes(b"x" * 4096)
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return path


def test_15_the_next_write_to_a_folder_removes_killed_writes_only(tmp_path):
    from prunekit.atomic import atomic_write_text

    killed, old_style = litter(tmp_path, "a.pt", dead_pid()), litter(tmp_path, "b.pt", None)
    live = litter(tmp_path, "c.pt", os.getpid())  # a write of a running process, however slow
    young = litter(tmp_path, "d.pt", dead_pid(), age_s=0)  # could still be a write in progress elsewhere
    nested = tmp_path / "sub"
    nested.mkdir()
    below = litter(nested, "e.pt", dead_pid())  # another folder: its own next write cleans it
    atomic_write_text(tmp_path / "new.txt", "hello")
    assert not killed.exists() and not old_style.exists()
    assert live.exists() and young.exists() and below.exists()


@pytest.mark.parametrize("argv, written", [
    (["export", "CKPT", "--format", "compact", "--out", "OUT/model.pkc"], "model.pkc"),
    (["quantize", "CKPT", "--calib-batches", "1", "--out", "OUT/int8.pt"], "int8.pt"),
    (["prune-channels", "CKPT", "--ratio", "0.5", "--recalibrate-bn", "0", "--out", "OUT/small.pt"], "small.pt"),
])
def test_15_export_quantize_prune_channels_clean_their_killed_writes(trained, tmp_path, capsys, argv, written):
    out = tmp_path / "shipped"
    out.mkdir()
    leftover = litter(out, written, dead_pid())
    code, _, err = run_cli(capsys, [trained if a == "CKPT" else a.replace("OUT", str(out)) for a in argv])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [written]
    assert not leftover.exists()


def test_destination_of_reads_both_temporary_namings():
    from prunekit.atomic import destination_of

    assert destination_of("d/.x.pt.123-ab12cd34.tmp") == "d/x.pt"
    assert destination_of("d/.x.pt.ab12cd34.tmp") == "d/x.pt"
    assert destination_of("d/.m.onnx.77-ab12cd34.tmp.onnx") == "d/m.onnx"
    assert destination_of("d/x.pt") == "d/x.pt"
