"""Trace a real forward pass and derive a model's channel groups: what must be removed together.

How it traces
-------------
:func:`trace_channels` runs the model once on the example input with a ``TorchFunctionMode`` recorder and
global module hooks (see docs/structured.md for the choice). Whatever Python the model runs simply runs:
modules created inside ``forward``, ``int(x.size(1) * 0.5)``, branches on shapes, numpy on parameters.
Every tensor op is seen with the layer it ran in; the layers prunekit knows how to resize (Conv2d,
ConvTranspose2d, BatchNorm, Linear, ZeroPadShortcut) are seen as one call each, and a TorchScript block
as one opaque call. What each op does to channels is decided by one registry,
:mod:`prunekit.prune.handlers`, shared with surgery.

Vocabulary
----------
atom     one channel of one traced tensor (a node of a union-find). Ops that must keep channels aligned
         (add, mul, a gate ``x * s``, BN, a depthwise conv, a grouped conv's groups) unite their atoms.
slot     one index on one axis of one module, e.g. ``Slot("layer1.0.conv1", "conv_out", 5)``. Roles:
         ``conv_out`` (filter: weight row + bias of a Conv2d, column of a ConvTranspose2d),
         ``conv_in`` (input column), ``depthwise`` (output of a conv with one input per group: row + bias),
         ``bn`` (γ, β, running stats), ``linear_in``/``linear_out`` (Linear columns / rows + bias),
         ``shortcut_in``/``shortcut_out`` (ZeroPadShortcut), and ``affine:<attr>:<dim>`` /
         ``param:<attr>:<dim>`` for the entries of a per-channel parameter or buffer a forward uses directly
         (a functional norm's γ and β / running statistics, a layer scale): zeroed in the masked twin and
         cut / cut only. A Linear on the channel axis of a channels-last tensor has ``conv_in``/``conv_out``.
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
from typing import Any, Iterable, NamedTuple

import numpy as np
import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode

from prunekit.errors import PrunekitError

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


@dataclass(frozen=True)
class ModuleCall:
    """A Conv2d, ConvTranspose2d or Linear call, with what its MACs depend on besides channel counts."""

    module: str
    kind: str  # "conv" | "linear"
    positions: int  # conv: output H*W (input H*W for a transposed conv); linear: rows per sample


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
    from prunekit.prune import handlers  # the registry imports this module's types

    inputs = as_inputs(model, example_inputs)
    walker = Walker(model, trust_sizes)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad(), _Recorder(walker, handlers):
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
    return walker.result()


def as_inputs(model: nn.Module, example_inputs: Any) -> tuple:
    """``example_inputs`` as the argument tuple of ``model(*inputs)``; default one CIFAR image."""
    if example_inputs is None:
        tensor = next(iter(model.parameters()), None)
        device = tensor.device if tensor is not None else "cpu"
        return (torch.zeros(1, 3, 32, 32, device=device),)
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def tensors_in(value: Any) -> list[torch.Tensor]:
    """Every tensor in ``value``: a tensor, or tuples, lists and dicts of them (nested), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in tensors_in(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in tensors_in(v)]
    return []


# --------------------------------------------------------------------------- atoms and layouts


class ParamView(NamedTuple):
    """A per-channel parameter (or buffer) ``module.attr`` whose entries run along its axis ``dim``, seen in a
    tensor (the parameter itself or a reshaped view) on that tensor's axis ``axis``."""

    module: str
    attr: str
    dim: int
    axis: int


PARAM_ROLES = ("affine", "param")  # cut and zeroed in the masked twin | cut only (running statistics)


def param_role(attr: str, dim: int, zeroed: bool) -> str:
    """The slot role of entries of parameter ``attr`` along ``dim``: ``affine:gamma:0``, ``param:running_mean:0``."""
    return f"{PARAM_ROLES[0] if zeroed else PARAM_ROLES[1]}:{attr}:{dim}"


