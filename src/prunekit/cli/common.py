"""Arguments and helpers shared by several subcommands: one builder per flag that several commands take
(``--out``, ``--json``, ``--no-progress``, ``CKPT``, the model, data and training options), the model source
(a checkpoint or ``--model``) and the per-epoch printer."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Callable

from prunekit.report.tables import markdown_table  # noqa: F401  (re-exported for the commands)


def _criteria() -> list[str]:
    from prunekit.prune.importance import CRITERIA

    return list(CRITERIA)


def _conventions() -> list[str]:
    from prunekit.measure.counts import CONVENTIONS

    return list(CONVENTIONS)


def _runtimes() -> list[str]:
    from prunekit.runtime import runtime_names

    return runtime_names()


#: ``{placeholder}`` in a help text -> the registry whose names replace it when help is printed. Help texts
#: never spell a list of registered names out (it would drift); building the parser stays free of torch.
REGISTRY_LISTS: dict[str, Callable[[], list[str]]] = {
    "criteria": _criteria, "conventions": _conventions, "runtimes": _runtimes}


class HelpFormatter(argparse.HelpFormatter):
    """argparse's formatter, with each ``{name}`` of :data:`REGISTRY_LISTS` in a help text replaced by that
    registry's names joined with `` | `` (read from the registry only when help is printed)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = super()._get_help_string(action)
        for key, names in REGISTRY_LISTS.items():
            if text and "{" + key + "}" in text:
                text = text.replace("{" + key + "}", " | ".join(names()))
        return text


class ArgumentParser(argparse.ArgumentParser):
    """The parser of every prunekit command and subcommand: :class:`HelpFormatter` by default."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)


def add_criterion_arg(parser: argparse.ArgumentParser, default: str | None = "l1", note: str = "") -> None:
    """``--criterion NAME``: a registered channel criterion; checked against the registry when the command runs."""
    shown = f"default: {default}" if default else "default: l1"
    parser.add_argument("--criterion", default=default, metavar="NAME",
                        help=f"channel (filter) score: {{criteria}} ({shown}){note}")


def add_scope_arg(parser: argparse.ArgumentParser, granularity: str | None = None, default: str | None = None,
                  help: str = "") -> None:
    """``--scope``: choices from :data:`prunekit.config.SCOPES` for ``granularity`` (every scope when None)."""
    from prunekit.config import ALL_SCOPES, SCOPES

    parser.add_argument("--scope", choices=list(SCOPES[granularity] if granularity else ALL_SCOPES),
                        default=default, help=help)


JSON_HELP = "print the result as JSON instead of a table"


def add_json_arg(parser, help: str = JSON_HELP) -> None:
    """``--json``: print the command's result as JSON on stdout (``args.json``). ``parser`` may be a group."""
    parser.add_argument("--json", action="store_true", help=help)


STRICT_HELP = ("fail (exit 2, nothing written) when a structured cut achieves below half of the one asked "
               "(filters for a ratio, MACs for a MAC target), naming the ops that kept the channels")


def add_strict_arg(parser, help: str = STRICT_HELP) -> None:
    """``--strict``: a structured cut that falls short of its target is an error (``args.strict``)."""
    parser.add_argument("--strict", action="store_true", help=help)


def print_cut(outcome) -> None:
    """Print a structured cut's one line (:meth:`prunekit.prune.channels.PlanOutcome.line`): asked vs achieved,
    as the shortfall line naming the blocking ops when it reached below half of the target."""
    print(outcome.line())


def filter_warning(outcome, asked: float | None, achieved: float | None) -> str | None:
    """The warning of a filter target missed by a little (:func:`prunekit.prune.sparsity.filter_target_shortfall`);
    None when ``outcome`` (a :class:`prunekit.prune.channels.PlanOutcome` or None) has a shortfall line, which
    already says the target was missed and names what kept the channels."""
    from prunekit.prune.sparsity import filter_target_shortfall

    if outcome is not None and outcome.shortfall():
        return None
    return filter_target_shortfall(asked, achieved)


def add_no_progress_arg(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: no progress bars (``args.no_progress``)."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bars (e.g. for log files)")


def add_out_arg(parser: argparse.ArgumentParser, metavar: str, help: str, required: bool = False,
                default: str | None = None) -> None:
    """``--out METAVAR``: where the command writes (``args.out``); what it names (file, folder, figure) is the
    command's, said by ``metavar`` and ``help``."""
    parser.add_argument("--out", metavar=metavar, required=required, default=default, help=help)


