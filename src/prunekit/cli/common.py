"""Arguments and helpers shared by several subcommands (the same data options everywhere)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prunekit.report.tables import markdown_table  # noqa: F401  (re-exported for the commands)


MODEL_HELP = ("a registered model name (`prunekit models`) or your own model: path/to/file.py:ClassName or "
              "package.module:factory (see README, 'Your own model')")


def add_model_args(parser: argparse.ArgumentParser, default: str | None = None, required: bool = False,
                   help: str = MODEL_HELP) -> None:
    """``--model NAME|REF`` and ``--model-kwargs JSON``: identical for every command that builds a model."""
    parser.add_argument("--model", default=default, required=required, metavar="NAME|REF",
                        help=help + (" (default: %(default)s)" if default else ""))
    parser.add_argument("--model-kwargs", default=None, metavar="JSON",
                        help="constructor arguments of --model as a JSON object, e.g. '{\"width\": 8}'")


def add_model_relocation_arg(parser: argparse.ArgumentParser) -> None:
    """``--model REF`` for commands that read a checkpoint: where a user model's code is now."""
    parser.add_argument("--model", default=None, metavar="REF",
                        help="for a checkpoint of your own model whose file moved: path/to/file.py:ClassName "
                             "(or package.module:factory) to rebuild it from; kwargs and shapes come from CKPT")


def model_from_args(args: argparse.Namespace, num_classes: int | None, extra_kwargs: dict | None = None):
    """A fresh model from ``--model`` and ``--model-kwargs`` (+ ``extra_kwargs``), carrying ``model.arch``."""
    from prunekit.models import parse_model_kwargs, resolve_model

    kwargs = {**parse_model_kwargs(getattr(args, "model_kwargs", None)), **(extra_kwargs or {})}
    return resolve_model(args.model, num_classes, kwargs)


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data``, ``--val-split``, ``--limit-train``: identical for every command that trains or
    evaluates. Unset options take what the checkpoint the command reads remembers (:func:`data_source`), else
    the defaults (cifar10 from $PRUNEKIT_DATA or the cache, no validation split, every image)."""
    group = parser.add_argument_group("data (unset options: what the checkpoint was made with, else the default)")
    group.add_argument("--dataset", default=None, help="cifar10 | cifar100 | synthetic (default: cifar10)")
    group.add_argument("--data", metavar="DIR", default=None,
                       help="folder holding cifar-10-batches-py/ or cifar-100-python/ (or the .tar.gz); "
                            "default: $PRUNEKIT_DATA, else ~/.cache/prunekit (downloaded when online)")
    group.add_argument("--val-split", type=float, default=None, metavar="F",
                       help="fraction of the training set held out for validation, seeded (default: 0)")
    group.add_argument("--limit-train", type=int, default=None, metavar="N",
                       help="use only the first N training images (quick runs; default: all)")


def data_source(args: argparse.Namespace, meta: dict | None = None, seed: int | None = None):
    """The :class:`prunekit.data.DataSource` to use: options given on the command line win, the rest come from
    the checkpoint ``meta`` (its remembered dataset, folder, split and seed), the rest from the defaults.

    A different ``--dataset`` than the checkpoint's drops its remembered folder. Fails in one line when the
    remembered folder is gone and ``--data`` does not name another.
    """
    from prunekit.data import DataSource

    remembered = DataSource.from_meta(meta) if meta else DataSource()
    dataset = getattr(args, "dataset", None) or remembered.dataset
    same_data = dataset == remembered.dataset
    val_split = getattr(args, "val_split", None)
    limit_train = getattr(args, "limit_train", None)
    source = DataSource(dataset=dataset, root=getattr(args, "data", None) or (remembered.root if same_data else None),
                        val_split=remembered.val_split if val_split is None and same_data else (val_split or 0.0),
                        seed=remembered.seed if seed is None else seed,
                        limit_train=remembered.limit_train if limit_train is None and same_data else limit_train)
    if not getattr(args, "data", None):
        source.check_root()
    return source


def data_for(args: argparse.Namespace, meta: dict | None = None, seed: int | None = None):
    """The :class:`DataBundle` of :func:`data_source`, checked against the checkpoint's class count."""
    return data_loader(args, seed)(meta)


