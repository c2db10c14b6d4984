"""Trace a real forward pass and derive a model's channel groups: what must be removed together.

How it traces
-------------
:func:`trace_channels` runs the model once on the example input with a ``TorchFunctionMode`` recorder and
global module hooks (see docs/structured.md for the choice). Whatever Python the model runs simply runs:
modules created inside ``forward``, ``int(x.size(1) * 0.5)``, branches on shapes, numpy on parameters.
Every tensor op is seen with the layer it ran in; the layers prunekit knows how to resize (Conv2d,
ConvTranspose2d, BatchNorm, Linear, ZeroPadShortcut) are seen as one call each, and a TorchScript block
as one opaque call. What each layer and op does to channels is decided by two registries shared with
surgery: :mod:`prunekit.prune.layer_handlers` (by module type) and :mod:`prunekit.prune.op_handlers` (by
torch function name); both write into the trace state of :mod:`prunekit.prune.trace_state`.

Vocabulary
----------
atom     one channel of one traced tensor (a node of a union-find). Ops that must keep channels aligned
         (add, mul, a gate ``x * s``, BN, a depthwise conv, a grouped conv's groups) unite their atoms.
slot     one index on one axis of one module, e.g. ``Slot("layer1.0.conv1", "conv_out", 5)``. Roles:
         ``conv_out`` (filter: weight row + bias of a Conv2d, column of a ConvTranspose2d),
         ``conv_in`` (input column), ``depthwise`` (output of a conv with one input per group: row + bias),
         ``bn`` (γ, β, running stats), ``linear_in``/``linear_out`` (Linear columns / rows + bias),
         ``shortcut_in``/``shortcut_out`` (ZeroPadShortcut), ``full_width:<axis>:<width>`` (a
         LayerNorm over channel axis <axis> or an ECA gate, cut at full width; a norm's γ and β zeroed in the
         twin), and ``affine:<attr>:<dim>`` / ``param:<attr>:<dim>`` for the entries of a per-channel
         parameter or buffer a forward uses directly (a functional norm's γ and β / running statistics, a layer
         scale): zeroed in the masked twin and cut / cut only. A Linear on the channel axis of a channels-last
         tensor has ``conv_in``/``conv_out``.
channel  the unit of removal: a union-find class of atoms with every slot on it.
group    channels that share producing convs (a residual stream, one conv's output with its BN).

When is a channel prunable?
---------------------------
The *masked twin* zeroes, for a removed channel, every producer slot on it (conv rows and biases,
depthwise rows, Linear rows, BN γ and β). Removing it physically is exact when every op that *mixes*
channels (a conv's or Linear's input, a reduction over channels) reads an exact zero for it in the twin.
Each atom has a rule for "is it zero when its channel is removed": producers and BN outputs are; ``x + y``
is when all operands are, ``x * s`` when any is, ``sigmoid`` never is, an unknown op's output never is.
A channel is prunable when it has at least one conv filter, no pinned atom (network input or output, an
op prunekit cannot resize, a literal size) and every mixed read of it is zero. Pinned channels are kept,
with the reason in :attr:`ChannelGraph.blocked`.

ZeroPadShortcut (option-A ResNets) is a channel *map*: its output channel j copies input channel
``source_index[j]`` (or is zero); such a copy is a *dependency* (removed only with or after its source).

Assumptions that only a run can confirm
---------------------------------------
A view that splits the channel axis (a channel shuffle) and a slice or ``split`` at explicit sizes are
exact only when the model computes those sizes from the tensor (``C // g``) rather than from a literal.
The tracer assumes so (``trust_sizes=True``) and lists them in :attr:`ChannelGraph.assumed`; the pruning
self-check then proves the result, and :func:`prunekit.prune.channels.plan_channels` retraces with
``trust_sizes=False`` (those channels pinned) when it does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from prunekit.errors import PrunekitError
from prunekit.images import example_input
from prunekit.prune.layer_handlers import layer_handler
from prunekit.prune.op_handlers import METADATA, trace_op
from prunekit.prune.trace_state import ModuleCall, Walker, tensors_in

PRODUCER_ROLES = ("conv_out", "depthwise", "bn", "linear_out", "shortcut_out")
CONSUMER_ROLES = ("conv_in", "linear_in", "shortcut_in")


class Slot(NamedTuple):
    """One index on one axis of one module (see the module docstring for the roles)."""

    module: str
    role: str
    index: int


@dataclass(frozen=True)
class Channel:
    """The unit of removal: every slot it occupies, and the channels it depends on.

    ``depends_on``: channels copied into this one by a ZeroPadShortcut; this channel is exactly zero
    only when they are too. ``filters``: how many conv filters (conv_out slots) it removes.
    """

    id: int
    group: int | None
    slots: tuple[Slot, ...]
    depends_on: frozenset[int]
    prunable: bool

    @property
    def producers(self) -> tuple[Slot, ...]:
        return tuple(s for s in self.slots if s.role == "conv_out")

    @property
    def filters(self) -> int:
        return len(self.producers)


@dataclass(frozen=True)
class ChannelGroup:
    """Channels whose producing convs are coupled; allocation unit."""

    id: int
    producers: tuple[str, ...]  # conv names, in call order
    channels: tuple[int, ...]  # channel ids, in slot order of the first producer
    slots_by_role: dict[str, tuple[str, ...]] = field(default_factory=dict)  # role -> module names

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m for r in CONSUMER_ROLES for m in self.slots_by_role.get(r, ())))


@dataclass
class ChannelGraph:
    """Everything allocation and surgery need to know about a model's channels.

    ``ports[(module, role)][index]`` is the channel id of that slot; ``bn_after[conv]`` the BatchNorm
    applied directly to that conv's output; ``calls`` every Conv/Linear call (MAC estimates); ``layout``
    conv names and ``"M"`` (max pool) in call order (checks VGG-style cfgs); ``outputs[module]`` the
    channel id of every output channel of each traced layer call (the self-check compares them);
    ``blocked`` {where: why} for every pin (``blocking``: those that keep conv filters); ``assumed`` the size
    assumptions made (see module doc).
    """

    channels: dict[int, Channel]
    groups: list[ChannelGroup]
    ports: dict[tuple[str, str], dict[int, int]]
    bn_after: dict[str, str]
    calls: list[ModuleCall]
    layout: list[str]
    outputs: dict[str, list[int]] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    assumed: list[str] = field(default_factory=list)
    blocking: dict[str, str] = field(default_factory=dict)  # the pins of ``blocked`` that keep conv filters
    sizes: list[tuple[str, str, list[list[int]]]] = field(default_factory=list)  # split sizes a layer holds:
    # (layer, attribute, channel ids of each piece); surgery writes the kept count of each piece back
    computed_weights: tuple[str, ...] = ()  # convs whose forward computes their weight: cut into plain Conv2d

    def prunable(self, group: ChannelGroup) -> list[int]:
        return [c for c in group.channels if self.channels[c].prunable]

    def producer_group(self) -> dict[str, int]:
        """Conv name -> id of the group its filters belong to."""
        return {conv: g.id for g in self.groups for conv in g.producers}


def trace_channels(model: nn.Module, example_inputs: Any = None, trust_sizes: bool = True) -> ChannelGraph:
    """Run ``model`` once on ``example_inputs`` and return its :class:`ChannelGraph`.

    ``example_inputs``: a tensor or a tuple of tensors for ``model(*inputs)``; default one CIFAR image
    (1, 3, 32, 32) on the model's device. ``trust_sizes``: see the module docstring. Side effects: none
    (one forward pass in eval mode under ``no_grad``; every module's train/eval flag is restored). Raises
    PrunekitError when the forward pass itself fails.
    """
    inputs = as_inputs(model, example_inputs)
    walker = Walker(model, trust_sizes)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), _Recorder(walker):
            for tensor in tensors_in(inputs):
                walker.set(tensor, walker.fresh(tensor, "fixed"))
            output = model(*inputs)
    except PrunekitError:
        raise
    except Exception as exc:
        raise PrunekitError(f"the model's forward pass fails on the example input "
                            f"({type(exc).__name__}: {exc}); pass inputs the model accepts") from None
    finally:
        for module, mode in modes.items():
            module.training = mode
    for tensor in tensors_in(output):
        walker.consume([tensor])
        walker.pin(walker.layout(tensor), "model output", "the network's output channels are fixed")
    return _build_graph(walker)


def as_inputs(model: nn.Module, example_inputs: Any) -> tuple:
    """``example_inputs`` as the argument tuple of ``model(*inputs)``; default one CIFAR image."""
    if example_inputs is None:
        tensor = next(iter(model.parameters()), None)
        device = tensor.device if tensor is not None else "cpu"
        return (example_input(device=device),)
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


class _Recorder(TorchFunctionMode):
    """Sends every torch op of the forward pass to :func:`~prunekit.prune.op_handlers.trace_op`, and every call
    of a layer with a handler (:func:`~prunekit.prune.layer_handlers.layer_handler`) to that handler.

    Inside a layer with a handler (a Conv2d, including its mask pre-hook) ops are not recorded: the layer's
    handler sees its input and output. The hooks are global and removed on exit.
    """

    def __init__(self, walker: Walker) -> None:
        super().__init__()
        self.walker = walker
        self.depth = 0  # > 0 inside a handled layer
        self.stack: list[str] = []

    def __enter__(self):
        self._hooks = [register_module_forward_pre_hook(self._enter),
                       register_module_forward_hook(self._exit, always_call=True)]
        return super().__enter__()

    def __exit__(self, *exc):
        for hook in self._hooks:
            hook.remove()
        return super().__exit__(*exc)

    def _enter(self, module: nn.Module, inputs: tuple) -> None:
        name = self.walker.names.get(id(module))
        if name is not None:
            self.stack.append(name)
        if self.depth or (name is not None and layer_handler(module) is not None):
            self.depth += 1

    def _exit(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        name = self.walker.names.get(id(module))
        handler = layer_handler(module) if name is not None else None
        if self.depth and (handler is not None or self.depth > 1):
            self.depth -= 1
            if self.depth == 0 and handler is not None:
                self.walker.where = name
                self.walker.consume(inputs)
                handler.trace(self.walker, name, module, inputs, output)
        if name is not None and self.stack and self.stack[-1] == name:
            self.stack.pop()

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        result = func(*args, **kwargs)
        if not self.depth:
            self.walker.where = self.stack[-1] if self.stack else "<top level>"
            name = op_name(func)
            if name not in METADATA:
                self.walker.consume(list(args) + list(kwargs.values()))
            trace_op(self.walker, name, args, kwargs, result)
        return result


def op_name(func: Any) -> str:
    """A torch function's plain name: ``Tensor.__iadd__`` -> ``iadd``, ``x.shape`` -> ``shape``."""
    name = getattr(func, "__name__", str(func))
    if name == "__get__":
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    return name.strip("_")


# --------------------------------------------------------------------------- assembling the result


def _build_graph(walker: Walker) -> ChannelGraph:
    atoms = walker.atoms
    root_ids: dict[int, int] = {}
    slots: dict[int, list[Slot]] = {}
    for (module, role), port in walker.ports.items():
        for index in sorted(port):
            cid = root_ids.setdefault(atoms.find(port[index]), len(root_ids))
            slots.setdefault(cid, []).append(Slot(module, role, index))
    not_zero: set[int] = set()
    memo: dict[int, bool] = {}
    for atom in walker.reads:
        if not atoms.zero(atom, memo):
            not_zero.add(atoms.find(atom))
    walker.pin_dangling()
    pinned = {atoms.find(a) for a in walker.pinned}
    pinned |= {atoms.find(a) for a, kind in enumerate(atoms.kind) if kind == "fixed"}
    deps: dict[int, set[int]] = {}
    for atom, kind in enumerate(atoms.kind):
        root = atoms.find(atom)
        if kind == "copy" and root in root_ids:
            source = root_ids.get(atoms.find(atoms.args[atom][0]))
            if source is not None and source != root_ids[root]:
                deps.setdefault(root_ids[root], set()).add(source)
    groups, group_of = _groups(walker, root_ids, slots)
    channels = {}
    for root, cid in root_ids.items():
        has_filter = any(s.role == "conv_out" for s in slots[cid])
        prunable = has_filter and root not in pinned and root not in not_zero
        channels[cid] = Channel(cid, group_of.get(cid), tuple(slots[cid]), frozenset(deps.get(cid, ())), prunable)
    ports = {key: {i: root_ids[atoms.find(a)] for i, a in port.items()} for key, port in walker.ports.items()}
    outputs = {name: [root_ids.get(atoms.find(a), -1) for a in layout] for name, layout in walker.outputs.items()}
    with_filters = {cid for cid, found in slots.items() if any(slot.role == "conv_out" for slot in found)}
    blocking = {where: why for where, why in walker.blocked.items()
                if any(root_ids.get(atoms.find(a)) in with_filters for a in walker.pinned_at.get(where, ()))}
    sizes = [(module, attr, [[root_ids.get(atoms.find(a), -1) for a in piece] for piece in pieces])
             for module, attr, pieces in walker.sizes]
    return ChannelGraph(channels, groups, ports, walker.bn_after, walker.calls, walker.sequence, outputs,
                        dict(walker.blocked), list(walker.assumed), blocking, sizes, tuple(walker.computed_weights))


def _groups(walker: Walker, root_ids: dict[int, int],
            slots: dict[int, list[Slot]]) -> tuple[list[ChannelGroup], dict[int, int]]:
    """Connected components of (channel, producing conv) pairs, ordered by first producer call."""
    atoms = walker.atoms
    parent = {conv: conv for conv in walker.conv_order}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    owner: dict[int, str] = {}
    for conv in walker.conv_order:
        for atom in walker.conv_atoms[conv]:
            cid = root_ids[atoms.find(atom)]
            if cid in owner:
                parent[find(conv)] = find(owner[cid])
            else:
                owner[cid] = conv
    components: dict[str, list[str]] = {}
    for conv in walker.conv_order:
        components.setdefault(find(conv), []).append(conv)
    groups, group_of = [], {}
    for gid, producers in enumerate(components.values()):
        ordered = list(dict.fromkeys(root_ids[atoms.find(a)] for conv in producers for a in walker.conv_atoms[conv]))
        for cid in ordered:
            group_of[cid] = gid
        by_role: dict[str, dict[str, None]] = {}
        for cid in ordered:
            for slot in slots[cid]:
                by_role.setdefault(slot.role, {})[slot.module] = None
        groups.append(ChannelGroup(gid, tuple(producers), tuple(ordered),
                                   {role: tuple(names) for role, names in by_role.items()}))
    return groups, group_of

