"""Faults that need real processes: ``kill -9`` in the middle of a write, and two CLI writers at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parents[2] / "src")

# writes half of new content into dest's temporary file, says so, then waits to be killed
HALF_WRITE = """
import sys, time
from prunekit.atomic import atomic_write

def write(f):
    f.write(b"N" * 4096)
    f.flush()
    print("writing", flush=True)
    time.sleep(60)
    f.write(b"N" * 4096)

atomic_write(sys.argv[1], write)
"""


def env() -> dict:
    return {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_kill_9_inside_a_write_keeps_the_old_file_and_the_next_run_removes_the_temporary(tmp_path):
    from prunekit.atomic import remove_stale_temp_files
    from prunekit.lock import run_lock

    dest = tmp_path / "last.pt"
    dest.write_bytes(b"old and complete")
    writer = subprocess.Popen([sys.executable, "-c", HALF_WRITE, str(dest)], stdout=subprocess.PIPE, env=env())
    assert writer.stdout.readline().strip() == b"writing"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    assert dest.read_bytes() == b"old and complete"
    litter = [p for p in tmp_path.iterdir() if p.name != "last.pt"]
    assert len(litter) == 1 and litter[0].name.startswith(".last.pt.") and litter[0].name.endswith(".tmp")
    assert remove_stale_temp_files(tmp_path) == []  # too young: could be a write still in progress
    os.utime(litter[0], (time.time() - 60, time.time() - 60))
    with run_lock(tmp_path):  # the next command in the folder cleans up
        assert not litter[0].exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.slow
def test_two_cli_trainings_into_one_folder(tmp_path):
    """The original report: two `prunekit train --save RUN` at once both exited 0. Now one is refused."""
    argv = [sys.executable, "-m", "prunekit", "train", "--model", "vgg11", "--model-cfg", "8,M,16", "--dataset",
            "synthetic", "--limit-train", "128", "--epochs", "2", "--batch-size", "64", "--device", "cpu",
            "--no-progress", "--save", str(tmp_path / "run")]
    first = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    deadline = time.time() + 60
    while not (tmp_path / "run" / ".prunekit.lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(argv, capture_output=True, text=True, env=env(), timeout=120)
    first.communicate(timeout=300)
    assert first.returncode == 0
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"process {first.pid}" in second.stderr and "saved" not in second.stdout
