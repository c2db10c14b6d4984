"""Figures: each function takes plain data, writes a PNG and the CSV of the plotted numbers beside it.

Matplotlib is imported inside the functions and drives the Agg canvas directly (no pyplot, no global
backend), so importing this module is free and plotting works headless. Functions are independent.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from prunekit.atomic import atomic_path, atomic_write_csv, atomic_write_text

KEPT_COLOUR = "#1f4e79"  # dark blue
PRUNED_COLOUR = "#e6e6e6"  # light grey


def output_paths(out: str | Path) -> tuple[Path, Path]:
    """``(FILE.png, FILE.csv)`` for ``--out FILE.png`` (``.png`` added when missing); creates the folder."""
    png = Path(out)
    if png.suffix.lower() != ".png":
        png = png.with_name(png.name + ".png")
    png.parent.mkdir(parents=True, exist_ok=True)
    return png, png.with_suffix(".csv")


def new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure, png: Path, dpi: int) -> None:
    """Render ``figure`` to ``png`` atomically (a temporary file renamed into place)."""
    with atomic_path(png, suffix=".png") as tmp:
        figure.savefig(tmp, dpi=dpi, format="png")


#: What ``sparsity`` means in the accuracy-sparsity figure (``prunekit run`` computes exactly this).
WEIGHT_SPARSITY_LABEL = "weight sparsity (% of the dense conv + linear weights\nthat are zero or removed)"
MARKERS = "osD^vP*X"


def coincident_groups(points: Sequence[dict], x: str = "sparsity", y: str = "top1", x_tol: float = 0.01,
                      y_tol: float = 0.5) -> list[list[dict]]:
    """Groups of two or more points (with different ``label``) lying within ``x_tol`` (x units) and ``y_tol``
    (y units) of the first point of the group: points a figure would draw on top of each other."""
    groups: list[list[dict]] = []
    for p in points:
        if p.get(x) is None or p.get(y) is None:
            continue
        group = next((g for g in groups if abs(g[0][x] - p[x]) <= x_tol and abs(g[0][y] - p[y]) <= y_tol), None)
        if group is None:
            groups.append([p])
        else:
            group.append(p)
    return [g for g in groups if len({q.get("label") for q in g}) > 1]


def label_coincident(ax, points: Sequence[dict], x: str, y: str, scale_x: float = 1.0, **tolerances) -> None:
    """Write the labels of points that overlap beside them (one line each), so no point hides another."""
    for group in coincident_groups(points, x, y, **tolerances):
        text = "\n".join(dict.fromkeys(str(p.get("label")) for p in group))
        ax.annotate(text, (scale_x * group[0][x], group[0][y]), xytext=(8, -6), textcoords="offset points",
                    fontsize="x-small", va="top", bbox={"boxstyle": "round", "fc": "white", "alpha": 0.8, "lw": 0.3})


def plot_accuracy_sparsity(points: Sequence[dict], out: str | Path, title: str = "Test accuracy vs sparsity",
                           xlabel: str = WEIGHT_SPARSITY_LABEL) -> tuple[Path, Path]:
    """Test top-1 (%) against sparsity, one line per ``label`` (markers differ per line, and points that
    coincide are labelled so none hides another). The y axis starts at 0, so a drop of a few points looks
    like one.

    ``points``: dicts with ``label``, ``sparsity`` (fraction in [0, 1), the quantity ``xlabel`` names),
    ``top1`` (percent), optional ``top5`` and ``source``. Writes ``out`` (PNG) and the same rows as CSV
    beside it; returns both paths.
    """
    png, csv_path = output_paths(out)
    rows = sorted(points, key=lambda p: (p["label"], p["sparsity"]))
    atomic_write_csv(csv_path, rows, ["label", "sparsity", "top1", "top5", "source"])
    figure = new_figure(6.4, 4.4)
    ax = figure.add_subplot()
    for i, label in enumerate(dict.fromkeys(p["label"] for p in rows)):
        series = [p for p in rows if p["label"] == label]
        ax.plot([100 * p["sparsity"] for p in series], [p["top1"] for p in series], marker=MARKERS[i % len(MARKERS)],
                markersize=max(3.0, 9.0 - 1.5 * i), alpha=0.85, label=label)
    label_coincident(ax, rows, "sparsity", "top1", scale_x=100.0)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    save_png(figure, png, 150)
    return png, csv_path


COMPARISON_PLOT_COLUMNS = ["label", "top1", "weights_bytes", "latency_ms", "speedup", "noisy"]


def plot_comparison(rows: Sequence[dict], out: str | Path, title: str = "Every compared model") -> tuple[Path, Path]:
    """Every row of a comparison (int8 and other exported models included): test top-1 (%) against the
    deployable weights in MB (log scale) and, when timed, against batch-1 latency in ms. The y axis runs
    from 0 to 100; every point is labelled with its model. Noisy latencies are drawn hollow.

    ``rows``: dicts with ``label``, ``top1``, ``weights_bytes``, optional ``latency_ms``, ``noisy``.
    Writes ``out`` (PNG) and its CSV; returns both paths.
    """
    png, csv_path = output_paths(out)
    atomic_write_csv(csv_path, rows, COMPARISON_PLOT_COLUMNS)
    timed = [r for r in rows if r.get("latency_ms") is not None]
    figure = new_figure(11.0 if timed else 6.4, 4.4)
    panels = figure.subplots(1, 2 if timed else 1, sharey=True, squeeze=False)[0]
    specs = [("weights_bytes", 1e-6, "deployable weights (MB, log scale)")]
    specs += [("latency_ms", 1.0, "batch-1 latency (ms per image, log scale; hollow = noisy)")] if timed else []
    from matplotlib.ticker import FuncFormatter

    labels = []
    for ax, (key, scale, xlabel) in zip(panels, specs):
        for i, r in enumerate(r for r in rows if r.get(key)):
            hollow = key == "latency_ms" and r.get("noisy")
            colour, size = f"C{i % 10}", 110 - 25 * (i % 4)
            ax.scatter([scale * r[key]], [r["top1"]], s=size, marker=MARKERS[i % len(MARKERS)],
                       facecolors="none" if hollow else colour, edgecolors=colour, zorder=3)
            labels.append((ax, scale * r[key], r["top1"], str(r["label"]), colour, size))
        ax.set_xscale("log")
        ax.margins(x=0.2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:e}"[0] in "25" else ""))
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3, which="both")
    panels[0].set_ylim(0, 100)
    panels[0].set_ylabel("test top-1 accuracy (%)")
    figure.suptitle(title, fontsize="medium")
    place_labels(figure, labels)
    save_png(figure, png, 130)
    return png, csv_path


#: Where a point's label may go, tried in order: (dx, dy) in points from the point, alignment.
LABEL_SPOTS = [(0, 8, "center", "bottom"), (0, -8, "center", "top"), (8, 0, "left", "center"),
               (-8, 0, "right", "center"), (8, 9, "left", "bottom"), (-8, 9, "right", "bottom"),
               (8, -9, "left", "top"), (-8, -9, "right", "top"), (0, 20, "center", "bottom"),
               (0, -20, "center", "top"), (14, 20, "left", "bottom"), (-14, 20, "right", "bottom"),
               (14, -20, "left", "top"), (-14, -20, "right", "top"), (0, 32, "center", "bottom"),
               (0, -32, "center", "top")]


def place_labels(figure, labels: Sequence[tuple]) -> None:
    """Annotate every point beside it where its text overlaps no other label and no marker and stays inside
    its axes (the first free spot of :data:`LABEL_SPOTS`; the least-overlapping one when none is free).

    ``labels``: ``(ax, x, y, text, colour, marker size in points²)`` per point, in data coordinates. Lays the
    figure out first (labels are kept out of the layout, so saving does not move them)."""
    figure.canvas.draw()
    renderer = figure.canvas.get_renderer()
    pixels_per_point = figure.dpi / 72.0
    markers = [marker_box(ax, x, y, size, pixels_per_point) for ax, x, y, _, _, size in labels]
    placed = []
    for ax, x, y, text, colour, _ in labels:
        best = None
        for dx, dy, ha, va in LABEL_SPOTS:
            note = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", fontsize="x-small",
                               ha=ha, va=va, color=colour, annotation_clip=False)
            note.set_in_layout(False)
            box = note.get_window_extent(renderer)
            cost = sum(overlap_area(box, other) for other in placed + markers) + outside_area(box, ax, renderer)
            if best is not None and cost >= best[0]:
                note.remove()
                continue
            if best is not None:
                best[1].remove()
            best = (cost, note, box)
            if cost == 0:
                break
        placed.append(best[2])


def marker_box(ax, x: float, y: float, size: float, pixels_per_point: float):
    """The display-space box of a scatter marker of ``size`` points² at data ``(x, y)``."""
    from matplotlib.transforms import Bbox

    cx, cy = ax.transData.transform((x, y))
    radius = 0.5 * size ** 0.5 * pixels_per_point + 1.0
    return Bbox.from_extents(cx - radius, cy - radius, cx + radius, cy + radius)


def overlap_area(a, b) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(0.0, width) * max(0.0, height)


def outside_area(box, ax, renderer) -> float:
    """How much of ``box`` lies outside ``ax``'s drawing area."""
    return box.width * box.height - overlap_area(box, ax.get_window_extent(renderer))