def add_checkpoint_arg(parser: argparse.ArgumentParser, help: str = "a prunekit checkpoint",
                       nargs: str | None = None) -> None:
    """The positional ``CKPT`` (``args.checkpoint``); ``nargs="?"`` where another option may replace it."""
    parser.add_argument("checkpoint", metavar="CKPT", nargs=nargs, help=help)


def add_granularity_arg(parser: argparse.ArgumentParser, help: str) -> None:
    """``--granularity``: a pruning granularity of :data:`prunekit.config.TARGETS` (default: unstructured)."""
    from prunekit.config import TARGETS

    parser.add_argument("--granularity", choices=list(TARGETS), default="unstructured", help=help)


SPLITS = ["test", "val", "train"]  # what --split names; val is the --val-split hold-out


def add_split_arg(parser: argparse.ArgumentParser, help: str = "default: %(default)s") -> None:
    """``--split``: the data split a command measures on (default: test)."""
    parser.add_argument("--split", choices=SPLITS, default="test", help=help)


def add_device_arg(parser, help: str, choices: tuple[str, ...] = ("auto", "cpu", "cuda"),
                   default: str = "auto") -> None:
    """``--device``: where the command runs; ``auto`` = CUDA when present. ``parser`` may be a group."""
    parser.add_argument("--device", choices=list(choices), default=default, help=help)


MODEL_HELP = ("a registered model name (`prunekit models`) or your own model: path/to/file.py:ClassName or "
              "package.module:factory (see README, 'Your own model')")


def number(kind: type = float, low: float | None = None, high: float | None = None, low_open: bool = False,
           high_open: bool = False, meaning: str | None = None) -> Callable[[str], float | int]:
    """An argparse ``type=`` that accepts a finite ``kind`` (int or float) in the given range, so a bad value
    fails where it is parsed: ``argument --lr: must be a finite number > 0, got 'inf'``. With ``meaning`` (what
    the value is) the message names it instead: ``argument --distill-alpha: '2' is not a weight in [0, 1]``."""
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low:g}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high:g}"
    else:
        bounds = ""
    wanted = f"{meaning or ('an integer' if kind is int else 'a finite number')}{bounds}"

    def message(text: str) -> str:
        return f"{text!r} is not {wanted}" if meaning else f"must be {wanted}, got {text!r}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(message(text)) from None
        below = low is not None and (value <= low if low_open else value < low)
        above = high is not None and (value >= high if high_open else value > high)
        if not math.isfinite(value) or below or above:
            raise argparse.ArgumentTypeError(message(text))
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


# the numeric flag types used across the commands
POSITIVE_INT = number(int, 1)
NON_NEGATIVE_INT = number(int, 0)
ANY_INT = number(int)
POSITIVE_FLOAT = number(float, 0, low_open=True)
NON_NEGATIVE_FLOAT = number(float, 0)
FRACTION = number(float, 0, 1, high_open=True)  # in [0, 1)
SHARE = number(float, 0, 1, low_open=True)  # in (0, 1]: a fraction of the dense model kept (MACs, latency)


ROUND_TO_HELP = ("with --latency-target or --macs-target: every width a multiple of N, e.g. 8 for int8 depthwise "
                 "kernels (default: the table's measured widths; any width)")


def add_round_to_arg(parser: argparse.ArgumentParser, help: str = ROUND_TO_HELP) -> None:
    """``--round-to N``: channel rounding of a latency or MACs target (``args.round_to``, None: none forced);
    ``help`` names the target flags the command has."""
    parser.add_argument("--round-to", type=POSITIVE_INT, default=None, metavar="N", help=help)


def add_model_args(parser: argparse.ArgumentParser, default: str | None = None, required: bool = False,
                   help: str = MODEL_HELP) -> None:
    """``--model NAME|REF`` and ``--model-kwargs JSON``: identical for every command that builds a model."""
    parser.add_argument("--model", default=default, required=required, metavar="NAME|REF",
                        help=help + (" (default: %(default)s)" if default else ""))
    parser.add_argument("--model-kwargs", default=None, metavar="JSON",
                        help="constructor arguments of --model as a JSON object, e.g. '{\"width\": 8}'")
    parser.add_argument("--model-cfg", default=None, metavar="CFG",
                        help="VGG channel config, e.g. 64,M,128,M,256,256,M,512,512,M,512,512 (a foreign file's own "
                             "`cfg` entry is used when this is not given)")


