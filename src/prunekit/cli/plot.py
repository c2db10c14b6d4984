"""``prunekit plot KIND``: every figure, as PNG with the plotted numbers as CSV beside it (accuracy-sparsity,
mask, hist, layers, and the re-plots of a saved sweep or sensitivity CSV)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.cli.analysis import saved_settings, sensitivity_title, sweep_title, sweep_xlabel
from prunekit.cli.common import (POSITIVE_INT, add_checkpoint_arg, add_model_source_args, add_out_arg,
                                 load_model_source)


def register(sub: argparse._SubParsersAction) -> None:
    """``prunekit plot KIND``: one subparser per figure."""
    p = sub.add_parser("plot", help="figures as PNG, with the plotted numbers as CSV beside them")
    kinds = p.add_subparsers(dest="plot_kind", metavar="KIND", required=True)
    q = kinds.add_parser("accuracy-sparsity", help="test top-1 vs weight sparsity (1 − non-zero conv + linear weights "
                                                                 "/ the dense model's), labelled by method")
    q.add_argument("checkpoints", metavar="CKPT", nargs="+", help="checkpoints that record a test accuracy")
    add_figure_arg(q)
    q.set_defaults(func=cmd_plot_accuracy_sparsity)
    q = kinds.add_parser("mask", help="kept/pruned pattern of one layer: one row per filter, in×kh×kw columns")
    add_checkpoint_arg(q, help="a masked prunekit checkpoint")
    q.add_argument("--layer", required=True, help="prunable layer name (`prunekit layers CKPT`)")
    add_figure_arg(q)
    q.set_defaults(func=cmd_plot_mask)
    q = kinds.add_parser("hist", help="histogram of the non-zero weights of every prunable layer")
    add_model_source_args(q)
    add_figure_arg(q)
    q.add_argument("--bins", type=POSITIVE_INT, default=60, help="bins per layer (default: %(default)s)")
    q.set_defaults(func=cmd_plot_hist)
    q = kinds.add_parser("layers", help="weights (non-zero / zero) and sparsity of every prunable layer")
    add_model_source_args(q)
    add_figure_arg(q)
    q.set_defaults(func=cmd_plot_layers)
    q = kinds.add_parser("sweep", help="re-plot a saved sweep CSV")
    add_saved_csv_args(q)
    q.set_defaults(func=cmd_plot_sweep)
    q = kinds.add_parser("sensitivity", help="re-plot a saved sensitivity CSV")
    add_saved_csv_args(q)
    q.set_defaults(func=cmd_plot_sensitivity)


def add_figure_arg(parser: argparse.ArgumentParser) -> None:
    """The required ``--out FILE.png`` of a figure drawn from models; its numbers go to ``FILE.csv``."""
    add_out_arg(parser, metavar="FILE.png", required=True, help="the figure; its numbers go to FILE.csv")


def add_saved_csv_args(parser: argparse.ArgumentParser) -> None:
    """``FILE.csv`` of a sweep or sensitivity run to re-plot, and an optional ``--out FILE.png``."""
    parser.add_argument("csv", metavar="FILE.csv", help="the CSV a sweep or sensitivity run wrote")
    add_out_arg(parser, metavar="FILE.png", help="default: FILE.png beside the CSV")


def point_of(path: str) -> dict:
    """One accuracy-sparsity point from a checkpoint: its meta's test accuracy and method, and its weight
    sparsity (:func:`prunekit.analysis.points.accuracy_point`, the same quantity `prunekit run` plots)."""
    from prunekit.analysis.points import accuracy_point, dense_weights
    from prunekit.checkpoint import load_checkpoint
    from prunekit.errors import PrunekitError

    loaded = load_checkpoint(path)
    meta = loaded.meta
    if meta.get("test_top1") is None:
        raise PrunekitError(f"{path} records no test accuracy; plot checkpoints written by `prunekit train`, "
                            "`prune` or `finetune`")
    return accuracy_point(method_of(meta), loaded.model, meta, dense_weights(loaded.model, meta), str(path))


def method_of(meta: dict) -> str:
    """``IMP unstructured``, ``OMP filter + rewind``, … from a checkpoint's meta; ``dense`` when unpruned."""
    if not meta.get("method"):
        return "dense"
    rewind = " + rewind" if (meta.get("prune_config") or {}).get("rewind_to") else ""
    return f"{meta['method']} {meta.get('granularity', '')}".strip() + rewind


