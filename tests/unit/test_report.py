"""Measure-and-report: the comparison equals the library's own calls, sweeps and sensitivity resume and are
monotone, suggested ratio files validate and hit their target, the HTML report is self-contained."""

from __future__ import annotations

import base64
import copy
import csv
import json
from html.parser import HTMLParser

import pytest
import torch

from prunekit.checkpoint import load_checkpoint, read_checkpoint_file, save_checkpoint
from prunekit.errors import PrunekitError
from prunekit.measure import count_nonzero_parameters, profile
from prunekit.models.layers import prunable_layers
from prunekit.prune import prune_unstructured
from prunekit.prune.allocate import load_ratio_file, target_count, validate_ratios
from prunekit.analysis import sweep as sweep_module
from prunekit.analysis.compare import (CompareSettings, compare_checkpoints, comparison_from_dict, save_comparison,
                                       warmup_runs)
from prunekit.report.tables import display_rows
from prunekit.analysis.results import read_csv_rows
from prunekit.report.html import write_report
from prunekit.report.plots import plot_layer_sparsity, plot_sweep, plot_weight_histograms
from prunekit.analysis.points import Evaluator
from prunekit.analysis.sensitivity import (DENSE, MAX_SUGGESTED_RATIO, rescale, run_sensitivity, suggest_ratios,
                                         weighted_mean, write_ratio_file)
from prunekit.analysis.sweep import run_sweep, sweep_rates
from prunekit.evaluation import evaluate_split

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # differs from the data's: proves meta is used
CONVS = ["features.0", "features.4", "features.8", "features.11"]  # the tiny VGG's convs; classifier excluded


@pytest.fixture
def checkpoints(tmp_path, tiny_vgg):
    """A dense and a 60%-pruned (masked) tiny VGG, both recording their own normalisation."""
    meta = {"dataset": "synthetic", "num_classes": 10, "mean": IMAGENET[0], "std": IMAGENET[1]}
    dense = save_checkpoint(tiny_vgg, tmp_path / "dense.pt", meta)
    pruned = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned, 0.6)
    return [dense, save_checkpoint(pruned, tmp_path / "pruned.pt", meta)]


@pytest.fixture
def small_data():
    """64 synthetic test images: every sweep/sensitivity point is one evaluation, so keep them cheap."""
    from prunekit.data import get_data

    return get_data("synthetic", limit_train=64, limit_test=64)


@pytest.fixture
def evaluator(small_data):
    return Evaluator(small_data, small_data.info.mean, small_data.info.std, torch.device("cpu"))


# --- compare ---------------------------------------------------------------------------------------------


def test_compare_rows_equal_profile_and_evaluate_split(checkpoints, small_data):
    comparison = compare_checkpoints(checkpoints, lambda meta: small_data, CompareSettings(timing=False))
    for path, row in zip(checkpoints, comparison.rows):
        loaded = load_checkpoint(path)
        expected = profile(loaded.model, checkpoint_path=path, timing=False)
        metrics = evaluate_split(loaded.model, small_data, "test", tuple(IMAGENET[0]), tuple(IMAGENET[1]))
        assert (row["params"], row["nonzero_params"], row["macs"], row["file_bytes"], row["peak_memory_bytes"]) == (
            expected.params, expected.nonzero_params, expected.macs, expected.file_bytes, expected.peak_memory_bytes)
        assert (row["top1"], row["top5"], row["loss"], row["images"]) == (
            metrics.top1, metrics.top5, metrics.loss, metrics.images)
        assert row["top1_error"] == 100.0 - metrics.top1 and row["latency_ms"] is None
    dense, pruned = comparison.rows
    assert pruned["nonzero_params"] < dense["nonzero_params"] and pruned["params"] == dense["params"]
    assert dense["nonzero_reduction"] == 1.0
    assert pruned["nonzero_reduction"] == dense["nonzero_params"] / pruned["nonzero_params"]
    assert pruned["macs_reduction"] == 1.0  # masks keep dense maths
    assert "Timing skipped" in comparison.method