def parse_param_role(role: str) -> tuple[str, int, bool] | None:
    """``(attr, dim, zeroed)`` of a parameter role, None for a layer role (``conv_out``, ``bn``, ...)."""
    kind, _, rest = role.partition(":")
    if kind not in PARAM_ROLES or not rest:
        return None
    attr, _, dim = rest.rpartition(":")
    return attr, int(dim), kind == PARAM_ROLES[0]


class Layout(NamedTuple):
    """The atoms of a tensor's channel axes: ``atoms`` has the tensor's sizes at ``dims`` (usually (1,))."""

    dims: tuple[int, ...]
    atoms: np.ndarray

    @property
    def flat(self) -> list[int]:
        return [int(a) for a in self.atoms.reshape(-1)]


class Atoms:
    """Union-find over atoms with a zero rule each (see the module docstring)."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.kind: list[str] = []  # producer | fixed | zero | copy | same | all | any | never
        self.args: list[tuple[int, ...]] = []

    def new(self, kind: str, args: Iterable[int] = ()) -> int:
        self.parent.append(len(self.parent))
        self.kind.append(kind)
        self.args.append(tuple(args))
        return len(self.parent) - 1

    def find(self, a: int) -> int:
        root = a
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[a] != root:
            self.parent[a], a = root, self.parent[a]
        return root

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra

    def zero(self, a: int, memo: dict[int, bool]) -> bool:
        """Whether atom ``a`` is exactly zero in the masked twin when its own channel is removed."""
        if a in memo:
            return memo[a]
        memo[a] = False  # cycles (a module called twice) count as not zero
        kind, args = self.kind[a], self.args[a]
        same_class = [x for x in args if self.find(x) == self.find(a)]
        if kind in ("producer", "zero", "copy"):
            result = True
        elif kind == "same":
            result = bool(same_class) and self.zero(same_class[0], memo)
        elif kind == "all":
            result = len(same_class) == len(args) and all(self.zero(x, memo) for x in args)
        elif kind == "any":
            result = any(self.zero(x, memo) for x in same_class)
        else:  # fixed, never
            result = False
        memo[a] = result
        return result


# --------------------------------------------------------------------------- the walker


class Walker:
    """State of one trace: a layout per tensor, the module ports, pins and reads. Handlers call its methods."""

    def __init__(self, model: nn.Module, trust_sizes: bool) -> None:
        self.model = model
        self.names = {id(m): name for name, m in model.named_modules()}
        self.trust_sizes = trust_sizes
        self.atoms = Atoms()
        self.layouts: dict[int, Layout] = {}
        self.alive: list[torch.Tensor] = []  # keeps traced tensors alive so their ids stay unique
        self.ports: dict[tuple[str, str], dict[int, int]] = {}
        self.producer_of: dict[int, str] = {}  # id(tensor) -> conv that produced it
        self.conv_atoms: dict[str, list[int]] = {}
        self.conv_order: list[str] = []
        self.sequence: list[str] = []  # conv names and "M" (max pool) in call order
        self.bn_after: dict[str, str] = {}
        self.calls: list[ModuleCall] = []
        self.outputs: dict[str, list[int]] = {}
        self.reads: list[int] = []  # atoms read by an op that mixes channels
        self.pinned: set[int] = set()
        self.blocked: dict[str, str] = {}
        self.pinned_at: dict[str, list[int]] = {}  # where -> the atoms pinned there
        self.sizes: list[tuple[str, str, list[list[int]]]] = []  # (layer, attribute, atoms of each piece)
        self.assumed: list[str] = []
        self.where = "<top level>"  # the layer the current op runs in
        self.origin: dict[int, str] = {}  # id(tensor) -> layer that made it
        self.consumed: set[int] = set()  # ids of tensors a traced op or layer read
        self.owners = {id(t): (name, attr) for name, m in model.named_modules()
                       for attr, t in (*m._parameters.items(), *m._buffers.items()) if t is not None}
        self.param_views: dict[int, ParamView] = {}  # id(tensor) -> the per-channel parameter it shows

    # ---- tensors and layouts

    def layout(self, value: Any) -> Layout | None:
        return self.layouts.get(id(value)) if isinstance(value, torch.Tensor) else None

    def set(self, tensor: Any, layout: Layout | None) -> None:
        if isinstance(tensor, torch.Tensor) and layout is not None:
            self.alive.append(tensor)
            self.layouts[id(tensor)] = layout
            self.origin[id(tensor)] = self.where

    def consume(self, values: Any) -> None:
        """Mark the tensors in ``values`` as read by a traced op or layer."""
        self.consumed.update(id(t) for t in tensors_in(values))

    def pin_dangling(self) -> None:
        """Pin channel tensors that no traced op read: code prunekit cannot see (a TorchScript function,
        a C extension) used them, so their channels must stay."""
        for tensor in self.alive:
            key = id(tensor)
            if key not in self.consumed and tensor.is_floating_point():
                self.pin(self.layouts[key], f"a tensor of layer '{self.origin[key]}'",
                         "it is read by code prunekit cannot trace (e.g. a TorchScript function)")

    def param_view(self, value: Any) -> ParamView | None:
        """The per-channel parameter or buffer ``value`` is (or is a view of, see :meth:`follow_param`):
        a tensor with exactly one axis longer than 1, owned by a module; None otherwise. A masked parameter
        is found as the plain attribute its mask hook sets on the layer the op runs in."""
        if not isinstance(value, torch.Tensor):
            return None
        if id(value) in self.param_views:
            return self.param_views[id(value)]
        owner = self.owners.get(id(value)) or self._attribute_of(value)
        long_axes = [d for d, size in enumerate(value.shape) if size > 1]
        if owner is None or len(long_axes) != 1:
            return None
        return ParamView(owner[0], owner[1], long_axes[0], long_axes[0])

    def _attribute_of(self, value: torch.Tensor) -> tuple[str, str] | None:
        module = self.model.get_submodule(self.where) if self.where != "<top level>" else self.model
        attr = next((k for k, v in vars(module).items() if v is value), None)
        return None if attr is None else (self.where if self.where != "<top level>" else "", attr)

    def follow_param(self, value: Any, result: Any) -> bool:
        """When ``value`` is a per-channel parameter and ``result`` a reshaped view of it (one long axis of the
        same size), remember ``result`` as that parameter; True when it did."""
        view = self.param_view(value)
        if view is None or not isinstance(result, torch.Tensor) or self.layout(value) is not None:
            return False
        long_axes = [d for d, size in enumerate(result.shape) if size > 1]
        if len(long_axes) != 1 or result.shape[long_axes[0]] != value.shape[view.axis]:
            return False
        self.alive.append(result)
        self.param_views[id(result)] = view._replace(axis=long_axes[0])
        return True

    def param_atoms(self, view: ParamView, count: int, zeroed: bool) -> np.ndarray:
        """``count`` new atoms carrying the entries of ``view``'s parameter, registered as its slots.

        ``zeroed``: the parameter scales or shifts the channel (a norm's γ and β, a layer scale, a bias),
        so the masked twin zeroes its entries and they are producers; else (running statistics) they are only
        cut along with the channel. A buffer is never zeroed (masks hold parameters only)."""
        module = self.model.get_submodule(view.module)
        learned = view.attr in module._parameters or f"{view.attr}_orig" in module._parameters
        zeroed = zeroed and learned  # a buffer cannot be masked: it is cut, and its channel is not zero
        role = param_role(view.attr, view.dim, zeroed)
        kind = "producer" if zeroed else ("never" if learned or view.attr not in ("running_mean", "running_var")
                                          else "same")
        atoms = np.array([self.atoms.new(kind) for _ in range(count)], dtype=np.int64)
        for index, atom in enumerate(atoms):
            self.register(view.module, role, index, int(atom))
        return atoms

    def fresh(self, tensor: torch.Tensor, kind: str) -> Layout | None:
        """New atoms of rule ``kind`` for dim 1 of ``tensor`` (None below 2 dims)."""
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2:
            return None
        return Layout((1,), np.array([self.atoms.new(kind) for _ in range(tensor.shape[1])], dtype=np.int64))

    def known(self, value: Any) -> Layout | None:
        """The layout of ``value``; a tensor never seen before (a parameter, a constant) gets fixed atoms."""
        layout = self.layout(value)
        if layout is None and isinstance(value, torch.Tensor):
            layout = self.fresh(value, "fixed")
            self.set(value, layout)
        return layout

    def new_op(self, kind: str, layouts: list[Layout]) -> Layout:
        """One new atom per channel with rule ``kind`` over the aligned atoms of ``layouts``, all united."""
        first = layouts[0]
        stacked = np.stack([lay.atoms for lay in layouts])
        out = np.empty_like(first.atoms)
        for index in np.ndindex(first.atoms.shape):
            operands = [int(a) for a in stacked[(slice(None), *index)]]
            atom = self.atoms.new(kind, operands)
            for other in operands:
                self.atoms.union(atom, other)
            out[index] = atom
        return Layout(first.dims, out)

    # ---- ports, pins and reads

    def register(self, module: str, role: str, index: int, atom: int) -> None:
        """Record that slot (module, role, index) carries ``atom``; a module called twice couples its calls."""
        port = self.ports.setdefault((module, role), {})
        if index in port:
            self.atoms.union(port[index], atom)
        else:
            port[index] = atom

    def read(self, layout: Layout | None) -> None:
        """The op mixes these channels: each must be exactly zero when removed (see the module doc)."""
        if layout is not None:
            self.reads.extend(layout.flat)

    def pin(self, layout: Layout | None, where: str, why: str) -> None:
        """These channels are kept: record the reason once per place."""
        if layout is None or not layout.atoms.size:
            return
        self.pinned.update(layout.flat)
        self.blocked.setdefault(where, why)
        self.pinned_at.setdefault(where, []).extend(layout.flat)

    def pin_inputs(self, values: Iterable[Any], where: str, why: str) -> None:
        for value in values:
            self.pin(self.layout(value), where, why)

    def assume(self, what: str) -> bool:
        """Record a size assumption (see the module doc); False when the trace must not make it."""
        if self.trust_sizes:
            self.assumed.append(what)
        return self.trust_sizes

    def conv_outputs(self, name: str, count: int) -> list[int]:
        """The producer atoms of conv ``name``'s ``count`` filters (the same atoms on every call)."""
        if name not in self.conv_atoms:
            self.conv_atoms[name] = [self.atoms.new("producer") for _ in range(count)]
            self.conv_order.append(name)
            self.sequence.append(name)
        for index, atom in enumerate(self.conv_atoms[name]):
            self.register(name, "conv_out", index, atom)
        return list(self.conv_atoms[name])

    def result(self) -> ChannelGraph:
        return _build_graph(self)


class _Recorder(TorchFunctionMode):
    """Sends every torch op of the forward pass, and every call of a layer with a handler, to ``handlers``.

    Inside a layer with a handler (a Conv2d, including its mask pre-hook) ops are not recorded: the layer's
    handler sees its input and output. The hooks are global and removed on exit.
    """

    def __init__(self, walker: Walker, handlers: Any) -> None:
        super().__init__()
        self.walker, self.handlers = walker, handlers
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
        if self.depth or (name is not None and self.handlers.layer_handler(module) is not None):
            self.depth += 1

    def _exit(self, module: nn.Module, inputs: tuple, output: Any) -> None:
        name = self.walker.names.get(id(module))
        handler = self.handlers.layer_handler(module) if name is not None else None
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
            if name not in self.handlers.METADATA:
                self.walker.consume(list(args) + list(kwargs.values()))
            self.handlers.trace_op(self.walker, name, args, kwargs, result)
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
                        dict(walker.blocked), list(walker.assumed), blocking, sizes)



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

