"""Checkpoints written by other code bases: unwrap, rename, resize, load.

A foreign file is a plain state dict, or a dict holding one under ``state_dict``/``model``/``net`` beside
other entries (``epoch``, ``best_prec1``, ``optimizer``, and often ``cfg``, the channel config of a pruned
VGG). :func:`load_foreign` turns it into a zoo (or user) model in four steps:

1. **read**: unwrap the state dict, strip DataParallel's ``module.`` prefixes, keep the file's ``cfg``;
2. **build**: the model with ``cfg`` (``--model-cfg`` first, else the file's) when its constructor takes one;
3. **rename**: the user's ``--rename OLD=NEW`` key prefixes, then the first known layout of
   :data:`LAYOUTS` whose renames make the keys fit (rethinking-network-pruning's VGG, ResNet, DenseNet);
4. **resize**: layers whose stored tensors are narrower (a pruned file without ``cfg``) are rebuilt at the
   stored widths (:func:`prunekit.models.apply_channel_config`), then a strict ``load_state_dict``.

A mismatch error names the closest ``--rename`` that would make the keys fit.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prunekit.checkpoint import FORMAT, load_state, read_checkpoint_file
from prunekit.errors import PrunekitError
from prunekit.images import example_input
from prunekit.models import apply_channel_config, channel_config, resolve_model

STATE_DICT_KEYS = ("state_dict", "model", "net")


@dataclass(frozen=True)
class KeyLayout:
    """A foreign key layout: prefix renames that map its keys onto a prunekit model's, and suffixes of
    entries that carry no weights (dropped when they hold only ones, i.e. select every channel)."""

    name: str
    renames: tuple[tuple[str, str], ...]
    description: str
    identity_keys: tuple[str, ...] = ()


LAYOUTS: dict[str, KeyLayout] = {}


def register_layout(layout: KeyLayout) -> KeyLayout:
    """Make :func:`adapt_keys` try ``layout`` when a foreign state dict does not fit as is."""
    LAYOUTS[layout.name] = layout
    return layout


# Eric-mingjie/rethinking-network-pruning (Liu et al. 2019), cifar/{network-slimming,l1-norm-pruning}/models
register_layout(KeyLayout("rethinking-vgg", (("feature.", "features."),),
                          "VGG: `feature.N` Conv-BN-ReLU/M stack (same indices as prunekit's `features.N`), "
                          "`classifier` Linear"))
register_layout(KeyLayout("rethinking-resnet", (("fc.", "linear."),),
                          "l1-norm-pruning CIFAR ResNet-56/110: conv1/bn1/layerN.M.{conv,bn}{1,2}, classifier `fc`"))
register_layout(KeyLayout("rethinking-densenet", (), "network-slimming DenseNet-40: prunekit's names plus "
                          "channel-selection `select.indexes` (all ones unless channel-pruned)",
                          identity_keys=(".indexes",)))


@dataclass
class ForeignFile:
    """What a foreign checkpoint file holds: the state dict (``module.`` stripped), its ``cfg`` (or None),
    and its other plain entries (``epoch``, ``best_prec1``, …) as ``extras``."""

    state_dict: dict[str, torch.Tensor]
    cfg: list | None = None
    extras: dict = field(default_factory=dict)


def read_foreign(path: str | Path) -> ForeignFile:
    """Read ``path`` (``weights_only=True``) as a :class:`ForeignFile`; a prunekit checkpoint gives its state
    dict. A file without a mapping of names to tensors raises PrunekitError."""
    raw = read_checkpoint_file(path)
    if isinstance(raw, dict) and raw.get("format") == FORMAT:
        return ForeignFile(dict(raw["state_dict"]))
    outer = raw if isinstance(raw, dict) else {}
    for key in STATE_DICT_KEYS:
        if isinstance(outer.get(key), dict):
            raw = outer[key]
            break
    if not isinstance(raw, dict) or not raw or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise PrunekitError(f"{path} holds no state dict (a mapping of names to tensors, possibly under "
                            f"{' / '.join(STATE_DICT_KEYS)})")
    cfg = outer.get("cfg") if raw is not outer else None
    extras = {k: v for k, v in outer.items()
              if k not in (*STATE_DICT_KEYS, "cfg", "optimizer") and isinstance(v, (int, float, str))}
    return ForeignFile({k.removeprefix("module."): v for k, v in raw.items()},
                       cfg if isinstance(cfg, list) else None, extras)


def parse_renames(items: list[str] | None) -> list[tuple[str, str]]:
    """``["OLD=NEW", …]`` (``--rename``) as pairs; ``NEW`` may be empty (strip a prefix)."""
    pairs = []
    for item in items or []:
        old, sep, new = item.partition("=")
        if not sep or not old:
            raise PrunekitError(f"--rename {item!r}: write OLD=NEW, e.g. --rename feature.=features.")
        pairs.append((old, new))
    return pairs


def renamed(state: dict, renames) -> dict:
    """``state`` with every key starting with an ``old`` prefix rewritten to start with ``new`` (first match)."""
    out = {}
    for key, value in state.items():
        for old, new in renames:
            if key.startswith(old):
                key = new + key[len(old):]
                break
        out[key] = value
    return out


def adapt_keys(state: dict, model: nn.Module, renames=()) -> tuple[dict, str | None]:
    """``state`` renamed to ``model``'s keys: the user's ``renames`` first, then the first layout of
    :data:`LAYOUTS` under which every key is the model's. Returns ``(state, layout name or None)``; when
    nothing fits, the user-renamed state (so the error shows what is still wrong)."""
    state = renamed(state, renames)
    expected = set(model.state_dict())
    if set(state) <= expected:
        return state, None
    for layout in LAYOUTS.values():
        candidate = _drop_identity(renamed(state, layout.renames), layout)
        if candidate is not None and set(candidate) <= expected and len(candidate) > 0:
            return candidate, layout.name
    return state, None


def _drop_identity(state: dict, layout: KeyLayout) -> dict | None:
    out = {}
    for key, value in state.items():
        if any(key.endswith(suffix) for suffix in layout.identity_keys):
            if not bool((value == 1).all()):
                return None  # a channel-selection that drops channels: prunekit's model cannot express it
            continue
        out[key] = value
    return out


def stored_widths(model: nn.Module, state: dict) -> dict[str, dict]:
    """The channel config (see :func:`prunekit.models.channel_config`) of ``model`` with every conv, BN and
    linear layer resized to the shapes its tensors have in ``state``; layers absent from it are kept."""
    config = {}
    for name, entry in channel_config(model).items():
        weight = state.get(f"{name}.weight", state.get(f"{name}.running_mean"))
        if weight is None:
            continue
        entry = dict(entry)
        kind = entry["kind"]
        if kind == "Conv2d":
            entry.update(out_channels=weight.shape[0], in_channels=weight.shape[1] * entry["groups"])
        elif kind == "BatchNorm2d":
            entry.update(num_features=weight.shape[0])
        elif kind == "Linear":
            entry.update(out_features=weight.shape[0], in_features=weight.shape[1])
        config[name] = entry
    return config


@dataclass
class LoadedForeign:
    model: nn.Module
    layout: str | None  # the LAYOUTS entry that was applied, if any
    cfg: list | None  # the cfg the model was built with, if any
    resized: bool  # layers were rebuilt at the file's (narrower) widths
    extras: dict


def load_foreign(model_name: str, path: str | Path, num_classes: int | None = None, kwargs: dict | None = None,
                 renames: list[tuple[str, str]] = (), model_cfg: list | None = None) -> LoadedForeign:
    """Build ``model_name`` and load the foreign file ``path`` into it (steps in the module docstring);
    ``renames`` as :func:`parse_renames` gives them.

    ``model_cfg`` (``--model-cfg``) wins over the file's ``cfg``; either is passed as the constructor's
    ``cfg`` only when it takes one (prunekit's VGGs). Raises PrunekitError on a mismatch, with the closest
    ``--rename`` that would fit."""
    foreign = read_foreign(path)
    kwargs = dict(kwargs or {})
    cfg = model_cfg if model_cfg is not None else foreign.cfg
    if cfg is not None and "cfg" not in kwargs and _takes_cfg(model_name):
        kwargs["cfg"] = list(cfg)
    model = resolve_model(model_name, num_classes, kwargs)
    state, layout = adapt_keys(foreign.state_dict, model, renames)
    resized = False
    if "cfg" not in kwargs and set(state) <= set(model.state_dict()):  # a given cfg is never overridden
        widths = stored_widths(model, state)
        if widths != {k: v for k, v in channel_config(model).items() if k in widths}:
            apply_channel_config(model, widths)
            resized = True
            _check_forward(model, path)
    load_state(model, state, source=str(path))
    return LoadedForeign(model, layout, kwargs.get("cfg"), resized, foreign.extras)


def _takes_cfg(model_name: str) -> bool:
    from prunekit.models import is_reference, model_spec
    from prunekit.models.reference import load_constructor

    builder = load_constructor(model_name)[0] if is_reference(model_name) else model_spec(model_name).builder
    try:
        return "cfg" in inspect.signature(builder).parameters
    except (TypeError, ValueError):
        return False


def _check_forward(model: nn.Module, path) -> None:
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example_input())
    except RuntimeError as exc:
        raise PrunekitError(f"{path}: its layer widths do not form a working model of this architecture "
                            f"({str(exc).splitlines()[0]}); pass the file's channel config with --model-cfg") from None
    finally:
        model.train(was_training)


__all__ = ["LAYOUTS", "ForeignFile", "KeyLayout", "LoadedForeign", "adapt_keys", "load_foreign",
           "parse_renames", "read_foreign", "register_layout", "renamed", "stored_widths"]


def foreign_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a file saved by another tool: unwraps ``{"state_dict": …}``/``{"model": …}`` and
    strips ``module.`` prefixes (DataParallel); see :func:`read_foreign`."""
    return read_foreign(path).state_dict


def load_weights(model: nn.Module, path: str | Path, renames: list[tuple[str, str]] = ()) -> nn.Module:
    """Load a foreign state dict file into ``model`` (strict, with a clear mismatch error). Key prefixes are
    renamed by ``renames`` and, failing that, by the first fitting layout of :data:`LAYOUTS`.
    Returns ``model``."""
    state, _ = adapt_keys(foreign_state_dict(path), model, renames)
    load_state(model, state, source=str(path))
    return model