def cmd_plot_accuracy_sparsity(args) -> int:
    from prunekit.report.plots import plot_accuracy_sparsity

    png, csv_path = plot_accuracy_sparsity([point_of(path) for path in args.checkpoints], args.out)
    print(f"wrote {png} and {csv_path}")
    return 0


def cmd_plot_mask(args) -> int:
    from prunekit.checkpoint import load_checkpoint
    from prunekit.prune.sparsity import layer_mask_matrix
    from prunekit.report.plots import plot_mask

    kept = layer_mask_matrix(load_checkpoint(args.checkpoint).model, args.layer)
    png, csv_path = plot_mask(kept.numpy(), args.out, title=f"{args.layer} in {Path(args.checkpoint).name}")
    print(f"wrote {png} and {csv_path} ({kept.shape[0]} filters × {kept.shape[1]} weights, 1 = kept)")
    return 0
def cmd_plot_hist(args) -> int:
    from prunekit.models.layers import prunable_layers
    from prunekit.masking import effective_weight
    from prunekit.report.plots import plot_weight_histograms

    loaded = load_model_source(args)
    weights = {name: effective_weight(m).detach().cpu().numpy().ravel()
               for name, m in prunable_layers(loaded.model).items()}
    source = Path(args.checkpoint).name if args.checkpoint else args.model
    png, csv_path = plot_weight_histograms(weights, args.out, bins=args.bins,
                                           title=f"Weight distribution per layer: {source}")
    print(f"wrote {png} and {csv_path}")
    return 0


def cmd_plot_layers(args) -> int:
    from prunekit.prune import sparsity_report
    from prunekit.report.plots import plot_layer_sparsity

    loaded = load_model_source(args)
    report = sparsity_report(loaded.model)
    source = Path(args.checkpoint).name if args.checkpoint else args.model
    png, csv_path = plot_layer_sparsity(report["layers"], args.out, title=f"Parameters and sparsity per layer: "
                                        f"{source} (overall {100 * report['overall']:.1f}% zero)")
    print(f"wrote {png} and {csv_path}")
    return 0


def cmd_plot_sweep(args) -> int:
    from prunekit.report.plots import plot_sweep

    def options(info: dict | None) -> dict:
        return {"title": sweep_title(info) if info else untitled(args.csv),
                "xlabel": sweep_xlabel(info["granularity"], info["include_classifier"]) if info
                else "pruning rate (%)"}

    return replot(args, ("rate", "top1", "top5", "nonzero_bytes"), plot_sweep, options)


def cmd_plot_sensitivity(args) -> int:
    from prunekit.report.plots import plot_sensitivity

    return replot(args, ("layer", "layer_params", "sparsity", "top1"), plot_sensitivity,
                  lambda info: {"title": sensitivity_title(info) if info else untitled(args.csv)})


def untitled(csv_path: str) -> str:
    return f"{Path(csv_path).stem} (no retraining)"


def replot(args, columns: tuple[str, ...], plot, options) -> int:
    """Draw the saved sweep/sensitivity CSV ``args.csv`` again with ``plot``: ``options(settings saved beside
    the CSV, or None)`` gives its title (and labels). Writes ``args.out`` (default: the CSV's name as PNG; the
    data CSV only when ``--out`` names a new place)."""
    from prunekit.analysis.results import read_csv_rows

    rows = read_csv_rows(args.csv)
    require_columns(args.csv, rows, columns)
    png, _ = plot(rows, args.out or Path(args.csv).with_suffix(".png"), write_data=args.out is not None,
                  **options(saved_settings(args.csv)))
    print(f"wrote {png}")
    return 0


def require_columns(path: str, rows: list[dict], columns: tuple[str, ...]) -> None:
    from prunekit.errors import PrunekitError

    missing = [c for c in columns if not rows or c not in rows[0]]
    if missing:
        raise PrunekitError(f"{path} lacks the columns {', '.join(missing)} (or has no rows); give a CSV written "
                            "by `prunekit sweep` / `prunekit sensitivity`")
