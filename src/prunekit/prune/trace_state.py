"""The state of one channel trace: the vocabulary the layer and op handlers write in, and the walker.

:func:`prunekit.prune.graph.trace_channels` makes one :class:`Walker` per trace; the handlers
(:mod:`prunekit.prune.layer_handlers`, :mod:`prunekit.prune.op_handlers`) give each traced tensor a
:class:`Layout` (its channel axis as atoms of one :class:`Atoms` union-find), register module slots, pin
channels and record reads through the walker's methods; :mod:`prunekit.prune.graph` turns the finished
walker into a :class:`~prunekit.prune.graph.ChannelGraph`. Atoms, slots, channels, the zero rule of each
atom and the size assumptions are explained in :mod:`prunekit.prune.graph`'s docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, NamedTuple

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class ModuleCall:
    """A Conv2d, ConvTranspose2d or Linear call, with what its MACs depend on besides channel counts."""

    module: str
    kind: str  # "conv" | "linear"
    positions: int  # conv: output H*W (input H*W for a transposed conv); linear: rows per sample


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
    """Union-find over atoms with a zero rule each (see :mod:`prunekit.prune.graph`)."""

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
        self.pinned_in: dict[str, str] = {}  # where -> the layer (self.where) that first pinned there
        self.sizes: list[tuple[str, str, list[list[int]]]] = []  # (layer, attribute, atoms of each piece)
        self.assumed: list[str] = []
        self.where = "<top level>"  # the layer the current op runs in
        self.origin: dict[int, str] = {}  # id(tensor) -> layer that made it
        self.consumed: set[int] = set()  # ids of tensors a traced op or layer read
        self.owners = {id(t): (name, attr) for name, m in model.named_modules()
                       for attr, t in (*m._parameters.items(), *m._buffers.items()) if t is not None}
        self.param_views: dict[int, ParamView] = {}  # id(tensor) -> the per-channel parameter it shows
        self.computed_weights: list[str] = []  # convs whose forward computes the weight (weight standardisation)
        self.widths_read: dict[tuple[str, int], list[Layout]] = {}  # (layer, channel width it read) -> channels
        self.other_sizes_read: set[tuple[str, int]] = set()  # (layer, a size it read from an axis without channels)

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

    def read_sizes(self, tensor: torch.Tensor, dims: Iterable[int]) -> None:
        """Record that the current layer's forward read the sizes of traced ``tensor``'s axes ``dims`` (``x.shape``,
        ``x.size(1)``): a size read from a channel axis may later shape another tensor (see :meth:`widths_in_shape`)."""
        layout = self.layout(tensor)
        if layout is None:  # not traced (the network's input, a constant): it says nothing about channels
            return
        for dim in dims:
            if layout.dims == (dim,):
                self.widths_read.setdefault((self.where, int(tensor.shape[dim])), []).append(layout)
            else:
                self.other_sizes_read.add((self.where, int(tensor.shape[dim])))

    def widths_in_shape(self, shape: Iterable[Any]) -> list[tuple[int, list[Layout]]]:
        """``(axis, channels)`` for each axis after the batch of an explicit target ``shape`` whose size is a
        channel width the current layer's forward read, and no other size it read: the size probably came from
        those channels (a size read in another layer is not matched: equal widths elsewhere are common)."""
        sizes = [(axis, (self.where, size)) for axis, size in enumerate(shape) if axis and isinstance(size, int)]
        return [(axis, self.widths_read[key]) for axis, key in sizes
                if key in self.widths_read and key not in self.other_sizes_read]

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

    @property
    def place(self) -> str:
        """Where the current op runs, as messages name it: ``layer 'stages.0.norm'``, or ``the model's own forward``
        for the root module (whose name is '')."""
        return f"layer '{self.layer}'" if self.layer else "the model's own forward"

    @property
    def layer(self) -> str:
        """The qualified name of the layer the current op runs in ('' for the model's own forward or outside it)."""
        return "" if self.where == "<top level>" else self.where

    @property
    def module(self) -> nn.Module:
        """The module the current op runs in (the model itself in its own forward or outside it)."""
        return self.model.get_submodule(self.layer)

    def attribute_names(self, test: Callable[[Any], bool]) -> list[str]:
        """Names of the plain attributes (``vars``: not parameters, buffers or submodules) of :attr:`module`
        whose value passes ``test``, in definition order."""
        return [k for k, v in vars(self.module).items() if test(v)]

    def _attribute_of(self, value: torch.Tensor) -> tuple[str, str] | None:
        names = self.attribute_names(lambda v: v is value)
        return (self.layer, names[0]) if names else None

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

    def fresh_outputs(self, outputs: list[torch.Tensor]) -> None:
        """Give ``outputs`` new, fixed channels (what an op makes from inputs prunekit does not follow)."""
        for tensor in outputs:
            self.set(tensor, self.fresh(tensor, "fixed"))

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
        """The op mixes these channels: each must be exactly zero when removed (see :mod:`prunekit.prune.graph`)."""
        if layout is not None:
            self.reads.extend(layout.flat)

    def pin(self, layout: Layout | None, where: str, why: str) -> None:
        """These channels are kept: record the reason once per place (``where``, as messages name it), and the
        layer the op runs in."""
        if layout is None or not layout.atoms.size:
            return
        self.pinned.update(layout.flat)
        self.blocked.setdefault(where, why)
        self.pinned_in.setdefault(where, self.where)
        self.pinned_at.setdefault(where, []).extend(layout.flat)

    def unpin_layer(self, layer: str, inputs: Layout | None) -> None:
        """Forget the reasons recorded for ops inside ``layer`` so far that pinned none of the ``inputs`` channels
        (ops on its parameters, e.g. a weight standardisation): their atoms were new fixed ones, which stay kept,
        so no channel is freed."""
        held = set(inputs.flat) if inputs is not None else set()
        for where in [k for k in self.blocked if self.pinned_in.get(k) == layer
                      and not held & set(self.pinned_at.get(k, ()))]:
            del self.blocked[where]
            self.pinned_at.pop(where, None)
            del self.pinned_in[where]

    def pin_inputs(self, values: Iterable[Any], where: str, why: str) -> None:
        for value in values:
            self.pin(self.layout(value), where, why)

    def assume(self, what: str) -> bool:
        """Record a size assumption (see :mod:`prunekit.prune.graph`); False when the trace must not make it."""
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