def plot_mask(kept, out: str | Path, title: str = "") -> tuple[Path, Path]:
    """A 2-D keep-pattern (rows: filters; columns: in × kh × kw) in two colours, kept dark, pruned light.

    ``kept``: 2-D bool tensor or nested sequence. The CSV beside the PNG holds the same matrix as 0/1
    (1 = kept), one row per filter. Returns ``(png, csv)``.
    """
    import numpy as np
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    png, csv_path = output_paths(out)
    matrix = np.asarray(kept, dtype=np.uint8)
    atomic_write_text(csv_path, "".join(",".join(map(str, row)) + "\n" for row in matrix.tolist()))
    rows, cols = matrix.shape
    figure = new_figure(min(12.0, max(6.0, 3.0 + cols / 40)), min(10.0, 2.5 + rows / 12))
    ax = figure.add_subplot()
    ax.imshow(matrix, cmap=ListedColormap([PRUNED_COLOUR, KEPT_COLOUR]), vmin=0, vmax=1, aspect="auto",
              interpolation="nearest")
    ax.set_xlabel("input channel × kh × kw")
    ax.set_ylabel("filter (output channel)")
    pruned = 1.0 - matrix.mean() if matrix.size else 0.0
    ax.set_title(f"{title}\n{rows}×{cols}, {100 * pruned:.1f}% pruned".strip(), fontsize="medium")
    figure.legend(handles=[Patch(color=KEPT_COLOUR, label="kept"), Patch(color=PRUNED_COLOUR, label="pruned")],
                  loc="outside lower center", ncols=2, frameon=False)
    save_png(figure, png, 120)
    return png, csv_path


