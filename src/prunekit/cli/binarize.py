"""The ``binarize`` subcommand: 1-bit weights (BWN or BinaryConnect) fine-tuned with the straight-through
estimator in the ordinary training loop."""

from __future__ import annotations

import argparse

from prunekit.cli.common import (add_checkpoint_arg, add_data_args, add_model_relocation_arg, add_no_progress_arg,
                                 add_out_arg, add_train_args, data_for, data_source, epoch_printer, lock_run_folder,
                                 train_config_from)
from prunekit.config import FINETUNE_LR


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("binarize", help="binarize conv/linear weights (±α per channel or ±1) and fine-tune with STE",
                       description="Binarize CKPT's convs and linears (BWN: ±α per output channel, α = mean |W|; "
                                   "BinaryConnect: ±1), fine-tune with latent fp32 weights and the straight-through "
                                   "estimator, save OUT/Bin_<method>_acc_<top-1>.pt. A pruned (masked) model stays "
                                   "masked: pruned weights stay 0, the rest ±α. BN and biases stay fp32.")
    add_checkpoint_arg(p, help="a prunekit checkpoint (dense or pruned)")
    p.add_argument("--method", choices=["bwn", "binaryconnect"], default="bwn",
                   help="bwn: ±α per output channel (α = mean |W| of the filter); binaryconnect: ±1 "
                        "(default: %(default)s)")
    p.add_argument("--layers", metavar="PATTERNS", default=None,
                   help="comma-separated fnmatch patterns of conv/linear names, e.g. 'layer2.*,layer3.*' "
                        "(default: all; `prunekit layers CKPT` lists names)")
    p.add_argument("--keep-first-last", action=argparse.BooleanOptionalAction, default=True,
                   help="keep the first conv and the classifier fp32 (default: on)")
    p.add_argument("--activations", choices=["fp32", "sign"], default="fp32",
                   help="sign: binarize the inputs of binarized layers too (XNOR-style, the harder setting; "
                        "much larger accuracy loss) (default: %(default)s)")
    p.add_argument("--name", default=None, help="file name of the result (default: from method and accuracy)")
    add_out_arg(p, metavar="DIR", required=True, help="folder for the result and the fine-tuning run")
    add_no_progress_arg(p)
    add_model_relocation_arg(p)
    add_data_args(p)
    add_train_args(p, epochs=0, epochs_flags=("--finetune-epochs", "--epochs"),
                   epochs_help="STE fine-tuning epochs after binarizing (default: 0)")
    p.set_defaults(func=cmd_binarize, lr=FINETUNE_LR)


def cmd_binarize(args) -> int:
    import prunekit.paths as paths
    from prunekit.binarize import BinarizeConfig, binarized_layers
    from prunekit.pipeline import run_binarization
    from prunekit.checkpoint import load_checkpoint
    from prunekit.errors import PrunekitError

    if args.epochs < 0:
        raise PrunekitError("--finetune-epochs must be 0 or more")
    loaded = load_checkpoint(args.checkpoint, model_ref=args.model)
    if binarized_layers(loaded.model):
        raise PrunekitError(f"{args.checkpoint} is binarized already; fine-tune it with `prunekit finetune`")
    config = BinarizeConfig(method=args.method, keep_first_last=args.keep_first_last, activations=args.activations,
                            finetune_epochs=args.epochs,
                            layers=[p.strip() for p in args.layers.split(",") if p.strip()] if args.layers else None)
    if args.name:
        paths.checked_name(args.name)  # a path there would write outside --out
    lock_run_folder(args, args.out)  # before the data loads: a second writer of --out fails at once
    data = data_for(args, loaded)
    meta = {**loaded.meta, **data_source(args, loaded.meta).meta(), "source": str(args.checkpoint)}
    print(f"binarizing {args.checkpoint} ({config.method}, activations {config.activations}) and fine-tuning "
          f"{config.finetune_epochs} epoch(s) on {data.info.name}{' (SYNTHETIC)' if data.synthetic else ''}", flush=True)
    result = run_binarization(loaded.model, data, config, train_config_from(args), args.out, name=args.name,
                              meta=meta, progress=not args.no_progress, callbacks=[epoch_printer(data)])
    print(f"binarized {len(result.layers)} layer(s) ({result.layers[0]} … {result.layers[-1]}); first conv and "
          f"classifier {'kept fp32' if config.keep_first_last else 'binarized if selected'}")
    print(f"test top-1: fp32 {result.fp32_top1:.2f}% → binarized {result.binarized_top1:.2f}% → after "
          f"{config.finetune_epochs} STE epoch(s) {result.test_top1:.2f}%; saved {result.path}")
    return 0
