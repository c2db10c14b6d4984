"""Tables and figures: every column the issue asks for, with the right words, and figures that say what they
plot (issue 13 "Tables and figures", issue 17 "the report")."""

from __future__ import annotations

import csv


from prunekit.analysis.compare import CompareSettings, Comparison
from prunekit.report.html import model_sentence, summary_html
from prunekit.report.plots import (WEIGHT_SPARSITY_LABEL, coincident_groups, plot_accuracy_sparsity,
                                   plot_comparison, plot_sweep)
from prunekit.report.tables import display_rows, summary_rows


def row(model: str, **values) -> dict:
    base = {"model": model, "top1": 90.0, "top5": 99.0, "top1_error": 10.0, "top5_error": 1.0, "params": 100,
            "nonzero_params": 100, "macs": 1000, "file_bytes": 2000, "weights_bytes": 400, "compact_bytes": 300,
            "peak_memory_bytes": 500, "dataset": "cifar10", "split": "test", "images": 509, "synthetic": False}
    return base | values


def timed(device: str, latency: float, speedup: float, noise: str | None = None) -> dict:
    """Timing columns as compare_checkpoints writes them: per device, and the first (cpu) also unsuffixed."""
    values = {"latency_ms": latency, "latency_q1_ms": latency * 0.9, "latency_q3_ms": latency * 1.1,
              "throughput_ips": 1000 / latency, "speedup": speedup, "noise": noise}
    return {f"{k}_{device}": v for k, v in values.items()} | (values if device == "cpu" else {})


def test_table_prints_top5_error_weights_and_both_devices_with_no_gpu():
    rows = [row("a/last.pt", **timed("cpu", 2.0, 1.0)), row("b/last.pt", top5_error=4.5, weights_bytes=100,
                                                            **timed("cpu", 1.0, 2.0, "noisy: IQR 84% of median"))]
    comparison = Comparison(rows, CompareSettings(device="cpu,cuda", batch_size=8), unavailable={"cuda": "no GPU"})
    a, b = display_rows(comparison)
    assert (a["model"], b["model"]) == ("a/last.pt", "b/last.pt")
    assert b["top-5 err %"] == "4.50" and b["top-1 err %"] == "10.00"
    assert (a["file"], a["weights"]) == ("2 kB", "400 B")  # file and deployable weights side by side
    assert b["latency ms [IQR] cpu"] == "1.000 [0.900–1.100] noisy" and b["speed-up cpu"] == "2.00× noisy"
    assert a["latency ms [IQR] cpu"] == "2.000 [1.800–2.200]" and a["speed-up cpu"] == "1.00×"
    assert b["img/s @8 cpu"] == "1,000"
    assert a["latency ms [IQR] cuda"] == b["speed-up cuda"] == "no GPU"


def test_single_device_headings_and_untimed_table():
    comparison = Comparison([row("dense.pt", **timed("cpu", 1.0, 1.0))], CompareSettings(batch_size=4))
    (only,) = display_rows(comparison)
    assert "latency ms [IQR]" in only and "img/s @4" in only and "speed-up" in only
    untimed = Comparison([row("dense.pt")], CompareSettings(timing=False))
    assert not any("latency" in h or "speed" in h for h in display_rows(untimed)[0])


def test_summary_table_is_narrow_and_carries_the_accuracy_change():
    rows = [row("dense.pt", **timed("cpu", 2.0, 1.0)), row("pruned.pt", top1=85.5, **timed("cpu", 1.0, 2.0))]
    comparison = Comparison(rows, CompareSettings())
    summary = summary_rows(comparison)
    assert summary[1]["Δ top-1"] == "−4.50" and summary[1]["speed-up"] == "2.00×"
    assert len(summary[1]) < len(display_rows(comparison)[1]) and "file" not in summary[1]


def test_model_sentence_says_macs_speed_and_points():
    reference = row("dense.pt", top1=54.0)
    pruned = row("pruned.pt", top1=49.5, macs_reduction=3.9, weights_reduction=1.0, speedup=2.3)
    assert model_sentence(pruned, reference) == ("3.9× fewer MACs, same weight size, 2.3× faster at batch 1, "
                                                 "−4.5 points top-1")
    slow = row("int8.pt", top1=54.0, macs_reduction=1.0, weights_reduction=4.0, speedup=0.5, noise="noisy: IQR 84%")
    assert model_sentence(slow, reference) == ("same MACs, 4.0× smaller weights, 2.0× slower at batch 1 "
                                               "(noisy: IQR 84%), +0.0 points top-1")
    assert model_sentence(reference, reference) == "the reference every ratio is against"
    block = summary_html(Comparison([reference, pruned], CompareSettings(timing=False), hardware="x86_64 (2 CPUs)"))
    assert "cifar10 test split, 509 images" in block and "x86_64 (2 CPUs)" in block and "−4.5 points" in block