# --- sweeps, sensitivity, weight histograms and per-layer bars (used by `prunekit sweep`, `sensitivity`,
# `plot hist|layers|sweep|sensitivity`) ------------------------------------------------------------------

SWEEP_PLOT_COLUMNS = ["rate", "sparsity", "params", "nonzero_params", "nonzero_bytes", "top1", "top5", "loss"]
SENSITIVITY_PLOT_COLUMNS = ["layer", "layer_params", "sparsity", "top1", "top5", "loss", "drop"]
LAYER_PLOT_COLUMNS = ["name", "type", "params", "zeros", "sparsity"]


def plot_sweep(rows: Sequence[dict], out: str | Path, title: str = "Accuracy vs pruning rate (no retraining)",
               xlabel: str = "pruning rate (%)", write_data: bool = True,
               dense_top1: float | None = None) -> tuple[Path, Path]:
    """Top-1/top-5 (%) against the pruning rate, with the non-zero parameters' 32-bit footprint on a second axis.

    ``rows``: dicts with ``rate`` (fraction), ``top1``, ``top5`` (percent) and ``nonzero_bytes``; the dense
    accuracy (``dense_top1``, else the rate-0 row when present) is drawn as a dashed line, so a zoomed sweep
    that starts above 0 keeps its reference. ``write_data=False`` leaves the CSV alone (re-plotting a saved
    sweep). Returns ``(png, csv)``.
    """
    png, csv_path = output_paths(out)
    rows = sorted(rows, key=lambda r: r["rate"])
    if write_data:
        atomic_write_csv(csv_path, rows, SWEEP_PLOT_COLUMNS)
    figure = new_figure(6.4, 4.4)
    ax = figure.add_subplot()
    rates = [100 * r["rate"] for r in rows]
    ax.plot(rates, [r["top1"] for r in rows], marker="o", label="top-1")
    ax.plot(rates, [r["top5"] for r in rows], marker="s", markersize=4, alpha=0.7, label="top-5")
    if dense_top1 is None:
        dense_top1 = next((r["top1"] for r in rows if r["rate"] == 0), None)
    if dense_top1 is not None:
        ax.axhline(dense_top1, color="grey", linestyle="--", linewidth=1, label=f"dense top-1 ({dense_top1:.2f}%)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(0, 100)
    ax.set_title(title, fontsize="medium")
    ax.grid(True, alpha=0.3)
    memory = ax.twinx()
    memory.plot(rates, [r["nonzero_bytes"] / 1e6 for r in rows], color="black", alpha=0.35, linestyle=":",
                label="non-zero params (MB, 32-bit)")
    memory.set_ylabel("non-zero parameters, MB at 32 bits")
    memory.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    extra = memory.get_legend_handles_labels()
    ax.legend(lines[0] + extra[0], lines[1] + extra[1], loc="best", fontsize="small")
    save_png(figure, png, 150)
    return png, csv_path


def plot_sensitivity(rows: Sequence[dict], out: str | Path, title: str = "Per-layer sensitivity (no retraining)",
                     write_data: bool = True) -> tuple[Path, Path]:
    """A grid with one panel per layer: top-1 (%) against that layer's own sparsity, the others dense.

    ``rows``: dicts with ``layer``, ``layer_params``, ``sparsity`` (fraction), ``top1``; a ``layer`` named
    ``dense`` is the unpruned model (dashed line, and the 0 point of every curve). Returns ``(png, csv)``.
    """
    import math

    png, csv_path = output_paths(out)
    if write_data:
        atomic_write_csv(csv_path, rows, SENSITIVITY_PLOT_COLUMNS)
    dense = next((r["top1"] for r in rows if r["layer"] == "dense"), None)
    layers = list(dict.fromkeys(r["layer"] for r in rows if r["layer"] != "dense"))
    cols = max(1, math.ceil(math.sqrt(len(layers))))
    grid_rows = max(1, math.ceil(len(layers) / cols))
    figure = new_figure(2.6 * cols + 0.6, 2.1 * grid_rows + 0.8)
    axes = figure.subplots(grid_rows, cols, sharex=True, sharey=True, squeeze=False)
    for ax, layer in zip(axes.flat, layers):
        points = sorted((r["sparsity"], r["top1"]) for r in rows if r["layer"] == layer)
        if dense is not None:
            points = [(0.0, dense)] + [p for p in points if p[0] > 0]
            ax.axhline(dense, color="grey", linestyle="--", linewidth=0.8)
        ax.plot([100 * s for s, _ in points], [t for _, t in points], marker="o", markersize=3)
        params = next(r["layer_params"] for r in rows if r["layer"] == layer)
        ax.set_title(f"{layer} ({params:,})", fontsize="x-small")
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize="x-small")
    for ax in list(axes.flat)[len(layers):]:
        ax.set_visible(False)
    figure.supxlabel("sparsity of that layer alone (%)", fontsize="small")
    figure.supylabel("top-1 accuracy (%)", fontsize="small")
    figure.suptitle(title, fontsize="medium")
    save_png(figure, png, 110)
    return png, csv_path


