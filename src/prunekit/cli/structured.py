"""Structured-pruning subcommands: ``shrink`` (masked filters → smaller model) and ``prune-channels``."""

from __future__ import annotations

import argparse

from prunekit.cli.common import ANY_INT, FRACTION, POSITIVE_INT, number  # numeric flags checked where parsed
from prunekit.cli.common import add_model_relocation_arg, markdown_table, print_json

INPUT_SIZE = (3, 32, 32)  # CIFAR images
CHECK_BATCH = 8  # random images compared before/after shrinking
TOLERANCE = 1e-4  # max |Δ output| allowed by shrink, relative to max(1, max |output|)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shrink", help="physically remove the filters a masked checkpoint zeroed (output unchanged)",
                       description="For a checkpoint whose filters are zeroed by masks but still present: a round "
                                   "file of `prune --granularity filter` (OUT/<run>/round_K/round.pt) or masks you "
                                   "applied with prunekit's API. The final file of `prune --granularity filter` and "
                                   "of `prune-channels` is already physically small: nothing to shrink there.")
    p.add_argument("checkpoint", metavar="CKPT",
                   help="a masked filter-pruned checkpoint, e.g. OUT/<run>/round_1/round.pt of `prune --granularity "
                        "filter`")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the smaller checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=cmd_shrink)

    from prunekit.config import DEFAULT_SCOPE

    p = sub.add_parser("prune-channels", help="one-shot physical filter pruning, no retraining")
    p.add_argument("checkpoint", metavar="CKPT", help="a prunekit checkpoint")
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--ratio", type=FRACTION, metavar="R", help="fraction of every channel group to remove")
    target.add_argument("--ratios", metavar="FILE",
                        help="YAML of conv name: fraction (`default` allowed); a coupled group (residual "
                             "stream) uses the ratio of its first named conv")
    target.add_argument("--cfg", metavar="64,M,128,...", help="VGG widths per conv (M = max pool)")
    target.add_argument("--macs-target", type=number(float, 0, 1, low_open=True), metavar="F", help="keep at most this fraction of the MACs")
    target.add_argument("--latency-target", type=number(float, 0, 1, low_open=True), metavar="F",
                        help="run in this fraction of the dense model's measured latency: widths chosen on a "
                             "latency table (`prunekit latency`), then measured and corrected until within 5%%")
    p.add_argument("--round-to", type=POSITIVE_INT, default=None, metavar="N",
                   help="with --latency-target: every width a multiple of N (default: the table's measured widths)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1,
                   help="with --latency-target: the batch whose latency is targeted (default: %(default)s)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1,
                   help="with --latency-target: CPU threads while timing (default: %(default)s)")
    p.add_argument("--criterion", default="l1", metavar="NAME",
                   help="any registered criterion (built in: l1 | l2 | bn_scale | random; default: %(default)s)")
    p.add_argument("--scope", choices=["layer", "global"], default=None,
                   help="layer: same fraction per group; global: one ranking normalised per group "
                        f"(default: {DEFAULT_SCOPE['filter']}, as `prune --granularity filter`)")
    p.add_argument("--seed", type=ANY_INT, default=0, help="for --criterion random (default: %(default)s)")
    p.add_argument("--exclude", action="append", default=None, metavar="PATTERN",
                   help="with --ratio: leave this conv (name or glob, repeatable) whole, e.g. features.24")
    add_model_relocation_arg(p)
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the pruned checkpoint")
    p.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    p.set_defaults(func=cmd_prune_channels)


def costs(model) -> dict:
    """Parameters and MACs per image of ``model``."""
    from prunekit.measure import count_macs, count_parameters

    return {"params": count_parameters(model), "macs": count_macs(model, (1, *INPUT_SIZE))}


def cost_rows(before: dict, after: dict) -> list[dict]:
    return [{"metric": key, "before": before[key], "after": after[key], "after/before": after[key] / before[key]}
            for key in before]


def cmd_shrink(args) -> int:
    import torch

    from prunekit.checkpoint import derived_meta, load_checkpoint, save_checkpoint
    from prunekit.errors import PrunekitError
    from prunekit.prune.channels import filter_sparsity, shrink

    loaded = load_checkpoint(args.checkpoint)
    model = loaded.model.eval()
    before, sparsity = costs(model), filter_sparsity(model, model)
    if sparsity == 0:
        raise PrunekitError(nothing_to_shrink(args.checkpoint, loaded.meta))
    batch = torch.randn(CHECK_BATCH, *INPUT_SIZE, generator=torch.Generator().manual_seed(0))
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
    """Why ``shrink`` has no filter to remove in the checkpoint at ``path``, and what to pass instead."""
    if meta.get("filter_sparsity") or meta.get("prune_channels") or meta.get("granularity") == "filter":
        removed = f" (filter sparsity {meta['filter_sparsity']:.4f})" if meta.get("filter_sparsity") else ""
        return (f"{path} has no zeroed filters left: its filters were already removed physically{removed}; "
                "shrink is for masked files, e.g. the round file OUT/<run>/round_1/round.pt of `prune`")
    return (f"{path} has no all-zero filter, so there is nothing to remove; prune filters first (`prunekit prune "
            "--granularity filter` or `prune-channels`)")


