"""The registry of layers prunekit resizes: how each carries channels when traced, masked and cut.

Layers (``LAYERS``, by module type; :func:`register_layer` adds one) are the modules prunekit resizes:
each :class:`LayerHandler` says how a call maps channels (``trace``), which parameter entries carry an
output channel (``zero_entries``, the masked twin and the zero test) and how to cut the module
(``shrink``). A layer subclass with its own forward is traced op by op (:mod:`prunekit.prune.op_handlers`:
its functional ``batch_norm``, ``group_norm``, ``linear``, ``conv2d`` on its own parameters) but resized like
its base (:func:`handler_for`), and per-channel parameters a forward uses directly are cut by
:func:`shrink_parameters` (a global response norm's γ and ε are then scaled by C/C'); a conv that computes its
weight in forward becomes :func:`plain_conv` when cut, and a LayerNorm over the channel axis or an ECA gate is
wrapped to run at full width (:class:`~prunekit.models.FullWidthChannels`). A layer with no entry is traced op
by op; a TorchScript block (``OPAQUE``) pins the channels into and out of it, so an unknown layer never yields a
wrong model.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models import FullWidthChannels, ZeroPadShortcut, ZeroWidthLayer
from prunekit.models.shapes import has_shape_record, record_size
from prunekit.prune.trace_state import Layout, ModuleCall, ParamView, Walker, parse_param_role, tensors_in

# --------------------------------------------------------------------------- layers


class LayerHandler:
    """How one module type carries channels. Subclasses set ``types`` and override what applies."""

    types: tuple[type, ...] = ()

    def accepts(self, module: nn.Module) -> bool:
        """Only the stock forward: a subclass with its own forward is traced op by op instead."""
        return any(type(module).forward is t.forward for t in self.types)

    def resizes(self, module: nn.Module) -> bool:
        """Any instance, own forward or not: a subclass keeps the parameters (and shapes) of its base."""
        return isinstance(module, self.types)

    def trace(self, w: Walker, name: str, module: nn.Module, inputs: tuple, output: Any) -> None:
        raise NotImplementedError

    def zero_entries(self, module: nn.Module, role: str, index: int) -> list[tuple[str, tuple]]:
        """``[(parameter name, index into it)]`` holding output channel ``index`` of ``role``; an index is whole
        axes (``slice(None)``) followed by the entry, e.g. ``(index,)`` or ``(slice(None), index)``; a parameter of a
        submodule is named by its path (``inner.weight``)."""
        return []

    def shrink(self, module: nn.Module, keep: dict[str, list[int]]) -> nn.Module | None:
        """Cut ``module`` to the indices ``keep[role]``, in place; or return a replacement module."""
        raise PrunekitError(f"{type(module).__name__} cannot be resized")

    def rows(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight`` as one row per output channel (filter norms, zero tests)."""
        return weight.reshape(weight.shape[0], -1)


LAYERS: list[LayerHandler] = []


def register_layer(handler: LayerHandler) -> LayerHandler:
    """Add ``handler`` to the layer registry (later registrations win); returns it. A handler of a type that
    :mod:`prunekit.models.shapes` does not record is refused: its pruned widths would not survive save/load."""
    unrecorded = [t.__name__ for t in handler.types if not has_shape_record(t)]
    if unrecorded:
        raise PrunekitError(f"{type(handler).__name__} resizes {', '.join(unrecorded)}, which "
                            "prunekit.models.shapes does not record; add a shape record (_KINDS and a builder) "
                            "so a pruned model rebuilds from its checkpoint")
    LAYERS.insert(0, handler)
    return handler


def layer_handler(module: nn.Module) -> LayerHandler | None:
    """The handler of ``module``'s type, or None (its ops are traced one by one)."""
    if isinstance(module, torch.jit.ScriptModule):
        return OPAQUE
    return next((h for h in LAYERS if h.accepts(module)), None)


def _keep(module: nn.Module, name: str, dim: int, indices: list[int]) -> None:
    """Replace parameter or buffer ``name`` of ``module`` (if set) by its entries ``indices`` along ``dim``.

    A parameter becomes a new ``nn.Parameter`` (same ``requires_grad``), a buffer a new tensor."""
    value = getattr(module, name, None)
    if value is None:
        return
    kept = value.detach().index_select(dim, torch.tensor(indices, dtype=torch.long, device=value.device)).clone()
    if isinstance(value, nn.Parameter):
        kept = nn.Parameter(kept, requires_grad=value.requires_grad)
    setattr(module, name, kept)