def data_loader(args: argparse.Namespace, seed: int | None = None):
    """``meta -> DataBundle`` for commands that read several checkpoints: :func:`data_source` of each, every
    distinct source loaded once; a checkpoint whose class count differs from its data's fails in one line."""
    from prunekit.errors import PrunekitError

    cache = {}

    def load(meta: dict | None):
        source = data_source(args, meta, seed)
        if source not in cache:
            cache[source] = source.load()
        data = cache[source]
        if meta and meta.get("num_classes") and meta["num_classes"] != data.info.num_classes:
            raise PrunekitError(f"the checkpoint has {meta['num_classes']} classes but {source.dataset} has "
                                f"{data.info.num_classes}; pass the dataset it was trained on (--dataset)")
        return data

    return load


def add_deprecated_alias(parser, old: str, new: str, dest: str, **kwargs) -> None:
    """``old`` as a deprecated spelling of ``new``: same ``dest``, prints a one-line notice when used."""

    class DeprecatedAlias(argparse.Action):
        def __call__(self, parser, namespace, values, option_string=None):
            print(f"prunekit: {old} is deprecated, use {new}", file=sys.stderr)
            setattr(namespace, self.dest, values)

    parser.add_argument(old, dest=dest, action=DeprecatedAlias, default=argparse.SUPPRESS,
                        help=f"deprecated alias of {new}", **kwargs)


def add_train_args(parser: argparse.ArgumentParser, epochs: int | None = None,
                   epochs_flags: tuple[str, ...] = ("--epochs",), epochs_help: str | None = None,
                   schedule_alias: bool = True) -> None:
    """Hyper-parameters of :class:`prunekit.config.TrainConfig`; unset flags keep its defaults.

    The lr schedule is ``--lr-schedule``; ``schedule_alias`` keeps the old ``--schedule`` as a deprecated
    alias (``prune`` uses ``--schedule`` for its own pruning schedule). ``epochs_flags``/``epochs_help`` let a
    command describe what its epochs are.
    """
    from prunekit.config import TrainConfig

    defaults = TrainConfig()
    group = parser.add_argument_group("training")
    group.add_argument(*epochs_flags, dest="epochs", type=int, default=epochs,
                       help=epochs_help or f"default: {epochs if epochs is not None else defaults.epochs}; with "
                                           "--resume, a larger number extends the run")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="default: %(default)s")
    group.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate (default: %(default)s)")
    group.add_argument("--momentum", type=float, default=defaults.momentum, help="default: %(default)s")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay, help="default: %(default)s")
    lr_schedules = ["cosine", "step", "constant"]
    group.add_argument("--lr-schedule", dest="schedule", choices=lr_schedules, default=defaults.schedule,
                       help="lr decay per step; step = ×0.1 at 50%% and 75%% (default: %(default)s)")
    if schedule_alias:
        add_deprecated_alias(group, "--schedule", "--lr-schedule", dest="schedule", choices=lr_schedules)
    group.add_argument("--warmup-epochs", type=float, default=defaults.warmup_epochs, help="default: %(default)s")
    group.add_argument("--label-smoothing", type=float, default=defaults.label_smoothing,
                       help="default: %(default)s")
    group.add_argument("--cutout", type=int, default=defaults.cutout, help="cutout side in pixels (default: off)")
    group.add_argument("--seed", type=int, default=defaults.seed, help="default: %(default)s")
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default=defaults.device,
                       help="default: %(default)s (CUDA when present)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--sync-bn", action="store_true",
                       help="SyncBatchNorm across processes under torchrun (CUDA only)")
    group.add_argument("--sparsity-reg", type=float, default=0.0, metavar="LAMBDA",
                       help="network slimming: add λ·Σ|γ| over BN scales to the loss (default: off)")


def train_config_from(args: argparse.Namespace):
    """Build a validated :class:`TrainConfig` from parsed arguments."""
    from prunekit.config import TrainConfig

    fields = TrainConfig.model_fields
    return TrainConfig(**{k: getattr(args, k) for k in fields if getattr(args, k, None) is not None})


def load_data(args: argparse.Namespace, dataset: str | None = None, seed: int = 0):
    """The :class:`DataBundle` the data options describe (``dataset`` overrides ``--dataset``), for a command
    that reads no checkpoint; one that does uses :func:`data_for`."""
    from prunekit.data import DataSource

    return DataSource(dataset or args.dataset, args.data, args.val_split or 0.0, seed,
                      getattr(args, "limit_train", None)).load()


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
