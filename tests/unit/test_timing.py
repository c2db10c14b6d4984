"""Trustworthy timing: paired ratios cancel drift, noise is flagged, models are interleaved, labels are unique,
the dense model is the reference, and (slow) identical models under CPU contention never show an unflagged
absurd speed-up."""

from __future__ import annotations

import copy
import multiprocessing
import re
import time

import pytest
import torch
from torch import nn

from prunekit.analysis.compare import is_unpruned, reference_first, unique_labels
from prunekit.checkpoint import save_checkpoint
from prunekit.measure.timing import (MachineLoad, Timing, machine_load, noise_note, paired_ratio, quartiles,
                                     time_interleaved)
from prunekit.prune import prune_unstructured


def test_paired_ratio_cancels_drift_that_ratio_of_medians_does_not():
    # The machine slows down 10× after round 3 while A runs; B, twice as fast, is hit from round 4 on.
    a = Timing.from_samples(1, [2.0, 2.0, 2.0, 20.0, 20.0, 20.0, 20.0])
    b = Timing.from_samples(1, [1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0])
    assert a.median_ms / b.median_ms == 20.0  # the naive ratio of medians is off by 10×
    ratio = paired_ratio(a, b)  # per round: 2, 2, 2, 20, 2, 2, 2
    assert ratio.median == 2.0 and (ratio.q1, ratio.q3) == (2.0, 2.0) and not ratio.noisy
    assert a.noisy and a.spread == pytest.approx((20.0 - 2.0) / 20.0)


def test_paired_ratio_needs_aligned_samples():
    with pytest.raises(ValueError):
        paired_ratio(Timing.from_samples(1, [1.0, 2.0]), Timing.from_samples(1, [1.0]))


def test_quartiles_and_noise_note():
    assert quartiles([4.0]) == (4.0, 4.0, 4.0)
    q1, median, q3 = quartiles([1.0, 2.0, 3.0, 4.0, 5.0])
    assert (q1, median, q3) == (1.5, 3.0, 4.5)
    assert noise_note(0.84, threads=2) == "noisy: IQR 84% of median — rerun on a quiet machine or with --threads 1"
    assert "--threads 1" not in noise_note(0.5, threads=1)
    quiet = Timing.from_samples(1, [10.0, 10.5, 11.0, 10.2, 10.8])
    assert not quiet.noisy and Timing.from_samples(1, [10.0, 30.0, 10.0, 30.0]).noisy


class Recorder(nn.Module):
    def __init__(self, name: str, log: list):
        super().__init__()
        self.name, self.log = name, log

    def forward(self, x):
        self.log.append(self.name)
        return x


def test_models_are_timed_interleaved_alternating_order_and_threads_restored():
    log: list[str] = []
    before = torch.get_num_threads()
    timings = time_interleaved([Recorder("A", log), Recorder("B", log)], 1, warmup=1, repeats=4, threads=1)
    assert log == ["A", "B"] + ["A", "B", "B", "A", "A", "B", "B", "A"]  # warm-up, then A B / B A rounds
    assert [t.repeats for t in timings] == [4, 4] and all(len(t.samples) == 4 for t in timings)
    assert torch.get_num_threads() == before


def test_machine_load_reads_proc_stat(monkeypatch):
    lines = iter(["cpu  100 0 100 800 0 0 0 0 0 0\n", "cpu  250 0 150 800 0 0 0 100 0 0\n"])

    class Stat:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def readline(self):
            return next(lines)

    monkeypatch.setattr("builtins.open", lambda *a, **k: Stat())
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    monkeypatch.setattr("os.getloadavg", lambda: (3.5, 0, 0))
    load = machine_load(interval=0)
    # delta: user 150, system 50, idle 0, steal 100 of 300 → all busy, a third stolen
    assert load.busy_cpus == pytest.approx(2.0) and load.steal == pytest.approx(1 / 3) and load.load1 == 3.5
    assert load.busy(1) and "2.0 of 2 CPUs" in load.describe() and "33% of CPU time stolen" in load.describe()
    assert not MachineLoad(cpus=4, busy_cpus=1.0, steal=0.0, load1=1.0).busy(1)


def test_unique_labels_are_the_shortest_distinguishing_suffix(tmp_path):
    paths = [tmp_path / "runs" / "a" / "last.pt", tmp_path / "runs" / "b" / "last.pt", tmp_path / "dense.pt",
             tmp_path / "x" / "deep" / "m.pt", tmp_path / "y" / "deep" / "m.pt"]
    assert unique_labels(paths) == ["a/last.pt", "b/last.pt", "dense.pt", "x/deep/m.pt", "y/deep/m.pt"]
    assert unique_labels([paths[2], paths[2]]) == ["dense.pt", "dense.pt #2"]


def test_reference_is_the_dense_checkpoint_unless_named(tmp_path, tiny_vgg):
    meta = {"dataset": "synthetic", "num_classes": 10}
    pruned = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned, 0.6)
    a = save_checkpoint(pruned, tmp_path / "a_pruned.pt", {**meta, "method": "OMP", "granularity": "unstructured"})
    b = save_checkpoint(tiny_vgg, tmp_path / "b_dense.pt", meta)
    assert reference_first([a, b]) == [b, a]  # alphabetical order would make the pruned model the reference
    assert reference_first([a, b], reference=a) == [a, b]
    from prunekit.errors import PrunekitError

    with pytest.raises(PrunekitError, match="not one of the checkpoints"):
        reference_first([a, b], reference=tmp_path / "other.pt")


def test_a_prune_channels_checkpoint_without_a_cut_record_is_not_a_dense_reference(tmp_path, tiny_vgg):
    from prunekit.checkpoint import load_checkpoint

    meta = {"dataset": "synthetic", "num_classes": 10}
    dense = save_checkpoint(tiny_vgg, tmp_path / "dense.pt", meta)
    # prune-channels --latency-target writes meta["prune_channels"] but no meta["cut"]
    latency = save_checkpoint(tiny_vgg, tmp_path / "latency.pt", {**meta, "prune_channels": {"latency": {}}})
    assert is_unpruned(load_checkpoint(dense)) and not is_unpruned(load_checkpoint(latency))


# --- acceptance: identical models on a machine with two CPU-burning processes ------------------------------

def _burn(stop_at: float) -> None:
    x = 0
    while time.time() < stop_at:
        x += 1


@pytest.mark.slow
def test_identical_models_under_contention_never_show_an_unflagged_absurd_speedup(tmp_path, tiny_vgg, capsys):
    from prunekit.cli import main

    meta = {"dataset": "synthetic", "num_classes": 10}
    first = save_checkpoint(tiny_vgg, tmp_path / "one" / "model.pt", meta)
    second = save_checkpoint(copy.deepcopy(tiny_vgg), tmp_path / "two" / "model.pt", meta)
    burners = [multiprocessing.Process(target=_burn, args=(time.time() + 120,), daemon=True) for _ in range(2)]
    for p in burners:
        p.start()
    try:
        time.sleep(0.5)
        assert main(["compare", str(first), str(second), "--dataset", "synthetic", "--repeats", "30",
                     "--batch-size", "8", "--no-progress"]) == 0
    finally:
        for p in burners:
            p.terminate()
            p.join()
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("| two/model.pt |"))
    speedup = re.search(r"\| ([0-9.]+)× ?(noisy)? \|", row)
    value, flagged = float(speedup.group(1)), speedup.group(2) is not None
    assert 0.8 <= value <= 1.25 or flagged, row
    assert "| one/model.pt |" in out