def test_compare_timing_is_reported_with_its_method(checkpoints, small_data):
    settings = CompareSettings(repeats=5, batch_size=4, threads=1)
    comparison = compare_checkpoints(checkpoints[:1], lambda meta: small_data, settings)
    row = comparison.rows[0]
    assert row["latency_q1_ms"] <= row["latency_ms"] <= row["latency_q3_ms"]
    assert row["throughput_ips"] > 0 and row["throughput_batch"] == 4 and row["threads"] == 1
    assert row["speedup"] == 1.0 and row["throughput_ratio"] == 1.0
    for words in (f"{warmup_runs()} untimed warm-up", "5 timed runs at batch 1", "at batch 4", "1 thread", "median",
                  "25th–75th percentile"):
        assert words in comparison.method


def test_compact_column_is_the_compact_file_size(checkpoints, small_data):
    from prunekit.export.compact import encode, encoded_size

    comparison = compare_checkpoints(checkpoints, lambda meta: small_data, CompareSettings(timing=False))
    for path, row in zip(checkpoints, comparison.rows):
        assert row["compact_bytes"] == encoded_size(encode(read_checkpoint_file(path)))
    dense, pruned = comparison.rows
    assert pruned["compact_bytes"] < dense["compact_bytes"]
    assert pruned["compact_reduction"] == dense["compact_bytes"] / pruned["compact_bytes"]


def test_saved_comparison_round_trips(checkpoints, small_data, tmp_path):
    comparison = compare_checkpoints(checkpoints, lambda meta: small_data, CompareSettings(timing=False))
    path = save_comparison(comparison, tmp_path / "compare.json")
    again = comparison_from_dict(json.loads(path.read_text()))
    assert again.rows == json.loads(json.dumps(comparison.rows)) and again.method == comparison.method
    assert display_rows(again) == display_rows(comparison)


# --- sweep -----------------------------------------------------------------------------------------------


def test_sweep_rates_are_inclusive_and_checked():
    assert sweep_rates(0.0, 0.95, 20) == [round(0.05 * i, 6) for i in range(20)]
    assert sweep_rates(0.5, 0.7, 3) == [0.5, 0.6, 0.7]
    for bad in ((0.5, 0.2, 3), (0.0, 1.0, 3), (0.0, 0.5, 0)):
        with pytest.raises(PrunekitError):
            sweep_rates(*bad)


@pytest.mark.parametrize("granularity", ["unstructured", "filter"])
def test_sweep_starts_at_dense_accuracy_and_nonzero_falls(tmp_path, tiny_vgg, evaluator, small_data, granularity):
    dense = evaluate_split(tiny_vgg, small_data)
    dense_nonzero = count_nonzero_parameters(tiny_vgg)
    rows = run_sweep(tiny_vgg, [0.0, 0.3, 0.6, 0.9], evaluator, tmp_path / "s.csv", granularity, "layer",
                     progress=False)
    assert [r["rate"] for r in rows] == [0.0, 0.3, 0.6, 0.9]
    assert (rows[0]["top1"], rows[0]["top5"], rows[0]["nonzero_params"]) == (dense.top1, dense.top5, dense_nonzero)
    nonzero = [r["nonzero_params"] for r in rows]
    assert all(a > b for a, b in zip(nonzero, nonzero[1:]))
    assert all(r["nonzero_bytes"] == 4 * r["nonzero_params"] for r in rows)
    assert count_nonzero_parameters(tiny_vgg) == dense_nonzero  # every point pruned a copy
    assert read_csv_rows(tmp_path / "s.csv") == rows


def test_sweep_resumes_without_recomputing(tmp_path, tiny_vgg, evaluator, monkeypatch):
    calls = []
    real = sweep_module.pruned_copy

    def counted(model, config, example):
        calls.append(config.sparsity)
        if len(calls) == 2 and interrupt:
            raise KeyboardInterrupt
        return real(model, config, example)

    monkeypatch.setattr(sweep_module, "pruned_copy", counted)
    csv_path = tmp_path / "s.csv"
    interrupt = True
    with pytest.raises(KeyboardInterrupt):
        run_sweep(tiny_vgg, [0.0, 0.3, 0.6], evaluator, csv_path, progress=False)
    assert [r["rate"] for r in read_csv_rows(csv_path)] == [0.0]  # the finished point was saved
    interrupt, calls[:] = False, []
    run_sweep(tiny_vgg, [0.0, 0.3, 0.6], evaluator, csv_path, progress=False)
    assert calls == [0.3, 0.6]
    calls.clear()
    rows = run_sweep(tiny_vgg, [0.0, 0.15, 0.3, 0.45, 0.6], evaluator, csv_path, progress=False)
    assert calls == [0.15, 0.45] and [r["rate"] for r in rows] == [0.0, 0.15, 0.3, 0.45, 0.6]


