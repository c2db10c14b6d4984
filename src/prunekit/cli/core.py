"""Model subcommands: models, train, evaluate, convert, info, profile, latency."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from prunekit.cli.common import (NON_NEGATIVE_INT, POSITIVE_INT, add_checkpoint_arg, add_count_arg, add_data_args,
                                 add_device_arg, add_json_arg, add_model_args, add_model_relocation_arg,
                                 add_model_source_args, add_no_progress_arg, add_out_arg, add_rename_arg, add_split_arg,
                                 add_train_args, data_for, data_source, epoch_printer, foreign_from_args,
                                 last_train_top1, load_model_source, lock_run_folder, markdown_table, model_from_args,
                                 print_json, print_time_estimate, train_config_from, warn_if_collapsed)

if TYPE_CHECKING:  # heavy imports stay inside the commands, so --help is instant
    from torch import nn

    from prunekit.config import TrainConfig
    from prunekit.data import DataBundle
    from prunekit.train import Callback

def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--num-classes", type=POSITIVE_INT, default=10,
                   help="classes the parameter counts assume (default: %(default)s)")
    add_json_arg(p)
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("train", help="train a model from scratch (or --resume a run)")
    add_model_args(p, default="vgg11")
    p.add_argument("--save", metavar="DIR", default=None,
                   help="run folder for last.pt/best.pt/metrics (default: runs/MODEL-DATASET-seedS)")
    p.add_argument("--resume", metavar="CKPT", default=None, help="continue the run saved in CKPT (last.pt)")
    p.add_argument("--save-every-epoch", action="store_true",
                   help="also keep epoch_N.pt (e.g. for lottery-ticket rewinding)")
    add_no_progress_arg(p)
    add_data_args(p)
    add_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy and loss of a checkpoint or foreign weights")
    add_model_source_args(p)
    add_data_args(p)
    add_split_arg(p, help="split to measure; val = the --val-split hold-out (default: %(default)s)")
    p.add_argument("--normalize", default=None, metavar="NAME|MEAN,STD",
                   help="input normalisation: dataset (default for foreign weights), cifar10, cifar10-common, "
                        "cifar100, imagenet, or six numbers "
                        "'m1,m2,m3,s1,s2,s3'; a prunekit checkpoint uses its own")
    add_device_arg(p, help="default: %(default)s (CUDA when present)")
    add_json_arg(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("convert", help="make a prunekit checkpoint from foreign weights (e.g. public pretrained)")
    add_model_args(p, required=True, help="the model the weights belong to: a registered name, or "
                                           "path/to/file.py:ClassName or package.module:factory")
    p.add_argument("--weights", metavar="FILE", required=True, help="state dict file ({'state_dict': …} and "
                                                                    "'module.' prefixes handled)")
    add_rename_arg(p)
    p.add_argument("--dataset", default="cifar10", help="dataset the weights were trained on (default: %(default)s)")
    p.add_argument("--normalize", default=None, metavar="NAME|MEAN,STD",
                   help="input normalisation the weights expect: dataset (default), cifar10, cifar10-common (std "
                        "0.2023,0.1994,0.2010), cifar100, imagenet, or six numbers m1,m2,m3,s1,s2,s3")
    add_out_arg(p, metavar="CKPT", required=True, help="where to write the prunekit checkpoint")
    p.add_argument("--evaluate", action="store_true",
                   help="also measure the test accuracy (data from --data) and record it in the checkpoint")
    p.add_argument("--data", metavar="DIR", default=None,
                   help="the dataset folder (for --evaluate; recorded so later commands find the data)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("info", help="what a checkpoint holds: architecture, masks, metadata")
    add_checkpoint_arg(p)
    add_model_relocation_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("profile", help="params, non-zero params, MACs, size, memory, latency")
    add_model_source_args(p)
    add_device_arg(p, choices=("cpu", "cuda"), default="cpu", help="where to measure (default: %(default)s)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=64, help="batch for the throughput figure")
    p.add_argument("--repeats", type=POSITIVE_INT, default=50, help="timed runs at batch 1 (median reported)")
    p.add_argument("--threads", type=NON_NEGATIVE_INT, default=1, help="CPU threads while timing (default: %(default)s: "
                   "single-threaded, steady on a busy machine; 0: torch's default)")
    p.add_argument("--no-timing", action="store_true", help="skip latency and throughput")
    p.add_argument("--runtime", default="eager", help="measure memory and time of the model as this runtime runs "
                   "it: {runtimes} (sparse: sparse kernels where they measure faster, per layer; default: %(default)s)")
    add_count_arg(p)
    add_json_arg(p)
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("latency", help="per-layer latency table at a grid of widths (cached), with its steps",
                       description="Measure how long every Conv2d/Linear of the model takes at a grid of widths on "
                                   "this device (what --latency-target prunes with). Cached per layer shape under "
                                   "$PRUNEKIT_CACHE/latency (default ~/.cache/prunekit/latency), so a second run "
                                   "only re-times the whole model.")
    add_model_source_args(p)
    add_device_arg(p, choices=("cpu", "cuda"), default="cpu", help="where to measure (default: %(default)s)")
    p.add_argument("--threads", type=POSITIVE_INT, default=1, help="CPU threads while timing (default: %(default)s)")
    p.add_argument("--batch-size", type=POSITIVE_INT, default=1, help="images per timed batch (default: %(default)s)")
    add_json_arg(p, help="print the whole table as JSON instead")
    p.set_defaults(func=cmd_latency)


def cmd_models(args) -> int:
    from prunekit.measure import count_parameters
    from prunekit.models import create_model, list_models, model_spec

    rows = []
    for name in list_models():
        spec = model_spec(name)
        rows.append({"name": name, "family": spec.family,
                     "params": count_parameters(create_model(name, num_classes=args.num_classes)),
                     "description": spec.description})
    print_json(rows) if args.json else print(markdown_table(rows))
    return 0


def cmd_train(args) -> int:
    import prunekit.paths as paths
    from prunekit.pipeline import train_model
    from prunekit.train.distributed import is_main_process

    setup = train_setup(args)
    if is_main_process():
        print_train_start(setup)
    trained = train_model(setup.model, setup.data, setup.config, setup.save, resume=setup.resume_state,
                          meta=setup.meta, callbacks=setup.callbacks, progress=not args.no_progress)
    if trained.test is None:  # not the main process of a distributed run
        return 0
    test, data = trained.test, setup.data
    print(f"test top-1 {test.top1:.2f}%  top-5 {test.top5:.2f}%  loss {test.loss:.4f} on {test.images} "
          f"{'SYNTHETIC ' if data.synthetic else ''}images; "
          f"{trained.fit.seconds:.0f} s; saved {paths.last(setup.save)}")
    warn_if_collapsed(test, last_train_top1(trained.fit.history), "the trained model")
    return 0


@dataclass
class TrainSetup:
    """What ``prunekit train``'s options resolve to: the model (fresh or resumed), its data and config, the
    run folder, the resumed train state (or None), the run's meta and the epoch callbacks."""

    model: nn.Module
    data: DataBundle
    config: TrainConfig
    save: Path
    resume_state: dict | None
    meta: dict
    callbacks: list[Callback]
    dataset: str  # the dataset's name as the user gave it