def test_coincident_points_are_grouped_across_labels_only():
    points = [{"label": "IMP", "sparsity": 0.5, "top1": 90.0}, {"label": "OMP", "sparsity": 0.505, "top1": 90.2},
              {"label": "OMP", "sparsity": 0.8, "top1": 80.0}, {"label": "OMP", "sparsity": 0.801, "top1": 80.0}]
    groups = coincident_groups(points)
    assert [[p["label"] for p in g] for g in groups] == [["IMP", "OMP"]]


def figure_texts(png_path, monkeypatch, call):
    """Run ``call`` and collect every text the figure it saves holds (axis labels, titles, annotations)."""
    import prunekit.report.plots as plots

    seen = {}
    original = plots.save_png

    def spy(figure, png, dpi):
        seen["texts"] = [t.get_text() for t in figure.findobj(lambda a: hasattr(a, "get_text"))]
        seen["axes"] = figure.axes
        original(figure, png, dpi)

    monkeypatch.setattr(plots, "save_png", spy)
    call()
    return seen


def test_accuracy_sparsity_axis_label_overlap_labels_and_honest_y(tmp_path, monkeypatch):
    points = [{"label": "dense", "sparsity": 0.0, "top1": 54.0}, {"label": "IMP", "sparsity": 0.8, "top1": 50.0},
              {"label": "OMP", "sparsity": 0.8, "top1": 50.0}]
    seen = figure_texts(tmp_path, monkeypatch, lambda: plot_accuracy_sparsity(points, tmp_path / "a.png",
                                                                              title="demo: vgg11"))
    assert WEIGHT_SPARSITY_LABEL in seen["texts"] and "zero or removed" in WEIGHT_SPARSITY_LABEL
    assert "IMP\nOMP" in seen["texts"]  # the hidden point is named
    assert seen["axes"][0].get_ylim() == (0.0, 100.0)


def test_zoom_sweep_carries_the_dense_reference(tmp_path, monkeypatch):
    rows = [{"rate": r, "top1": 50.0 - 10 * r, "top5": 90.0, "nonzero_bytes": 1000} for r in (0.5, 0.6, 0.7)]
    seen = figure_texts(tmp_path, monkeypatch, lambda: plot_sweep(rows, tmp_path / "zoom.png", dense_top1=54.0))
    dense_lines = [line for line in seen["axes"][0].get_lines() if line.get_label().startswith("dense top-1")]
    assert len(dense_lines) == 1 and list(dense_lines[0].get_ydata()) == [54.0, 54.0]
    assert "dense top-1 (54.00%)" in seen["texts"]


def test_comparison_figure_has_every_model_including_int8(tmp_path, monkeypatch):
    rows = [{"label": "dense.pt", "top1": 54.0, "weights_bytes": 400_000, "latency_ms": 2.0, "noisy": False},
            {"label": "dense_int8.pt", "top1": 53.8, "weights_bytes": 100_000, "latency_ms": 1.5, "noisy": True},
            {"label": "binary.pt", "top1": 30.0, "weights_bytes": 15_000, "latency_ms": None, "noisy": False}]
    seen = figure_texts(tmp_path, monkeypatch, lambda: plot_comparison(rows, tmp_path / "c.png", title="vgg11"))
    for label in ("dense.pt", "dense_int8.pt", "binary.pt"):
        assert label in seen["texts"]
    assert seen["axes"][0].get_ylim() == (0.0, 100.0)
    with (tmp_path / "c.csv").open() as f:
        assert [r["label"] for r in csv.DictReader(f)] == ["dense.pt", "dense_int8.pt", "binary.pt"]


def test_run_checkpoints_are_named_by_their_variant_folder(tmp_path):
    from prunekit.paths import variant_dir, variant_of

    folder = variant_dir(tmp_path, "filter-40")
    assert folder == tmp_path / "models" / "filter-40"
    assert variant_of(folder / "Omp_filter_0.40_acc_91.20.pt") == "filter-40"  # the pipeline's exact name inside
    assert variant_of(folder / "Omp_filter_0.40_acc_91.20_int8.pt") == "filter-40 int8"
    assert variant_of(tmp_path / "models" / "00_baseline.pt") == "baseline"