def target_kwargs(args) -> dict:
    """The keyword arguments of ``prune_channels`` that ``--ratio/--ratios/--cfg/--macs-target`` give."""
    from prunekit.cli.core import parse_cfg
    from prunekit.prune.allocate import load_ratio_file

    if args.exclude and args.ratio is None:
        from prunekit.errors import PrunekitError

        raise PrunekitError("--exclude goes with --ratio (a ratio file names its layers itself)")
    if args.ratios:
        return {"ratios": load_ratio_file(args.ratios)}
    if args.cfg:
        return {"cfg": parse_cfg(args.cfg)}
    if args.macs_target is not None:
        return {"macs_target": args.macs_target}
    if args.latency_target is not None:
        return {"latency_target": args.latency_target, "round_to": args.round_to}
    return {"ratio": args.ratio, **({"exclude": args.exclude} if args.exclude else {})}


def cmd_prune_channels(args) -> int:
    import copy
    import time

    import torch

    from prunekit.checkpoint import derived_meta, load_checkpoint, save_checkpoint
    from prunekit.masking import make_permanent
    from prunekit.prune.channels import channel_target, filter_sparsity, prune_channels
    from prunekit.prune.report import filter_target_shortfall

    loaded = load_checkpoint(args.checkpoint, model_ref=args.model)
    model = make_permanent(loaded.model.eval())  # masked modules cannot be deep-copied
    original, before = copy.deepcopy(model), costs(model)
    target = target_kwargs(args)
    start = time.perf_counter()
    config = channel_target(criterion=args.criterion, scope=args.scope, seed=args.seed, **target)  # defaults resolved
    latency = None
    if config.latency_target is not None:
        model, latency = prune_latency(model, config, args)
    else:
        prune_channels(model, torch.zeros(1, *INPUT_SIZE), criterion=args.criterion, scope=config.scope,
                       seed=args.seed, **target)
    seconds = time.perf_counter() - start
    after, sparsity = costs(model), filter_sparsity(original, model)
    record = {"criterion": config.criterion, "scope": config.scope, "seed": config.seed, "source": str(args.checkpoint),
              **{k: v for k, v in target.items()}, "filter_sparsity": sparsity, "seconds": seconds,
              **({"latency": latency.as_dict()} if latency else {})}
    meta = derived_meta(loaded.meta)
    save_checkpoint(model, args.out, {**meta, "prune_channels": record, "filter_sparsity": sparsity})
    shortfall = filter_target_shortfall(target.get("ratio"), sparsity)
    if args.json:
        print_json({"out": args.out, **record, "before": before, "after": after,
                    **({"warning": shortfall} if shortfall else {})})
        return 0
    if shortfall:
        print(shortfall)
    print(markdown_table(cost_rows(before, after)))
    if latency:
        print(f"\n{latency_line(latency)}")
    print(f"\nfilter sparsity {sparsity:.4f} (fraction of conv output channels removed); pruned in {seconds:.2f} s, "
          f"not retrained (accuracy will drop until you fine-tune: `prunekit finetune`); saved {args.out}")
    return 0


def prune_latency(model, config, args):
    """(pruned model, LatencyResult) for ``--latency-target``: the table built (or read from the cache) for
    ``--batch-size`` and ``--threads`` on the CPU, then :func:`prunekit.prune.latency.prune_to_latency`."""
    from prunekit.measure.latency import build_latency_table
    from prunekit.prune.latency import prune_to_latency

    table = build_latency_table(model, threads=args.threads, batch_size=args.batch_size)
    return prune_to_latency(model, config.latency_target, table, criterion=config.criterion,
                            round_to=config.round_to, seed=config.seed)


def latency_line(result) -> str:
    """``latency: asked 0.50, predicted 0.49, measured 0.51 of the dense model (1.96× faster; ...)``."""
    c = result.context
    return (f"latency (batch {c['batch_size']}, {c['threads']} thread(s), {c['device']}): asked {result.asked:.2f}, "
            f"predicted {result.predicted:.3f}, measured {result.measured:.3f} of the dense model "
            f"({1 / result.measured:.2f}× faster, {len(result.attempts)} attempt(s)); {result.reason}")