def plot_weight_histograms(weights: dict, out: str | Path, bins: int = 60,
                           title: str = "Weight distribution per layer") -> tuple[Path, Path]:
    """One histogram per layer of its non-zero weights; exact zeros (pruned) are counted in the panel title.

    ``weights``: ``{layer name: 1-D array-like of the effective weights}``. The CSV beside the PNG holds
    ``layer, bin_left, bin_right, count`` (non-zero weights only). Returns ``(png, csv)``.
    """
    import math

    import numpy as np

    png, csv_path = output_paths(out)
    cols = max(1, math.ceil(math.sqrt(len(weights))))
    grid_rows = max(1, math.ceil(len(weights) / cols))
    figure = new_figure(2.6 * cols + 0.6, 2.0 * grid_rows + 0.8)
    axes = figure.subplots(grid_rows, cols, squeeze=False)
    table = []
    for ax, (layer, values) in zip(axes.flat, weights.items()):
        values = np.asarray(values, dtype=np.float64).ravel()
        nonzero = values[values != 0]
        counts, edges = np.histogram(nonzero, bins=bins) if nonzero.size else (np.zeros(0, int), np.zeros(1))
        table += [{"layer": layer, "bin_left": float(a), "bin_right": float(b), "count": int(c)}
                  for a, b, c in zip(edges[:-1], edges[1:], counts)]
        if nonzero.size:
            ax.stairs(counts, edges, fill=True, alpha=0.8)
        zero_pct = 100.0 * (values.size - nonzero.size) / max(values.size, 1)
        ax.set_title(f"{layer}\n{values.size:,} w, {zero_pct:.1f}% zero", fontsize="x-small")
        ax.tick_params(labelsize="xx-small")
    for ax in list(axes.flat)[len(weights):]:
        ax.set_visible(False)
    atomic_write_csv(csv_path, table, ["layer", "bin_left", "bin_right", "count"])
    figure.supxlabel("weight value (non-zero weights)", fontsize="small")
    figure.supylabel("count", fontsize="small")
    figure.suptitle(title, fontsize="medium")
    save_png(figure, png, 110)
    return png, csv_path