def test_comparison_labels_never_overprint_each_other_or_a_marker(tmp_path, monkeypatch):
    """Crowded as in the demo: the unstructured model sits on the baseline's weights and nearly its top-1."""
    import itertools

    import prunekit.report.plots as plots

    rows = [{"label": "baseline", "top1": 54.0, "weights_bytes": 400_000, "latency_ms": 2.0},
            {"label": "unstructured-80", "top1": 53.1, "weights_bytes": 400_000, "latency_ms": 2.05},
            {"label": "baseline int8", "top1": 53.6, "weights_bytes": 110_000, "latency_ms": 1.1, "noisy": True},
            {"label": "filter-40", "top1": 52.2, "weights_bytes": 150_000, "latency_ms": 1.2},
            {"label": "filter-40 int8", "top1": 51.9, "weights_bytes": 45_000, "latency_ms": 1.15},
            {"label": "binary", "top1": 30.0, "weights_bytes": 15_000, "latency_ms": None}]
    seen = {}
    original = plots.save_png

    def spy(figure, png, dpi):
        original(figure, png, dpi)  # lays the figure out as saved
        renderer = figure.canvas.get_renderer()
        seen["labels"] = [(t.get_text(), t.get_window_extent(renderer)) for ax in figure.axes for t in ax.texts]
        seen["markers"] = [plots.marker_box(ax, *c.get_offsets()[0], c.get_sizes()[0], figure.dpi / 72.0)
                           for ax in figure.axes for c in ax.collections]
        seen["axes"] = [ax.get_window_extent(renderer) for ax in figure.axes]

    monkeypatch.setattr(plots, "save_png", spy)
    plots.plot_comparison(rows, tmp_path / "c.png")
    labels = seen["labels"]
    assert sorted(text for text, _ in labels) == sorted([r["label"] for r in rows] + [r["label"] for r in rows[:5]])
    for (a, box_a), (b, box_b) in itertools.combinations(labels, 2):
        assert plots.overlap_area(box_a, box_b) == 0, (a, b)
    for (text, box), marker in itertools.product(labels, seen["markers"]):
        assert plots.overlap_area(box, marker) == 0, text
    for _, box in labels:
        assert any(plots.overlap_area(box, axes) == box.width * box.height for axes in seen["axes"])


def test_summary_names_the_compact_file_and_the_noisy_measurement():
    from prunekit.measure.timing import noise_note

    reference = row("dense.pt", top1=54.0)
    note = noise_note(12.34, 1, "speed-up", (0.41, 1.02, 13.0))
    unstructured = row("omp.pt", top1=53.0, macs_reduction=1.0, weights_reduction=1.0, compact_reduction=4.4,
                       speedup=1.02, speedup_q1=0.41, speedup_q3=13.0, noise=note)
    sentence = model_sentence(unstructured, reference)
    assert sentence.startswith("same MACs, same weight size, 4.4× smaller compact file, as fast at batch 1 (noisy: "
                               "speed-up IQR [0.41–13] = 1234% of median 1.02")
    # the percentage is the one the brackets give, and the table shows the same brackets
    assert round(100 * (13.0 - 0.41) / 1.02) == 1234
    (cell,) = [v for k, v in display_rows(Comparison([unstructured], CompareSettings(device="cpu")))[0].items()
               if k.startswith("speed-up")]
    assert cell == "1.02× [0.41–13.00] noisy"


def test_terminal_table_keeps_the_important_columns_within_the_width():
    from prunekit.report.tables import markdown_table, terminal_rows

    rows = [row("dense.pt", **timed("cpu", 2.0, 1.0)), row("pruned.pt", top1=53.0, **timed("cpu", 1.0, 2.0))]
    comparison = Comparison(rows, CompareSettings(device="cpu", batch_size=8))
    narrow, left_out = terminal_rows(comparison, width=100)
    assert max(len(line) for line in markdown_table(narrow).splitlines()) <= 100
    assert list(narrow[0])[:2] == ["model", "top-1 %"]
    assert "latency ms [IQR]" in narrow[0] and "speed-up" in narrow[0] and left_out
    assert set(narrow[0]) | set(left_out) == set(display_rows(comparison)[0])
    tiny, _ = terminal_rows(comparison, width=10)
    assert list(tiny[0]) == ["model", "top-1 %"]  # never less than the model and its accuracy