def _input(w: Walker, name: str, x: Any) -> Layout | None:
    layout = w.known(x)
    if layout is not None and layout.dims != (1,):
        w.pin(layout, name, "its input's channel axis is split (a view) where it is read")
        return None
    return layout


class _Conv(LayerHandler):
    """Conv2d. groups = 1: filters are new channels. One input per group (depthwise, channel multiplier):
    whole groups go, so output channels join their input channel. Other groups: every group keeps the
    same width, so position p of every group is one channel (inputs and outputs alike)."""

    types = (nn.Conv2d,)

    def trace(self, w, name, conv, inputs, output):
        x = _input(w, name, inputs[0])
        w.calls.append(ModuleCall(name, "conv", output.shape[-1] * output.shape[-2]))
        per_in, per_out = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        if conv.groups > 1 and per_in == 1:
            inputs_flat = (x if x is not None else w.fresh(inputs[0], "fixed")).flat
            out = []
            for k in range(conv.out_channels):
                atom = w.atoms.new("producer")
                w.atoms.union(atom, inputs_flat[k // per_out])
                w.register(name, "depthwise", k, atom)
                out.append(atom)
        else:
            inputs_flat = x.flat if x is not None else []
            for i, atom in enumerate(inputs_flat):
                w.register(name, "conv_in", i, atom)
                if i >= per_in:
                    w.atoms.union(atom, inputs_flat[i % per_in])
            w.read(x)
            out = w.conv_outputs(name, conv.out_channels)
            for k in range(per_out, conv.out_channels):
                w.atoms.union(out[k], out[k % per_out])
        w.producer_of[id(output)] = name
        w.outputs[name] = list(out)
        w.set(output, Layout((1,), np.array(out, dtype=np.int64)))

    def zero_entries(self, conv, role, index):
        return [("weight", (index,)), ("bias", (index,))]

    def shrink(self, conv, keep):
        if not all(keep.get(role, True) for role in ("conv_out", "conv_in")):  # a side lost every channel
            rows = keep.get("conv_out", range(conv.out_channels))
            bias = None if conv.bias is None or not rows else conv.bias.detach()[list(rows)]
            return ZeroWidthLayer.replacing(conv, len(keep.get("conv_in", range(conv.in_channels))), len(rows), bias)
        per_in, multiplier = conv.in_channels // conv.groups, conv.out_channels // conv.groups
        rows = keep.get("depthwise", keep.get("conv_out"))
        if rows is not None:
            _keep(conv, "weight", 0, rows)
            _keep(conv, "bias", 0, rows)
            conv.out_channels = len(rows)
            if "depthwise" in keep:  # whole groups went: one input channel per group
                conv.in_channels = conv.groups = len(rows) // multiplier
        if "conv_in" in keep:  # every group keeps the same positions
            _keep(conv, "weight", 1, [i for i in keep["conv_in"] if i < per_in])
            conv.in_channels = len(keep["conv_in"])
        return None


class _ConvTranspose(LayerHandler):
    """ConvTranspose2d with groups = 1: weight is (in, out, kH, kW), so filters are its columns."""

    types = (nn.ConvTranspose2d,)

    def trace(self, w, name, conv, inputs, output):
        if conv.groups != 1:
            return OPAQUE.trace(w, name, conv, inputs, output, why="a grouped ConvTranspose2d is not resized")
        x = _input(w, name, inputs[0])
        w.calls.append(ModuleCall(name, "conv", inputs[0].shape[-1] * inputs[0].shape[-2]))
        for i, atom in enumerate(x.flat if x is not None else ()):
            w.register(name, "conv_in", i, atom)
        w.read(x)
        out = w.conv_outputs(name, conv.out_channels)
        w.outputs[name] = list(out)
        w.set(output, Layout((1,), np.array(out, dtype=np.int64)))

    def zero_entries(self, conv, role, index):
        return [("weight", (slice(None), index)), ("bias", (index,))]

    def rows(self, weight):
        return weight.transpose(0, 1).flatten(1)

    def shrink(self, conv, keep):
        if "conv_out" in keep:
            _keep(conv, "weight", 1, keep["conv_out"])
            _keep(conv, "bias", 0, keep["conv_out"])
            conv.out_channels = len(keep["conv_out"])
        if "conv_in" in keep:
            _keep(conv, "weight", 0, keep["conv_in"])
            conv.in_channels = len(keep["conv_in"])
        return None


class _BatchNorm(LayerHandler):
    """BatchNorm1d/2d: per-channel; with γ and β zeroed the output is exactly zero."""

    types = (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm)

    def trace(self, w, name, bn, inputs, output):
        x = _input(w, name, inputs[0])
        if x is None:
            return
        for index, atom in enumerate(x.flat):
            w.register(name, "bn", index, atom)
        producer = w.producer_of.get(id(inputs[0]))
        if producer is not None:
            w.bn_after.setdefault(producer, name)
        out = w.new_op("producer" if bn.affine else "never", [x])
        w.outputs[name] = out.flat
        w.set(output, out)

    def zero_entries(self, bn, role, index):
        return [("weight", (index,)), ("bias", (index,))]

    def shrink(self, bn, keep):
        if not keep["bn"]:  # every channel went (a residual branch removed whole)
            return ZeroWidthLayer.replacing(bn, 0, 0)
        for name in ("weight", "bias", "running_mean", "running_var"):
            _keep(bn, name, 0, keep["bn"])
        bn.num_features = len(keep["bn"])
        return None


class _Linear(LayerHandler):
    """Linear on (N, F): input features are channels (after a flatten, H*W per channel); its outputs are
    channels too (an SE gate's expanding layer); they are never filters. Linear on the channel axis of a
    channels-last tensor ((N, H, W, C), (N, L, C)) is a 1x1 convolution: its outputs are filters."""

    types = (nn.Linear,)

    def trace(self, w, name, linear, inputs, output):
        x = w.known(inputs[0])
        ndim = inputs[0].dim()
        if ndim > 2 and x.dims == (ndim - 1,):
            return self._trace_per_position(w, name, linear, inputs[0], output, x)
        if ndim != 2:  # its input features are no traced channels: they stay, its outputs are still filters
            w.pin(x, name, f"Linear on a {ndim}-d tensor acts on its last axis, not on channels")
            return self._trace_per_position(w, name, linear, inputs[0], output, None)
        w.calls.append(ModuleCall(name, "linear", 1))
        for index, atom in enumerate(x.flat):
            w.register(name, "linear_in", index, atom)
        w.read(x)
        out = [w.atoms.new("producer") for _ in range(linear.out_features)]
        for index, atom in enumerate(out):
            w.register(name, "linear_out", index, atom)
        w.set(output, Layout((1,), np.array(out, dtype=np.int64)))

    @staticmethod
    def _trace_per_position(w, name, linear, x_tensor, output, x):
        """A Linear on the last axis of an N-d tensor, as a 1x1 conv: its filters are new channels on the output's
        last axis; ``x`` (the input's channels-last layout, None when its features are not traced) is read."""
        w.calls.append(ModuleCall(name, "linear", math.prod(x_tensor.shape[1:-1])))
        for index, atom in enumerate(x.flat if x is not None else []):
            w.register(name, "conv_in", index, atom)
        w.read(x)
        out = w.conv_outputs(name, linear.out_features)
        w.producer_of[id(output)] = name  # no w.outputs: the self-check compares layer outputs on axis 1
        w.set(output, Layout((output.dim() - 1,), np.array(out, dtype=np.int64)))

    def zero_entries(self, linear, role, index):
        return [("weight", (index,)), ("bias", (index,))]

    def shrink(self, linear, keep):
        rows, columns = keep.get("linear_out", keep.get("conv_out")), keep.get("linear_in", keep.get("conv_in"))
        if rows is not None:
            _keep(linear, "weight", 0, rows)
            _keep(linear, "bias", 0, rows)
            linear.out_features = len(rows)
        if columns is not None:
            _keep(linear, "weight", 1, columns)
            linear.in_features = len(columns)
        return None


class _Shortcut(LayerHandler):
    """ZeroPadShortcut: output j copies input ``source_index[j]`` (a dependency) or is zero."""

    types = (ZeroPadShortcut,)

    def trace(self, w, name, shortcut, inputs, output):
        x = _input(w, name, inputs[0]) or w.fresh(inputs[0], "fixed")
        for index, atom in enumerate(x.flat):
            w.register(name, "shortcut_in", index, atom)
        out = []
        for j, source in enumerate(shortcut.source_index):
            atom = w.atoms.new("zero") if source < 0 else w.atoms.new("copy", (x.flat[source],))
            w.register(name, "shortcut_out", j, atom)
            out.append(atom)
        w.outputs[name] = list(out)
        w.set(output, Layout((1,), np.array(out, dtype=np.int64)))

    def shrink(self, shortcut, keep):
        kept_inputs = keep.get("shortcut_in", list(range(shortcut.in_channels)))
        kept_outputs = keep.get("shortcut_out", list(range(shortcut.out_channels)))
        new_position = {old: new for new, old in enumerate(kept_inputs)}
        source_index = [new_position.get(shortcut.source_index[j], -1) for j in kept_outputs]
        new = ZeroPadShortcut(len(kept_inputs), len(source_index), shortcut.stride, source_index)
        return new.to(shortcut.gather_index.device).train(shortcut.training)


class _ZeroWidth(LayerHandler):
    """ZeroWidthLayer: a conv with no output channel (reads nothing) or no input channel (its outputs are
    filters holding only a bias, so a later pruning may still remove them)."""

    types = (ZeroWidthLayer,)

    def trace(self, w, name, layer, inputs, output):
        x = _input(w, name, inputs[0])
        for index, atom in enumerate(x.flat if x is not None else ()):  # registered (cut with the input), never read
            w.register(name, "conv_in", index, atom)
        out = w.conv_outputs(name, layer.out_channels) if layer.out_channels else []
        w.producer_of[id(output)] = name
        w.outputs[name] = list(out)
        w.set(output, Layout((1,), np.array(out, dtype=np.int64)))

    def zero_entries(self, layer, role, index):
        return [("bias", (index,))]

    def shrink(self, layer, keep):
        rows = keep.get("conv_out", list(range(layer.out_channels)))
        if layer.bias is not None:
            _keep(layer, "bias", 0, rows)
        if layer.bias is not None and not rows:
            layer.bias = None
        layer.resize(len(keep.get("conv_in", range(layer.in_channels))), len(rows))
        return None


class _Opaque(LayerHandler):
    """A TorchScript block (its ops are compiled, so no recorder sees them): channels in and out are kept."""

    def accepts(self, module):
        return isinstance(module, torch.jit.ScriptModule)

    def trace(self, w, name, module, inputs, output, why=None):
        why = why or (f"TorchScript block ({getattr(module, 'original_name', type(module).__name__)}): its ops "
                      "cannot be traced, so channels into and out of it are kept; script the model after pruning")
        w.pin_inputs(inputs, name, why)
        w.fresh_outputs(tensors_in(output))


RESPONSE_NORM_NAMES = ("GlobalResponseNorm", "GRN")


def is_response_norm(module: nn.Module) -> bool:
    """A global response norm (ConvNeXt-V2): a module of one of :data:`RESPONSE_NORM_NAMES` holding 1-D ``weight``
    and ``bias`` of one width and a float ``eps``."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return (type(module).__name__ in RESPONSE_NORM_NAMES and isinstance(getattr(module, "eps", None), float)
            and isinstance(weight, torch.Tensor) and isinstance(bias, torch.Tensor) and weight.dim() == 1
            and weight.shape == bias.shape)


class _ResponseNorm(LayerHandler):
    """Global response norm: ``x + β + γ · x · g / (mean over channels of g + ε)``, ``g`` each channel's L2 norm
    over the positions. Per channel except for the mean, which the masked twin takes over all C channels (removed
    ones are zero) and the cut model over C': surgery scales γ and ε by C/C', which makes the two equal exactly
    (``ε`` is recorded in the channel config). The module's forward is trusted to be this formula; the self-check
    proves it, else its channels are kept."""

    def accepts(self, module):
        return is_response_norm(module)

    def resizes(self, module):
        return False  # cut through its parameter roles (shrink_parameters)

    def trace(self, w, name, module, inputs, output):
        x = w.known(inputs[0])
        width = module.weight.shape[0]
        usable = x is not None and len(x.dims) == 1 and x.atoms.shape == (width,) and output.shape == inputs[0].shape
        if not usable or not w.assume(f"'{name}' is a global response norm over axis {x.dims[0]}"):
            w.pin(x, name, "a global response norm divides by the mean over its channels; kept because its input "
                           "is not one channel axis of its width or its forward is not the formula prunekit "
                           "rescales (the pruned model failed the self-check)")
            return w.fresh_outputs([output])
        affine = [Layout(x.dims, w.param_atoms(ParamView(name, attr, 0, 0), width, zeroed=True))
                  for attr in ("weight", "bias")]
        w.read(x)  # the mean over channels: a removed channel must be exactly zero
        w.set(output, w.new_op("all", [x, *affine]))


#: Ports that may lose every index, and the stock layer each must be for that to be exact: a residual branch's
#: convs (their outputs or inputs) and BNs, which their shrinks then replace by a ZeroWidthLayer (when a group
#: may go whole: :func:`prunekit.prune.allocate.whole_removable_groups`; the self-check proves it every time).
WHOLE_REMOVABLE_ROLES = {"conv_out": nn.Conv2d, "conv_in": nn.Conv2d, "bn": nn.BatchNorm2d}


FULL_WIDTH = "full_width"  # the role of a layer cut by running it at full width: ``full_width:<axis>:<width>``


def full_width_role(axis: int, width: int) -> str:
    return f"{FULL_WIDTH}:{axis}:{width}"


def _wrap_at_full_width(module: nn.Module, keep: dict[str, list[int]]) -> FullWidthChannels:
    """``module`` (untouched) in a :class:`FullWidthChannels` keeping the indices of its one ``full_width`` role."""
    (role, kept), = keep.items()
    _, axis, width = role.split(":")
    return FullWidthChannels.wrapping(module, kept, int(width), int(axis))


def zeroed_by_layer(role: str) -> bool:
    """Whether a layer role's entries are zeroed in the masked twin (the layer's ``zero_entries``): a filter, a
    depthwise row, a BN channel, a Linear row, a full-width norm's γ and β; not an input column."""
    return role in ("conv_out", "depthwise", "bn", "linear_out") or role.startswith(FULL_WIDTH + ":")


class _NormOverChannels(LayerHandler):
    """A LayerNorm or RMSNorm module (a subclass with its own forward too, e.g. a LayerNorm2d that permutes NCHW)
    over the channel axis. Its statistics use every channel, so it is cut by running it at its original width
    (:class:`~prunekit.models.FullWidthChannels`): in the masked twin a removed channel is zero at its input (a
    read) and its γ and β are zeroed (role ``full_width:<axis>``), so the wrapper computes exactly the twin's kept
    channels. A stock module over other axes is per channel; a subclass's forward is trusted to normalise over the
    channel axis (the self-check proves it, else its channels are kept); a norm without γ keeps its channels."""

    norms = (nn.LayerNorm, nn.RMSNorm)  # not ``types``: the norm keeps its shape (no shape record needed)

    def accepts(self, module):
        return isinstance(module, self.norms)

    def resizes(self, module):
        return self.accepts(module)

    def trace(self, w, name, norm, inputs, output):
        x = w.known(inputs[0])
        if x is None:
            return w.fresh_outputs(tensors_in(output))
        axis = x.dims[0] if len(x.dims) == 1 else None
        shape = tuple(norm.normalized_shape)
        stock = type(norm).forward in (t.forward for t in self.norms)
        normalised = range(inputs[0].dim() - len(shape), inputs[0].dim())
        if stock and axis is not None and axis not in normalised:  # per channel: statistics over other axes
            return w.set(output, w.new_op("never", [x]))
        usable = (axis is not None and shape == (len(x.atoms),) and output.shape == inputs[0].shape
                  and getattr(norm, "weight", None) is not None)
        if not usable or not (stock or w.assume(f"'{name}' normalises over its channel axis {axis}")):
            w.pin(x, name, "it normalises over the channel axis: its mean and variance use every channel; it is cut "
                           "at full width only when its input's channels lie on one axis of its width, it has γ, "
                           "and (a subclass with its own forward) the pruned model passes the self-check")
            same = output.shape == inputs[0].shape
            return w.set(output, w.new_op("never", [x]) if same else w.fresh(output, "fixed"))
        _trace_full_width(w, name, x, axis, output, "producer")

    def zero_entries(self, norm, role, index):
        return [("weight", (index,)), ("bias", (index,))]

    def shrink(self, norm, keep):
        return _wrap_at_full_width(norm, keep)


def _trace_full_width(w: Walker, name: str, x: Layout, axis: int, output: torch.Tensor, kind: str) -> None:
    """A layer over channel ``axis`` cut at full width: its input channels are slots ``full_width:<axis>:<width>``
    (a norm's γ and β, zeroed in the twin), read (each must be exactly zero when removed); its outputs are those
    channels, of zero rule ``kind`` ("producer" for a norm, whose γ and β are zeroed; "same" for a gate)."""
    for index, atom in enumerate(x.flat):
        w.register(name, full_width_role(axis, len(x.atoms)), index, atom)
    w.read(x)
    out = w.new_op(kind, [x])
    if axis == 1:
        w.outputs[name] = out.flat  # the self-check compares layer outputs on axis 1
    w.set(output, out)


class _GateOverChannels(LayerHandler):
    """An ECA-style gate: a module whose only parameters are ``Conv1d``s, one reading a single channel (the pooled
    channel vector as a sequence), on one NCHW tensor: ``x * sigmoid(conv1d(mean(x)))``. The conv1d mixes
    neighbouring channels, so it is cut at full width (:class:`~prunekit.models.FullWidthChannels`): in the masked
    twin a removed channel is zero at its input (a read), so the wrapper computes exactly the twin's gates. Its
    output is trusted to be zero where its input is (a gate); the self-check proves it, else its channels are kept."""

    def accepts(self, module):
        convs = [m for m in module.modules() if isinstance(m, nn.Conv1d)]
        if isinstance(module, nn.Conv1d) or not any(c.in_channels == 1 for c in convs):
            return False
        in_convs = {id(p) for c in convs for p in c.parameters()}
        return all(id(p) in in_convs for p in module.parameters())

    def resizes(self, module):
        return self.accepts(module)

    def trace(self, w, name, gate, inputs, output):
        x = w.known(inputs[0])
        if x is None:
            return w.fresh_outputs(tensors_in(output))
        usable = x.dims == (1,) and isinstance(output, torch.Tensor) and output.shape == inputs[0].shape
        if not usable or not w.assume(f"'{name}' gates each channel (ECA-style), zero where its input is"):
            w.pin(x, name, "conv1d along the channel axis (ECA-style attention) mixes neighbouring channels; it is cut "
                           "at full width only when it gates one tensor's channels (the pruned model passes the "
                           "self-check)")
            return w.fresh_outputs(tensors_in(output))
        _trace_full_width(w, name, x, 1, output, "same")

    def shrink(self, gate, keep):
        return _wrap_at_full_width(gate, keep)


class _FullWidth(LayerHandler):
    """A norm already cut at full width (:class:`~prunekit.models.FullWidthChannels`, a pruned model pruned again):
    channel ``i`` is entry ``kept_index[i]`` of the inner norm's γ and β; cutting it again keeps fewer indices."""

    def accepts(self, module):
        return isinstance(module, FullWidthChannels)

    def resizes(self, module):
        return self.accepts(module)

    def trace(self, w, name, wrapper, inputs, output):
        x = w.known(inputs[0])
        if x is None:
            return w.fresh_outputs(tensors_in(output))
        if x.dims != (wrapper.axis,) or len(x.atoms) != len(wrapper.kept_index) or output.shape != inputs[0].shape:
            w.pin(x, name, "a norm cut at full width is called on a tensor whose channels are not on its axis")
            return w.set(output, w.fresh(output, "fixed"))
        kind = "producer" if getattr(wrapper.inner, "weight", None) is not None else "same"
        _trace_full_width(w, name, x, wrapper.axis, output, kind)

    def zero_entries(self, wrapper, role, index):
        entry = int(wrapper.kept_index[index])
        return [("inner.weight", (entry,)), ("inner.bias", (entry,))]

    def shrink(self, wrapper, keep):
        (_, kept), = keep.items()
        indices = [int(wrapper.kept_index[i]) for i in kept]
        return FullWidthChannels.wrapping(wrapper.inner, indices, wrapper.width, wrapper.axis, like=wrapper)


OPAQUE = _Opaque()
CONV, LINEAR = _Conv(), _Linear()  # also trace a subclass's functional conv2d / linear (op_handlers)
for _handler in (_ZeroWidth(), _Shortcut(), _BatchNorm(), LINEAR, _ConvTranspose(), CONV, _ResponseNorm(),
                 _NormOverChannels(), _GateOverChannels(), _FullWidth()):
    register_layer(_handler)


def handler_for(module: nn.Module) -> LayerHandler:
    """The handler that resizes ``module`` (by type, so a subclass with its own forward is resized like its
    base); raises PrunekitError when there is none."""
    handler = next((h for h in LAYERS if h.resizes(module)), None)
    if handler is None:
        raise PrunekitError(f"{type(module).__name__} has no channel handler")
    return handler


def plain_conv(conv: nn.Conv2d) -> nn.Conv2d:
    """A plain ``nn.Conv2d`` computing what ``conv`` (a Conv2d subclass that computes its weight in forward, e.g.
    weight standardisation with a gain) computes: its weight is the one ``conv``'s forward passes to ``F.conv2d``,
    computed in float64 and stored in ``conv``'s dtype; same sizes, stride, padding, bias, device and mode.

    Exact in eval mode; a model fine-tuned after pruning then trains the plain conv (no standardisation)."""
    weight = _computed_weight(conv)
    plain = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                      conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    with torch.no_grad():
        plain.weight.copy_(weight)
        if conv.bias is not None:
            plain.bias.copy_(conv.bias)
    return plain.train(conv.training)


def _computed_weight(conv: nn.Conv2d) -> torch.Tensor:
    """The weight ``conv``'s forward passes to ``F.conv2d``, captured on a zero input in float64."""
    captured: list[torch.Tensor] = []

    class Capture(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func is torch.nn.functional.conv2d or func is torch.conv2d:
                captured.append(args[1] if len(args) > 1 else kwargs["weight"])
            return func(*args, **kwargs)

    probe = copy.deepcopy(conv).double().eval()
    size = [d * (k - 1) + 1 for d, k in zip(conv.dilation, conv.kernel_size)]
    with torch.no_grad(), Capture():
        probe(torch.zeros(1, conv.in_channels, *size, dtype=torch.float64, device=conv.weight.device))
    if not captured or captured[-1].shape != conv.weight.shape:
        raise PrunekitError(f"{type(conv).__name__} does not pass a weight of its own shape to F.conv2d, so it "
                            "cannot become a plain conv")
    return captured[-1]


# --------------------------------------------------------------------------- per-channel parameters


def param_zero_entries(role: str, index: int) -> list[tuple[str, tuple]]:
    """``[(parameter, index)]`` the masked twin zeroes for entry ``index`` of a parameter role (none for a
    cut-only role such as running statistics)."""
    attr, dim, zeroed = parse_param_role(role)
    return [(attr, (slice(None),) * dim + (index,))] if zeroed else []


def shrink_parameters(module: nn.Module, keep: dict[str, list[int]]) -> None:
    """Cut the per-channel parameters and buffers named by the parameter roles in ``keep`` (see
    :func:`prunekit.prune.trace_state.param_role`) to the kept entries, in place, then update the size
    attributes of a norm layer (``num_features``, ``num_channels`` and ``num_groups``, ``normalized_shape``)."""
    before = _norm_sizes(module)
    for role, indices in keep.items():
        attr, dim, _ = parse_param_role(role)
        _keep(module, attr, dim, indices)
    _set_norm_sizes(module, before)


def _norm_sizes(module: nn.Module) -> dict[str, Any]:
    if isinstance(module, nn.GroupNorm):
        return {"group_width": module.num_channels // module.num_groups}
    if is_response_norm(module):
        return {"width": module.weight.shape[0]}
    return {}


def _set_norm_sizes(module: nn.Module, before: dict[str, Any]) -> None:
    tensor = next((getattr(module, a) for a in ("weight", "running_mean") if getattr(module, a, None) is not None),
                  None)
    if tensor is None:
        return
    if isinstance(module, nn.modules.batchnorm._NormBase):  # BatchNorm and InstanceNorm, subclasses included
        module.num_features = tensor.shape[0]
    elif isinstance(module, nn.GroupNorm):
        module.num_channels = tensor.shape[0]
        module.num_groups = tensor.shape[0] // before["group_width"]
    elif isinstance(module, nn.LayerNorm):
        module.normalized_shape = tuple(tensor.shape)
    elif is_response_norm(module) and tensor.shape[0] != before["width"]:
        _rescale_response_norm(module, before["width"] / tensor.shape[0])


def _rescale_response_norm(module: nn.Module, factor: float) -> None:
    """γ and ε times C/C' (``factor``): the mean over C' channels is C/C' times the masked twin's mean over C
    (removed ones zero), so ``γ · g / (mean' + ε')`` equals the twin's ``γ · g / (mean + ε)``. The new ε is
    recorded (:func:`~prunekit.models.shapes.record_size`) so a checkpoint rebuilds it."""
    with torch.no_grad():
        module.weight.mul_(factor)
    record_size(module, "eps", module.eps * factor)
