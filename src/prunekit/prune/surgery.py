"""Physical channel removal: shrink modules in place so removed channels no longer exist.

Only sizes change: Conv2d (weight rows/columns, bias, ``in_channels``/``out_channels``/``groups``),
BatchNorm2d (γ, β, running mean/var, ``num_features``), Linear (input columns, ``in_features``) and
ZeroPadShortcut (``source_index``: entries of removed outputs dropped, entries pointing at removed inputs
become -1). No module type is added, so :func:`prunekit.models.channel_config` still describes the model.
"""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.layers import ZeroPadShortcut
from prunekit.prune.graph import ChannelGraph


def kept_indices(graph: ChannelGraph, removed: set[int]) -> dict[tuple[str, str], list[int]]:
    """``{(module, role): sorted indices that stay}`` for every port that loses at least one index.

    Raises PrunekitError if a port would lose every index (a module would get zero channels).
    """
    kept = {}
    for (module, role), port in graph.ports.items():
        keep = [i for i in sorted(port) if port[i] not in removed]
        if len(keep) == len(port):
            continue
        if not keep:
            raise PrunekitError(f"removing these channels would leave '{module}' with no {role} channel; "
                                "keep at least one channel per group")
        kept[(module, role)] = keep
    return kept


def remove_channels(model: nn.Module, graph: ChannelGraph, removed: set[int]) -> nn.Module:
    """Physically remove the channels ``removed`` (ids of ``graph``) from ``model``, in place; return it.

    Side effects: every affected Conv2d/BatchNorm2d/Linear gets new, smaller ``nn.Parameter``s (and
    buffers) and updated size attributes; every affected ZeroPadShortcut is replaced by a new one with the
    remapped ``source_index``. Optimizers built before hold the old parameters: build them again. The
    model must not be masked (call :func:`prunekit.prune.mask.make_permanent` first).
    """
    modules = dict(model.named_modules())
    kept = kept_indices(graph, removed)
    by_module: dict[str, dict[str, list[int]]] = {}
    for (module, role), keep in kept.items():
        by_module.setdefault(module, {})[role] = keep
    for name, roles in by_module.items():
        module = modules[name]
        if any(n.endswith("_mask") for n, _ in module.named_buffers(recurse=False)):
            raise PrunekitError(f"'{name}' is masked; make the masks permanent before removing channels")
        if isinstance(module, ZeroPadShortcut):
            _set_submodule(model, name, _shrink_shortcut(module, graph.ports, name, removed))
        elif isinstance(module, nn.Conv2d):
            _shrink_conv(module, roles)
        elif isinstance(module, (nn.BatchNorm2d, nn.SyncBatchNorm)):
            _shrink_batchnorm(module, roles["bn"])
        elif isinstance(module, nn.Linear):
            _shrink_linear(module, roles["linear_in"])
    return model


def _index(keep: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(keep, dtype=torch.long, device=device)


def _replace_parameter(module: nn.Module, name: str, value: torch.Tensor) -> None:
    old = getattr(module, name)
    setattr(module, name, nn.Parameter(value.detach().clone(), requires_grad=old.requires_grad))


def _shrink_conv(conv: nn.Conv2d, roles: dict[str, list[int]]) -> None:
    """Keep weight rows ``conv_out`` (and bias) and columns ``conv_in``; a depthwise conv keeps ``depthwise``."""
    device = conv.weight.device
    if "depthwise" in roles:
        keep = _index(roles["depthwise"], device)
        _replace_parameter(conv, "weight", conv.weight.index_select(0, keep))
        if conv.bias is not None:
            _replace_parameter(conv, "bias", conv.bias.index_select(0, keep))
        conv.in_channels = conv.out_channels = conv.groups = len(keep)
        return
    weight = conv.weight
    if "conv_out" in roles:
        keep = _index(roles["conv_out"], device)
        weight = weight.index_select(0, keep)
        if conv.bias is not None:
            _replace_parameter(conv, "bias", conv.bias.index_select(0, keep))
        conv.out_channels = len(keep)
    if "conv_in" in roles:
        weight = weight.index_select(1, _index(roles["conv_in"], device))
        conv.in_channels = len(roles["conv_in"])
    _replace_parameter(conv, "weight", weight)


def _shrink_batchnorm(bn: nn.Module, keep: list[int]) -> None:
    """Keep γ, β, running mean and running variance of the indices ``keep``."""
    device = (bn.weight if bn.weight is not None else bn.running_mean).device
    index = _index(keep, device)
    for name in ("weight", "bias"):
        if getattr(bn, name) is not None:
            _replace_parameter(bn, name, getattr(bn, name).index_select(0, index))
    for name in ("running_mean", "running_var"):
        if getattr(bn, name) is not None:
            setattr(bn, name, getattr(bn, name).index_select(0, index).clone())
    bn.num_features = len(keep)


def _shrink_linear(linear: nn.Linear, keep: list[int]) -> None:
    """Keep the input columns ``keep`` (the output features, e.g. classes, never change)."""
    _replace_parameter(linear, "weight", linear.weight.index_select(1, _index(keep, linear.weight.device)))
    linear.in_features = len(keep)


def _shrink_shortcut(shortcut: ZeroPadShortcut, ports: dict, name: str, removed: set[int]) -> ZeroPadShortcut:
    """A new ZeroPadShortcut: removed outputs dropped, entries pointing at removed inputs set to -1."""
    inputs = ports.get((name, "shortcut_in"), {})
    outputs = ports.get((name, "shortcut_out"), {})
    kept_inputs = [i for i in range(shortcut.in_channels) if inputs.get(i) not in removed]
    new_position = {old: new for new, old in enumerate(kept_inputs)}
    source_index = [new_position.get(shortcut.source_index[j], -1)
                    for j in range(shortcut.out_channels) if outputs.get(j) not in removed]
    new = ZeroPadShortcut(len(kept_inputs), len(source_index), shortcut.stride, source_index)
    return new.to(shortcut.gather_index.device).train(shortcut.training)


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, new)
