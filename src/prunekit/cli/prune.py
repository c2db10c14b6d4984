"""Pruning subcommands: layers, prune, finetune, sparsity."""

from __future__ import annotations

import argparse
from pathlib import Path

from prunekit.cli.common import (FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, SHARE, add_checkpoint_arg,
                                 add_criterion_arg, add_data_args, add_deprecated_alias, add_granularity_arg,
                                 add_json_arg, add_model_relocation_arg, add_model_source_args, add_no_progress_arg,
                                 add_out_arg, add_round_to_arg, add_scope_arg, add_strict_arg, add_train_args,
                                 data_for, data_source, epoch_printer, filter_warning, last_train_top1,
                                 load_model_source, lock_run_folder, markdown_table, number, print_cut, print_json,
                                 print_time_estimate, train_config_from, warn_if_collapsed)
from prunekit.config import FINETUNE_LR

FINETUNE_EPOCHS = 40  # `prunekit finetune` default (common fine-tuning budget on CIFAR)

WEIGHT_SPARSITY_MEANING = "weight sparsity = fraction of all conv + linear weights that are zero"
FILTER_SPARSITY_MEANING = ("filter sparsity = fraction of all conv filters (output channels; depthwise convs "
                           "follow their producer) removed; the matching BN channels and input channels of the "
                           "next layers go with them")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("layers", help="prunable layers: the names ratio files use, shapes, sizes, sparsity")
    add_model_source_args(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_layers)

    register_prune(sub)
    register_finetune(sub)

    p = sub.add_parser("sparsity", help="per-layer and overall weight sparsity (zero weights) of a checkpoint")
    add_checkpoint_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_sparsity)



def register_prune(sub: argparse._SubParsersAction) -> None:
    from prunekit.config import DEFAULT_SCOPE, PruneConfig

    p = sub.add_parser("prune",
                       help="prune a checkpoint (unstructured or filters; one-shot or iterative) and retrain",
                       description="Prune CKPT to a target, retrain with the mask after every round, save "
                                   "OUT/Omp_unstructured_<sparsity>_acc_<top-1>.pt (name from the achieved "
                                   "sparsity and test top-1) unless --name is given.")
    add_checkpoint_arg(p, help="a prunekit checkpoint (e.g. a run's last.pt)")
    add_granularity_arg(p, help="single weights, or whole conv filters removed physically (default: %(default)s)")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--sparsity", type=FRACTION, metavar="S",
                        help="target fraction in [0, 1) of weights (unstructured) or filters (filter)")
    target.add_argument("--ratios", metavar="FILE",
                        help="YAML of `layer: ratio` (+ optional `default: r`); `prunekit layers CKPT` lists names")
    target.add_argument("--latency-target", type=SHARE, metavar="F",
                        help="filter: reach this fraction of the dense model's latency predicted by a measured "
                             "latency table (CPU, 1 thread, batch 1; `prunekit latency` shows it)")
    add_round_to_arg(p, help="with --latency-target: every width a multiple of N, e.g. 8 for int8 depthwise kernels "
                             "(default: the table's measured widths; any width)")
    add_scope_arg(p, help="with --sparsity: one ranking over all layers (global), the same ratio per layer, or one "
                        "ranking of LAMP scores (lamp, unstructured); default: "
                        + ", ".join(f"{s} for {g}" for g, s in DEFAULT_SCOPE.items()))
    add_criterion_arg(p, default=None, note="; filter granularity (unstructured always uses |w|)")
    p.add_argument("--recalibrate-bn", type=NON_NEGATIVE_INT, default=0, metavar="N",
                   help="re-estimate BatchNorm statistics on N training batches right after each pruning step, "
                        "before it is evaluated (default: off)")
    p.add_argument("--include-classifier", action="store_true",
                   help="also prune the classifier with --sparsity or a ratio file's default")
    p.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="with --sparsity: leave this layer (name or glob, repeatable) unpruned, e.g. the last conv")
    p.add_argument("--iterations", type=POSITIVE_INT, default=PruneConfig.model_fields["iterations"].default, metavar="K",
                   help="IMP rounds (default: %(default)s)")
    p.add_argument("--rewind-to", metavar="CKPT", default=None,
                   help="reset surviving weights to this checkpoint's after each pruning step (lottery ticket)")
    p.add_argument("--name", default=None, help="file name of the result (default: from method and results)")
    add_strict_arg(p, help="with --granularity filter: fail (exit 2, nothing written) when the target, allocated on "
                           "the dense model, achieves below half of the filters (or MACs) asked, naming the ops that "
                           "kept the channels")
    add_model_relocation_arg(p)
    add_out_arg(p, metavar="DIR", required=True, help="folder for the result and the round folders")
    add_no_progress_arg(p)
    add_data_args(p)
    add_train_args(p, epochs=0, epochs_flags=("--finetune-epochs", "--epochs"), schedule_alias=False,
                   epochs_help="masked retraining epochs after each round (default: 0)")
    schedules = ["oneshot", "iterative"]
    p.add_argument("--prune-schedule", dest="prune_schedule", choices=schedules, default="oneshot",
                   help="oneshot (OMP) or iterative (IMP) pruning (default: %(default)s)")
    add_deprecated_alias(p, "--schedule", "--prune-schedule", dest="prune_schedule", choices=schedules)
    add_distill_args(p)
    p.set_defaults(func=cmd_prune, lr=FINETUNE_LR)


