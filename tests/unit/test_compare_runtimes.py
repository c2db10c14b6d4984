"""compare --runtime: one set of timing columns per registered runtime, efficiency = speed-up ÷ MACs reduction,
and a model measured slower than the first one is flagged in the rows, the table and the warnings."""

from __future__ import annotations

import time

import pytest

from prunekit.analysis.compare import CompareSettings, compare_checkpoints
from prunekit.checkpoint import save_checkpoint
from prunekit.prune import prune_channels
from prunekit.report.tables import SLOWER_MARK, display_rows
from prunekit.runtime import RUNTIMES, Runtime

META = {"dataset": "synthetic", "num_classes": 10}


@pytest.fixture
def dense_and_pruned(tmp_path, tiny_vgg):
    import copy

    pruned = copy.deepcopy(tiny_vgg)
    prune_channels(pruned, ratio=0.5)
    return [save_checkpoint(tiny_vgg, tmp_path / "dense.pt", META), save_checkpoint(pruned, tmp_path / "pruned.pt", META)]


@pytest.fixture
def small_data():
    from prunekit.data import get_data

    return get_data("synthetic", limit_train=16, limit_test=16)


class SlowedDown:
    """Runs the model, then sleeps ``delay_s``: a runtime in which the pruned model is certainly slower."""

    def __init__(self, model, delay_s: float):
        self.model, self.delay_s = model, delay_s

    def __call__(self, x):
        out = self.model(x)
        time.sleep(self.delay_s)
        return out

    def eval(self):
        return self

    def to(self, device):
        return self


def params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def penalising(dense_params: int):
    """A test runtime's prepare: a model smaller than the dense one sleeps 20 ms per call, the dense one not."""
    return lambda model, example, device, threads: SlowedDown(model.eval(), 0.02 * (params(model) < dense_params))


def test_every_runtime_gets_its_columns_and_a_slower_model_is_flagged(dense_and_pruned, small_data, monkeypatch,
                                                                      tiny_vgg):
    penalty = Runtime("penalty", "test runtime", penalising(params(tiny_vgg)), devices=("cpu",))
    monkeypatch.setitem(RUNTIMES, "penalty", penalty)
    settings = CompareSettings(runtime="eager,penalty", repeats=6, batch_size=2, threads=1)
    comparison = compare_checkpoints(dense_and_pruned, lambda meta: small_data, settings)
    dense, pruned = comparison.rows
    for suffix in ("_eager_cpu", "_penalty_cpu"):
        assert dense["speedup" + suffix] == 1.0 and dense["slower" + suffix] is None
        assert pruned["efficiency" + suffix] == pytest.approx(pruned["speedup" + suffix] / pruned["macs_reduction"])
    assert pruned["macs_reduction"] > 1.5
    assert pruned["speedup_penalty_cpu"] < 0.5 and "SLOWER than dense.pt" in pruned["slower_penalty_cpu"]
    assert pruned["speedup"] == pruned["speedup_eager_cpu"]  # the first runtime is also the plain columns
    table = display_rows(comparison)[1]
    assert SLOWER_MARK in table["speed-up penalty"] and "efficiency eager" in table
    assert any("pruned.pt (penalty, cpu): SLOWER" in line for line in comparison.warnings())
    assert "penalty = test runtime" in comparison.method
    from prunekit.report.html import summary_html

    assert "pruned.pt (penalty, cpu): SLOWER than dense.pt" in summary_html(comparison)  # the report says it too
    assert comparison.flagged() == [line for line in comparison.warnings() if "SLOWER" in line]
    from prunekit.report.tables import terminal_rows

    narrow, _ = terminal_rows(comparison)  # the 100-column table keeps every runtime's speed-up
    assert {"speed-up eager", "speed-up penalty"} <= set(narrow[0])


def test_a_model_the_runtime_cannot_run_is_marked_not_hidden(dense_and_pruned, small_data, monkeypatch, tiny_vgg):
    from prunekit.errors import PrunekitError

    dense_params = params(tiny_vgg)

    def refuse_pruned(model, example, device, threads):
        if params(model) < dense_params:
            raise PrunekitError("this runtime takes dense models only")
        return model.eval()

    monkeypatch.setitem(RUNTIMES, "picky", Runtime("picky", "test runtime", refuse_pruned))
    comparison = compare_checkpoints(dense_and_pruned, lambda meta: small_data,
                                     CompareSettings(runtime="picky", repeats=3, batch_size=2))
    dense, pruned = comparison.rows
    assert dense["speedup"] == 1.0 and pruned["speedup"] is None
    assert pruned["untimed_cpu"] == "this runtime takes dense models only"
    assert display_rows(comparison)[1]["speed-up"] == "not run"
    assert any("dense models only" in line for line in comparison.warnings())


def test_onnxruntime_and_eager_in_one_table(dense_and_pruned, small_data):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    comparison = compare_checkpoints(dense_and_pruned, lambda meta: small_data,
                                     CompareSettings(runtime="eager,onnxruntime", repeats=4, batch_size=2))
    dense, pruned = comparison.rows
    assert dense["speedup_onnxruntime_cpu"] == 1.0 and pruned["latency_ms_onnxruntime_cpu"] > 0
    assert (pruned["slower_onnxruntime_cpu"] is not None) == (pruned["speedup_onnxruntime_cpu"] < 1)


def test_a_per_batch_size_runtime_is_prepared_and_timed_per_batch_size(dense_and_pruned, small_data, monkeypatch):
    """A runtime whose preparation depends on the example's batch (the sparse autotune) is prepared once for
    batch 1 (latency) and once for the throughput batch, and each is timed at its own batch size."""
    prepared, timed = [], []

    class Recorder:
        def __init__(self, model, batch):
            self.model, self.batch = model, batch

        def __call__(self, x):
            timed.append((self.batch, x.shape[0]))
            return self.model(x)

        def eval(self):
            return self

        def to(self, device):
            return self

    def prepare(model, example, device, threads):
        prepared.append(example.shape[0])
        return Recorder(model.eval(), example.shape[0])

    monkeypatch.setitem(RUNTIMES, "batchy", Runtime("batchy", "test runtime", prepare, per_batch_size=True))
    compare_checkpoints(dense_and_pruned, lambda meta: small_data,
                        CompareSettings(runtime="batchy", repeats=3, batch_size=4))
    assert sorted(prepared) == [1, 1, 4, 4]
    assert timed and all(prepared_for == size for prepared_for, size in timed)
    monkeypatch.setitem(RUNTIMES, "batchy", Runtime("batchy", "test runtime", prepare))  # batch-independent
    prepared.clear()
    compare_checkpoints(dense_and_pruned, lambda meta: small_data,
                        CompareSettings(runtime="batchy", repeats=3, batch_size=4))
    assert prepared == [1, 1]


def test_a_model_the_eager_runtime_prepares_differently_is_named():
    from prunekit.analysis.compare import preparation_notes
    from prunekit.inference import PREPARED_AS

    class Prepared:
        def __init__(self, kind):
            setattr(self, PREPARED_AS, kind)

    notes = preparation_notes([Prepared("graph"), Prepared("graph"), Prepared("module"), None])
    assert notes[:2] == [None, None] and notes[3] is None
    assert "prepared as it is (it does not trace), the reference as a traced graph" in notes[2]
    assert "mixes inference optimisations" in notes[2]