def test_sweep_refuses_a_csv_made_with_other_settings(tmp_path, tiny_vgg, evaluator):
    run_sweep(tiny_vgg, [0.0], evaluator, tmp_path / "s.csv", scope="global", progress=False)
    with pytest.raises(PrunekitError, match="other settings"):
        run_sweep(tiny_vgg, [0.5], evaluator, tmp_path / "s.csv", scope="layer", progress=False)


# --- sensitivity and suggestions -------------------------------------------------------------------------


def test_sensitivity_prunes_one_layer_at_a_time_and_suggests_a_valid_file(tmp_path, tiny_vgg, evaluator):
    rows = run_sensitivity(tiny_vgg, [0.5, 0.9], evaluator, tmp_path / "sens.csv", progress=False)
    dense = [r for r in rows if r["layer"] == DENSE]
    assert len(dense) == 1 and dense[0]["drop"] == 0
    total = count_nonzero_parameters(tiny_vgg)
    sizes = {n: m.weight.numel() for n, m in prunable_layers(tiny_vgg).items()}
    pruned = [r for r in rows if r["layer"] != DENSE]
    assert len(pruned) == 2 * len(CONVS) and sorted({r["layer"] for r in pruned}) == sorted(CONVS)  # no classifier
    for row in pruned:  # exactly round(s × n) weights of that layer went, nothing elsewhere
        assert row["nonzero_params"] == total - target_count(row["sparsity"], sizes[row["layer"]])
        assert row["layer_params"] == sizes[row["layer"]]
        assert row["drop"] == pytest.approx(dense[0]["top1"] - row["top1"])

    ratios, _ = suggest_ratios(rows, 0.7)
    path = write_ratio_file(ratios, tmp_path / "ratios.yaml", ["a comment"])
    loaded = load_ratio_file(path)
    assert validate_ratios(loaded, prunable_layers(tiny_vgg)) == loaded == ratios
    assert set(loaded) == set(CONVS)
    assert abs(weighted_mean(loaded, {n: sizes[n] for n in CONVS}) - 0.7) <= 0.005


def curves(layers: dict[str, tuple[int, list[float]]], sparsities=(0.2, 0.4, 0.6, 0.8)) -> list[dict]:
    """Sensitivity rows from ``{layer: (params, drops at sparsities)}``."""
    rows = [{"layer": DENSE, "layer_params": 0, "sparsity": 0.0, "top1": 90.0, "drop": 0.0}]
    for layer, (params, drops) in layers.items():
        rows += [{"layer": layer, "layer_params": params, "sparsity": s, "top1": 90.0 - d, "drop": d}
                 for s, d in zip(sparsities, drops)]
    return rows


@pytest.mark.parametrize("target", [0.3, 0.6, 0.9, 0.97])
def test_suggestion_reaches_the_target_and_spares_sensitive_layers(target):
    sizes = {"stem": 500, "middle": 4000, "late": 8000}
    rows = curves({"stem": (500, [5.0, 20.0, 40.0, 60.0]), "middle": (4000, [0.5, 2.0, 8.0, 20.0]),
                   "late": (8000, [0.0, 0.1, 0.5, 3.0])})
    ratios, threshold = suggest_ratios(rows, target)
    assert abs(weighted_mean(ratios, sizes) - target) <= 0.005
    assert all(0.0 <= r <= MAX_SUGGESTED_RATIO < 1.0 for r in ratios.values())
    assert ratios["stem"] <= ratios["middle"] <= ratios["late"]
    if target < 0.9:
        assert ratios["stem"] < ratios["late"]
    assert validate_ratios(ratios, sizes) == ratios