def add_rename_arg(parser: argparse.ArgumentParser) -> None:
    """``--rename OLD=NEW`` (repeatable): key prefixes of a foreign state dict to rewrite before loading."""
    parser.add_argument("--rename", action="append", default=None, metavar="OLD=NEW",
                        help="rewrite state-dict key prefixes OLD to NEW before loading (repeatable), e.g. "
                             "feature.=features.; the rethinking-network-pruning VGG/ResNet/DenseNet layouts are "
                             "recognised without it")


def parse_cfg(text: str | None) -> list | None:
    """``--model-cfg``/``--cfg`` text (``64,M,128,…``) as a list of ints and 'M'; None for None."""
    from prunekit.errors import PrunekitError

    if text is None:
        return None
    items = []
    for token in text.replace(" ", "").split(","):
        if token.upper() == "M":
            items.append("M")
        elif token.isdigit() and int(token) > 0:
            items.append(int(token))
        else:
            raise PrunekitError(f"channel config entry {token!r} is neither a positive integer nor M")
    return items


def add_model_relocation_arg(parser: argparse.ArgumentParser) -> None:
    """``--model REF`` for commands that read a checkpoint: where a user model's code is now."""
    parser.add_argument("--model", default=None, metavar="REF",
                        help="for a checkpoint of your own model whose file moved: path/to/file.py:ClassName "
                             "(or package.module:factory) to rebuild it from; kwargs and shapes come from CKPT")


def model_from_args(args: argparse.Namespace, num_classes: int | None, extra_kwargs: dict | None = None):
    """A fresh model from ``--model``, ``--model-kwargs`` and ``--model-cfg`` (+ ``extra_kwargs``), carrying
    ``model.arch``."""
    from prunekit.models import resolve_model

    return resolve_model(args.model, num_classes, model_kwargs_from(args, extra_kwargs))


def model_kwargs_from(args: argparse.Namespace, extra_kwargs: dict | None = None) -> dict:
    """Constructor kwargs of ``--model-kwargs`` and ``--model-cfg`` (as ``cfg``), plus ``extra_kwargs``."""
    from prunekit.models import parse_model_kwargs

    cfg = parse_cfg(getattr(args, "model_cfg", None))
    return {**parse_model_kwargs(getattr(args, "model_kwargs", None)), **({"cfg": cfg} if cfg else {}),
            **(extra_kwargs or {})}


def add_model_source_args(parser: argparse.ArgumentParser) -> None:
    """A prunekit checkpoint (positional) or ``--model NAME|REF [--model-kwargs JSON] [--weights FILE]``."""
    add_checkpoint_arg(parser, nargs="?")
    add_model_args(parser, help="instead of CKPT: a registered model name, or path/to/file.py:ClassName or "
                                "package.module:factory; with CKPT of your own model: where its code is now")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="with --model: a state dict file (a {'state_dict': …} wrapper and 'module.' "
                             "prefixes are handled)")
    parser.add_argument("--num-classes", type=POSITIVE_INT, default=None, help="with --model (default: the dataset's)")
    add_rename_arg(parser)


def load_model_source(args: argparse.Namespace, num_classes: int | None = None):
    """The :class:`prunekit.checkpoint.Checkpoint` that ``CKPT`` or ``--model/--weights`` names."""
    from prunekit.checkpoint import Checkpoint, load_checkpoint
    from prunekit.errors import PrunekitError

    if args.checkpoint:
        if args.model_kwargs or args.weights or args.model_cfg or args.rename:
            raise PrunekitError("--model-kwargs, --model-cfg, --rename and --weights go with --model NAME|REF instead of CKPT; a "
                                "checkpoint holds its own")
        return load_checkpoint(args.checkpoint, model_ref=args.model)
    if not args.model:
        raise PrunekitError("name a checkpoint (CKPT) or a model (--model NAME|REF [--weights FILE])")
    if not args.weights:
        return Checkpoint(model=model_from_args(args, args.num_classes or num_classes or 10), arch=None, masks={},
                          meta={})
    loaded = foreign_from_args(args, args.num_classes or num_classes or 10)
    return Checkpoint(model=loaded.model, arch=None, masks={}, meta={}, path=Path(args.weights))