def register_finetune(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="masked retraining of a pruned checkpoint; pruned weights stay zero")
    add_checkpoint_arg(p, nargs="?", help="the pruned checkpoint (not needed with --resume)")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="run folder for last.pt/best.pt/metrics (default: runs/finetune-<CKPT name>)")
    p.add_argument("--resume", metavar="CKPT", default=None, help="continue the run saved in CKPT (last.pt)")
    add_no_progress_arg(p)
    add_model_relocation_arg(p)
    add_data_args(p)
    add_train_args(p, epochs=FINETUNE_EPOCHS)
    add_distill_args(p)
    p.add_argument("--teacher", metavar="CKPT", default=None,
                   help="with --distill: the dense teacher (default: the checkpoint CKPT was pruned from, its meta's "
                        "source)")
    # None = not given: a resumed run keeps its own epoch count unless --epochs extends it
    p.set_defaults(func=cmd_finetune, lr=FINETUNE_LR, epochs=None)
    for action in p._actions:
        if action.dest == "epochs":
            action.help = f"default: {FINETUNE_EPOCHS}; with --resume the run's own count, or extend it to this many"


def add_distill_args(p: argparse.ArgumentParser) -> None:
    """``--distill``, ``--distill-alpha``, ``--distill-temperature`` (fields of TrainConfig)."""
    from prunekit.config import TrainConfig

    defaults = TrainConfig()
    group = p.add_argument_group("recovery")
    group.add_argument("--distill", action="store_true",
                       help="knowledge distillation from the dense starting model while retraining")
    group.add_argument("--distill-alpha", type=number(float, 0, 1, meaning="a weight"), default=defaults.distill_alpha,
                       metavar="A",
                       help="weight of the distillation term, 1 − A on the labels (default: %(default)s)")
    group.add_argument("--distill-temperature", type=number(float, 0, low_open=True, meaning="a temperature"),
                       default=defaults.distill_temperature, metavar="T",
                       help="softmax temperature of the distillation term (default: %(default)s)")


# --- helpers ------------------------------------------------------------------------------------------


def layer_rows(report: dict) -> list[dict]:
    return [{"name": r["name"], "type": r["type"], "shape": "×".join(map(str, r["shape"])), "params": r["params"],
             "sparsity": r["sparsity"], "classifier": "yes" if r["classifier"] else ""} for r in report["layers"]]


def percent_change(before: int, after: int) -> str:
    return f"{before:,} → {after:,} (−{100 * (1 - after / before):.1f}%)" if before else f"{before} → {after}"


# --- commands -----------------------------------------------------------------------------------------


