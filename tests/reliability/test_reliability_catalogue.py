"""The bad-input and fault catalogue of issue 16, as tests: every case ends in one line on stderr (no
traceback), the right exit status, and files that are either the old ones or complete new ones.

Cases: bad numeric flags; output paths that are files, folders or not writable; a full disk (a monkeypatched
writer raising ENOSPC, also inside ``torch.save``, which wraps it); Ctrl-C; concurrent writers of one run
folder; class-count mismatches; a flipped bit in a checkpoint; a diverging loss; a dataset folder of the other
CIFAR; filter targets that cannot be reached; seeded training that must repeat exactly.
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import urllib.error
from pathlib import Path

import pytest
import torch

from prunekit.cli import main
from conftest import run_cli

TINY = ["--model", "vgg11", "--model-cfg", "8,M,16,M,16,16"]
DATA = ["--dataset", "synthetic", "--limit-train", "128"]
FAST = ["--epochs", "1", "--batch-size", "64", "--device", "cpu", "--no-progress"]


def one_line_error(err: str) -> str:
    """The error line of ``err``; fails unless it is one ``prunekit …`` line (argparse adds its usage)."""
    assert "Traceback" not in err
    lines = [line for line in err.strip().splitlines() if not line.startswith(("usage:", " "))]
    assert len(lines) == 1, err
    assert lines[0].startswith("prunekit"), err
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished 1-epoch run of a tiny VGG on synthetic data (its folder)."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", *TINY, *DATA, *FAST, "--save", str(run)]) == 0
    return run


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --- bad flags --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, flag", [
    (["train", "--epochs", "-1"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--lr", "-0.1"], "--lr"),
    (["train", "--val-split", "1"], "--val-split"),
    (["finetune", "x.pt", "--lr", "inf"], "--lr"),
    (["finetune", "x.pt", "--epochs", "1e9"], "--epochs"),
    (["prune", "x.pt", "--out", "o", "--sparsity", "1.5"], "--sparsity"),
    (["prune", "x.pt", "--out", "o", "--sparsity", "0.5", "--iterations", "0"], "--iterations"),
    (["prune", "x.pt", "--out", "o", "--sparsity", "0.5", "--momentum", "1"], "--momentum"),
    (["sweep", "x.pt", "--steps", "0"], "--steps"),
    (["quantize", "x.pt", "--out", "q.pt", "--batch-size", "0"], "--batch-size"),
    (["prune-channels", "x.pt", "--out", "y.pt", "--ratio", "nan"], "--ratio"),
])
def test_bad_numeric_flags_fail_where_parsed(capsys, argv, flag):
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    line = one_line_error(err)
    assert f"argument {flag}" in line and "must be" in line


def test_validation_errors_name_the_flag():
    from pydantic import ValidationError

    from prunekit.cli import user_message
    from prunekit.config import TrainConfig

    with pytest.raises(ValidationError) as err:
        TrainConfig(epochs=-1)
    message = user_message(err.value, {})
    assert message.startswith("--epochs -1:") and "greater than or equal to 0" in message and "\n" not in message


# --- output paths -----------------------------------------------------------------------------------------

def test_save_that_is_an_existing_file(tmp_path, capsys):
    blocker = tmp_path / "run"
    blocker.write_text("not a folder")
    code, _, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--save", blocker])
    assert code == 2
    line = one_line_error(err)
    assert f"--save {blocker}" in line and "exists" in line.lower()
    assert blocker.read_text() == "not a folder"


def test_out_inside_a_file(trained, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, _, err = run_cli(capsys, ["prune-channels", trained / "last.pt", "--ratio", "0.5", "--out", blocker / "small.pt"])
    assert code == 2
    line = one_line_error(err)
    assert f"--out {blocker / 'small.pt'}" in line and ("Not a directory" in line or "exists" in line)


def test_export_out_that_is_an_existing_folder(trained, tmp_path, capsys):
    folder = tmp_path / "already"
    (folder / "inside").mkdir(parents=True)
    code, _, err = run_cli(capsys, ["export", trained / "last.pt", "--format", "compact", "--out", folder])
    assert code == 2
    line = one_line_error(err)
    assert f"--out {folder}" in line and "directory" in line.lower()
    assert (folder / "inside").is_dir() and [p.name for p in folder.iterdir()] == ["inside"]


def test_read_only_folder(trained, tmp_path, capsys, monkeypatch):
    target = tmp_path / "ro"
    target.mkdir()
    if os.geteuid() == 0:  # root writes through permission bits: simulate what the kernel would say
        import prunekit.atomic

        def refuse(*args, dir=None, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))

        monkeypatch.setattr(prunekit.atomic.tempfile, "mkstemp", refuse)
    else:
        target.chmod(0o555)
    try:
        code, _, err = run_cli(capsys, ["prune-channels", trained / "last.pt", "--ratio", "0.5", "--out", target / "small.pt"])
    finally:
        target.chmod(0o755)
    assert code == 2
    line = one_line_error(err)
    assert f"--out {target / 'small.pt'}" in line and "Permission denied" in line and "choose a folder" in line
    assert list(target.iterdir()) == []


# --- full disk --------------------------------------------------------------------------------------------

class FullDisk(io.FileIO):
    """A file whose writes fail with ENOSPC after ``room`` bytes, like a full file system."""

    room = 2048

    def write(self, data) -> int:
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.fixture
def full_disk(monkeypatch):
    """Every write through prunekit.atomic hits a full disk (torch.save then raises its own RuntimeError)."""
    import builtins

    import prunekit.atomic

    def fake_open(path, mode="r", *args, **kwargs):
        if "w" in mode and "b" in mode:
            return FullDisk(path, "w")
        return builtins.open(path, mode, *args, **kwargs)

    monkeypatch.setattr(prunekit.atomic, "open", fake_open, raising=False)


def test_torch_hides_enospc_and_prunekit_finds_it(tmp_path, full_disk):
    from prunekit.checkpoint import atomic_save

    with pytest.raises(OSError) as err:
        atomic_save({"w": torch.zeros(10_000)}, tmp_path / "a.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "a.pt")
    assert isinstance(err.value.__cause__, RuntimeError)  # torch's "enforce fail … unexpected pos"
    assert list(tmp_path.iterdir()) == []


def test_full_disk_while_training_keeps_the_last_checkpoint(trained, tmp_path, capsys, full_disk):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    code, _, err = run_cli(capsys, ["train", "--resume", run / "last.pt", "--epochs", "2", "--no-progress"])
    assert code == 2
    line = one_line_error(err)
    assert "No space left on device" in line and str(run) in line and "intact" in line
    after = snapshot(run)
    assert after.keys() == before.keys()  # no temporaries left
    for name in ("last.pt", "metrics.csv", "metrics.json"):  # config.json (small) was rewritten before
        assert after[name] == before[name]
    from prunekit.checkpoint import load_checkpoint

    assert load_checkpoint(run / "last.pt").train_state["epoch"] == 1


def test_full_disk_while_plotting_keeps_old_png_and_csv(tmp_path, capsys, monkeypatch):
    from prunekit.report.plots import plot_mask

    png = tmp_path / "mask.png"
    plot_mask(torch.ones(4, 9).numpy(), png)
    before = snapshot(tmp_path)
    import prunekit.atomic

    monkeypatch.setattr(prunekit.atomic, "open", lambda path, mode="r", *a, **k: FullDisk(path, "w")
                        if "w" in mode else open(path, mode, *a, **k), raising=False)
    monkeypatch.setattr(FullDisk, "room", 10)
    with pytest.raises(OSError) as err:
        plot_mask(torch.zeros(4, 9).numpy(), png)
    assert err.value.errno == errno.ENOSPC
    assert snapshot(tmp_path) == before


# --- Ctrl-C and --debug -----------------------------------------------------------------------------------

def test_ctrl_c_while_building_the_parser(capsys, monkeypatch):
    import prunekit.cli

    def interrupted(name):
        raise KeyboardInterrupt

    monkeypatch.setattr(prunekit.cli.importlib, "import_module", interrupted)
    code, _, err = run_cli(capsys, ["train"])
    assert code == 130
    assert "interrupted" in one_line_error(err)


def test_ctrl_c_during_a_command_releases_the_lock(tmp_path, capsys, monkeypatch):
    import prunekit.train

    locked = []

    def interrupted(*args, **kwargs):
        locked.append((tmp_path / "run" / ".prunekit.lock").exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(prunekit.train, "fit", interrupted)
    code, _, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--save", tmp_path / "run"])
    assert code == 130 and "interrupted" in one_line_error(err)
    assert locked == [True] and not (tmp_path / "run" / ".prunekit.lock").exists()


def test_debug_shows_the_traceback(tmp_path, capsys, monkeypatch):
    from prunekit.errors import PrunekitError

    assert main(["evaluate", str(tmp_path / "missing.pt")]) == 2
    with pytest.raises(PrunekitError):
        main(["evaluate", str(tmp_path / "missing.pt"), "--debug"])
    monkeypatch.setenv("PRUNEKIT_DEBUG", "1")
    with pytest.raises(PrunekitError):
        main(["evaluate", str(tmp_path / "missing.pt")])


# --- concurrent writers -----------------------------------------------------------------------------------

def write_lock(folder: Path, pid: int, host: str | None = None) -> None:
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".prunekit.lock").write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                       "command": "prunekit train", "started": "earlier"}))


def test_second_writer_is_refused_naming_the_first(tmp_path, capsys):
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        run = tmp_path / "run"
        write_lock(run, other.pid)
        code, _, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--save", run])
    finally:
        other.kill()
        other.wait()
    assert code == 2
    line = one_line_error(err)
    assert f"process {other.pid}" in line and "prunekit train" in line
    assert [p.name for p in run.iterdir()] == [".prunekit.lock"]  # nothing of the refused run written


def test_dead_owner_is_taken_over_with_a_notice(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    run = tmp_path / "run"
    write_lock(run, dead.pid)
    stale_temp = run / ".last.pt.ab12cd34.tmp"
    stale_temp.write_bytes(b"half a checkpoint")
    os.utime(stale_temp, (0, 0))  # written long ago by a killed run
    code, _, err = run_cli(capsys, ["train", *TINY, *DATA, *FAST, "--save", run])
    assert code == 0, err
    assert "taking over" in err and str(dead.pid) in err
    assert not stale_temp.exists() and not (run / ".prunekit.lock").exists() and (run / "last.pt").is_file()


def test_lock_of_another_host_is_never_judged_dead(tmp_path):
    from prunekit.errors import PrunekitError
    from prunekit.lock import run_lock

    write_lock(tmp_path, 999_999_999, host="elsewhere")
    with pytest.raises(PrunekitError, match="elsewhere"), run_lock(tmp_path):
        pass


def test_lock_is_reentrant_within_a_process(tmp_path):
    from prunekit.lock import run_lock

    with run_lock(tmp_path):
        with run_lock(tmp_path):
            assert (tmp_path / ".prunekit.lock").exists()
        assert (tmp_path / ".prunekit.lock").exists()
    assert not (tmp_path / ".prunekit.lock").exists()


# --- class counts -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def hundred_classes(tmp_path_factory) -> Path:
    """A 100-class checkpoint that says it was trained on CIFAR-100."""
    from prunekit.checkpoint import save_checkpoint
    from prunekit.models import create_model

    model = create_model("vgg11", num_classes=100, cfg=[8, "M", 16])
    path = tmp_path_factory.mktemp("c100") / "c100.pt"
    save_checkpoint(model, path, {"dataset": "cifar100", "num_classes": 100})
    return path


@pytest.mark.parametrize("argv", [
    ["evaluate", "{ckpt}"],
    ["compare", "{ckpt}", "--no-timing", "--no-progress"],
    ["sweep", "{ckpt}", "--steps", "2", "--out", "{tmp}"],
    ["sensitivity", "{ckpt}", "--out", "{tmp}"],
    ["quantize", "{ckpt}", "--out", "{tmp}/q.pt"],
    ["finetune", "{ckpt}", "--save", "{tmp}/ft", "--epochs", "1"],
    ["prune", "{ckpt}", "--sparsity", "0.5", "--out", "{tmp}/p"],
])
def test_class_count_mismatch_names_both_counts(hundred_classes, tmp_path, capsys, argv):
    argv = [a.format(ckpt=hundred_classes, tmp=tmp_path) for a in argv] + ["--dataset", "synthetic"]
    code, _, err = run_cli(capsys, argv)
    assert code == 2
    line = one_line_error(err)
    assert "100 classes" in line and "synthetic has 10" in line


def test_foreign_weights_of_another_class_count_are_refused(tmp_path, capsys):
    from prunekit.models import create_model

    weights = tmp_path / "w.pt"
    torch.save(create_model("vgg11", num_classes=100, cfg=[8, "M", 16]).state_dict(), weights)
    code, _, err = run_cli(capsys, ["evaluate", "--model", "vgg11", "--model-kwargs", '{"cfg": [8, "M", 16]}',
                                    "--num-classes", "100", "--weights", weights, "--dataset", "synthetic"])
    assert code == 2
    assert "100 classes" in one_line_error(err)


def test_experiment_baseline_of_another_class_count(hundred_classes, tmp_path):
    from prunekit.errors import PrunekitError
    from prunekit.experiment import Run, load_experiment, load_run_data, run_experiment

    experiment = load_experiment({"name": "mismatch", "data": {"dataset": "synthetic", "limit_train": 64},
                                  "baseline": {"model": "vgg11", "checkpoint": str(hundred_classes)}})
    run = Run(experiment, tmp_path / "run", load_run_data(experiment), progress=False)
    with pytest.raises(PrunekitError, match="100 classes but synthetic has 10"):
        run_experiment(run)
    assert not list((tmp_path / "run").glob("models/*.pt"))


# --- checksums --------------------------------------------------------------------------------------------

def test_flipped_bit_in_a_tensor_is_caught(trained, tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint

    path = tmp_path / "flipped.pt"
    raw = (trained / "last.pt").read_bytes()
    weight = load_checkpoint(trained / "last.pt").model.state_dict()["features.0.weight"]
    at = raw.index(weight.numpy().tobytes()[:64])
    path.write_bytes(raw[:at] + bytes([raw[at] ^ 0x01]) + raw[at + 1:])
    code, _, err = run_cli(capsys, ["evaluate", path])
    assert code == 2
    assert "corrupt: checksum mismatch" in one_line_error(err)


def test_every_format_records_a_checksum_and_old_files_still_load(trained, tmp_path):
    from prunekit.checkpoint import CHECKSUM_KEY, load_checkpoint, read_checkpoint_file, tensor_sha256
    from prunekit.export import save_compact

    raw = read_checkpoint_file(trained / "last.pt")
    assert raw[CHECKSUM_KEY] == tensor_sha256(raw)
    save_compact(trained / "last.pt", tmp_path / "compact.pt")
    assert CHECKSUM_KEY in read_checkpoint_file(tmp_path / "compact.pt")
    old = {k: v for k, v in raw.items() if k != CHECKSUM_KEY}
    torch.save(old, tmp_path / "old.pt")  # written before checksums existed
    loaded = load_checkpoint(tmp_path / "old.pt")
    assert all(torch.equal(loaded.model.state_dict()[k], v) for k, v in raw["state_dict"].items())


def test_checksum_depends_on_every_byte_and_on_names():
    from prunekit.checkpoint import tensor_sha256

    base = {"a": torch.tensor([1.0, 2.0]), "b": {"c": torch.tensor([True, False])}}
    assert tensor_sha256(base) == tensor_sha256({"b": {"c": torch.tensor([True, False])},
                                                  "a": torch.tensor([1.0, 2.0])})  # key order does not matter
    assert tensor_sha256(base) != tensor_sha256({**base, "a": torch.tensor([1.0, 2.0000002])})
    assert tensor_sha256(base) != tensor_sha256({"x": base["a"], "b": base["b"]})
    assert tensor_sha256(base) != tensor_sha256({**base, "a": base["a"].double()})


# --- training -------------------------------------------------------------------------------------------

def test_diverging_loss_stops_and_keeps_the_last_good_checkpoint(tiny_vgg, tmp_path):
    from prunekit.checkpoint import load_checkpoint
    from prunekit.config import TrainConfig
    from prunekit.errors import PrunekitError
    from prunekit.train import fit

    from prunekit.train.callbacks import Callback

    class Poison(Callback):
        def on_epoch_end(self, epoch, record):
            if epoch == 0:
                with torch.no_grad():
                    next(tiny_vgg.parameters()).fill_(float("inf"))

    from prunekit.data import get_data

    data = get_data("synthetic", limit_train=128, limit_test=64)
    config = TrainConfig(epochs=3, batch_size=64, device="cpu")
    with pytest.raises(PrunekitError, match="diverged in epoch 2") as err:
        fit(tiny_vgg, data, config, run_dir=tmp_path, callbacks=[Poison()], progress=False)
    assert "last.pt keeps the last good epoch (1)" in str(err.value)
    saved = load_checkpoint(tmp_path / "last.pt")
    assert saved.train_state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in saved.model.state_dict().values() if v.is_floating_point())
    assert len(json.loads((tmp_path / "metrics.json").read_text())) == 1


def test_seeded_training_repeats_exactly_and_evaluate_redraws_its_split(tmp_path, capsys):
    from prunekit.checkpoint import read_checkpoint_file

    runs = [tmp_path / "a", tmp_path / "b"]
    for run in runs:
        assert main(["train", *TINY, *DATA, *FAST, "--seed", "5", "--val-split", "0.25", "--save", str(run)]) == 0
    first, second = (read_checkpoint_file(run / "last.pt") for run in runs)
    assert first["state_dict"].keys() == second["state_dict"].keys()
    assert all(torch.equal(first["state_dict"][k], second["state_dict"][k]) for k in first["state_dict"])
    assert first["meta"]["seed"] == 5 and first["meta"]["val_split"] == 0.25
    # another seed gives another initialisation, so the comparison above can fail
    from prunekit.models import create_model
    from prunekit.train.loop import seed_everything

    seed_everything(6)
    other = create_model("vgg11", num_classes=10, cfg=[8, "M", 16, "M", 16, 16]).state_dict()
    seed_everything(5)
    same = create_model("vgg11", num_classes=10, cfg=[8, "M", 16, "M", 16, 16]).state_dict()
    assert not torch.equal(same["features.0.weight"], other["features.0.weight"])

    code, out, _ = run_cli(capsys, ["evaluate", runs[0] / "last.pt", "--split", "val", "--json"])
    assert code == 0
    recorded = first["meta"]["history"][-1]
    assert json.loads(out)["top1"] == pytest.approx(recorded["val_top1"])
    assert json.loads(out)["images"] == recorded["val_images"]


# --- pruning targets ------------------------------------------------------------------------------------

def test_unreachable_filter_target_says_so(trained, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["prune-channels", trained / "last.pt", "--ratio", "0.99",
                                      "--out", tmp_path / "p.pt"])
    assert code == 0, err
    warning = next(line for line in out.splitlines() if line.startswith("warning:"))
    assert "asked for filter sparsity 0.9900" in warning and "keeps at least one channel" in warning
    code, out, _ = run_cli(capsys, ["prune-channels", trained / "last.pt", "--ratio", "0.5",
                                    "--out", tmp_path / "q.pt"])
    assert code == 0 and "warning:" not in out


# --- datasets -------------------------------------------------------------------------------------------

def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise urllib.error.URLError("no network in tests")

    monkeypatch.setattr("urllib.request.urlopen", refuse)


def test_other_cifar_folder_is_named(tmp_path, capsys, monkeypatch):
    offline(monkeypatch)
    (tmp_path / "cifar-100-python").mkdir()
    code, _, err = run_cli(capsys, ["evaluate", "--model", "vgg11", "--dataset", "cifar10", "--data", tmp_path])
    line = one_line_error(err)
    assert code == 2 and "cifar-100-python" in line and "--dataset cifar100" in line
    code, _, err = run_cli(capsys, ["evaluate", "--model", "vgg11", "--dataset", "cifar10",
                                    "--data", tmp_path / "cifar-100-python"])
    line = one_line_error(err)
    assert code == 2 and "--dataset cifar100" in line and "offline" not in line
    assert list((tmp_path / "cifar-100-python").iterdir()) == []


def test_missing_data_folder_is_not_created(tmp_path, capsys, monkeypatch):
    offline(monkeypatch)
    code, _, err = run_cli(capsys, ["evaluate", "--model", "vgg11", "--data", tmp_path / "a" / "b"])
    assert code == 2 and "offline" in one_line_error(err)
    assert not (tmp_path / "a").exists()