def plot_layer_sparsity(rows: Sequence[dict], out: str | Path,
                        title: str = "Parameters and sparsity per layer") -> tuple[Path, Path]:
    """Per prunable layer: weights as kept/zero stacked bars (top) and sparsity in % (bottom).

    ``rows``: dicts with ``name``, ``params``, ``zeros``, ``sparsity`` (fraction), e.g.
    ``prunekit.prune.sparsity_report(model)["layers"]``. Returns ``(png, csv)``.
    """
    png, csv_path = output_paths(out)
    atomic_write_csv(csv_path, rows, LAYER_PLOT_COLUMNS)
    names = [r["name"] for r in rows]
    positions = range(len(rows))
    figure = new_figure(max(6.4, 0.28 * len(rows) + 2.0), 6.0)
    top, bottom = figure.subplots(2, 1, sharex=True)
    kept = [r["params"] - r["zeros"] for r in rows]
    top.bar(positions, kept, color=KEPT_COLOUR, label="non-zero")
    top.bar(positions, [r["zeros"] for r in rows], bottom=kept, color=PRUNED_COLOUR, edgecolor="#999999",
            linewidth=0.3, label="zero")
    top.set_ylabel("weights")
    top.set_yscale("log" if rows and max(r["params"] for r in rows) > 50 * min(r["params"] for r in rows)
                   else "linear")
    top.legend(fontsize="small")
    top.set_title(title, fontsize="medium")
    bottom.bar(positions, [100 * r["sparsity"] for r in rows], color="#c0504d")
    bottom.set_ylabel("sparsity (%)")
    bottom.set_ylim(0, 100)
    bottom.set_xticks(list(positions), names, rotation=90, fontsize="x-small")
    for ax in (top, bottom):
        ax.grid(True, axis="y", alpha=0.3)
    save_png(figure, png, 120)
    return png, csv_path
