"""Measure-and-report subcommands: compare, sweep, sensitivity, report (``prunekit plot sweep|sensitivity``
re-plots what sweep and sensitivity saved, with the titles built here)."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.cli.common import (FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, add_checkpoint_arg, add_count_arg,
                                 add_criterion_arg, add_data_args, add_device_arg, add_granularity_arg, add_json_arg,
                                 add_no_progress_arg, add_out_arg, add_scope_arg, add_split_arg, data_for, data_loader,
                                 lock_run_folder, markdown_table, print_json)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="one row per checkpoint: accuracy, params, MACs, size, memory, speed, ratios",
                       description="Measure every CKPT the same way; ratios are against the first one. Each model "
                                   "is evaluated with its checkpoint's own normalisation and dataset.")
    p.add_argument("checkpoints", metavar="CKPT", nargs="+", help="prunekit checkpoints (and int8 files)")
    add_data_args(p)
    add_measure_args(p)
    add_reference_arg(p, "default: the first CKPT")
    output = p.add_mutually_exclusive_group()
    add_json_arg(output, help="print the rows and the method as JSON (compare.json)")
    output.add_argument("--csv", metavar="FILE", default=None, help="also write the raw rows to FILE as CSV")
    p.add_argument("--wide", action="store_true",
                   help="print every column (default: the most important ones that fit 100 characters)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("sweep", help="accuracy vs pruning rate, no retraining (CSV + PNG, resumable)",
                       description="Prune a fresh copy of CKPT to each rate and evaluate it. Points already in the "
                                   "CSV are skipped, so an interrupted sweep continues where it stopped.")
    add_checkpoint_arg(p)
    add_granularity_args(p)
    add_scope_arg(p, default="global", help="global: one threshold over all layers; layer: the same rate in each; "
                                          "lamp: one ranking of LAMP scores (unstructured) (default: %(default)s)")
    p.add_argument("--from", dest="start", type=FRACTION, default=0.0, help="first rate (default: %(default)s)")
    p.add_argument("--to", dest="stop", type=FRACTION, default=0.95, help="last rate (default: %(default)s)")
    p.add_argument("--steps", type=POSITIVE_INT, default=20, help="number of rates, evenly spaced (default: %(default)s)")
    add_analysis_args(p)
    p.set_defaults(func=cmd_sweep)

    p = sub.add_parser("sensitivity", help="each layer pruned alone at each sparsity (CSV + PNG grid, resumable)",
                       description="Per-layer accuracy curves with no retraining; --suggest S turns them into a "
                                   "ratio file for `prunekit prune --ratios` reaching overall sparsity S.")
    add_checkpoint_arg(p)
    add_granularity_args(p)
    p.add_argument("--sparsities", default="0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9",
                   help="comma-separated sparsities per layer (default: %(default)s)")
    p.add_argument("--suggest", type=FRACTION, default=None, metavar="S",
                   help="write a layer-wise ratio YAML reaching overall sparsity S, sensitive layers pruned less")
    p.add_argument("--suggest-out", metavar="FILE", default=None,
                   help="where --suggest writes (default: OUT/ratios_<granularity>_<S>.yaml)")
    add_analysis_args(p)
    p.set_defaults(func=cmd_sensitivity)

    p = sub.add_parser("report", help="one self-contained HTML page (+ Markdown) for a run folder",
                       description="Table (compare.json, or computed from the folder's checkpoints and saved), every "
                                   "PNG with its CSV, and the configuration files. See docs/measure.md for the layout.")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run folder of `prunekit run`, or a folder of checkpoints")
    add_out_arg(p, metavar="FILE", help="HTML file (default: RUN_DIR/report.html); the "
                                                                 "Markdown twin goes beside it")
    add_data_args(p)
    add_measure_args(p)
    add_reference_arg(p, "default: the dense/unpruned checkpoint with the most non-zero parameters")
    p.set_defaults(func=cmd_report)


# --- shared arguments ----------------------------------------------------------------------------------


def add_measure_args(p: argparse.ArgumentParser) -> None:
    add_split_arg(p)
    p.add_argument("--device", default="cpu", metavar="DEV[,DEV]",
                   help="cpu, cuda, or cpu,cuda for both latency columns in one table (accuracy and memory on "
                        "the first; CUDA columns say 'no GPU' when there is none; default: %(default)s)")
    p.add_argument("--runtime", default="eager", metavar="NAME[,NAME]",
                   help="runtime(s) to time every model in, e.g. eager,onnxruntime: one set of timing columns per "
                        "runtime, each model against the first in the same runtime ({runtimes}; default: %(default)s)")
    p.add_argument("--threads", type=NON_NEGATIVE_INT, default=1,
                   help="CPU threads while timing (default: %(default)s: batch-1 latency single-threaded, which "
                        "stays steady on a busy machine; 0: torch's default)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="batch of the throughput figure (default: %(default)s)")
    p.add_argument("--repeats", type=POSITIVE_INT, default=50,
                   help="timed runs at batch 1; the throughput batch gets max(5, N/5) (default: %(default)s)")
    p.add_argument("--no-timing", action="store_true", help="skip latency and throughput")
    add_no_progress_arg(p)
    add_count_arg(p)


def add_reference_arg(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--reference", metavar="CKPT", default=None,
                   help=f"the model every ratio is against, one of the checkpoints ({default})")


def add_granularity_args(p: argparse.ArgumentParser) -> None:
    add_granularity_arg(p, help="single weights (fraction of weights) or whole conv filters (fraction of filters)")
    add_criterion_arg(p, note="; filter granularity (unstructured ranks by |w|)")
    p.add_argument("--include-classifier", action="store_true", help="also prune the classifier")


def add_analysis_args(p: argparse.ArgumentParser) -> None:
    add_out_arg(p, metavar="DIR", help="folder for the CSV/PNG (default: CKPT's folder/plots)")
    add_split_arg(p)
    add_device_arg(p, help="default: %(default)s")
    add_no_progress_arg(p)
    add_data_args(p)


# --- helpers -------------------------------------------------------------------------------------------


def compare_settings(args: argparse.Namespace):
    from prunekit.errors import PrunekitError
    from prunekit.analysis.compare import CompareSettings
    from prunekit.train.loop import resolve_device

    devices = [d.strip() for d in args.device.split(",") if d.strip()]
    if not devices or any(d not in ("cpu", "cuda") for d in devices) or len(set(devices)) < len(devices):
        raise PrunekitError(f"--device {args.device}: give cpu, cuda or cpu,cuda")
    resolve_device(devices[0])  # accuracy and memory run there: a clear error for cuda without a GPU
    if args.batch_size < 1 or args.repeats < 1 or args.threads < 0:
        raise PrunekitError("--batch-size and --repeats must be at least 1, --threads at least 0")
    return CompareSettings(device=",".join(devices), threads=args.threads or None, batch_size=args.batch_size,
                           repeats=args.repeats, timing=not args.no_timing, split=args.split,
                           count=args.count, runtime=",".join(usable_runtimes(args.runtime)))


def usable_runtimes(text: str) -> list[str]:
    """The runtimes of ``--runtime``, each registered and installed (else a one-line error with the fix)."""
    from prunekit.errors import PrunekitError
    from prunekit.runtime import get_runtime, parse_runtimes

    names = parse_runtimes(text)
    for name in names:
        why = get_runtime(name).missing()
        if why:
            raise PrunekitError(f"--runtime {name}: {why}")
    return names


def analysis_setup(args: argparse.Namespace):
    """The loaded checkpoint, an evaluator with its own normalisation, the output folder and saved settings.
    Side effect: holds the output folder's run lock (taken before the data loads, so a second writer fails at
    once)."""
    from prunekit.checkpoint import load_checkpoint
    from prunekit.analysis.compare import meta_normalisation
    from prunekit.analysis.results import file_sha256
    from prunekit.analysis.points import Evaluator
    from prunekit.train.loop import resolve_device

    loaded = load_checkpoint(args.checkpoint)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "plots"
    lock_run_folder(args, out)
    data = data_for(args, loaded)
    mean, std = meta_normalisation(loaded.meta, data)
    evaluator = Evaluator(data, mean, std, resolve_device(args.device), args.split)
    settings = {"checkpoint": str(args.checkpoint), "checkpoint_sha256": file_sha256(args.checkpoint)}
    return loaded, evaluator, out, settings


def subject(info: dict) -> str:
    """``'last.pt on synthetic test (500 images, SYNTHETIC)'`` from saved analysis settings."""
    synthetic = ", SYNTHETIC" if info.get("synthetic") else ""
    return (f"{Path(str(info.get('checkpoint', '?'))).name} on {info.get('dataset')} {info.get('split')} "
            f"({info.get('images')} images{synthetic})")


def sweep_title(info: dict) -> str:
    return f"{subject(info)}\n{info.get('granularity')} {info.get('scope')} pruning, no retraining"


def sensitivity_title(info: dict) -> str:
    return f"{subject(info)}\n{info.get('granularity')} pruning of one layer at a time, no retraining"


def saved_settings(csv_path: str | Path) -> dict | None:
    """The settings saved beside a sweep/sensitivity CSV (``NAME.json``), or None."""
    import json

    path = Path(csv_path).with_suffix(".json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweep_xlabel(granularity: str, include_classifier: bool) -> str:
    from prunekit.prune.granularity import get_granularity

    return get_granularity(granularity).rate_label(include_classifier)


# --- commands ------------------------------------------------------------------------------------------


def cmd_compare(args) -> int:
    from prunekit.analysis.compare import compare_checkpoints, reference_first, save_comparison_csv
    from prunekit.report.tables import TERMINAL_WIDTH, display_rows, terminal_rows

    paths = reference_first(args.checkpoints, args.reference) if args.reference else args.checkpoints
    settings = compare_settings(args)
    comparison = compare_checkpoints(paths, data_loader(args), settings, progress=not args.no_progress)
    if args.json:
        print_json(comparison.as_dict())
        return 0
    rows, left_out = (display_rows(comparison), []) if args.wide else terminal_rows(comparison)
    print(markdown_table(rows))
    if left_out:
        print(f"({len(left_out)} more column(s) to fit {TERMINAL_WIDTH} characters: {', '.join(left_out)}; --wide "
              "shows every column, --csv/--json keep every number)")
    print(f"\n{comparison.method}")
    for line in comparison.notes():
        print(line)
    if any(row["synthetic"] for row in comparison.rows):
        print("SYNTHETIC data: these numbers demonstrate the tool, they are not CIFAR results.")
    if args.csv:
        print(f"wrote {save_comparison_csv(comparison, args.csv)}")
    return 0


def cmd_sweep(args) -> int:
    from prunekit.report.plots import plot_sweep
    from prunekit.analysis.sweep import run_sweep, sweep_name, sweep_rates

    rates = sweep_rates(args.start, args.stop, args.steps)
    loaded, evaluator, out, settings = analysis_setup(args)
    csv_path = out / f"{sweep_name(args.granularity, args.scope, args.start, args.stop)}.csv"
    rows = run_sweep(loaded.model, rates, evaluator, csv_path, args.granularity, args.scope, args.criterion,
                     args.include_classifier, settings, progress=not args.no_progress)
    from prunekit.models import arch_label

    # a zoomed range has no rate-0 point: evaluate the unpruned model once for the dashed reference line
    dense_top1 = None if any(row["rate"] == 0 for row in rows) else evaluator(loaded.model).top1
    png, _ = plot_sweep(rows, csv_path.with_suffix(".png"), dense_top1=dense_top1,
                        title=f"{arch_label(loaded.arch)}: {sweep_title(saved_settings(csv_path))}",
                        xlabel=sweep_xlabel(args.granularity, args.include_classifier), write_data=False)
    columns = ["rate", "sparsity", "nonzero_params", "nonzero_bytes", "top1", "top5"]
    print(markdown_table([{c: row[c] for c in columns} for row in rows]))
    print(f"\nrate: target of {args.granularity} {args.scope} pruning; sparsity: achieved zeros over all conv + "
          f"linear weights; nonzero_bytes: non-zero parameters × 4 bytes (32-bit). No retraining.\n"
          f"wrote {csv_path} and {png}")
    return 0


def cmd_sensitivity(args) -> int:
    from prunekit.report.plots import plot_sensitivity
    from prunekit.analysis.sensitivity import parse_sparsities, run_sensitivity

    sparsities = parse_sparsities(args.sparsities)
    check_suggest_target(args.suggest)
    loaded, evaluator, out, settings = analysis_setup(args)
    csv_path = out / f"sensitivity_{args.granularity}.csv"
    rows = run_sensitivity(loaded.model, sparsities, evaluator, csv_path, args.granularity, args.criterion,
                           args.include_classifier, settings, progress=not args.no_progress)
    png, _ = plot_sensitivity(rows, csv_path.with_suffix(".png"), title=sensitivity_title(saved_settings(csv_path)),
                              write_data=False)
    print(f"wrote {csv_path} and {png}")
    if args.suggest is not None:
        path = Path(args.suggest_out) if args.suggest_out else out / f"ratios_{args.granularity}_{args.suggest:g}.yaml"
        write_suggestion(rows, args.suggest, path, args, loaded.model, evaluator)
    return 0


def check_suggest_target(target: float | None) -> None:
    from prunekit.errors import PrunekitError
    from prunekit.analysis.sensitivity import MAX_SUGGESTED_RATIO

    if target is not None and not 0.0 <= target <= MAX_SUGGESTED_RATIO:
        raise PrunekitError(f"--suggest {target}: the overall sparsity must lie in [0, {MAX_SUGGESTED_RATIO}]")


def write_suggestion(rows: list[dict], target: float, path: Path, args, model, evaluator) -> None:
    from prunekit.analysis.sensitivity import (allocation_candidates, choose_allocation, drop_curves,
                                               suggest_ratios, weighted_mean, write_ratio_file)

    ratios, threshold = suggest_ratios(rows, target)
    candidates = allocation_candidates(model, rows, target, args.granularity, args.include_classifier)
    chosen, results = choose_allocation(model, candidates, evaluator, args.granularity, args.criterion)
    ratios = candidates[chosen]
    sizes = {layer: size for layer, (_, _, size) in drop_curves(rows).items()}
    achieved = weighted_mean(ratios, sizes)
    from prunekit.prune.granularity import get_granularity

    unit = get_granularity(args.granularity).unit
    header = [f"prunekit sensitivity --suggest {target:g} for {args.checkpoint} ({args.granularity})",
              f"overall {achieved:.4f}: parameter-weighted mean ratio over the {sum(sizes.values()):,} weights of "
              f"these layers (ratios are fractions of each layer's {unit})",
              f"chosen allocation: {chosen} (whole model pruned, no retraining, {evaluator.split} split: "
              + ", ".join(f"{r['allocation']} {r['top1']:.2f}%" for r in results) + ")",
              f"sensitivity candidate: common accuracy-drop threshold {threshold:.3f} points top-1 (single-layer), "
              "rescaled to the target",
              f"use: prunekit prune {args.checkpoint} --granularity {args.granularity} --ratios {path}"]
    write_ratio_file(ratios, path, header)
    print(f"wrote {path}: {chosen} allocation, {len(ratios)} layer ratios, overall sparsity {achieved:.4f} "
          f"(target {target:g}); whole-model top-1 of the candidates: "
          + ", ".join(f"{r['allocation']} {r['top1']:.2f}%" for r in results))


def cmd_report(args) -> int:
    from prunekit.errors import PrunekitError
    from prunekit.analysis.compare import compare_checkpoints, reference_first, save_comparison
    from prunekit.report.html import COMPARE_FILE, find_checkpoints, load_comparison, write_report

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise PrunekitError(f"run folder not found: {run_dir}")
    comparison = load_comparison(run_dir)
    if comparison is None and find_checkpoints(run_dir):
        paths = reference_first(find_checkpoints(run_dir), args.reference)
        comparison = compare_checkpoints(paths, data_loader(args), compare_settings(args),
                                         progress=not args.no_progress)
        saved = save_comparison(comparison, run_dir / COMPARE_FILE)
        print(f"measured {len(comparison.rows)} checkpoint(s); saved {saved}")
    html_path, md_path = write_report(run_dir, args.out, comparison)
    print(f"wrote {html_path} and {md_path}")
    return 0