def foreign_from_args(args: argparse.Namespace, num_classes: int):
    """:func:`prunekit.foreign.load_foreign` of ``--weights`` into ``--model`` (``--model-kwargs``,
    ``--model-cfg``, ``--rename``); prints which layout or file cfg was applied."""
    from prunekit.foreign import load_foreign, parse_renames
    from prunekit.models import parse_model_kwargs

    kwargs = parse_model_kwargs(args.model_kwargs)
    loaded = load_foreign(args.model, args.weights, num_classes, kwargs, parse_renames(args.rename),
                          parse_cfg(args.model_cfg))
    notes = [f"layout {loaded.layout}"] if loaded.layout else []
    cfg_given = args.model_cfg or "cfg" in kwargs  # only a cfg read from the file is news to the user
    notes += [f"cfg {','.join(map(str, loaded.cfg))} (from the file)"] if loaded.cfg and not cfg_given else []
    notes += ["layer widths from the file"] if loaded.resized else []
    if notes:
        print(f"{args.weights}: {'; '.join(notes)}", file=sys.stderr)
    return loaded


def add_count_arg(parser: argparse.ArgumentParser) -> None:
    """``--count CONVENTION``: how ``ops`` counts a forward pass (``prunekit.measure.counts.CONVENTIONS``)."""
    parser.add_argument("--count", default="macs", metavar="CONVENTION",
                        help="operation count convention: {conventions} (default macs: conv + linear "
                             "multiply-accumulates; thop and torchprofile report exactly what those libraries "
                             "report); see docs/measure.md")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--dataset``, ``--data``, ``--val-split``, ``--limit-train``: identical for every command that trains or
    evaluates. Unset options take what the checkpoint the command reads remembers (:func:`data_source`), else
    the defaults (cifar10 from $PRUNEKIT_DATA or the cache, no validation split, every image)."""
    group = parser.add_argument_group("data (unset options: what the checkpoint was made with, else the default)")
    group.add_argument("--dataset", default=None, help="cifar10 | cifar100 | synthetic (default: cifar10)")
    group.add_argument("--data", metavar="DIR", default=None,
                       help="folder holding cifar-10-batches-py/ or cifar-100-python/ (or the .tar.gz); "
                            "default: $PRUNEKIT_DATA, else ~/.cache/prunekit (downloaded when online)")
    group.add_argument("--val-split", type=FRACTION, default=None, metavar="F",
                       help="fraction of the training set held out for validation, seeded (default: 0)")
    group.add_argument("--limit-train", type=POSITIVE_INT, default=None, metavar="N",
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


def data_for(args: argparse.Namespace, checkpoint=None, seed: int | None = None):
    """The :class:`DataBundle` of :func:`data_source` for ``checkpoint`` (a loaded
    :class:`~prunekit.checkpoint.Checkpoint`, its meta dict, or None), checked against its class count."""
    return data_loader(args, seed)(checkpoint)


def data_loader(args: argparse.Namespace, seed: int | None = None):
    """``checkpoint -> DataBundle`` for commands that read several checkpoints: :func:`data_source` of each (a
    :class:`~prunekit.checkpoint.Checkpoint` or a meta dict), every distinct source loaded once. A checkpoint
    made for another class count than its data's fails in one line (:func:`prunekit.checkpoint.check_classes`:
    the meta's count, else, for a Checkpoint, its model's output size)."""
    from prunekit.checkpoint import check_classes

    cache = {}

    def load(checkpoint):
        meta = getattr(checkpoint, "meta", checkpoint)
        source = data_source(args, meta, seed)
        if source not in cache:
            cache[source] = source.load()
        data = cache[source]
        if checkpoint is not None:
            path = getattr(checkpoint, "path", None)
            check_classes(checkpoint, data, str(path) if path else "the model")
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
    group.add_argument(*epochs_flags, dest="epochs", type=NON_NEGATIVE_INT, default=epochs,
                       help=epochs_help or f"default: {epochs if epochs is not None else defaults.epochs}; with "
                                           "--resume, a larger number extends the run")
    group.add_argument("--batch-size", type=POSITIVE_INT, default=defaults.batch_size, help="default: %(default)s")
    group.add_argument("--lr", type=POSITIVE_FLOAT, default=defaults.lr, help="peak learning rate (default: %(default)s)")
    group.add_argument("--momentum", type=FRACTION, default=defaults.momentum, help="default: %(default)s")
    group.add_argument("--weight-decay", type=NON_NEGATIVE_FLOAT, default=defaults.weight_decay, help="default: %(default)s")
    lr_schedules = ["cosine", "step", "constant"]
    group.add_argument("--lr-schedule", dest="schedule", choices=lr_schedules, default=defaults.schedule,
                       help="lr decay per step; step = ×0.1 at 50%% and 75%% (default: %(default)s)")
    if schedule_alias:
        add_deprecated_alias(group, "--schedule", "--lr-schedule", dest="schedule", choices=lr_schedules)
    group.add_argument("--warmup-epochs", type=NON_NEGATIVE_FLOAT, default=defaults.warmup_epochs, help="default: %(default)s")
    group.add_argument("--label-smoothing", type=FRACTION, default=defaults.label_smoothing,
                       help="default: %(default)s")
    group.add_argument("--cutout", type=NON_NEGATIVE_INT, default=defaults.cutout, help="cutout side in pixels (default: off)")
    group.add_argument("--seed", type=ANY_INT, default=defaults.seed, help="default: %(default)s")
    add_device_arg(group, default=defaults.device, help="default: %(default)s (CUDA when present)")
    group.add_argument("--compile", action="store_true", help="torch.compile the model")
    group.add_argument("--sync-bn", action="store_true",
                       help="SyncBatchNorm across processes under torchrun (CUDA only)")
    group.add_argument("--sparsity-reg", type=NON_NEGATIVE_FLOAT, default=0.0, metavar="LAMBDA",
                       help="network slimming: add λ·Σ|γ| over BN scales to the loss (default: off)")


def train_config_from(args: argparse.Namespace):
    """Build a validated :class:`TrainConfig` from parsed arguments."""
    from prunekit.config import TrainConfig

    fields = TrainConfig.model_fields
    return TrainConfig(**{k: getattr(args, k) for k in fields if getattr(args, k, None) is not None})


def warn_if_collapsed(metrics, reference: tuple[str, float] | None = None, what: str = "the model") -> None:
    """Print :func:`prunekit.train.health.collapse_warning`'s line on stderr when ``metrics`` show a collapse."""
    from prunekit.train.health import collapse_warning

    warning = collapse_warning(metrics, reference, what)
    if warning:
        print(warning, file=sys.stderr)


