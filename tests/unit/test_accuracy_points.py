"""One accuracy-sparsity definition (conv + linear weights) for the CLI plot and `prunekit run`, and a
figure whose axis label fits inside the canvas."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.analysis.points import accuracy_point, dense_weights, weight_counts
from prunekit.errors import PrunekitError
from prunekit.masking import apply_masks


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))


def test_weight_counts_ignore_bias_and_batchnorm_and_apply_masks():
    net = small_net()
    assert weight_counts(net) == (3 * 4 * 9 + 4 * 2, 3 * 4 * 9 + 4 * 2)  # 116: no bias, no BN
    mask = torch.ones(4, 3, 3, 3)
    mask[:2] = 0  # two filters: 54 weights
    apply_masks(net, {"0.weight": mask})
    assert weight_counts(net) == (116, 116 - 54)
    point = accuracy_point("omp", net, {"test_top1": 50.0}, 116, "x.pt")
    assert point["sparsity"] == pytest.approx(54 / 116) and point["top1"] == 50.0


def test_physically_pruned_point_uses_the_recorded_dense_count():
    small = nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2, 2))  # 54 + 4
    meta = {"dense_weights": 116, "filter_sparsity": 0.5, "test_top1": 40.0}
    assert dense_weights(small, meta) == 116
    assert accuracy_point("l1", small, meta, 116, "s.pt")["sparsity"] == pytest.approx(1 - 58 / 116)
    with pytest.raises(PrunekitError, match="does not record its dense model's weight count"):
        dense_weights(small, {"filter_sparsity": 0.5})
    assert dense_weights(small, {}) == 58  # masked or dense: its own count


def test_accuracy_sparsity_axis_label_lies_inside_the_canvas(tmp_path, monkeypatch):
    from prunekit.report import plots

    drawn = {}
    real_save = plots.save_png

    def keep(figure, png, dpi):
        real_save(figure, png, dpi)
        drawn["figure"] = figure

    monkeypatch.setattr(plots, "save_png", keep)
    points = [{"label": "dense", "sparsity": 0.0, "top1": 90.0}, {"label": "omp", "sparsity": 0.8, "top1": 88.0}]
    plots.plot_accuracy_sparsity(points, tmp_path / "acc.png")
    figure = drawn["figure"]
    renderer = figure.canvas.get_renderer()
    canvas = figure.bbox
    for ax in figure.axes:
        for label in (ax.xaxis.label, ax.yaxis.label, ax.title):
            box = label.get_window_extent(renderer)
            assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1, \
                f"{label.get_text()!r} is clipped: {box} outside {canvas}"
