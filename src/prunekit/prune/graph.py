"""Trace a model with torch.fx and derive its channel groups: what must be removed together.

Vocabulary
----------
slot     one index on one axis of one module, e.g. ``Slot("layer1.0.conv1", "conv_out", 5)`` (filter 5:
         weight row 5 and bias 5). Roles:

         ``conv_out``      weight rows + bias of a Conv2d (groups = 1): the conv *produces* the channel
         ``conv_in``       weight columns of a Conv2d (groups = 1): the conv *consumes* it
         ``depthwise``     row + bias of a depthwise Conv2d (groups = in = out): output i is input i
         ``bn``            γ, β, running mean/var of a BatchNorm2d (right after a conv or on a concatenation)
         ``linear_in``     input features of a Linear (after flatten, H*W consecutive features per channel)
         ``shortcut_in``   an input channel of a ZeroPadShortcut (entries pointing at it become -1)
         ``shortcut_out``  an output channel of a ZeroPadShortcut (its ``source_index`` entry is dropped)

channel  the unit of removal: every slot that carries one channel of activation. Pass-through ops
         (BN, activations with f(0) = 0, pooling, dropout, depthwise convs) keep a channel's identity; an
         addition couples the channels of its operands (channel i of both become one channel); ``cat`` on
         dim 1 places its operands' channels at offsets; flatten maps a channel to H*W features.
group    channels that share producing convs, e.g. the residual stream of a ResNet stage, or one conv's
         output with its BN. Allocation works per group (the same ratio of every group, a global ranking
         normalised per group); a group is never emptied.

ZeroPadShortcut (option-A ResNets) is a channel *map*, not a coupling: its output channel j copies input
channel ``source_index[j]`` (or is zero). The copy enters the output channel as a *dependency*: an output
channel that copies a live input channel is not zero even when all its convs are masked, so it may only be
removed together with (or after) its source channel; removing an input channel alone just turns the
entries that copied it into -1. Stages are never coupled, which is exactly where a coupling-based tracer
goes wrong on these networks.

Only Conv2d / BatchNorm2d / Linear sizes and ZeroPadShortcut ``source_index`` ever change, so a pruned
registry model is still described by :func:`prunekit.models.channel_config`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, NamedTuple, Sequence

import torch
import torch.fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp, TensorMetadata

from prunekit.errors import PrunekitError
from prunekit.models.layers import ZeroPadShortcut

ROLES = ("conv_out", "conv_in", "depthwise", "bn", "linear_in", "shortcut_in", "shortcut_out")
PRODUCER_ROLES = ("conv_out", "depthwise", "bn", "shortcut_out")
CONSUMER_ROLES = ("conv_in", "linear_in", "shortcut_in")

SUPPORTED = (
    "Conv2d (groups 1, or depthwise with groups = in = out), BatchNorm2d, Linear after flatten, "
    "ZeroPadShortcut, activations with f(0) = 0, pooling, dropout, identity, add/sub of equally wide "
    "tensors, cat, flatten/view to (N, C*H*W), mul/div by a scalar or a tensor broadcast over channels"
)


class Slot(NamedTuple):
    """One index on one axis of one module (see the module docstring for the roles)."""

    module: str
    role: str
    index: int


@dataclass(frozen=True)
class Channel:
    """The unit of removal: every slot it occupies, and the channels it depends on.

    ``prunable`` is False for channels that reach the model output, pass through an op that is not
    zero-preserving (a sigmoid, a BN without affine parameters, ``x + 1``) or are the network input.
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
    """A Conv2d or Linear call, with what its MACs depend on besides channel counts."""

    module: str
    kind: str  # "conv" | "linear"
    positions: int  # conv: output H*W; linear: rows per sample (1 for a (N, F) input)