def last_train_top1(history: list[dict]) -> tuple[str, float] | None:
    """``("training top-1", percent)`` of a fit's last epoch, the reference of a collapse warning; None when
    no epoch ran."""
    return ("training top-1", history[-1]["train_top1"]) if history else None


def print_time_estimate(model, data, config, start_epoch: int = 0) -> None:
    """On a CPU, print how long training ``model`` with ``config`` will take (measured on two steps) before it
    starts, so a many-hour run is never started silently; on a GPU print nothing (no probe)."""
    from prunekit.train.estimate import describe_estimate, estimate_fit_seconds
    from prunekit.train.loop import resolve_device

    device = resolve_device(config.device)
    epochs = config.epochs - start_epoch
    if device.type == "cpu" and epochs > 0:
        seconds = estimate_fit_seconds(model, data, config, device, start_epoch)
        print(describe_estimate(seconds, epochs, device), flush=True)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")


def lock_run_folder(args: argparse.Namespace, folder) -> None:
    """Hold the run-folder lock of ``folder`` (:func:`prunekit.lock.run_lock`) until the command returns:
    a second writer of the same folder fails with a one-line error naming this process. Creates ``folder``."""
    import contextlib

    from prunekit.lock import run_lock

    if not hasattr(args, "exit_stack"):  # called outside main(): held until the process ends
        args.exit_stack = contextlib.ExitStack()
    args.exit_stack.enter_context(run_lock(folder, f"prunekit {getattr(args, 'command', '')}".strip()))


SYNTHETIC_NOTE = " (SYNTHETIC data)"  # ends every epoch line of a run on synthetic data


def epoch_printer(data):
    """The per-epoch line printer; on synthetic data every line says so."""
    from prunekit.train.callbacks import PrintEpoch

    return PrintEpoch(SYNTHETIC_NOTE if data.synthetic else "")
