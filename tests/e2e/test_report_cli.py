"""End-to-end: compare, sweep, sensitivity, plot and report through the real CLI, in-process on CPU."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from html.parser import HTMLParser

import pytest
import torch

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.cli import main
from prunekit.prune.allocate import target_count
from prunekit.masking import effective_weight
from prunekit.models.layers import prunable_layers
from prunekit.prune import prune_unstructured, sparsity_report
from prunekit.prune.allocate import load_ratio_file, validate_ratios
from prunekit.analysis import sensitivity as sensitivity_module
from prunekit.analysis.results import read_csv_rows
from prunekit.analysis.sensitivity import weighted_mean

CPU = ["--device", "cpu", "--no-progress"]


@pytest.fixture
def run_dir(tmp_path, tiny_vgg, tiny_data):
    """A run folder with a dense and a 70%-pruned tiny VGG (synthetic data, their own normalisation)."""
    meta = {"dataset": "synthetic", "num_classes": 10, "mean": list(tiny_data.info.mean),
            "std": list(tiny_data.info.std)}
    run = tmp_path / "run"
    save_checkpoint(tiny_vgg, run / "a_dense.pt", meta)
    pruned = copy.deepcopy(tiny_vgg)
    prune_unstructured(pruned, 0.7)
    save_checkpoint(pruned, run / "b_pruned.pt", meta)
    return run


def run_json(capsys, argv):
    capsys.readouterr()
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def test_compare_equals_profile_and_evaluate(run_dir, capsys, tmp_path):
    paths = [str(run_dir / "a_dense.pt"), str(run_dir / "b_pruned.pt")]
    dense, pruned = run_json(capsys, ["compare", *paths, "--no-timing", "--json", *CPU])["rows"]
    profiled = run_json(capsys, ["profile", paths[1], "--no-timing", "--json"])
    evaluated = run_json(capsys, ["evaluate", paths[1], "--json", "--device", "cpu"])
    for key in ("params", "nonzero_params", "macs", "file_bytes", "peak_memory_bytes"):
        assert pruned[key] == profiled[key], key
    assert (pruned["top1"], pruned["top5"], pruned["loss"], pruned["images"]) == (
        evaluated["top1"], evaluated["top5"], evaluated["loss"], evaluated["images"])
    assert pruned["nonzero_reduction"] == dense["nonzero_params"] / pruned["nonzero_params"] > 2

    assert main(["compare", paths[0], "--repeats", "3", "--batch-size", "4", "--threads", "1",
                 "--csv", str(tmp_path / "c.csv"), *CPU]) == 0
    out = capsys.readouterr().out
    assert "| a_dense.pt |" in out and "latency ms [IQR]" in out and "img/s @4" in out
    assert "untimed warm-up runs per model, then 3 timed runs at batch 1" in out and "1 thread(s)" in out
    assert [r["model"] for r in read_csv_rows(tmp_path / "c.csv")] == ["a_dense.pt"]


def test_sweep_writes_csv_and_png_and_resumes(run_dir):
    out = run_dir / "plots"
    argv = ["sweep", str(run_dir / "a_dense.pt"), "--from", "0", "--to", "0.6", "--steps", "3", "--out", str(out),
            *CPU]
    assert main(argv) == 0
    csv_path = out / "sweep_unstructured_global_0-0.6.csv"
    rows = read_csv_rows(csv_path)
    assert [r["rate"] for r in rows] == [0.0, 0.3, 0.6] and (out / "sweep_unstructured_global_0-0.6.png").exists()
    assert rows[0]["nonzero_params"] > rows[1]["nonzero_params"] > rows[2]["nonzero_params"]
    before = csv_path.stat().st_mtime_ns
    assert main(argv) == 0  # every point is there: nothing recomputed, the CSV not rewritten
    assert csv_path.stat().st_mtime_ns == before and read_csv_rows(csv_path) == rows
    assert main(["plot", "sweep", str(csv_path), "--out", str(run_dir / "replot.png")]) == 0
    assert (run_dir / "replot.png").stat().st_size > 0 and read_csv_rows(run_dir / "replot.csv") == rows


def test_sensitivity_suggests_a_ratio_file_that_prune_accepts(run_dir, monkeypatch):
    out = run_dir / "plots"
    ratios_path = run_dir / "ratios.yaml"
    argv = ["sensitivity", str(run_dir / "a_dense.pt"), "--sparsities", "0.9", "--out", str(out),
            "--suggest", "0.6", "--suggest-out", str(ratios_path), *CPU]
    assert main(argv) == 0
    assert (out / "sensitivity_unstructured.png").exists()
    rows = read_csv_rows(out / "sensitivity_unstructured.csv")
    model = load_checkpoint(run_dir / "a_dense.pt").model
    ratios = load_ratio_file(ratios_path)
    assert validate_ratios(ratios, prunable_layers(model)) == ratios
    sizes = {n: m.weight.numel() for n, m in prunable_layers(model).items()}
    assert abs(weighted_mean(ratios, sizes) - 0.6) <= 0.005 and "classifier" not in ratios
    assert "# use: prunekit prune" in ratios_path.read_text()

    calls, original = [], sensitivity_module.pruned_copy
    monkeypatch.setattr(sensitivity_module, "pruned_copy", lambda *a: calls.append(a) or original(*a))
    assert main(argv) == 0
    # resumed: no single-layer point is recomputed; only the whole-model candidates of --suggest are evaluated
    assert [sorted(config.ratios) == sorted(ratios) for _, config, _ in calls] == [True] * 4
    assert read_csv_rows(out / "sensitivity_unstructured.csv") == rows

    prune_unstructured(model, ratios=ratios_path)  # what `prunekit prune --ratios FILE` applies, without data
    report = {r["name"]: r for r in sparsity_report(model)["layers"]}
    for layer, ratio in ratios.items():
        assert report[layer]["zeros"] == target_count(ratio, report[layer]["params"])


def test_plot_hist_and_layers(run_dir):
    for kind in ("hist", "layers"):
        png = run_dir / "plots" / f"{kind}.png"
        assert main(["plot", kind, str(run_dir / "b_pruned.pt"), "--out", str(png)]) == 0
        assert png.stat().st_size > 0 and png.with_suffix(".csv").exists()
    model = load_checkpoint(run_dir / "b_pruned.pt").model
    layers = read_csv_rows(run_dir / "plots" / "layers.csv")
    assert [r["name"] for r in layers] == list(prunable_layers(model))
    # the histogram counts every non-zero weight of every layer exactly once, in ordered bins
    bins = read_csv_rows(run_dir / "plots" / "hist.csv")
    for name, module in prunable_layers(model).items():
        rows = [r for r in bins if r["layer"] == name]
        assert rows and all(r["bin_left"] < r["bin_right"] for r in rows)
        assert sum(r["count"] for r in rows) == int(torch.count_nonzero(effective_weight(module)))


class Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.sources = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.sources.append(dict(attrs)["src"])


def make_report(run_dir):
    (run_dir / "config.yaml").write_text("model: vgg11\nsparsity: 0.7\n")
    assert main(["plot", "layers", str(run_dir / "b_pruned.pt"), "--out", str(run_dir / "plots" / "layers.png")]) == 0
    assert main(["report", str(run_dir), "--no-timing", *CPU]) == 0
    return run_dir / "report.html"


def test_report_computes_the_table_when_missing(run_dir, capsys):
    html_path = make_report(run_dir)
    assert "saved" in capsys.readouterr().out
    saved = json.loads((run_dir / "compare.json").read_text())
    assert [r["model"] for r in saved["rows"]] == ["a_dense.pt", "b_pruned.pt"]
    page = Images()
    page.feed(html_path.read_text())
    assert len(page.sources) == 2 and all(src.startswith("data:image/png;base64,") for src in page.sources)
    text = html_path.read_text()
    assert f"{saved['rows'][1]['nonzero_params']:,}" in text and "sparsity: 0.7" in text
    assert (run_dir / "report.md").read_text().count("![") == 2  # layers + the comparison figure


@pytest.mark.slow
def test_report_renders_in_headless_chromium_at_1280_px(run_dir, tmp_path):
    """Opened from disk with no network at 1280 px: every image decodes, no horizontal scrollbar, and the
    summary and the speed-up column are in the first screen (benchmarks/screenshot_report.py measures it)."""
    import importlib.util

    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no chromium (apt-get install chromium)")
    script = Path(__file__).parents[2] / "benchmarks" / "screenshot_report.py"
    spec = importlib.util.spec_from_file_location("screenshot_report", script)
    shot = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(shot)
    (run_dir / "config.yaml").write_text("model: vgg11\nsparsity: 0.7\n")
    assert main(["report", str(run_dir), "--repeats", "3", "--batch-size", "4", *CPU]) == 0
    html_path = run_dir / "report.html"
    measured = shot.measure(browser, html_path, 1280, 900)
    assert len(measured["images"]) == 1  # the comparison figure
    assert shot.checks(measured) == dict.fromkeys(shot.checks(measured), True), measured
    png = tmp_path / "shot.png"
    shot.screenshot(browser, html_path, png, 1280, 900)
    import numpy as np
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    assert pixels.shape[1] == 1280 and pixels.std() > 0.05 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50