@dataclass
class ChannelGraph:
    """Everything allocation and surgery need to know about a model's channels.

    ``ports[(module, role)][index]`` is the channel id of that slot; ``bn_after[conv]`` the BatchNorm2d
    applied directly to that conv's output; ``calls`` every Conv2d/Linear call (MAC estimates);
    ``layout`` conv names and ``"M"`` (max pool) in call order (checks VGG-style cfgs).
    """

    channels: dict[int, Channel]
    groups: list[ChannelGroup]
    ports: dict[tuple[str, str], dict[int, int]]
    bn_after: dict[str, str]
    calls: list[ModuleCall]
    layout: list[str]

    def prunable(self, group: ChannelGroup) -> list[int]:
        return [c for c in group.channels if self.channels[c].prunable]

    def producer_group(self) -> dict[str, int]:
        """Conv name -> id of the group its filters belong to."""
        return {conv: g.id for g in self.groups for conv in g.producers}


def trace_channels(model: nn.Module, example_inputs: Any = None) -> ChannelGraph:
    """Trace ``model`` (ZeroPadShortcut as a leaf) and return its :class:`ChannelGraph`.

    ``example_inputs``: a tensor or a tuple of tensors for ``model(*inputs)``; default one CIFAR image
    (1, 3, 32, 32) on the model's device. Side effects: none (one forward pass in eval mode under
    ``no_grad``; every module's train/eval flag is restored). Raises PrunekitError for a model torch.fx
    cannot trace or an op whose channel layout cannot be followed, naming the node and the layer.
    """
    inputs = _as_tuple(model, example_inputs)
    graph_module = _trace(model)
    _propagate_shapes(model, graph_module, inputs)
    walker = _Walker(model)
    for node in graph_module.graph.nodes:
        walker.visit(node)
    return walker.result()


def _as_tuple(model: nn.Module, example_inputs: Any) -> tuple:
    if example_inputs is None:
        tensor = next(iter(model.parameters()), None)
        device = tensor.device if tensor is not None else "cpu"
        return (torch.zeros(1, 3, 32, 32, device=device),)
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


class _Tracer(torch.fx.Tracer):
    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, ZeroPadShortcut) or super().is_leaf_module(m, qualname)


def _trace(model: nn.Module) -> torch.fx.GraphModule:
    try:
        graph = _Tracer().trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError on control flow, ...)
        raise PrunekitError(
            f"torch.fx cannot trace {type(model).__name__} ({type(exc).__name__}: {exc}); channel pruning "
            "needs a traceable forward (no data-dependent control flow)"
        ) from None
    return torch.fx.GraphModule(model, graph)


def _propagate_shapes(model: nn.Module, graph_module: torch.fx.GraphModule, inputs: tuple) -> None:
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            ShapeProp(graph_module).propagate(*inputs)
    finally:
        for module, mode in modes.items():
            module.training = mode


# --------------------------------------------------------------------------- atoms (union-find)