def test_rescale_caps_below_one_and_spreads_the_rest():
    sizes = {"a": 100, "b": 100}
    out = rescale({"a": 0.9, "b": 0.1}, sizes, 0.8)
    assert out["a"] == MAX_SUGGESTED_RATIO and weighted_mean(out, sizes) == pytest.approx(0.8)
    assert rescale({"a": 0.0, "b": 0.0}, sizes, 0.5) == {"a": 0.5, "b": 0.5}
    with pytest.raises(PrunekitError):
        rescale({"a": 0.5, "b": 0.5}, sizes, 1.0)


# --- plots and the HTML report ---------------------------------------------------------------------------


class Page(HTMLParser):
    """Collects the <img> sources, link targets and text of a page."""

    def __init__(self):
        super().__init__()
        self.images, self.links, self.text = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag in ("a", "link", "script") and (attrs.get("href") or attrs.get("src")):
            self.links.append(attrs.get("href") or attrs.get("src"))

    def handle_data(self, data):
        self.text.append(data)


def test_histogram_csv_counts_the_nonzero_weights(tmp_path, tiny_vgg):
    pruned = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned, 0.5)
    weights = {n: (m.weight_orig * m.weight_mask if hasattr(m, "weight_mask") else m.weight).detach().flatten()
               for n, m in prunable_layers(pruned).items()}
    png, csv_path = plot_weight_histograms({n: w.numpy() for n, w in weights.items()}, tmp_path / "hist.png")
    counts = {}
    for row in read_csv_rows(csv_path):
        counts[row["layer"]] = counts.get(row["layer"], 0) + row["count"]
    assert png.stat().st_size > 0 and counts == {n: int(w.count_nonzero()) for n, w in weights.items()}


def test_html_report_is_self_contained_with_one_image_per_plot(tmp_path, checkpoints, small_data, tiny_vgg,
                                                               evaluator):
    run = tmp_path / "run"
    comparison = compare_checkpoints(checkpoints, lambda meta: small_data, CompareSettings(timing=False))
    save_comparison(comparison, run / "compare.json")
    rows = run_sweep(tiny_vgg, [0.0, 0.5], evaluator, run / "plots" / "sweep.csv", progress=False)
    plot_sweep(rows, run / "plots" / "sweep.png", write_data=False)
    from prunekit.prune import sparsity_report

    plot_layer_sparsity(sparsity_report(tiny_vgg)["layers"], run / "plots" / "layers.png")
    (run / "config.yaml").write_text("prune:\n  sparsity: 0.6  # the experiment\n")
    (run / "work" / "round_1").mkdir(parents=True)  # resumable state, marked to stay out of the report
    (run / "work" / ".noreport").touch()
    (run / "work" / "round_1" / "config.json").write_text('{"hidden": "training round"}')
    (run / "work" / "round_1" / "curve.png").write_bytes((run / "plots" / "sweep.png").read_bytes())
    html_path, md_path = write_report(run)

    page = Page()
    page.feed(html_path.read_text())
    pngs = sorted((run / "plots").glob("*.png"))
    assert len(page.images) == len(pngs) == 3  # sweep, layers and the report's own comparison figure
    assert (run / "plots" / "comparison.png") in pngs
    for src, png in zip(page.images, pngs):
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]) == png.read_bytes()
    assert all(link.startswith(("data:", "#")) for link in page.links)  # nothing outside the file
    text = " ".join(page.text)
    for row in comparison.rows:
        assert f"{row['top1']:.2f}" in text and f"{row['nonzero_params']:,}" in text and row["model"] in text
    assert "sparsity: 0.6  # the experiment" in text and "SYNTHETIC" in text and "training round" not in text
    assert comparison.method in text

    markdown = md_path.read_text()
    assert "![plots/sweep.png](plots/sweep.png)" in markdown and "(plots/sweep.csv)" in markdown
    assert f"{comparison.rows[1]['nonzero_params']:,}" in markdown and "sparsity: 0.6" in markdown
    with (run / "plots" / "sweep.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 2