def train_setup(args) -> TrainSetup:
    """Resolve ``prunekit train``'s options: resume ``--resume`` or start a fresh run (seeded before the model
    is built). Side effect: locks the run folder before the data loads."""
    from prunekit.checkpoint import resume_point
    from prunekit.pipeline import data_meta, resumed_config
    from prunekit.train.callbacks import EpochSnapshots
    from prunekit.train.loop import seed_everything

    resume_state, remembered, model = None, None, None
    if args.resume:
        loaded = resume_point(args.resume, required=True)
        model, resume_state, remembered = loaded.model, loaded.train_state, loaded.meta
        config = resumed_config(loaded, args.epochs)
        save = Path(args.save or Path(args.resume).parent)
    else:
        config = train_config_from(args)
        label = args.model.rpartition(":")[2]  # a user model's class or factory name
        save = Path(args.save or f"runs/{label}-{args.dataset or 'cifar10'}-seed{config.seed}")
    seed = (remembered or {}).get("data_seed", config.seed)  # the split seed of the run (older runs: its seed)
    source = data_source(args, remembered, seed)
    lock_run_folder(args, save)  # before the data loads: a second writer of the folder fails at once
    data = data_for(args, remembered, seed)
    if model is None:
        seed_everything(config.seed)  # before the model exists: its initialisation is part of the run
        model = model_from_args(args, data.info.num_classes)
    # the data source (dataset, folder, split, split seed, limit) is what later commands redraw exactly
    meta = {**source.meta(), "seed": config.seed, **data_meta(data)}
    callbacks = [epoch_printer(data)] + ([EpochSnapshots(model, save, meta)] if args.save_every_epoch else [])
    return TrainSetup(model, data, config, save, resume_state, meta, callbacks, source.dataset)