def cmd_layers(args) -> int:
    from prunekit.prune import sparsity_report

    report = sparsity_report(load_model_source(args).model)
    if args.json:
        print_json(report)
        return 0
    print(markdown_table(layer_rows(report)))
    first = report["layers"][0]["name"] if report["layers"] else "features.0"
    print(f"\nweight sparsity {report['overall']:.4f} of {report['params']:,} conv + linear weights "
          f"({WEIGHT_SPARSITY_MEANING}). A ratio file uses these names (e.g. `{first}: 0.5`, `default: 0.8`); "
          "the classifier is pruned only when named.")
    return 0


def prune_config_from(args, model):
    from prunekit.errors import PrunekitError
    from prunekit.prune.allocate import load_ratio_file
    from prunekit.config import make_prune_config
    from prunekit.prune.allocate import resolve_ratios

    if args.strict and args.granularity != "filter":
        raise PrunekitError("--strict checks a structured cut: use it with --granularity filter")
    if args.granularity == "unstructured" and args.criterion not in (None, "l1", "l2"):
        raise PrunekitError(f"--criterion {args.criterion} scores filters; unstructured pruning ranks single "
                            "weights by |w| (drop --criterion or use --granularity filter)")
    if args.granularity == "filter":
        from prunekit.prune.importance import get_criterion

        get_criterion(args.criterion or "l1")  # an unknown name fails here, listing the registered ones
    ratios = load_ratio_file(args.ratios) if args.ratios else None
    config = make_prune_config(
        granularity=args.granularity, sparsity=args.sparsity, ratios=ratios, scope=args.scope,
        criterion=args.criterion or "l1", include_classifier=args.include_classifier, exclude=args.exclude or [],
        latency_target=args.latency_target, round_to=args.round_to,
        schedule=args.prune_schedule, iterations=args.iterations, finetune_epochs=args.epochs,
        rewind_to=args.rewind_to, seed=args.seed, recalibrate_bn=args.recalibrate_bn)
    if ratios is not None and args.granularity == "unstructured":
        resolve_ratios(model, ratios, args.include_classifier)  # fail before loading data
    return config


def cmd_prune(args) -> int:
    import prunekit.paths as paths
    from prunekit.checkpoint import load_checkpoint
    from prunekit.pipeline import run_pruning

    loaded = load_checkpoint(args.checkpoint, model_ref=args.model)
    prune_config = prune_config_from(args, loaded.model)
    train_config = train_config_from(args)
    if args.name:
        paths.checked_name(args.name)  # a path there would write outside --out
    lock_run_folder(args, args.out)  # before the data loads: a second writer of --out fails at once
    data = data_for(args, loaded)
    meta = {**loaded.meta, **data_source(args, loaded.meta).meta(), "source": str(args.checkpoint)}
    print(f"pruning {args.checkpoint} ({prune_config.granularity}, {prune_config.schedule}, "
          f"{1 if prune_config.schedule == 'oneshot' else prune_config.iterations} round(s), "
          f"{prune_config.finetune_epochs} retraining epoch(s) each) on {data.info.name}"
          f"{' (SYNTHETIC)' if data.synthetic else ''}", flush=True)
    result = run_pruning(loaded.model, data, prune_config, train_config, args.out, name=args.name, meta=meta,
                         progress=not args.no_progress, callbacks=[epoch_printer(data)], strict=args.strict)
    print_prune_summary(result)
    before = loaded.meta.get("test_top1")
    warn_if_collapsed(result.test, ("top-1 before pruning", before) if before is not None else None,
                      "the pruned model")
    return 0


