"""Experiment subcommands: run (one YAML → report) and demo (the embedded example)."""

from __future__ import annotations

import argparse

from prunekit.cli.common import add_no_progress_arg, add_out_arg, add_strict_arg


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run an experiment YAML: baseline → prune → fine-tune → compare → report")
    p.add_argument("experiment", metavar="EXPERIMENT.yaml", help="the experiment file (see experiments/)")
    p.add_argument("--quick", action="store_true", help="the file's quick budgets (minutes on a 2-core CPU)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field, e.g. --set data.limit_train=500 (repeatable)")
    p.add_argument("--seeds", default=None, metavar="S1,S2,…",
                   help="run one replicate per seed and summarise mean ± std")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="dataset folder when the file gives none (default: $PRUNEKIT_DATA, cache)")
    add_out_arg(p, metavar="DIR", default="runs", help="parent of the run folders (default: runs)")
    add_strict_arg(p, help="fail (exit 2) before pruning a filter variant whose target, allocated on its source, "
                           "achieves below half of what it asks, naming the ops that kept the channels (as the "
                           "file's `strict: true`)")
    add_no_progress_arg(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("demo", help="a complete small experiment in minutes, ending in an HTML report")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="CIFAR-10 folder (default: $PRUNEKIT_DATA, ~/.cache/prunekit, else download)")
    add_out_arg(p, metavar="DIR", default="runs", help="parent of the run folder (default: runs)")
    p.add_argument("--set", dest="assignments", action="append", default=[], metavar="KEY=VALUE",
                   help="override a field of the demo recipe, e.g. --set baseline.train.epochs=2")
    p.add_argument("--quick", action="store_true",
                   help="a fifth of the work (1,000 images, 5 epochs): about a minute on a quiet 2-core CPU")
    add_no_progress_arg(p)
    p.set_defaults(func=cmd_demo)


def cmd_run(args) -> int:
    from prunekit.experiment import load_experiment
    from prunekit.experiment.seeds import parse_seeds, run_seeds

    experiment = load_experiment(args.experiment, quick=args.quick, assignments=args.assignments)
    if args.strict:
        experiment = experiment.model_copy(update={"strict": True})
    seeds = parse_seeds(args.seeds) if args.seeds else [experiment.seed]
    run_seeds(experiment, seeds, data_root=args.data, out=args.out, progress=not args.no_progress)
    return 0


def cmd_demo(args) -> int:
    from prunekit.experiment.demo import run_demo

    run_demo(args.data, args.out, args.assignments, progress=not args.no_progress, quick=args.quick)
    return 0
