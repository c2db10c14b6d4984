"""The registry of torch ops: what each op a forward pass runs does to channels when traced.

Ops (``OPS``, by plain torch function name, e.g. ``add``, ``view``, ``getitem``; :func:`register_op` adds
one) are everything a forward pass runs outside the layers of :mod:`prunekit.prune.layer_handlers`. Each
handler ``fn(walker, name, args, kwargs, result)`` gives the op's outputs their channel layout and couples,
reads or pins channels through the :class:`~prunekit.prune.trace_state.Walker`. An op with no entry pins the
channels it touches (they are kept), with its name and layer in the reason (:func:`unknown`), so an unknown
op never yields a wrong model. ``METADATA`` ops (``size``, ``shape``, ...) only read metadata.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from prunekit.prune.layer_handlers import CONV, LINEAR
from prunekit.prune.trace_state import Layout, Walker, tensors_in

# --------------------------------------------------------------------------- ops

OpHandler = Callable[[Walker, str, tuple, dict, Any], None]
OPS: dict[str, OpHandler] = {}


def register_op(*names: str) -> Callable[[OpHandler], OpHandler]:
    """Register ``fn(walker, name, args, kwargs, result)`` for the plain torch function ``names``."""

    def decorate(fn: OpHandler) -> OpHandler:
        for name in names:
            OPS[name] = fn
        return fn

    return decorate


def trace_op(w: Walker, name: str, args: tuple, kwargs: dict, result: Any) -> None:
    """Give the op to its handler; an op without one pins the channels it reads (see the module doc)."""
    handler = OPS.get(name)
    if handler is not None:
        handler(w, name, args, kwargs, result)
    elif tensors_in(result):
        unknown(w, name, args, kwargs, result, f"prunekit does not know how '{name}' uses channels")


def unknown(w: Walker, name: str, args: tuple, kwargs: dict, result: Any, why: str) -> None:
    """Pin every channel tensor the op reads; its outputs get new fixed channels."""
    for value in tensors_in(list(args) + list(kwargs.values())):
        layout = w.layout(value)
        if layout is not None and not set(layout.flat) <= w.pinned:
            w.pin(layout, f"'{name}' in {w.place}", why)
    w.fresh_outputs(tensors_in(result))


def _arg(args: tuple, kwargs: dict, position: int, key: str, default: Any = None) -> Any:
    return args[position] if len(args) > position else kwargs.get(key, default)


def _dim(dim: Any, ndim: int) -> Any:
    return dim % ndim if isinstance(dim, int) and ndim else dim


def _same_channels(x: torch.Tensor, out: torch.Tensor, layout: Layout) -> bool:
    return out.dim() == x.dim() and all(out.shape[d] == x.shape[d] for d in layout.dims)


def _pass(w: Walker, name: str, args: tuple, kwargs: dict, result: Any, kind: str = "same") -> None:
    """Elementwise on its first argument. ``same``: zero stays zero; ``never``: f(0) != 0."""
    x = args[0] if args else None
    layout = w.layout(x)
    outputs = tensors_in(result)
    if layout is None:
        return w.fresh_outputs(outputs)
    if not outputs or not all(_same_channels(x, out, layout) for out in outputs):
        return unknown(w, name, args, kwargs, result, "it changes the channel axis")
    out_layout = layout if kind == "same" else w.new_op(kind, [layout])
    for tensor in outputs:
        w.set(tensor, out_layout)


register_op(
    "relu", "relu6", "leaky_relu", "elu", "gelu", "silu", "hardswish", "hardtanh", "mish", "tanh", "neg",
    "abs", "sqrt", "square", "dropout", "dropout1d", "dropout2d", "alpha_dropout", "feature_alpha_dropout",
    "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices",
    "interpolate", "upsample", "upsample_nearest", "upsample_bilinear", "contiguous", "clone", "detach", "to",
    "float", "half", "double", "cpu", "cuda", "type_as", "data", "expand", "expand_as",
    "avg_pool1d", "lp_pool2d",
)(_pass)


@register_op("max_pool2d", "max_pool2d_with_indices")
def _max_pool(w, name, args, kwargs, result):
    w.sequence.append("M")
    _pass(w, name, args, kwargs, result)


@register_op("sigmoid", "hardsigmoid", "softplus", "exp", "cos", "erfc", "log_sigmoid")
def _nonzero(w, name, args, kwargs, result):
    _pass(w, name, args, kwargs, result, kind="never")


@register_op("clamp", "clip", "clamp_min", "clamp_max", "threshold")
def _clamp(w, name, args, kwargs, result):
    low = _arg(args, kwargs, 1, "min")
    high = _arg(args, kwargs, 2, "max")
    if name == "clamp_max":
        low, high = None, low
    if name == "threshold":
        low, high = None, None
        value = _arg(args, kwargs, 2, "value", 0)
        zero_kept = value == 0 or _arg(args, kwargs, 1, "threshold", 0) < 0
    else:
        zero_kept = all(not isinstance(v, torch.Tensor) for v in (low, high)) and (
            (low is None or low <= 0) and (high is None or high >= 0))
    _pass(w, name, args, kwargs, result, kind="same" if zero_kept else "never")


@register_op("pow")
def _pow(w, name, args, kwargs, result):
    exponent = _arg(args, kwargs, 1, "exponent")
    if isinstance(exponent, (int, float)) and exponent > 0:
        return _pass(w, name, args, kwargs, result)
    unknown(w, name, args, kwargs, result, "a power that is not positive")


# ---- binary elementwise


def _channel_axis(w: Walker, values: tuple, out: torch.Tensor) -> int:
    """The output axis that holds the channels: that of the first operand traced with one channel axis
    (axis 3 for a channels-last tensor), else 1."""
    for value in values:
        layout = w.layout(value)
        if layout is not None and len(layout.dims) == 1:
            return layout.dims[0] + out.dim() - value.dim()
    return 1


def _operand(w: Walker, value: Any, out: torch.Tensor, channel_axis: int = 1) -> tuple[str, Layout | None]:
    """('const', None) for a number or a tensor broadcast over channels; ('zero', None) for the number 0;
    ('wide', layout) for a tensor with the output's channels: a traced one, a per-channel parameter of a
    layer (a layer scale, a learned bias: cut with the channel, zeroed in the masked twin), or a constant
    (pinned atoms)."""
    if not isinstance(value, torch.Tensor):
        return ("zero" if value == 0 else "const"), None
    axis = channel_axis - (out.dim() - value.dim())
    if axis < 0 or value.shape[axis] == 1 or out.dim() < 2:
        return "const", None
    layout = w.layout(value)
    if layout is not None and layout.dims == (axis,):
        return "wide", Layout((channel_axis,), layout.atoms)
    if layout is not None and len(layout.dims) > 1 and value.dim() == out.dim() and all(
            value.shape[d] == out.shape[d] for d in layout.dims):  # branches x channels (selective kernels)
        return "wide", layout
    view = w.param_view(value) if layout is None else None
    if view is not None and view.axis == axis:
        return "wide", Layout((channel_axis,), w.param_atoms(view, value.shape[axis], zeroed=True))
    if layout is not None:  # its own channels lie on another axis: they meet every output channel, so they stay
        w.pin(layout, f"a tensor in {w.place}", "its channel axis is not the other operand's")
    layout = Layout((channel_axis,), np.array([w.atoms.new("fixed") for _ in range(value.shape[axis])],
                                              dtype=np.int64))
    w.pin(layout, f"a constant in {w.place}", "a per-channel constant tensor cannot be cut")
    return "wide", layout


def _binary(w: Walker, name: str, args: tuple, kwargs: dict, result: Any, rule: str) -> None:
    if not isinstance(result, torch.Tensor) or result.dim() < 2:
        return
    values = (args[0], _arg(args, kwargs, 1, "other", 0))
    axis = _channel_axis(w, values, result)
    kinds = [_operand(w, value, result, axis) for value in values]
    if name.startswith("r"):  # __rsub__(x, c) = c - x, __rtruediv__(x, c) = c / x
        kinds.reverse()
    wide = [layout for kind, layout in kinds if kind == "wide"]
    if not wide:
        return w.set(result, w.fresh(result, "fixed"))
    if len({(lay.dims, lay.atoms.shape) for lay in wide}) > 1:
        return unknown(w, name, args, kwargs, result, "its operands hold their channels on different axes")
    if rule == "add" and any(kind == "const" for kind, _ in kinds):
        rule = "never"  # x + c: a removed channel becomes c, not zero
    elif rule == "div":
        rule = "same" if kinds[0][0] == "wide" else "never"
    kind = {"add": "all", "mul": "any"}.get(rule, rule)
    w.set(result, w.new_op(kind, wide))


@register_op("add", "iadd", "radd", "sub", "isub", "rsub", "subtract")
def _add(w, name, args, kwargs, result):
    _binary(w, name, args, kwargs, result, "add")


@register_op("mul", "imul", "rmul", "multiply")
def _mul(w, name, args, kwargs, result):
    _binary(w, name, args, kwargs, result, "mul")


@register_op("div", "truediv", "itruediv", "rtruediv", "true_divide", "divide")
def _div(w, name, args, kwargs, result):
    _binary(w, name, args, kwargs, result, "div")


# ---- creation from a tensor


@register_op("zeros_like", "ones_like", "full_like", "empty_like", "rand_like", "randn_like")
def _like(w, name, args, kwargs, result):
    layout = w.layout(args[0])
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    w.set(result, w.new_op("zero" if name == "zeros_like" else "never", [layout]))


# ---- concatenation, slicing, splitting


@register_op("cat", "concat", "concatenate")
def _cat(w, name, args, kwargs, result):
    pieces = list(_arg(args, kwargs, 0, "tensors"))
    dim = _dim(_arg(args, kwargs, 1, "dim", 0), result.dim())
    layouts = [w.known(p) for p in pieces]
    if any(lay is None or lay.dims != (1,) for lay in layouts) or result.dim() < 2:
        return unknown(w, name, args, kwargs, result, "concatenates tensors whose channel axis is split")
    if dim == 1:
        return w.set(result, Layout((1,), np.concatenate([lay.atoms for lay in layouts])))
    if len({len(lay.atoms) for lay in layouts}) != 1:
        return unknown(w, name, args, kwargs, result, "concatenates tensors of different widths")
    w.set(result, w.new_op("all", layouts))


@register_op("stack")
def _stack(w, name, args, kwargs, result):
    """``torch.stack(branches, dim=1)`` (selective kernels): axis 1 holds the branches and axis 2 their channels,
    so channel c of every branch is one unit of removal (stacking needs equal widths). Stacking on a later axis
    keeps the channel axis, like a concatenation there."""
    pieces = list(_arg(args, kwargs, 0, "tensors"))
    layouts = [w.known(p) for p in pieces]
    dim = _dim(_arg(args, kwargs, 1, "dim", 0), result.dim())
    if result.dim() < 3 or dim == 0 or any(lay is None or lay.dims != (1,) for lay in layouts):
        return unknown(w, name, args, kwargs, result, "it stacks tensors on the batch axis or on a split channel axis")
    if dim > 1:
        return w.set(result, w.new_op("all", layouts))
    for layout in layouts[1:]:
        for first, other in zip(layouts[0].flat, layout.flat):
            w.atoms.union(first, other)
    w.set(result, Layout((1, 2), np.stack([lay.atoms for lay in layouts])))


def _fibres(layout: Layout, axis: int) -> list[np.ndarray]:
    """The atoms of ``layout`` at each index of tensor axis ``axis`` (one of its dims): for a (branches, channels)
    layout and the branch axis, one array of channel atoms per branch."""
    position = layout.dims.index(axis)
    return [np.take(layout.atoms, i, axis=position) for i in range(layout.atoms.shape[position])]


def _united_along(w: Walker, layout: Layout, axis: int) -> bool:
    """True when every fibre of ``layout`` along ``axis`` is one unit of removal (a branch axis, a view's group
    axis): an op over that axis then stays within a channel."""
    fibres = _fibres(layout, axis)
    return all(w.atoms.find(int(a)) == w.atoms.find(int(b)) for other in fibres[1:]
               for a, b in zip(fibres[0].reshape(-1), other.reshape(-1)))


def _even_pieces(w: Walker, layout: Layout, width: int, what: str, assumed: bool) -> bool:
    """Couple position p of every ``width``-wide piece of ``layout`` so each piece keeps the same positions.

    False (caller pins) when the pieces do not tile the channels evenly or the size assumption is off.
    """
    total = len(layout.atoms)
    if width <= 0 or total % width or (assumed and not w.assume(what)):
        return False
    for start in range(width, total, width):
        for p in range(width):
            w.atoms.union(int(layout.atoms[p]), int(layout.atoms[start + p]))
    return True


def _channel_slice(index: Any, ndim: int) -> slice | None:
    """The slice on dim 1 of ``x[index]`` when dim 0 stays whole and only later dims are indexed (``None``
    adds a dim after them, ``x[:, :, ::2]``, ``x[..., None, None]``); else None."""
    index = index if isinstance(index, tuple) else (index,)
    if any(isinstance(i, (torch.Tensor, np.ndarray, list, bool)) for i in index):
        return None
    if index and index[0] is Ellipsis:
        return slice(None) if sum(i is not None for i in index[1:]) <= ndim - 2 else None
    if not index or index[0] != slice(None):
        return None
    if len(index) == 1 or index[1] is Ellipsis:
        return slice(None)
    return index[1] if isinstance(index[1], slice) else None


@register_op("getitem")
def _getitem(w, name, args, kwargs, result):
    x, index = args[0], args[1]
    plain = isinstance(index, tuple) and all(i is None or i is Ellipsis or (isinstance(i, slice) and i == slice(None))
                                             for i in index)
    if plain and w.follow_param(x, result):  # gamma[:, None, None]
        return None
    layout = w.layout(x)
    if layout is None or not isinstance(result, torch.Tensor):
        return w.set(result, w.fresh(result, "fixed")) if isinstance(result, torch.Tensor) else None
    chosen = _channel_slice(index, x.dim()) if layout.dims == (1,) else None
    if chosen is None or result.dim() < 2 or result.shape[0] != x.shape[0]:
        return unknown(w, name, args, kwargs, result, "it selects channels by an index prunekit cannot renumber")
    start, stop, step = chosen.indices(x.shape[1])
    if (start, stop, step) == (0, x.shape[1], 1):
        return w.set(result, layout)
    if step == 1 and _slice_at_int_attribute(w, layout, start, stop):
        return w.set(result, Layout((1,), layout.atoms[start:stop]))
    if step != 1 or start % (stop - start) or not _even_pieces(
            w, layout, stop - start, f"x[:, {start}:{stop}] in {w.place} follows the width", True):
        return unknown(w, name, args, kwargs, result, f"slice [{start}:{stop}] of {x.shape[1]} channels is not "
                                                      "an even fraction that can follow pruning")
    w.set(result, Layout((1,), layout.atoms[start:stop]))


def _slice_at_int_attribute(w: Walker, layout: Layout, start: int, stop: int) -> bool:
    """``x[:, :self.a]`` or ``x[:, self.a:]`` (dual-path blocks, partial residuals) where the layer holds the bound
    as an int attribute and the slice is not an even fraction: each part keeps its own channels, assuming the bound
    is that attribute; surgery writes the kept count of the head ``[:a]`` into it. True when it did."""
    width = len(layout.atoms)
    bound = stop if start == 0 else start if stop == width else None
    length = stop - start
    if bound is None or not 0 < bound < width or (width % length == 0 and start % length == 0):
        return False  # an even fraction (the usual halves) couples its pieces instead
    return _follow_int_attribute(w, bound, f"slice bound {bound} of {width} channels in {w.place}",
                                 layout.flat[:bound])


@register_op("narrow")
def _narrow(w, name, args, kwargs, result):
    dim, start, length = (_arg(args, kwargs, i, k) for i, k in ((1, "dim"), (2, "start"), (3, "length")))
    index = (slice(None),) * _dim(dim, args[0].dim()) + (slice(int(start), int(start) + int(length)),)
    _getitem(w, "narrow", (args[0], index), {}, result)


@register_op("split", "chunk", "tensor_split", "split_with_sizes")
def _split(w, name, args, kwargs, result):
    x, pieces = args[0], tensors_in(result)
    layout = w.layout(x)
    if layout is None:
        return w.fresh_outputs(pieces)
    dim = _dim(_arg(args, kwargs, 2, "dim", 0), x.dim())
    if layout.dims != (1,) or (dim == 1 and name == "tensor_split"):
        return unknown(w, name, args, kwargs, result, "it splits the channel axis at fixed indices")
    if dim != 1:
        for piece in pieces:
            w.set(piece, layout)
        return None
    widths = [p.shape[1] for p in pieces]
    sizes = _arg(args, kwargs, 1, "split_size_or_sections")
    holder = _size_holder(w, sizes)
    if holder is not None and w.assume(f"split sizes {holder[0]}.{holder[1]} are only used to split"):
        return _split_by_attribute(w, layout, pieces, widths, holder)
    even = len(set(widths)) == 1
    assumed = name != "chunk"  # chunk(k) always re-splits the current width; split sizes may be literals
    if isinstance(sizes, int) and even and assumed and _split_by_int_attribute(w, layout, sizes):
        assumed = False
    what = f"{name} of {x.shape[1]} channels in {w.place} follows the width"
    if not even:
        return unknown(w, name, args, kwargs, result, f"{name} into {widths} is not even, so it cannot follow pruning")
    if not _even_pieces(w, layout, widths[0], what, assumed):
        return unknown(w, name, args, kwargs, result, f"{name} into {widths}: the sizes are literals in the code "
                                                      "(the pruned model failed the self-check), so they stay")
    offset = 0
    for piece, width in zip(pieces, widths):
        w.set(piece, Layout((1,), layout.atoms[offset:offset + width]))
        offset += width


def _size_holder(w: Walker, sizes: Any) -> tuple[str, str] | None:
    """(layer, attribute) when ``sizes`` is a list of split sizes the layer holds (``split(x, self.splits, 1)``)."""
    if not isinstance(sizes, (list, tuple)) or w.where == "<top level>":
        return None
    names = w.attribute_names(lambda v: v is sizes)
    return (w.layer, names[0]) if names else None


def _split_by_int_attribute(w: Walker, layout: Layout, size: int) -> bool:
    """``split(x, size, 1)`` where the layer holds the input width (``self.in_channels // k``, selective kernels,
    CSP stages) or the piece width (``self.width``, Res2Net) as an int attribute: assume the size is computed from
    it, and let surgery write the kept count (of all channels, or of the first piece) into it. True when it did."""
    width = len(layout.atoms)
    what = f"split size {size} of {width} channels in {w.place}"
    return any(_follow_int_attribute(w, value, what, part)
               for value, part in ((width, layout.flat), (size, layout.flat[:size])))


def _follow_int_attribute(w: Walker, value: int, what: str, part: list[int]) -> bool:
    """When the layer running the op holds ``value`` as an int attribute (:func:`_int_attribute`) and the trace
    may assume that ``what`` (a size in the op) follows it: records (in ``w.sizes``) that surgery writes the
    kept count of the atoms ``part`` into that attribute. True when it did."""
    holder = _int_attribute(w, value)
    if holder is None or not w.assume(f"{what} follows {holder[0] or '<model>'}.{holder[1]}"):
        return False
    w.sizes.append((*holder, [part]))
    return True


def _int_attribute(w: Walker, value: int) -> tuple[str, str] | None:
    """(layer, attribute) of the int attribute equal to ``value`` that the layer running the op holds: the only
    one, or among several the one whose name starts with ``in_`` (``in_channels``); None otherwise."""
    names = [k for k in w.attribute_names(lambda v: type(v) is int and v == value) if not k.startswith("_")]
    if len(names) > 1:
        names = [k for k in names if k.startswith("in_")]
    return (w.layer, names[0]) if len(names) == 1 else None


def _split_by_attribute(w: Walker, layout: Layout, pieces: list, widths: list[int], holder: tuple[str, str]) -> None:
    """Split sizes held by the layer follow pruning: each piece keeps its own channels (uneven pieces too),
    and surgery writes the new sizes into the attribute (see :attr:`prunekit.prune.graph.ChannelGraph.sizes`)."""
    offset, parts = 0, []
    for piece, width in zip(pieces, widths):
        atoms = layout.atoms[offset:offset + width]
        w.set(piece, Layout((1,), atoms))
        parts.append([int(a) for a in atoms])
        offset += width
    w.sizes.append((*holder, parts))


@register_op("setitem", "index_put", "index_add", "index_copy", "scatter", "masked_fill", "copy", "fill", "zero")
def _write(w, name, args, kwargs, result):
    unknown(w, name, args, kwargs, result, "it writes into a channel tensor in place")
    for value in tensors_in(args):
        w.pin(w.layout(value), f"'{name}' in {w.place}", "it writes into a channel tensor in place")


# ---- shape


def _shape_args(args: tuple) -> tuple:
    rest = args[1:]
    if len(rest) == 1 and isinstance(rest[0], (tuple, list, torch.Size)):
        rest = tuple(rest[0])
    return tuple(rest)


def _whole_axis_in(source: tuple, target: tuple, axis: int) -> int | None:
    """The axis of shape ``target`` that holds axis ``axis`` of ``source`` whole when a tensor of shape ``source``
    is reshaped to ``target`` (same size, same product of the axes before it and of those after it: its entries
    keep their index, e.g. channels-last tokens (B, H·W, C) -> (B, H, W, C)); None when no axis, or more than
    one (size-1 axes around a width-1 axis), does."""
    before, after = math.prod(source[:axis]), math.prod(source[axis + 1:])
    found = [d for d in range(1, len(target)) if target[d] == source[axis]
             and math.prod(target[:d]) == before and math.prod(target[d + 1:]) == after]
    return found[0] if len(found) == 1 else None


def _keeps_axis_size(w: Walker, name: str, args: tuple, source: tuple, target: tuple, axis: int) -> bool:
    """True when the reshape to ``target`` will follow a cut of channel axis ``axis``: it infers that size
    (``-1``), or it only adds or drops size-1 axes, or the trace may assume the size given is the input's own
    (``x.reshape(B, H, W, C)`` with ``C`` read from a shape; a literal fails the self-check and the retrace
    keeps these channels)."""
    explicit = _shape_args(args) if name in ("view", "reshape") else ()
    if name in ("squeeze", "unsqueeze", "flatten") or (len(explicit) == len(target) and explicit[axis] == -1):
        return True
    return w.assume(f"{name} {source}->{target} in {w.place} takes its channel width from the input")


@register_op("view", "reshape", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as")
def _reshape(w, name, args, kwargs, result):
    """A reshape follows the channel axis where it stays whole or splits into groups (see below); then a target
    size equal to a channel width forward read, on an axis that does not hold channels read with that width,
    ties that width to this tensor (attention reshaping its heads back with ``reshape(B, N, C)``, ``C`` read from
    the block's input): the channels read with that width and this axis's are kept, since a cut would change one
    and not the other."""
    _reshape_channels(w, name, args, kwargs, result)
    if name not in ("view", "reshape") or not isinstance(result, torch.Tensor):
        return
    layout = w.layout(result)
    where = f"a width read from channels in {w.place}"
    for axis, read in w.widths_in_shape(_shape_args(args)):
        here = layout if layout is not None and layout.dims == (axis,) else None
        if here is not None and any(_same_channels_as(w, here, channels) for channels in read):
            continue
        why = f"its width {result.shape[axis]} sets axis {axis} of {name}{tuple(result.shape)}, which holds other data"
        for channels in read:
            w.pin(channels, where, why)
        if layout is not None and axis in layout.dims:
            w.pin(layout, where, why)


def _same_channels_as(w: Walker, layout: Layout, other: Layout) -> bool:
    """True when ``layout`` and ``other`` hold the same units of removal, in any order."""
    return {w.atoms.find(a) for a in layout.flat} == {w.atoms.find(a) for a in other.flat}


def _reshape_channels(w: Walker, name: str, args: tuple, kwargs: dict, result: Any) -> None:
    """The result's channel layout: the channel axis kept whole (it may move, e.g. tokens (B, H·W, C) ->
    (B, H, W, C)), flattened into features, or split into (groups, width); anything else pins."""
    x = args[0]
    if w.follow_param(x, result):
        return None
    layout = w.layout(x)
    if layout is None or not isinstance(result, torch.Tensor):
        return w.set(result, w.fresh(result, "fixed")) if isinstance(result, torch.Tensor) else None
    s, t = tuple(x.shape), tuple(result.shape)
    if len(t) < 2 or t[0] != s[0]:
        return unknown(w, name, args, kwargs, result, f"reshaping {s} to {t} moves the batch axis")
    explicit = _shape_args(args) if name in ("view", "reshape") else ()
    if explicit and explicit[0] == -1 and len(explicit) > 1:
        return unknown(w, name, args, kwargs, result, f"{name}{tuple(explicit)} infers the batch, so its other "
                                                      "sizes are literals that cannot follow pruning")
    if len(layout.dims) == 1 and (layout.dims != (1,) or t[1] != s[1]):  # axis 1 staying put: see below
        axis = _whole_axis_in(s, t, layout.dims[0])
        if axis is not None and _keeps_axis_size(w, name, args, s, t, axis):
            return w.set(result, Layout((axis,), layout.atoms))
    if layout.dims == (1,):
        if t[1] == s[1] and math.prod(t[2:]) == math.prod(s[2:]):
            return w.set(result, layout)
        if len(t) == 2 and t[1] == math.prod(s[1:]):
            inferred = name == "flatten" or (name in ("view", "reshape") and -1 in _shape_args(args)[1:2])
            if not inferred:
                return unknown(w, name, args, kwargs, result, f"{name} to the literal size {t[1]} cannot follow "
                                                              "pruning (write x.flatten(1) or x.view(x.size(0), -1))")
            return w.set(result, Layout((1,), np.repeat(layout.atoms, math.prod(s[2:]))))
        if len(t) >= 3 and t[1] * t[2] == s[1] and t[3:] == s[2:]:
            groups_axis = 0 if t[1] <= t[2] else 1
            if w.assume(f"{name} {s}->{t} in {w.place} keeps its group count"):
                atoms = layout.atoms.reshape(t[1], t[2])
                fixed = atoms if groups_axis == 0 else atoms.T
                for position in range(fixed.shape[1]):
                    for other in fixed[1:, position]:
                        w.atoms.union(int(fixed[0, position]), int(other))
                return w.set(result, Layout((1, 2), atoms))
    elif layout.dims == (1, 2) and t[1] == s[1] * s[2] and t[2:] == s[3:]:
        return w.set(result, Layout((1,), layout.atoms.reshape(-1)))
    unknown(w, name, args, kwargs, result, f"reshaping {s} to {t} mixes the channel axis with others")


def _axis_order(name: str, args: tuple, kwargs: dict, ndim: int) -> list[int] | None:
    """``order[i]``: the input axis that becomes output axis i (None when the op's arguments are not plain)."""
    if name == "permute":
        return [_dim(d, ndim) for d in _shape_args(args)]
    if name in ("transpose", "swapaxes"):
        a, b = _dim(_arg(args, kwargs, 1, "dim0"), ndim), _dim(_arg(args, kwargs, 2, "dim1"), ndim)
        order = list(range(ndim))
        order[a], order[b] = order[b], order[a]
        return order
    source, destination = _arg(args, kwargs, 1, "source"), _arg(args, kwargs, 2, "destination")
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    order: list[int | None] = [None] * ndim
    for s, d in zip(source, destination):
        order[_dim(d, ndim)] = _dim(s, ndim)
    rest = iter(a for a in range(ndim) if a not in {_dim(s, ndim) for s in source})
    return [a if a is not None else next(rest) for a in order]


@register_op("transpose", "permute", "swapaxes", "movedim")
def _permute(w, name, args, kwargs, result):
    """A channel axis moved (channels-last blocks: ``x.permute(0, 2, 3, 1)``) is followed to its new place."""
    x = args[0]
    layout = w.layout(x)
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    order = _axis_order(name, args, kwargs, x.dim())
    if all(order[d] == d for d in (0, *layout.dims)):
        return w.set(result, layout)
    if order[0] == 0 and len(layout.dims) == 1:
        return w.set(result, Layout((order.index(layout.dims[0]),), layout.atoms))
    if layout.dims == (1, 2) and order[:3] == [0, 2, 1]:
        return w.set(result, Layout((1, 2), layout.atoms.T))
    unknown(w, name, args, kwargs, result, "it moves the batch axis or a split channel axis")


@register_op("pad")
def _pad(w, name, args, kwargs, result):
    x = args[0]
    layout = w.layout(x)
    pad = list(_arg(args, kwargs, 1, "pad", ()))
    mode = _arg(args, kwargs, 2, "mode", "constant")
    value = _arg(args, kwargs, 3, "value", None)
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    channel_pairs = 2 * (x.dim() - 2)  # pads of the spatial axes come first
    if len(pad) <= channel_pairs:
        return _pass(w, name, args, kwargs, result, kind="same" if not value or mode != "constant" else "never")
    if layout.dims != (1,) or len(pad) > channel_pairs + 2 or mode != "constant" or value:
        return unknown(w, name, args, kwargs, result, "it pads the channel axis with a value or the batch axis")
    before, after = pad[channel_pairs], pad[channel_pairs + 1] if len(pad) > channel_pairs + 1 else 0
    if before < 0 or after < 0:
        return unknown(w, name, args, kwargs, result, "it crops the channel axis")
    zeros = [w.atoms.new("zero") for _ in range(before + after)]
    w.pin(Layout((1,), np.array(zeros, dtype=np.int64)), f"'pad' in {w.place}",
          f"F.pad adds {before}+{after} zero channels; their count is fixed in the code, so they stay")
    w.set(result, Layout((1,), np.concatenate([np.array(zeros[:before], dtype=np.int64), layout.atoms,
                                               np.array(zeros[before:], dtype=np.int64)])))


# ---- reductions and softmax


def _reduce_dims(args: tuple, kwargs: dict, ndim: int) -> set[int] | None:
    dims = _arg(args, kwargs, 1, "dim")
    if dims is None:
        return None
    dims = dims if isinstance(dims, (tuple, list)) else [dims]
    return {_dim(d, ndim) for d in dims}


@register_op("mean", "sum", "amax", "amin", "max", "min", "std", "var", "norm", "logsumexp", "nansum", "nanmean")
def _reduce(w, name, args, kwargs, result):
    x = args[0]
    layout = w.layout(x)
    outputs = tensors_in(result)
    if layout is None or not isinstance(x, torch.Tensor):
        return w.fresh_outputs(outputs)
    if name in ("max", "min") and len(args) > 1 and isinstance(args[1], torch.Tensor):
        return _binary(w, name, args, kwargs, result, "never")  # elementwise max(x, y)
    dims = _reduce_dims(args, kwargs, x.dim()) if name != "norm" else _reduce_dims(args[1:], kwargs, x.dim())
    if dims is not None and not dims & {0, *layout.dims}:
        kind = "same" if name in ("mean", "sum", "amax", "amin", "max", "min", "nansum", "nanmean", "norm") else "never"
        dropped = Layout(tuple(d - sum(r < d for r in dims) for d in layout.dims), layout.atoms)  # keepdim=False
        for tensor in outputs:
            kept = layout if tensor.dim() == x.dim() else dropped
            if tensor.dim() >= 2 and all(tensor.shape[d] == x.shape[o] for d, o in zip(kept.dims, layout.dims)):
                w.set(tensor, kept if kind == "same" else w.new_op(kind, [kept]))
        return None
    branch = None if dims is None or 0 in dims or len(layout.dims) != 2 else dims & set(layout.dims)
    if branch and len(branch) == 1 and name in BRANCH_REDUCTIONS and _united_along(w, layout, min(branch)):
        return _reduce_branches(w, layout, min(branch), dims, x, outputs)
    if name == "sum" and layout.dims == (1,):  # a sum over channels ignores zero channels exactly
        w.read(layout)
        return w.fresh_outputs(outputs)
    unknown(w, name, args, kwargs, result, f"'{name}' over the channel axis depends on how many channels there are")


BRANCH_REDUCTIONS = ("sum", "mean", "amax", "amin", "nansum", "nanmean")  # zero when every operand is


def _reduce_branches(w: Walker, layout: Layout, axis: int, dims: set[int], x: torch.Tensor, outputs: list) -> None:
    """A sum, mean or max over the branch axis of a (branches, channels) layout: channel c of the result
    combines channel c of every branch (zero when they all are); the reduced axes go unless kept."""
    keep = len(outputs) == 1 and outputs[0].dim() == x.dim()
    other = next(d for d in layout.dims if d != axis)
    shift = 0 if keep else sum(d < other for d in dims)
    fibres = [Layout((other - shift,), fibre) for fibre in _fibres(layout, axis)]
    w.set(outputs[0], w.new_op("all", fibres))


@register_op("softmax", "log_softmax")
def _softmax(w, name, args, kwargs, result):
    """Softmax over an axis other than the channels; or over the branch axis of a (branches, channels) layout
    (selective-kernel attention), which stays within each channel."""
    x = args[0]
    layout = w.layout(x)
    dim = _dim(_arg(args, kwargs, 1, "dim"), x.dim())
    if layout is not None and dim is not None and len(layout.dims) == 2 and dim in layout.dims \
            and _united_along(w, layout, dim):
        return w.set(result, w.new_op("never", [layout]))
    if layout is None or dim is None or dim in layout.dims:
        return unknown(w, name, args, kwargs, result, "softmax over the channel axis mixes channels")
    _pass(w, name, args, kwargs, result, kind="never")


# ---- functional layers: a layer subclass whose forward calls F.linear / F.conv2d on its own weight


def _own_layer(w: Walker, weight: Any, kind: type) -> tuple[str, nn.Module] | None:
    """(name, module) when ``weight`` is the ``weight`` parameter of a ``kind`` layer, else None."""
    owner = w.owners.get(id(weight)) if isinstance(weight, torch.Tensor) else None
    if owner is None or owner[1] != "weight":
        return None
    module = w.model.get_submodule(owner[0])
    return (owner[0], module) if isinstance(module, kind) else None


@register_op("linear")
def _linear(w, name, args, kwargs, result):
    """``F.linear(x, self.weight, self.bias)`` inside a Linear subclass: traced as that Linear."""
    layer = _own_layer(w, _arg(args, kwargs, 1, "weight"), nn.Linear)
    if layer is None or args[0].shape[-1] != layer[1].in_features:
        return unknown(w, name, args, kwargs, result, "prunekit does not know how 'linear' uses channels")
    LINEAR.trace(w, layer[0], layer[1], (args[0],), result)


@register_op("conv2d")
def _conv2d(w, name, args, kwargs, result):
    """``F.conv2d(x, self.weight, ...)`` inside a Conv2d subclass (e.g. 'same' padding computed in forward):
    traced as that Conv2d when the call uses the layer's own weight and groups; a weight the subclass computes
    (weight standardisation) see :func:`_computed_weight_conv`."""
    layer = _own_layer(w, _arg(args, kwargs, 1, "weight"), nn.Conv2d)
    groups = _arg(args, kwargs, 6, "groups", 1)
    if layer is None and isinstance(w.module, nn.Conv2d):
        return _computed_weight_conv(w, name, args, kwargs, result, w.module)
    if layer is None or groups != layer[1].groups:
        return unknown(w, name, args, kwargs, result, "prunekit does not know how 'conv2d' uses channels")
    CONV.trace(w, layer[0], layer[1], (args[0],), result)


def _computed_weight_conv(w: Walker, name: str, args: tuple, kwargs: dict, result: Any, conv: nn.Conv2d) -> None:
    """A Conv2d subclass that computes its weight in forward (weight standardisation: each filter standardised over
    its own fan-in, times a per-filter gain): traced as that conv, assuming each computed filter depends on its
    own row only (so a zeroed row gives a zero filter; the self-check proves it, else the conv's channels stay).
    Its cut is a plain Conv2d holding the computed weight of the kept channels (:func:`~prunekit.prune.
    layer_handlers.plain_conv`): statistics over fewer inputs would differ, the computed weight does not."""
    weight = _arg(args, kwargs, 1, "weight")
    same_shape = isinstance(weight, torch.Tensor) and weight.shape == conv.weight.shape
    if w.origin.get(id(args[0])) == w.where:  # e.g. 'same' padding computed in forward: a plain conv would lose it
        return unknown(w, name, args, kwargs, result, "the conv computes its weight and changes its input (e.g. "
                                                      "'same' padding) in forward, so it cannot become a plain conv")
    if not (same_shape and _arg(args, kwargs, 6, "groups", 1) == conv.groups and w.assume(
            f"conv '{w.where}' computes each filter from its own weight row (weight standardisation)")):
        return unknown(w, name, args, kwargs, result, "the conv computes its weight in forward (e.g. weight "
                                                      "standardisation, whose statistics span every input channel)")
    w.computed_weights.append(w.where)
    w.unpin_layer(w.where, w.layout(args[0]))  # the ops computing the weight from parameters held no channel
    CONV.trace(w, w.where, conv, (args[0],), result)


@register_op("conv1d")
def _conv1d(w, name, args, kwargs, result):
    """A conv1d sliding along the channel axis (ECA attention: ``conv1d(y.view(b, 1, c))``) pins with its reason."""
    layout = w.layout(args[0])
    along_channels = layout is not None and args[0].dim() - 1 in layout.dims
    why = "prunekit does not know how 'conv1d' uses channels"
    if along_channels:
        why = ("conv1d along the channel axis (ECA-style attention) mixes neighbouring channels, so removing one "
               "would change its neighbours' gates")
    unknown(w, name, args, kwargs, result, why)


# ---- functional normalisation (a norm layer with its own forward, e.g. a norm + activation block)


def _norm_parameters(w: Walker, name: str, layout: Layout, tensors: dict[str, Any]) -> bool:
    """Register the per-channel ``tensors`` ({"weight": γ, "bias": β, "running_mean": ...}; None ones skipped)
    of a functional norm as slots on ``layout``'s channels; False (nothing registered) when one of them is not
    a per-channel parameter or buffer of a layer."""
    count = len(layout.atoms)
    views = {key: w.param_view(t) for key, t in tensors.items() if t is not None}
    if any(v is None or tensors[k].shape[v.axis] != count for k, v in views.items()):
        return False
    for key, view in views.items():
        atoms = w.param_atoms(view, count, zeroed=key in ("weight", "bias"))
        for atom, channel in zip(atoms, layout.atoms):
            w.atoms.union(int(channel), int(atom))
    return True


def _channel_norm_output(w: Walker, name: str, args: tuple, kwargs: dict, result: Any, layout: Layout,
                         tensors: dict[str, Any]) -> None:
    """Output of a norm whose statistics are per channel (or per whole group): zero when γ (and β) are."""
    if not _norm_parameters(w, name, layout, tensors):
        return unknown(w, name, args, kwargs, result, f"its per-channel tensors are not parameters of a layer, "
                                                      "so they cannot be cut")
    w.set(result, w.new_op("producer" if tensors.get("weight") is not None else "never", [layout]))


@register_op("batch_norm", "instance_norm")
def _batch_norm(w, name, args, kwargs, result):
    """``F.batch_norm`` / ``F.instance_norm`` (input, running_mean, running_var, weight, bias, ...): statistics
    per channel, so each channel is cut with its γ, β and running statistics."""
    x = args[0]
    layout = w.layout(x)
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    if layout.dims != (1,):
        return unknown(w, name, args, kwargs, result, "it normalises a tensor whose channel axis is not axis 1")
    keys = ("running_mean", "running_var", "weight", "bias")
    tensors = {key: _arg(args, kwargs, i + 1, key) for i, key in enumerate(keys)}
    _channel_norm_output(w, name, args, kwargs, result, layout, tensors)


@register_op("group_norm")
def _group_norm(w, name, args, kwargs, result):
    """``F.group_norm(x, G, weight, bias)``: statistics per group of C/G channels, so only whole groups can
    go: the channels of one group become one unit of removal (num_groups shrinks with it)."""
    x = args[0]
    layout = w.layout(x)
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    groups, channels = int(_arg(args, kwargs, 1, "num_groups")), x.shape[1]
    if layout.dims != (1,) or groups == 1:
        return unknown(w, name, args, kwargs, result, "group_norm with one group normalises over every channel "
                                                      "together, so removing one changes all the others")
    if groups != channels:
        owner = w.module
        from_layer = isinstance(owner, nn.GroupNorm) and owner.num_groups == groups
        if not from_layer and not w.assume(f"group_norm in {w.place} has {groups} groups of the width"):
            return unknown(w, name, args, kwargs, result, f"its group count {groups} is a literal that cannot "
                                                          "follow pruning")
        _unite_groups(w, layout, channels // groups)
    tensors = {"weight": _arg(args, kwargs, 2, "weight"), "bias": _arg(args, kwargs, 3, "bias")}
    _channel_norm_output(w, name, args, kwargs, result, layout, tensors)


def _unite_groups(w: Walker, layout: Layout, width: int) -> None:
    """Make each run of ``width`` consecutive channels of ``layout`` one unit of removal."""
    for start in range(0, len(layout.atoms), width):
        for p in range(start + 1, start + width):
            w.atoms.union(int(layout.atoms[start]), int(layout.atoms[p]))


@register_op("layer_norm", "rms_norm")
def _layer_norm(w, name, args, kwargs, result):
    """``F.layer_norm(x, shape, weight, bias)`` over the last axes, called inside a larger module (a LayerNorm
    module, LayerNorm2d included, is a layer cut at full width instead): over the channel axis its statistics use
    every channel and it cannot be wrapped, so the channels stay; over other axes only, it is per channel."""
    x = args[0]
    layout = w.layout(x)
    if layout is None:
        return w.set(result, w.fresh(result, "fixed"))
    normalised = set(range(x.dim() - len(tuple(_arg(args, kwargs, 1, "normalized_shape"))), x.dim()))
    if normalised & set(layout.dims):  # the channels stay, and stay where they are (axis 3 of NHWC)
        w.pin(layout, f"'{name}' in {w.place}", f"{name} normalises over the channel axis: its mean and "
                                                        "variance use every channel, and called inside a larger "
                                                        "module it cannot be cut at full width (a LayerNorm module "
                                                        "can)")
        return w.set(result, w.new_op("never", [layout]))
    _pass(w, name, args, kwargs, result, kind="never")


# ---- ops that only read metadata

METADATA = frozenset({
    "size", "dim", "shape", "numel", "ndimension", "ndim", "dtype", "device", "is_cuda", "is_contiguous",
    "stride", "element_size", "get_device", "requires_grad", "retain_grad", "is_floating_point", "data_ptr",
    "storage_offset", "nelement", "layout", "is_sparse", "is_quantized", "names",
})
for _name in METADATA:
    OPS[_name] = lambda w, name, args, kwargs, result: None


@register_op("size", "shape")
def _read_sizes(w, name, args, kwargs, result):
    """``x.shape`` / ``x.size()`` / ``x.size(d)``: remember the channel widths read (see :func:`_reshape`)."""
    x = args[0]
    if not isinstance(x, torch.Tensor):
        return
    dim = _arg(args, kwargs, 1, "dim")
    w.read_sizes(x, range(x.dim()) if dim is None else [_dim(dim, x.dim())])
