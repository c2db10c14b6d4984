"""Structured-pruning subcommands: ``shrink`` (masked filters → smaller model) and ``prune-channels``."""

from __future__ import annotations

import argparse

from prunekit.cli.common import (ANY_INT, FRACTION, NON_NEGATIVE_INT, POSITIVE_INT, SHARE, add_checkpoint_arg,
                                 add_criterion_arg, add_data_args, add_json_arg, add_model_source_args, add_out_arg,
                                 add_round_to_arg, add_scope_arg, add_strict_arg, data_for, filter_warning,
                                 load_model_source, markdown_table, parse_cfg, print_cut, print_json, warn_if_collapsed)
from prunekit.images import IMAGE_SHAPE, example_input

RECALIBRATION_BATCHES = 8  # prune-channels' default when the data is known: 30% of a ResNet-32 gets 14% → 73%
CHECK_BATCH = 8  # random images compared before/after shrinking
TOLERANCE = 1e-4  # max |Δ output| allowed by shrink, relative to max(1, max |output|)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shrink", help="physically remove the filters a masked checkpoint zeroed (output unchanged)",
                       description="For a checkpoint whose filters are zeroed by masks but still present: a round "
                                   "file of `prune --granularity filter` (OUT/<run>/round_K/round.pt) or masks you "
                                   "applied with prunekit's API. The final file of `prune --granularity filter` and "
                                   "of `prune-channels` is already physically small: nothing to shrink there.")
    add_checkpoint_arg(p, help="a masked filter-pruned checkpoint, e.g. OUT/<run>/round_1/round.pt of `prune --granularity "
                        "filter`")
    add_out_arg(p, required=True, metavar="FILE", help="where to write the smaller checkpoint")
    add_json_arg(p)
    p.set_defaults(func=cmd_shrink)

    from prunekit.config import DEFAULT_SCOPE

    p = sub.add_parser("prune-channels", help="one-shot physical filter pruning, no retraining")
    add_model_source_args(p)  # CKPT, or --model NAME|REF (timm:resnet18d, torchvision:resnet18) [--weights FILE]
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=FRACTION, metavar="R", help="fraction of every channel group to remove")
    target.add_argument("--ratios", metavar="FILE",
                        help="YAML of conv name: fraction (`default` allowed); a coupled group (residual "
                             "stream) uses the ratio of its first named conv")
    target.add_argument("--cfg", metavar="64,M,128,...", help="VGG widths per conv (M = max pool)")
    target.add_argument("--macs-target", type=SHARE, metavar="F", help="keep at most this fraction of the MACs")
    target.add_argument("--latency-target", type=SHARE, metavar="F",
                        help="run in this fraction of the dense model's measured latency: widths chosen on a "
                             "latency table (`prunekit latency`), then measured and corrected until within 5%%")
    add_round_to_arg(p)
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1,
                   help="with --latency-target: the batch whose latency is targeted (default: %(default)s)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="with --latency-target: CPU threads while timing (default: %(default)s)")
    add_criterion_arg(p)
    add_scope_arg(p, "filter", help="layer: same fraction per group; global: one ranking normalised per group "
                        f"(default: {DEFAULT_SCOPE['filter']}, as `prune --granularity filter`)")
    p.add_argument("--seed", type=ANY_INT, default=0, help="for --criterion random (default: %(default)s)")
    p.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="with --ratio: leave this conv (name or glob, repeatable) whole, e.g. features.24")
    p.add_argument("--recalibrate-bn", type=NON_NEGATIVE_INT, default=None, metavar="N",
                   help="re-estimate BatchNorm statistics on N training batches after pruning; default "
                        f"{RECALIBRATION_BATCHES} when the data is known (the checkpoint remembers its folder, or "
                        "--data/--dataset is given), else 0; 0 skips it. With data, top-1 before/after is printed")
    add_strict_arg(p)
    add_out_arg(p, required=True, metavar="FILE", help="where to write the pruned checkpoint")
    add_json_arg(p)
    add_data_args(p)
    p.set_defaults(func=cmd_prune_channels)