def print_train_start(setup: TrainSetup) -> None:
    """The run's first lines: what trains on what, where, how; then the time estimate."""
    from prunekit.models import arch_label
    from prunekit.train.distributed import requested_world_size
    from prunekit.train.loop import resolve_device

    model, data, config = setup.model, setup.data, setup.config
    world_size = requested_world_size()
    print(f"training {arch_label(model.arch)} on {setup.dataset} ({len(data.train[1])} images"
          f"{', SYNTHETIC' if data.synthetic else ''}) for {config.epochs} epochs on "
          f"{resolve_device(config.device)} × {world_size} process(es): effective batch {config.batch_size} "
          f"({config.batch_size // world_size} per process), peak lr {config.lr} → {setup.save}")
    print_time_estimate(model, data, config, setup.resume_state["epoch"] if setup.resume_state else 0)


def cmd_evaluate(args) -> int:
    from prunekit.data.normalisation import input_normalisation
    from prunekit.evaluation import evaluate_split
    from prunekit.train.loop import resolve_device

    loaded = load_model_source(args)
    data = data_for(args, loaded)  # the run's own data and split unless options say otherwise
    dataset = data.info.name
    mean, std = input_normalisation(loaded.meta, data.info, args.normalize)
    metrics = evaluate_split(loaded.model, data, args.split, mean, std, resolve_device(args.device))
    result = {"source": str(loaded.path or args.model), "dataset": dataset, "split": args.split,
              "synthetic": data.synthetic, **metrics.as_dict()}
    if args.json:
        print_json(result)
    else:
        print(f"{result['source']} on {dataset}{' (SYNTHETIC)' if data.synthetic else ''} {args.split} "
              f"({metrics.images} images): "
              f"top-1 {metrics.top1:.2f}%  top-5 {metrics.top5:.2f}%  loss {metrics.loss:.4f}")
        if not loaded.meta.get("mean") and args.normalize is None:
            print(f"hint: these weights were fed inputs normalised with {dataset}'s mean/std; if they were trained "
                  "with another (akamaster's CIFAR ResNets use ImageNet's), pass --normalize imagenet")
    warn_if_collapsed(metrics)
    return 0


def cmd_convert(args) -> int:
    from prunekit.checkpoint import save_checkpoint
    from prunekit.data import DATASETS
    from prunekit.data.normalisation import parse_normalisation
    from prunekit.errors import PrunekitError

    if args.dataset not in DATASETS:
        raise PrunekitError(f"--dataset {args.dataset!r}: weights can be converted for {', '.join(DATASETS)}")
    info = DATASETS[args.dataset]
    mean, std = parse_normalisation(args.normalize, info)
    model = foreign_from_args(args, info.num_classes).model
    meta = {"dataset": args.dataset, "num_classes": info.num_classes, "mean": list(mean), "std": list(std),
            "weights": str(args.weights)}
    if args.evaluate or args.data:
        meta.update(data_source(args).meta())  # later commands evaluate on the same data
    if args.evaluate:
        from prunekit.evaluation import evaluate_split

        data = data_for(args, meta)
        test = evaluate_split(model, data, "test", mean, std)
        meta.update(test.as_test_meta())
        print(f"test top-1 {test.top1:.2f}%  top-5 {test.top5:.2f}% on {test.images} images")
        warn_if_other_normalisation_scores_higher(model, data, mean, std, test.top1)
    path = save_checkpoint(model, args.out, meta)
    print(f"{args.weights} → {path} ({args.model}, {args.dataset}, mean {mean}, std {std})")
    return 0


def warn_if_other_normalisation_scores_higher(model, data, mean, std, top1: float) -> None:
    """Evaluate ``model`` under every named normalisation and warn on stderr when one scores clearly (more than 2
    points top-1) higher than the chosen ``(mean, std)``: the weights were probably trained with it."""
    from prunekit.data.normalisation import NORMALISATIONS, better_normalisation, normalisation_name
    from prunekit.evaluation import evaluate_split

    chosen = normalisation_name(mean, std) or "the chosen normalisation"
    scores = {chosen: top1}
    for name, (m, s) in NORMALISATIONS.items():
        if name != chosen:
            scores[name] = evaluate_split(model, data, "test", m, s).top1
    better = better_normalisation(scores, chosen)
    if better:
        print(f"warning: --normalize {better} scores {scores[better]:.2f}% top-1 on these {data.info.name} images, "
              f"{chosen} {top1:.2f}%: the weights were probably trained with {better}; convert again with "
              f"--normalize {better}", file=sys.stderr)


