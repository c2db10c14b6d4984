"""Physical channel removal: shrink modules in place so removed channels no longer exist.

Each module is cut by its handler in :mod:`prunekit.prune.layer_handlers` (Conv2d rows/columns/groups,
ConvTranspose2d, BatchNorm, Linear rows/columns, ZeroPadShortcut ``source_index``; a Conv2d or BatchNorm2d
that loses every channel on one side becomes a ZeroWidthLayer); per-channel parameters
a forward uses directly (a functional norm's γ, β and statistics, a layer scale) are cut by
:func:`prunekit.prune.layer_handlers.shrink_parameters`. A conv that computes its weight in forward (weight
standardisation) is first replaced by a plain Conv2d holding that weight
(:func:`prunekit.prune.layer_handlers.plain_conv`); a Conv2d or BatchNorm2d that loses every channel on one side
becomes a ZeroWidthLayer; a norm over the channel axis (a LayerNorm) or an ECA gate
is wrapped in :class:`prunekit.models.FullWidthChannels`, which runs it at its original width. Every change is
recorded by :func:`prunekit.models.channel_config`, so it still describes the model.
"""

from __future__ import annotations

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.masking import masked_names
from prunekit.models.shapes import set_split_sizes
from prunekit.prune.graph import ChannelGraph
from prunekit.prune.layer_handlers import WHOLE_REMOVABLE_ROLES, handler_for, plain_conv, shrink_parameters
from prunekit.prune.trace_state import parse_param_role


def kept_indices(graph: ChannelGraph, removed: set[int]) -> dict[tuple[str, str], list[int]]:
    """``{(module, role): sorted indices that stay}`` for every port that loses at least one index.

    A conv's outputs or inputs and a BN may lose every index (the roles of
    :data:`~prunekit.prune.layer_handlers.WHOLE_REMOVABLE_ROLES`: a residual branch removed whole; the handler
    replaces the layer by a :class:`~prunekit.models.layers.ZeroWidthLayer`); any other port raises PrunekitError.
    """
    kept = {}
    for (module, role), port in graph.ports.items():
        keep = [i for i in sorted(port) if port[i] not in removed]
        if len(keep) == len(port):
            continue
        if not keep and role not in WHOLE_REMOVABLE_ROLES:
            raise PrunekitError(f"removing these channels would leave '{module}' with no {role} channel; "
                                "keep at least one channel per group")
        kept[(module, role)] = keep
    return kept


def remove_channels(model: nn.Module, graph: ChannelGraph, removed: set[int]) -> nn.Module:
    """Physically remove the channels ``removed`` (ids of ``graph``) from ``model``, in place; return it.

    Side effects: every affected layer gets new, smaller ``nn.Parameter``s (and buffers) and updated size
    attributes, or is replaced by a new module (ZeroPadShortcut, a LayerNorm or ECA gate wrapped in
    FullWidthChannels). Optimizers built before hold the old parameters: build them again. The model must not be
    masked (make the masks permanent first).
    """
    modules = dict(model.named_modules())
    by_module: dict[str, dict[str, list[int]]] = {}
    for (module, role), keep in kept_indices(graph, removed).items():
        by_module.setdefault(module, {})[role] = keep
    for name, keep in by_module.items():
        module = modules[name]
        if masked_names(module):
            raise PrunekitError(f"'{name}' is masked; make the masks permanent before removing channels")
        if name in graph.computed_weights:  # weight standardisation: the cut keeps the computed weight
            module = _replace(model, name, plain_conv(module))
        parameters = {role: k for role, k in keep.items() if parse_param_role(role) is not None}
        if parameters:
            shrink_parameters(module, parameters)
        layer_roles = {role: k for role, k in keep.items() if role not in parameters}
        replacement = handler_for(module).shrink(module, layer_roles) if layer_roles else None
        if replacement is not None:
            _replace(model, name, replacement)
    for name, attr, pieces in graph.sizes:
        set_split_sizes(modules[name], attr, [sum(cid not in removed for cid in piece) for piece in pieces])
    return model


def _replace(model: nn.Module, name: str, module: nn.Module) -> nn.Module:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent), child, module)
    return module