class _Atoms:
    """Union-find over atoms: conv filters, fixed (unprunable) channels, zero channels, shortcut copies."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.kind: list[str] = []
        self.dep: list[int | None] = []
        self.has_conv: list[bool] = []

    def new(self, kind: str, dep: int | None = None) -> int:
        self.parent.append(len(self.parent))
        self.kind.append(kind)
        self.dep.append(dep)
        self.has_conv.append(kind == "conv")
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
            self.has_conv[ra] = self.has_conv[ra] or self.has_conv[rb]

    def carries_conv(self, layout: Sequence[int] | None) -> bool:
        return layout is not None and any(self.has_conv[self.find(a)] for a in layout)


# --------------------------------------------------------------------------- op tables

_PASS_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardtanh, nn.Mish, nn.Tanh,
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.AlphaDropout, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Upsample, nn.ZeroPad2d,
)
_BLOCK_MODULES = (nn.Sigmoid, nn.Hardsigmoid, nn.Softplus)
_PASS_FUNCTIONS = {
    "relu", "relu_", "relu6", "leaky_relu", "leaky_relu_", "elu", "elu_", "gelu", "silu", "hardswish",
    "hardtanh", "hardtanh_", "mish", "tanh", "tanh_", "dropout", "dropout1d", "dropout2d", "alpha_dropout",
    "feature_alpha_dropout", "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
    "interpolate", "upsample", "contiguous", "clone", "detach", "to", "float", "half", "double", "type_as",
    "neg",
}
_BLOCK_FUNCTIONS = {"sigmoid", "sigmoid_", "hardsigmoid", "softplus", "exp"}
_META_FUNCTIONS = {"size", "dim", "getattr", "numel", "shape", "ndimension"}
_RESHAPE_FUNCTIONS = {"view", "reshape", "flatten", "squeeze", "unsqueeze"}
_ADD_FUNCTIONS = {"add", "add_", "iadd", "sub", "sub_", "isub"}
_MUL_FUNCTIONS = {"mul", "mul_", "imul", "truediv", "div", "div_", "itruediv"}
_REDUCE_FUNCTIONS = {"mean", "sum", "amax", "amin"}
_MAX_POOLS = (nn.MaxPool2d,)
_BATCHNORMS = (nn.BatchNorm2d, nn.SyncBatchNorm)  # SyncBatchNorm: distributed training, same state


def _function_name(node: torch.fx.Node) -> str:
    target = node.target
    return target if isinstance(target, str) else getattr(target, "__name__", str(target))


def _layer_of(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    stack = node.meta.get("nn_module_stack") or {}
    return next(reversed(stack)) if stack else "<top level>"


def _shape(node: Any) -> tuple[int, ...] | None:
    if not isinstance(node, torch.fx.Node):
        return None
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if isinstance(meta, TensorMetadata) else None


def _keeps_batch_and_channels(index: tuple, ndim: int) -> bool:
    """Whether ``x[index]`` leaves dims 0 and 1 whole (``x[:, :, ::2]``, ``x[..., 1:]``)."""
    if any(i is None for i in index):
        return False
    full = slice(None)
    if index and index[0] is Ellipsis:
        return len(index) - 1 <= ndim - 2
    first_two = list(index[:2])
    if len(first_two) == 2 and first_two[1] is Ellipsis:
        first_two = first_two[:1]
    return all(isinstance(i, slice) and i == full for i in first_two)


def _is_tuple_output(node: torch.fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")  # TensorMetadata is itself a NamedTuple
    return isinstance(meta, (tuple, list)) and not isinstance(meta, TensorMetadata)


# --------------------------------------------------------------------------- the walk


class _Walker:
    """Visits fx nodes in order, assigning each tensor a channel layout (one atom per channel of dim 1)."""

    def __init__(self, model: nn.Module) -> None:
        self.modules = dict(model.named_modules())
        self.atoms = _Atoms()
        self.layouts: dict[torch.fx.Node, list[int] | None] = {}
        self.ports: dict[tuple[str, str], dict[int, int]] = {}
        self.conv_atoms: dict[str, list[int]] = {}
        self.conv_order: list[str] = []
        self.layout: list[str] = []
        self.bn_after: dict[str, str] = {}
        self.calls: list[ModuleCall] = []

    # ---- entry points

    def visit(self, node: torch.fx.Node) -> None:
        if node.op == "placeholder":
            layout = self._fresh(node, "fixed")
        elif node.op == "get_attr":
            layout = None
        elif node.op == "output":
            layout = self._block_outputs(node)
        elif node.op == "call_module":
            layout = self._call_module(node)
        else:
            layout = self._call_function(node)
        self.layouts[node] = layout

    def result(self) -> ChannelGraph:
        return _build_graph(self)

    # ---- helpers

    def _fresh(self, node: torch.fx.Node, kind: str) -> list[int] | None:
        shape = _shape(node)
        if shape is None or len(shape) < 2:
            return None
        return [self.atoms.new(kind) for _ in range(shape[1])]

    def _layout(self, arg: Any) -> list[int] | None:
        return self.layouts.get(arg) if isinstance(arg, torch.fx.Node) else None

    def _register(self, module: str, role: str, index: int, atom: int) -> None:
        """Record that slot (module, role, index) carries ``atom``; a module called twice couples its calls."""
        port = self.ports.setdefault((module, role), {})
        if index in port:
            self.atoms.union(port[index], atom)
        else:
            port[index] = atom

    def _block(self, layout: list[int] | None) -> list[int] | None:
        """Mark the channels of ``layout`` unprunable (they stop being zero when masked)."""
        for atom in layout or ():
            self.atoms.union(atom, self.atoms.new("fixed"))
        return layout

    def _tracked_inputs(self, node: torch.fx.Node) -> list[torch.fx.Node]:
        return [n for n in node.all_input_nodes if self.atoms.carries_conv(self.layouts.get(n))]

    def _refuse(self, node: torch.fx.Node, why: str) -> None:
        if node.op == "call_module":
            op = f"{type(self.modules[node.target]).__name__} '{node.target}'"
        else:
            op = f"'{_function_name(node)}'"
        raise PrunekitError(
            f"channel pruning cannot follow channels through {op} (fx node '{node.name}') in layer "
            f"'{_layer_of(node)}': {why}. Supported: {SUPPORTED}. Change the model, or use unstructured pruning."
        )

    def _unknown(self, node: torch.fx.Node, why: str) -> list[int] | None:
        """An op we cannot follow: fine on unprunable inputs (fresh fixed output), refused on conv channels."""
        if self._tracked_inputs(node):
            self._refuse(node, why)
        if _is_tuple_output(node):
            return None
        return self._fresh(node, "fixed")

    def _block_outputs(self, node: torch.fx.Node) -> None:
        for arg in node.all_input_nodes:
            self._block(self.layouts.get(arg))
        return None

    # ---- modules

    def _call_module(self, node: torch.fx.Node) -> list[int] | None:
        module = self.modules[node.target]
        if isinstance(module, ZeroPadShortcut):
            return self._shortcut(node, module)
        if isinstance(module, nn.Conv2d):
            return self._conv(node, module)
        if isinstance(module, _BATCHNORMS):
            return self._batchnorm(node, module)
        if isinstance(module, nn.Linear):
            return self._linear(node, module)
        if isinstance(module, (nn.Flatten, nn.Unflatten)):
            return self._reshape(node)
        if isinstance(module, _MAX_POOLS):
            self.layout.append("M")
        if isinstance(module, _PASS_MODULES) and not _is_tuple_output(node):
            return self._pass(node)
        if isinstance(module, _BLOCK_MODULES):
            return self._block(self._pass(node))
        return self._unknown(node, f"prunekit does not know how {type(module).__name__} uses channels")

    def _conv(self, node: torch.fx.Node, conv: nn.Conv2d) -> list[int] | None:
        name, x = str(node.target), self._layout(node.args[0])
        out_shape = _shape(node)
        self.calls.append(ModuleCall(name, "conv", out_shape[2] * out_shape[3] if out_shape else 1))
        if conv.groups == conv.in_channels == conv.out_channels and conv.groups > 1:
            return self._depthwise(node, name, x)
        if conv.groups != 1:
            if not self.atoms.carries_conv(x):
                return self._block(self._conv_outputs(name, conv))
            self._refuse(node, f"grouped convolution (groups={conv.groups}, in={conv.in_channels}, "
                               f"out={conv.out_channels}); only groups=1 or depthwise (groups=in=out) are supported")
        for index, atom in enumerate(x or ()):
            self._register(name, "conv_in", index, atom)
        return self._conv_outputs(name, conv)

    def _conv_outputs(self, name: str, conv: nn.Conv2d) -> list[int]:
        if name not in self.conv_atoms:
            self.conv_atoms[name] = [self.atoms.new("conv") for _ in range(conv.out_channels)]
            self.conv_order.append(name)
            self.layout.append(name)
        for index, atom in enumerate(self.conv_atoms[name]):
            self._register(name, "conv_out", index, atom)
        return list(self.conv_atoms[name])

    def _depthwise(self, node: torch.fx.Node, name: str, x: list[int] | None) -> list[int] | None:
        if x is None:
            x = self._fresh(node, "fixed")
        for index, atom in enumerate(x):
            self._register(name, "depthwise", index, atom)
        return list(x)

    def _batchnorm(self, node: torch.fx.Node, bn: nn.Module) -> list[int] | None:
        name, source, x = str(node.target), node.args[0], self._layout(node.args[0])
        if x is None:
            return self._unknown(node, "its input is not a traced activation")
        for index, atom in enumerate(x):
            self._register(name, "bn", index, atom)
        if isinstance(source, torch.fx.Node) and source.op == "call_module":
            producer = self.modules[source.target]
            if isinstance(producer, nn.Conv2d) and producer.groups == 1:
                self.bn_after.setdefault(str(source.target), name)
        return list(x) if bn.affine else self._block(list(x))

    def _linear(self, node: torch.fx.Node, linear: nn.Linear) -> list[int] | None:
        name, x, shape = str(node.target), self._layout(node.args[0]), _shape(node.args[0])
        if shape is not None and len(shape) != 2 and self.atoms.carries_conv(x):
            self._refuse(node, f"Linear applied to a {len(shape)}-d tensor acts on its last axis, not on "
                               "channels; flatten to (N, C*H*W) first")
        for index, atom in enumerate(x or ()):
            self._register(name, "linear_in", index, atom)
        rows = math.prod(shape[1:-1]) if shape and len(shape) > 2 else 1
        self.calls.append(ModuleCall(name, "linear", rows))
        return self._fresh(node, "fixed")

    def _shortcut(self, node: torch.fx.Node, shortcut: ZeroPadShortcut) -> list[int]:
        name, x = str(node.target), self._layout(node.args[0])
        if x is None:
            x = [self.atoms.new("fixed") for _ in range(shortcut.in_channels)]
        for index, atom in enumerate(x):
            self._register(name, "shortcut_in", index, atom)
        out = []
        for j, source in enumerate(shortcut.source_index):
            atom = self.atoms.new("zero") if source < 0 else self.atoms.new("copy", dep=x[source])
            self._register(name, "shortcut_out", j, atom)
            out.append(atom)
        return out

    # ---- functions and methods

    def _call_function(self, node: torch.fx.Node) -> list[int] | None:
        name = _function_name(node)
        if name in _META_FUNCTIONS or (name == "getitem" and self._layout(node.args[0]) is None
                                       and not self._tracked_inputs(node)):
            return None if _shape(node) is None else self._fresh(node, "fixed")
        handler = {
            "cat": self._cat, "concat": self._cat, "getitem": self._getitem,
            "transpose": self._permute, "permute": self._permute, "pad": self._pad, "clamp": self._clamp,
            "softmax": self._softmax, "log_softmax": self._softmax,
        }.get(name)
        if handler is not None:
            return handler(node)
        if name in ("max_pool2d",):
            self.layout.append("M")
        if name in _PASS_FUNCTIONS and not _is_tuple_output(node):
            return self._pass(node)
        if name in _BLOCK_FUNCTIONS:
            return self._block(self._pass(node))
        if name in _RESHAPE_FUNCTIONS:
            return self._reshape(node)
        if name in _ADD_FUNCTIONS:
            return self._add(node)
        if name in _MUL_FUNCTIONS:
            return self._mul(node, divide="div" in name)
        if name in _REDUCE_FUNCTIONS:
            return self._reduce(node)
        return self._unknown(node, f"prunekit does not know how '{name}' uses channels")

    def _pass(self, node: torch.fx.Node) -> list[int] | None:
        """Channel-preserving op on its first argument; other tensor arguments must not carry channels."""
        x = self._layout(node.args[0]) if node.args else None
        others = [n for n in self._tracked_inputs(node) if n is not node.args[0]]
        if others:
            self._refuse(node, "it combines several channel tensors")
        if x is None:
            return self._fresh(node, "fixed")
        out_shape, in_shape = _shape(node), _shape(node.args[0])
        if out_shape is None or in_shape is None or out_shape[:2] != in_shape[:2]:
            return self._unknown(node, "it changes the batch or channel axis")
        return list(x)

    def _reshape(self, node: torch.fx.Node) -> list[int] | None:
        x, in_shape, out_shape = self._layout(node.args[0]), _shape(node.args[0]), _shape(node)
        if x is None or in_shape is None or out_shape is None:
            return self._fresh(node, "fixed")
        if len(in_shape) >= 2 and len(out_shape) >= 2 and out_shape[:2] == in_shape[:2]:
            return list(x)
        positions = math.prod(in_shape[2:])
        if len(out_shape) == 2 and out_shape[0] == in_shape[0] and out_shape[1] == in_shape[1] * positions:
            return [atom for atom in x for _ in range(positions)]
        return self._unknown(node, f"reshaping {tuple(in_shape)} to {tuple(out_shape)} mixes or splits the "
                                   "channel axis (only flatten to (N, C*H*W) is supported)")

    def _cat(self, node: torch.fx.Node) -> list[int] | None:
        pieces = node.args[0] if node.args else node.kwargs.get("tensors")
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim", 0)
        out_shape = _shape(node)
        if out_shape is None:
            return self._unknown(node, "unexpected output")
        dim = dim % len(out_shape)
        layouts = [self._layout(p) if self._layout(p) is not None else self._fresh(p, "fixed") for p in pieces]
        if dim == 1:
            return [atom for layout in layouts for atom in layout]
        first = layouts[0]
        for layout in layouts[1:]:  # cat on batch/space: channel i of every piece is one channel
            for a, b in zip(first, layout):
                self.atoms.union(a, b)
        return list(first)

    def _getitem(self, node: torch.fx.Node) -> list[int] | None:
        x, in_shape, out_shape = self._layout(node.args[0]), _shape(node.args[0]), _shape(node)
        if x is None or in_shape is None or out_shape is None:
            return self._unknown(node, "indexing the output of an unsupported op")
        index = node.args[1] if isinstance(node.args[1], tuple) else (node.args[1],)
        if _keeps_batch_and_channels(index, len(in_shape)) and out_shape[:2] == in_shape[:2]:
            return list(x)
        return self._unknown(node, f"indexing with {node.args[1]!r} selects or reorders channels")

    def _permute(self, node: torch.fx.Node) -> list[int] | None:
        in_shape, name = _shape(node.args[0]), _function_name(node)
        dims = list(node.args[1:])
        if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
            dims = list(dims[0])
        if in_shape is not None and dims and all(isinstance(d, int) for d in dims):
            dims = [d % len(in_shape) for d in dims]
            if name == "transpose":
                moved = set(dims) if dims[0] != dims[1] else set()
            else:
                moved = {d for i, d in enumerate(dims) if d != i}
            if not moved & {0, 1}:
                return self._pass(node)
        return self._unknown(node, "it moves the channel axis (e.g. a channel shuffle)")

    def _pad(self, node: torch.fx.Node) -> list[int] | None:
        pad = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad", ())
        value = node.args[3] if len(node.args) > 3 else node.kwargs.get("value", None)
        if len(pad) > 4:
            return self._unknown(node, "it pads the channel axis")
        return self._pass(node) if not value else self._block(self._pass(node))

    def _clamp(self, node: torch.fx.Node) -> list[int] | None:
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min")
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max")
        zero_kept = (low is None or low <= 0) and (high is None or high >= 0)
        layout = self._pass(node)
        return layout if zero_kept else self._block(layout)

    def _softmax(self, node: torch.fx.Node) -> list[int] | None:
        dim = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        shape = _shape(node)
        if dim is None or shape is None or dim % len(shape) == 1:
            return self._unknown(node, "softmax over the channel axis mixes channels")
        return self._block(self._pass(node))

    def _reduce(self, node: torch.fx.Node) -> list[int] | None:
        in_shape, out_shape = _shape(node.args[0]), _shape(node)
        x = self._layout(node.args[0])
        dims = node.args[1] if len(node.args) > 1 else node.kwargs.get("dim")
        if x is not None and dims is not None and in_shape and out_shape and len(out_shape) >= 2:
            dims = {d % len(in_shape) for d in (dims if isinstance(dims, (list, tuple)) else [dims])}
            if not dims & {0, 1} and out_shape[:2] == in_shape[:2]:
                return list(x)
        return self._unknown(node, "it reduces over the batch or channel axis")

    # ---- binary elementwise ops

    def _operands(self, node: torch.fx.Node) -> list[tuple[Any, list[int] | None, int]]:
        """(operand, layout or None, its size on the output's channel axis after broadcasting)."""
        out_shape = _shape(node)
        result = []
        for arg in node.args[:2]:
            shape = _shape(arg) if isinstance(arg, torch.fx.Node) else ()
            offset = 1 - (len(out_shape) - len(shape or ())) if out_shape else -1
            size = shape[offset] if shape and offset >= 0 else 1
            layout = self._layout(arg) if shape and len(shape) == len(out_shape) else None
            if layout is None and self.atoms.carries_conv(self._layout(arg)):
                self._refuse(node, "an operand with channels is broadcast against a wider tensor")
            result.append((arg, layout, size))
        return result

    def _add(self, node: torch.fx.Node) -> list[int] | None:
        """add/sub: equally wide operands are coupled channel by channel; a non-zero constant blocks."""
        out_shape = _shape(node)
        if out_shape is None or len(out_shape) < 2:
            return self._unknown(node, "unexpected operands")
        width = out_shape[1]
        operands = self._operands(node)
        wide = [layout for _, layout, size in operands if layout is not None and size == width]
        narrow = [(arg, layout, size) for arg, layout, size in operands if not (layout is not None and size == width)]
        for arg, layout, size in narrow:
            if self.atoms.carries_conv(layout):
                self._refuse(node, f"adds a {size}-channel tensor to a {width}-channel one")
            if size > 1 and any(self.atoms.carries_conv(w) for w in wide):
                self._refuse(node, "adds a per-channel constant, which cannot be sliced")
        if not wide:
            return self._fresh(node, "fixed")
        for layout in wide[1:]:
            for a, b in zip(wide[0], layout):
                self.atoms.union(a, b)
        nonzero_constant = any(not (isinstance(arg, (int, float)) and arg == 0) for arg, _, _ in narrow)
        return self._block(list(wide[0])) if nonzero_constant else list(wide[0])

    def _mul(self, node: torch.fx.Node, divide: bool) -> list[int] | None:
        """mul/div by a scalar or a tensor broadcast over channels keeps zeros; two channel tensors are refused."""
        out_shape = _shape(node)
        if out_shape is None or len(out_shape) < 2:
            return self._unknown(node, "unexpected operands")
        width = out_shape[1]
        operands = self._operands(node) + [(1, None, 1)] * (2 - len(node.args[:2]))
        (_, la, sa), (_, lb, sb) = operands
        if la is not None and lb is not None and sa == sb == width > 1:
            if not divide and [self.atoms.find(a) for a in la] == [self.atoms.find(b) for b in lb]:
                return list(la)  # x * x
            self._refuse(node, "multiplies two different channel tensors (one is not broadcast over channels)")
        if la is not None and sa == width and sb == 1:
            return list(la)
        if lb is not None and sb == width and sa == 1 and not divide:
            return list(lb)
        if self._tracked_inputs(node):
            self._refuse(node, "multiplies by a per-channel tensor that prunekit cannot slice")
        return self._fresh(node, "fixed")


# --------------------------------------------------------------------------- assembling the result


def _build_graph(walker: _Walker) -> ChannelGraph:
    atoms = walker.atoms
    root_ids: dict[int, int] = {}
    slots: dict[int, list[Slot]] = {}
    for (module, role), port in walker.ports.items():
        for index in sorted(port):
            root = atoms.find(port[index])
            cid = root_ids.setdefault(root, len(root_ids))
            slots.setdefault(cid, []).append(Slot(module, role, index))
    members = _atoms_by_channel(atoms, root_ids)
    groups, group_of = _groups(walker, atoms, root_ids, slots)
    channels = {}
    for root, cid in root_ids.items():
        kinds = {atoms.kind[a] for a in members.get(cid, ())}
        deps = {root_ids[atoms.find(atoms.dep[a])] for a in members.get(cid, ()) if atoms.kind[a] == "copy"}
        deps = {d for d in deps if d != cid}
        channels[cid] = Channel(cid, group_of.get(cid), tuple(slots[cid]), frozenset(deps),
                                prunable="conv" in kinds and "fixed" not in kinds)
    ports = {key: {i: root_ids[atoms.find(a)] for i, a in port.items()} for key, port in walker.ports.items()}
    return ChannelGraph(channels, groups, ports, walker.bn_after, walker.calls, walker.layout)


def _atoms_by_channel(atoms: _Atoms, root_ids: dict[int, int]) -> dict[int, list[int]]:
    members: dict[int, list[int]] = {}
    for atom in range(len(atoms.parent)):
        cid = root_ids.get(atoms.find(atom))
        if cid is not None:
            members.setdefault(cid, []).append(atom)
    return members


def _groups(walker: _Walker, atoms: _Atoms, root_ids: dict[int, int],
            slots: dict[int, list[Slot]]) -> tuple[list[ChannelGroup], dict[int, int]]:
    """Connected components of (channel, producing conv) pairs, ordered by first producer call."""
    conv_of: dict[str, set[int]] = {}
    for conv in walker.conv_order:
        conv_of[conv] = {root_ids[atoms.find(a)] for a in walker.conv_atoms[conv]}
    parent = {conv: conv for conv in walker.conv_order}

    def find(c: str) -> str:
        while parent[c] != c:
            parent[c] = parent[parent[c]]
            c = parent[c]
        return c

    owner: dict[int, str] = {}
    for conv in walker.conv_order:
        for cid in conv_of[conv]:
            if cid in owner:
                parent[find(conv)] = find(owner[cid])
            else:
                owner[cid] = conv
    components: dict[str, list[str]] = {}
    for conv in walker.conv_order:
        components.setdefault(find(conv), []).append(conv)
    groups, group_of = [], {}
    for gid, producers in enumerate(components.values()):
        ordered = _ordered_channels(producers, walker, atoms, root_ids)
        for cid in ordered:
            group_of[cid] = gid
        by_role: dict[str, dict[str, None]] = {}
        for cid in ordered:
            for slot in slots[cid]:
                by_role.setdefault(slot.role, {})[slot.module] = None
        groups.append(ChannelGroup(gid, tuple(producers), tuple(ordered),
                                   {role: tuple(names) for role, names in by_role.items()}))
    return groups, group_of


def _ordered_channels(producers: Iterable[str], walker: _Walker, atoms: _Atoms,
                      root_ids: dict[int, int]) -> list[int]:
    ordered: dict[int, None] = {}
    for conv in producers:
        for a in walker.conv_atoms[conv]:
            ordered[root_ids[atoms.find(a)]] = None
    return list(ordered)