def costs(model) -> dict:
    """Parameters and MACs per image of ``model``."""
    from prunekit.measure import count_macs, count_parameters

    return {"params": count_parameters(model), "macs": count_macs(model)}


def cost_rows(before: dict, after: dict) -> list[dict]:
    return [{"metric": key, "before": before[key], "after": after[key], "after/before": after[key] / before[key]}
            for key in before]


def cmd_shrink(args) -> int:
    import torch

    from prunekit.checkpoint import derived_meta, load_checkpoint, save_checkpoint
    from prunekit.errors import PrunekitError
    from prunekit.prune.channels import filter_sparsity, shrink
    from prunekit.prune.sparsity import sparsity_report

    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    sparsity = filter_sparsity(model, model)
    if sparsity == 0:  # a notice, not an error: the file is already as small as shrink can make it
        notice = nothing_to_shrink(args.checkpoint, loaded.meta)
        print_json({"out": None, "filter_sparsity": 0.0, "notice": notice}) if args.json else print(notice)
        return 0
    before = costs(model)
    dense_count = sparsity_report(model)["params"]  # masked, not yet removed: the dense model's weight count
    batch = torch.randn(CHECK_BATCH, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(batch)
        shrink(model, batch[:1])
        difference = float((model(batch) - reference).abs().max())
    allowed = TOLERANCE * max(1.0, float(reference.abs().max()))
    if difference > allowed:
        raise PrunekitError(f"shrinking changed the output by {difference:.3g} (allowed {allowed:.3g}); "
                            "this is a prunekit bug, please report it with the checkpoint")
    after = costs(model)
    meta = derived_meta(loaded.meta, keeps_outputs=True)  # checked above: the outputs are unchanged
    meta.setdefault("dense_weights", dense_count)
    meta.update(shrunk_from=str(args.checkpoint), filter_sparsity=sparsity, max_output_change=difference)
    save_checkpoint(model, args.out, meta)
    result = {"out": args.out, "filter_sparsity": sparsity, "max_output_change": difference,
              "before": before, "after": after}
    if args.json:
        print_json(result)
        return 0
    print(markdown_table(cost_rows(before, after)))
    if latency:
        print(f"\n{latency_line(latency)}")
    print(f"\nfilter sparsity {sparsity:.4f} (fraction of conv output channels removed, over all prunable conv "
          f"layers); output unchanged on {CHECK_BATCH} random images (max |Δ| = {difference:.2e}); saved {args.out}")
    return 0


def nothing_to_shrink(path, meta: dict) -> str:
    """The notice for a checkpoint at ``path`` with no filter to remove: why, and what to pass instead (no file
    is written)."""
    if meta.get("filter_sparsity") or meta.get("prune_channels") or meta.get("granularity") == "filter":
        removed = f" (filter sparsity {meta['filter_sparsity']:.4f})" if meta.get("filter_sparsity") else ""
        return (f"nothing to shrink: {path} is already small, its filters were removed physically{removed}; "
                "use it as it is (no file written). shrink is for masked files, e.g. the round file "
                "OUT/<run>/round_1/round.pt of `prune`")
    return (f"nothing to shrink: {path} has no all-zero filter (no file written); prune filters first (`prunekit "
            "prune --granularity filter` or `prune-channels`)")


def target_kwargs(args) -> dict:
    """The keyword arguments of ``prune_channels`` that ``--ratio/--ratios/--cfg/--macs-target`` give."""
    from prunekit.prune.allocate import load_ratio_file

    if args.exclude and args.ratio is None:
        from prunekit.errors import PrunekitError

        raise PrunekitError("--exclude goes with --ratio (a ratio file names its layers itself)")
    if args.ratios:
        return {"ratios": load_ratio_file(args.ratios)}
    if args.cfg:
        return {"cfg": parse_cfg(args.cfg)}
    if args.macs_target is not None:
        return {"macs_target": args.macs_target, "round_to": args.round_to}
    if args.latency_target is not None:
        return {"latency_target": args.latency_target, "round_to": args.round_to}
    return {"ratio": args.ratio, **({"exclude": args.exclude} if args.exclude else {})}


def cmd_prune_channels(args) -> int:
    import copy
    import time

    import torch

    from prunekit.checkpoint import derived_meta, save_checkpoint
    from prunekit.masking import make_permanent
    from prunekit.prune.channels import channel_target, filter_sparsity, plan_channels, prune_channels
    from prunekit.prune.sparsity import sparsity_report

    loaded = load_model_source(args)
    model = make_permanent(loaded.model.eval())  # masked modules cannot be deep-copied
    original, before = copy.deepcopy(model), costs(model)
    target = target_kwargs(args)
    data = known_data(args, loaded)
    top1_before = test_metrics(model, data) if data is not None else None
    start = time.perf_counter()
    config = channel_target(criterion=args.criterion, scope=args.scope, seed=args.seed, **target)  # defaults resolved
    latency, outcome = None, None
    if config.latency_target is not None:
        model, latency = prune_latency(model, config, args, data)
    else:
        example = example_input()
        plan = plan_channels(model, example, criterion=args.criterion, scope=config.scope, seed=args.seed, **target)
        outcome = plan.outcome
        if args.strict:
            outcome.require("--strict")
        prune_channels(model, example, plan=plan)
    seconds = time.perf_counter() - start
    after, sparsity = costs(model), filter_sparsity(original, model)
    recalibrated = recalibrate(model, data, args)
    top1_after = test_metrics(model, data) if data is not None else None
    record = {"criterion": config.criterion, "scope": config.scope, "seed": config.seed,
              "source": str(args.checkpoint or args.model), **{k: v for k, v in target.items()},
              "filter_sparsity": sparsity, "seconds": seconds, "bn_recalibration_batches": recalibrated,
              **({"latency": latency.as_dict()} if latency else {})}
    cut = outcome.as_record() if outcome else None
    measured = {} if top1_after is None else top1_after.as_test_meta()
    meta = derived_meta(loaded.meta)
    meta.setdefault("dense_weights", sparsity_report(original)["params"])  # the weight-sparsity denominator
    save_checkpoint(model, args.out, {**meta, "prune_channels": record, "filter_sparsity": sparsity, **measured,
                                      **({"cut": cut} if cut else {})})
    warning = filter_warning(outcome, target.get("ratio"), sparsity)
    accuracy = {} if top1_after is None else {"top1_before": top1_before.top1, "top1_after": top1_after.top1}
    if args.json:
        print_json({"out": args.out, **record, **(cut or {}), "before": before, "after": after, **accuracy,
                    **({"warning": warning} if warning else {})})
    else:
        print_prune_channels_summary(args, before, after, sparsity, seconds, (warning, outcome, latency),
                                     recalibrated, (top1_before, top1_after) if data is not None else None, data)
    if top1_after is not None:
        warn_if_collapsed(top1_after, ("top-1 before pruning", top1_before.top1), "the pruned model")
    return 0


def print_prune_channels_summary(args, before: dict, after: dict, sparsity: float, seconds: float,
                                 shortfall: tuple, recalibrated: int, accuracy, data) -> None:
    """``shortfall``: (the filter-target warning line (:func:`prunekit.cli.common.filter_warning`) or None, the
    plan's :class:`PlanOutcome` or None, the :class:`prunekit.prune.latency.LatencyResult` of a latency target or
    None)."""
    line, outcome, latency = shortfall
    if line:
        print(line)
    print(markdown_table(cost_rows(before, after)))
    if outcome:
        print()
        print_cut(outcome)
    if latency:
        print(f"\n{latency_line(latency)}")
    bn = f"BN statistics re-estimated on {recalibrated} training batch(es), " if recalibrated else ""
    print(f"\nfilter sparsity {sparsity:.4f} (fraction of conv output channels removed); pruned in {seconds:.2f} s, "
          f"{bn}not retrained (accuracy will drop until you fine-tune: `prunekit finetune`); saved {args.out}")
    if accuracy is not None:
        synthetic = "SYNTHETIC " if data.synthetic else ""
        print(f"test top-1 {accuracy[0].top1:.2f}% → {accuracy[1].top1:.2f}% on {accuracy[1].images} {synthetic}"
              f"images{' (BN re-estimated)' if recalibrated else ' (no BN re-estimation: --recalibrate-bn 0)'}")


def known_data(args, loaded):
    """The checkpoint's data, normalised as it was trained, when it is known (the checkpoint remembers its
    folder or is synthetic, or ``--data``/``--dataset`` name one) or ``--recalibrate-bn N > 0`` asks for it;
    else None (``--recalibrate-bn`` then defaults to 0 and no accuracy is measured). A remembered folder
    that is gone counts as unknown, with a note on stderr, unless the data was asked for."""
    import sys
    from pathlib import Path

    from prunekit.pipeline import with_normalisation

    meta = loaded.meta
    asked = args.data or args.dataset or args.recalibrate_bn
    remembered = meta.get("data_root") or meta.get("dataset") == "synthetic"
    if not asked and meta.get("data_root") and not Path(meta["data_root"]).exists():
        print(f"note: the data {args.checkpoint} was made with is no longer at {meta['data_root']}: no BN "
              "re-estimation and no accuracy (pass --data DIR to have both)", file=sys.stderr)
        return None
    if not (asked or remembered):
        return None
    return with_normalisation(data_for(args, loaded), meta)


def recalibrate(model, data, args) -> int:
    """Re-estimate ``model``'s BN statistics on ``--recalibrate-bn`` training batches (default
    :data:`RECALIBRATION_BATCHES` when ``data`` is known); returns the batches used (0: untouched)."""
    from prunekit.train.bn import recalibrate_bn
    from prunekit.train.loop import sample_batches

    if data is None:
        return 0
    count = RECALIBRATION_BATCHES if args.recalibrate_bn is None else args.recalibrate_bn
    return recalibrate_bn(model, sample_batches(data, count, seed=args.seed))


def test_metrics(model, data):
    from prunekit.evaluation import evaluate_split

    return evaluate_split(model, data, "test")


def prune_latency(model, config, args, data=None):
    """(pruned model, LatencyResult) for ``--latency-target``: the table built (or read from the cache) for
    ``--batch-size`` and ``--threads`` on the CPU, then :func:`prunekit.prune.latency.prune_to_latency`; with
    ``data`` known, widths are valued by the loss measured on training batches, the ones ``prune
    --latency-target`` reads (:func:`prunekit.pipeline.pruning.scoring_batches`)."""
    import torch

    from prunekit.measure.latency import build_latency_table
    from prunekit.pipeline.pruning import scoring_batches
    from prunekit.prune.latency import prune_to_latency

    table = build_latency_table(model, threads=args.threads, batch_size=args.batch_size)
    batches = None if data is None else scoring_batches(data, config, torch.device("cpu"))
    return prune_to_latency(model, config.latency_target, table, criterion=config.criterion,
                            round_to=config.round_to, seed=config.seed, batches=batches)


def latency_line(result) -> str:
    """``latency: asked 0.50, predicted 0.49, measured 0.51 of the dense model (1.96× faster; ...)``."""
    c = result.context
    return (f"latency (eager runtime, batch {c['batch_size']}, {c['threads']} thread(s), {c['device']}): asked {result.asked:.2f}, "
            f"predicted {result.predicted:.3f}, measured {result.measured:.3f} of the dense model "
            f"({1 / result.measured:.2f}× faster, {len(result.attempts)} attempt(s)); {result.reason}")