def print_prune_summary(result) -> None:
    meta = result.meta
    target = f"; target {result.target:.4f}" if result.target is not None else ""
    if result.filter_sparsity is not None:
        print(f"filter sparsity {result.filter_sparsity:.4f}{target} ({FILTER_SPARSITY_MEANING})")
        print(f"params {percent_change(meta['dense_params'], meta['params'])}; "
              f"MACs {percent_change(meta['dense_macs'], meta['macs'])}")
        print(f"weight sparsity {result.sparsity:.4f} before the filters were removed ({WEIGHT_SPARSITY_MEANING})")
        warning = filter_warning(result.outcome, result.target, result.filter_sparsity)
        if warning:
            print(warning)
        print_cut(result.outcome)
    else:
        from prunekit.prune import sparsity_report

        report = sparsity_report(result.model)
        print(f"weight sparsity {result.sparsity:.4f}: {report['zeros']:,} of {report['params']:,} conv + "
              f"linear weights are zero ({report['overall_without_classifier']:.4f} without the classifier{target})")
        print(f"params {meta['params']:,}, non-zero {meta['nonzero_params']:,}")
    synthetic = " on SYNTHETIC data" if meta.get("synthetic") else ""
    print(f"test top-1 {result.test_top1:.2f}%  top-5 {result.test_top5:.2f}%{synthetic}; saved {result.path}")


def cmd_finetune(args) -> int:
    import prunekit.paths as paths
    from prunekit.checkpoint import load_checkpoint, resume_point
    from prunekit.errors import PrunekitError
    from prunekit.pipeline import finetune, inherited_meta, resumed_config
    from prunekit.prune import sparsity_report

    source = args.resume or args.checkpoint
    if not source:
        raise PrunekitError("name the pruned checkpoint to fine-tune (CKPT), or --resume a run's last.pt")
    loaded = resume_point(source, required=True) if args.resume else load_checkpoint(source, model_ref=args.model)
    if args.resume:
        config = resumed_config(loaded, args.epochs)
        save = Path(args.save or Path(args.resume).parent)
    else:
        args.epochs = FINETUNE_EPOCHS if args.epochs is None else args.epochs
        config = train_config_from(args)
        save = Path(args.save or f"runs/finetune-{Path(args.checkpoint).stem}")
    lock_run_folder(args, save)  # before the data loads: a second writer fails at once
    data = data_for(args, loaded)
    meta = {**inherited_meta(loaded.meta, data), **data_source(args, loaded.meta).meta(),
            "finetuned_from": loaded.meta.get("finetuned_from", str(source)) if args.resume else str(source)}
    before = sparsity_report(loaded.model)["overall"]
    print(f"fine-tuning {source} (weight sparsity {before:.4f}) on {data.info.name}"
          f"{' (SYNTHETIC)' if data.synthetic else ''} for {config.epochs} epochs → {save}",
          flush=True)
    print_time_estimate(loaded.model, data, config, loaded.train_state["epoch"] if args.resume else 0)
    teacher = None
    if config.distill:
        teacher_path = getattr(args, "teacher", None) or loaded.meta.get("source")
        teacher = load_checkpoint(teacher_path).model if teacher_path else None
    out = finetune(loaded.model, data, config, save, resume=loaded.train_state if args.resume else None,
                   meta=meta, progress=not args.no_progress, callbacks=[epoch_printer(data)], teacher=teacher)
    print(f"weight sparsity {out['sparsity']['overall']:.4f} ({WEIGHT_SPARSITY_MEANING}); test top-1 "
          f"{out['test'].top1:.2f}%  top-5 {out['test'].top5:.2f}%{' on SYNTHETIC data' if data.synthetic else ''}; "
          f"saved {paths.last(save)}")
    warn_if_collapsed(out["test"], last_train_top1(out["fit"].history), "the fine-tuned model")
    return 0


def cmd_sparsity(args) -> int:
    from prunekit.binarize import binarized_layers
    from prunekit.checkpoint import load_checkpoint
    from prunekit.prune import sparsity_report

    model = load_checkpoint(args.checkpoint).model
    report, binarized = sparsity_report(model), binarized_layers(model)
    for layer in report["layers"]:
        layer["binarized"] = binarized.get(layer["name"])
    if args.json:
        print_json(report)
        return 0
    print(markdown_table([{**row, "binarized": layer["binarized"] or ""}
                          for row, layer in zip(layer_rows(report), report["layers"])]))
    print(f"\nweight sparsity {report['overall']:.4f}: {report['zeros']:,} of {report['params']:,} conv + linear "
          f"weights are zero ({report['overall_without_classifier']:.4f} without the classifier)")
    return 0