def cmd_info(args) -> int:
    from prunekit.binarize import binarization_spec
    from prunekit.checkpoint import load_checkpoint
    from prunekit.measure import count_nonzero_parameters, count_parameters
    from prunekit.masking import sparsity_of
    from prunekit.models import arch_label

    loaded = load_checkpoint(args.checkpoint, model_ref=args.model)
    meta = {k: v for k, v in loaded.meta.items() if k != "history"}
    info = {
        "file": str(args.checkpoint),
        "file_bytes": Path(args.checkpoint).stat().st_size,
        "model": arch_label(loaded.arch),
        "kwargs": loaded.arch.get("kwargs") if loaded.arch else None,
        "params": count_parameters(loaded.model),
        "nonzero_params": count_nonzero_parameters(loaded.model),
        "masked_tensors": len(loaded.masks),
        "mask_sparsity": sparsity_of(loaded.masks),
        "binarized": binarization_spec(loaded.model),
        "epochs_in_history": len(loaded.meta.get("history", [])),
        "resumable": loaded.train_state is not None,
        "meta": meta,
    }
    if args.json:
        print_json(info)
    else:
        for key, value in info.items():
            if key != "meta":
                print(f"{key:>18}: {value}")
        for key, value in meta.items():
            print(f"{'meta.' + key:>18}: {value}")
    return 0


def usable_runtime(name: str, device: str):
    """The registered runtime ``name``, checked to run here on ``device``; else a one-line PrunekitError."""
    from prunekit.errors import PrunekitError
    from prunekit.runtime import get_runtime

    runtime = get_runtime(name)
    reason = runtime.unavailable(device)
    if reason:
        fix = f"; use --device {runtime.devices[0]}" if device not in runtime.devices else ""
        raise PrunekitError(f"runtime {name!r} cannot run here: {reason}{fix}")
    return runtime


def cmd_profile(args) -> int:
    from prunekit.measure import profile

    runtime = usable_runtime(args.runtime, args.device)
    loaded = load_model_source(args)
    result = profile(loaded.model, device=args.device, checkpoint_path=args.checkpoint,
                     timing=not args.no_timing, batch_size=args.batch_size, repeats=args.repeats,
                     threads=args.threads or None, count=args.count,
                     runtime=runtime)
    if args.json:
        print_json(result.as_dict())
        return 0
    rows = [{"metric": k, "value": v} for k, v in result.as_dict().items()]
    print(markdown_table(rows))
    print("\nMACs: multiply-accumulates per image of conv and linear layers (torch.utils.flop_counter / 2). "
          f"Latency: median of repeated runs after warm-up, batch 1, per image, {result.threads} thread(s).")
    from prunekit.measure import MachineLoad

    if result.machine and MachineLoad(**result.machine).busy(result.threads):
        print(f"WARNING machine busy while timing ({MachineLoad(**result.machine).describe()}): latency is "
              "longer and noisier than on a quiet machine")
    if result.noise:
        print(f"WARNING latency {result.noise}")
    return 0


def cmd_latency(args) -> int:
    from prunekit.measure.latency import LAYER_REPEATS, STEP_GAIN, build_latency_table, cache_folder
    from prunekit.train.loop import resolve_device

    loaded = load_model_source(args)
    device = str(resolve_device(args.device))
    table = build_latency_table(loaded.model, device, args.threads, args.batch_size)
    if args.json:
        print_json(table.as_dict())
        return 0
    rows = [{"layers": r["layers"], "count": r["count"], "shape": r["shape"], "ms full": f"{r['full_ms']:.4f}",
             "ms half width": f"{r['half_ms']:.4f}", "faster than the width below": r["steps"]} for r in table.rows()]
    print(markdown_table(rows))
    layers = table.dense_ms - table.overhead_ms
    c = table.context
    print(f"\nwhole model {table.dense_ms:.3f} ms per batch of {c['batch_size']} (as the eager runtime "
          f"prepares it: prunekit.inference) on {c['hardware']} ({c['device']}, "
          f"{c['threads']} thread(s), torch {c['torch']}): tabled layers {layers:.3f} ms, everything else "
          f"{table.overhead_ms:.3f} ms. Layer times: median of {LAYER_REPEATS} runs of the layer alone at each "
          f"width; 'faster than the width below': output widths (full input) at least {100 * STEP_GAIN:.0f}% "
          f"faster than the next "
          f"narrower measured width. {len(table.curves)} layer shapes, {table.cached} from the cache "
          f"({cache_folder()}); built in {table.build_s:.1f} s.")
    return 0
