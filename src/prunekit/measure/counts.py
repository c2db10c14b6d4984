"""Static counts: parameters, non-zero parameters, serialised size, and the operations of a forward pass
under several counting conventions (:data:`CONVENTIONS`: ``macs``, ``flops``, ``thop``, ``torchprofile``)."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from prunekit.errors import PrunekitError
from prunekit.images import EXAMPLE_INPUT_SIZE
from prunekit.masking import effective_state_dict, latent_keys, masked_keys


def effective_parameters(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter as the forward pass sees it (a masked ``x_orig`` becomes ``x = orig * mask``, a
    binarized ``x_latent`` its binarized ``x``)."""
    masked = masked_keys(model)
    param_names = {name for name, _ in model.named_parameters()} - {orig for orig, _ in masked.values()}
    param_names |= set(masked)
    latent = latent_keys(model)  # a binarized weight's parameter is its latent tensor
    param_names = (param_names - set(latent.values())) | set(latent)
    state = effective_state_dict(model)
    params = {k: v for k, v in state.items() if k in param_names}
    params.update(packed_int8_weights(state))
    return params


def packed_int8_weights(state: dict) -> dict[str, torch.Tensor]:
    """The weights an int8 model keeps outside ``nn.Parameter``: quantized tensors (as integer codes, so a
    pruned 0 stays 0), the float bias beside each, and the (weight, bias) tuples of quantized Linear layers."""
    found = {}
    for key, value in state.items():
        if key.endswith(".bias") and getattr(state.get(key[:-5] + ".weight"), "is_quantized", False):
            found[key] = value
            continue
        items = value if isinstance(value, tuple) else (value,)
        for i, item in enumerate(items):
            if isinstance(item, torch.Tensor) and (item.is_quantized or isinstance(value, tuple)):
                found[f"{key}.{i}" if isinstance(value, tuple) else key] = (
                    item.int_repr() if item.is_quantized else item)
    return found


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (masked tensors count at full size)."""
    return sum(p.numel() for p in effective_parameters(model).values())


def count_nonzero_parameters(model: nn.Module) -> int:
    """Number of parameters that are not exactly zero (what unstructured pruning reduces)."""
    return sum(int(torch.count_nonzero(p)) for p in effective_parameters(model).values())


def count_macs(model: nn.Module, input_size=EXAMPLE_INPUT_SIZE) -> int:
    """Multiply-accumulates of one forward pass per image, counted by ``torch.utils.flop_counter``.

    Convention of the pruning papers: convolutions and linear layers (matrix products) only; BN, ReLU,
    pooling and additions are not counted; zeros in masked weights still count (dense maths). The
    counter reports FLOPs = 2 × MACs; we divide by 2 and by the batch size. An int8 model (see
    :mod:`prunekit.export.quantize`) performs the MACs of its fp32 architecture, in int8.
    """
    with _countable(model, input_size) as (countable, x):
        counter = FlopCounterMode(display=False)
        with counter:
            countable(x)
    return counter.get_total_flops() // 2 // input_size[0]


@contextmanager
def _countable(model: nn.Module, input_size):
    """Yield ``(model, zeros input)`` ready for one counted forward pass: eval mode and no grad, restored
    afterwards; an int8 model is replaced by its fp32 architecture (quantized ops are invisible to counters)."""
    int8_arch = (getattr(model, "prunekit_int8", None) or {}).get("arch")
    if int8_arch:
        from prunekit.models import build_model

        model = build_model(int8_arch)  # the fp32 twin is what gets counted
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model, torch.zeros(tuple(input_size), device=device)
    finally:
        model.train(was_training)


# ---- counting conventions -------------------------------------------------------------------------------

@dataclass(frozen=True)
class CountConvention:
    """One way of counting the operations of a forward pass: ``count(model, input_size) -> int`` per image."""

    name: str
    count: Callable[[nn.Module, tuple], int]
    description: str


CONVENTIONS: dict[str, CountConvention] = {}


def register_count(name: str, description: str):
    """Decorator: register ``count(model, input_size) -> int`` as convention ``name`` (``--count NAME``)."""
    def wrap(count):
        CONVENTIONS[name] = CountConvention(name, count, description)
        return count
    return wrap


def count_ops(model: nn.Module, convention: str = "macs", input_size=EXAMPLE_INPUT_SIZE) -> int:
    """Operations of one forward pass per image under ``convention`` (a name in :data:`CONVENTIONS`)."""
    if convention not in CONVENTIONS:
        raise PrunekitError(f"unknown count convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    return CONVENTIONS[convention].count(model, tuple(input_size))


register_count("macs", "multiply-accumulates of conv and linear layers only (the pruning papers' MACs)")(count_macs)


@register_count("flops", "2 × macs: a multiply and an add per multiply-accumulate")
def count_flops(model: nn.Module, input_size=EXAMPLE_INPUT_SIZE) -> int:
    return 2 * count_macs(model, input_size)


# thop (pytorch-OpCounter 0.1.1, ``thop.profile``): forward hooks on modules of exactly these types, counting
# per call. Every other module type (ReLU, max pooling, dropout, Flatten, user modules) and every functional
# call (F.relu, torch.cat, +, x.mean) counts 0. Conv: output elements × in/groups × kernel (bias not counted);
# Linear: output elements × in_features; BatchNorm/LayerNorm/InstanceNorm: 2 per input element, 4 if affine;
# AvgPool: 1 per output element; AdaptiveAvgPool: (input/output area + 1) per output element.
def _thop_conv(m, x, y):
    return y.numel() * (x.shape[1] // m.groups) * math.prod(m.weight.shape[2:])


def _thop_norm(m, x, y):
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x.numel() * (2 if affine else 1)


def _thop_adaptive_avg(m, x, y):
    kernel = math.prod(i / o for i, o in zip(x.shape[2:], y.shape[2:]))
    return int((kernel + 1) * y.numel())


def _thop_upsample(m, x, y):
    per_element = {"nearest": 1, "linear": 5, "bilinear": 11, "bicubic": 259}.get(m.mode, 0)
    return y.numel() * per_element


def _thop_softmax(m, x, y):
    features = x.shape[m.dim]
    return x.numel() // features * (3 * features - 1)


THOP_RULES: dict[type, Callable] = {
    **dict.fromkeys((nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d),
                    _thop_conv),
    **dict.fromkeys((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm, nn.LayerNorm,
                     nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d), _thop_norm),
    nn.Linear: lambda m, x, y: m.in_features * y.numel(),
    **dict.fromkeys((nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d), lambda m, x, y: y.numel()),
    **dict.fromkeys((nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d), _thop_adaptive_avg),
    nn.PReLU: lambda m, x, y: x.numel(),  # thop counts PReLU only in eval mode, which is how we count
    nn.Softmax: _thop_softmax,
    **dict.fromkeys((nn.Upsample, nn.UpsamplingBilinear2d, nn.UpsamplingNearest2d), _thop_upsample),
}


@register_count("thop", "thop.profile: conv + linear MACs, plus 4 per BatchNorm element and pooling averages")
def count_thop(model: nn.Module, input_size=EXAMPLE_INPUT_SIZE) -> int:
    """What ``thop.profile(model, (x,))`` reports, per image (rules in :data:`THOP_RULES`)."""
    total = [0.0]

    def hook(module, inputs, output):
        total[0] += THOP_RULES[type(module)](module, inputs[0], output)

    with _countable(model, input_size) as (countable, x):
        handles = [m.register_forward_hook(hook) for m in countable.modules() if type(m) in THOP_RULES]
        try:
            countable(x)
        finally:
            for handle in handles:
                handle.remove()
    return int(total[0]) // input_size[0]


# torchprofile (``profile_macs``, MIT Han lab / efficientml.ai): rules per aten operator of the traced graph.
# Here the same rules are applied to the operators a forward pass dispatches (the traced graph's
# ``aten::linear`` arrives as ``mm``/``addmm``, ``adaptive_avg_pool2d(1)`` as ``mean``, batch norm as its
# native variants). Convolutions and matrix products: their MACs; elementwise ``mul``, affine norms, average
# pooling and ``mean``: 1 per output element; leaky ReLU 1, bilinear upsampling 4; everything else 0.
def _tp_convolution(args, out):
    weight = args[1]
    transposed = bool(args[6]) if len(args) > 6 else False
    in_channels = weight.shape[0] if transposed else weight.shape[1]
    return out.numel() * in_channels * math.prod(weight.shape[2:])


def _tp_matmul(a, b):
    return a.numel() * b.shape[-1]  # [..., n, m] @ [..., m, p]: n·m·p per batch entry


def _tp_norm(weight_index):
    return lambda args, out: (out[0] if isinstance(out, tuple) else out).numel() if (
        len(args) > weight_index and args[weight_index] is not None) else 0


def _tp_per_output(args, out):
    return (out[0] if isinstance(out, tuple) else out).numel()


_aten = torch.ops.aten
TORCHPROFILE_RULES: dict = {
    _aten.convolution.default: _tp_convolution,
    _aten.mm.default: lambda args, out: _tp_matmul(args[0], args[1]),
    _aten.addmm.default: lambda args, out: _tp_matmul(args[1], args[2]),
    _aten.bmm.default: lambda args, out: _tp_matmul(args[0], args[1]),
    _aten.baddbmm.default: lambda args, out: _tp_matmul(args[1], args[2]),
    _aten.mv.default: lambda args, out: args[0].numel(),
    _aten.addmv.default: lambda args, out: args[1].numel(),
    _aten.mul.Tensor: _tp_per_output, _aten.mul_.Tensor: _tp_per_output,
    _aten.mul.Scalar: _tp_per_output, _aten.mul_.Scalar: _tp_per_output,
    _aten._native_batch_norm_legit_no_training.default: _tp_norm(1),
    _aten._native_batch_norm_legit.default: _tp_norm(1),
    _aten.native_batch_norm.default: _tp_norm(1),
    _aten.native_layer_norm.default: _tp_norm(2),
    _aten.native_group_norm.default: _tp_norm(1),
    _aten.mean.dim: _tp_per_output, _aten.mean.default: _tp_per_output,
    _aten.avg_pool1d.default: _tp_per_output, _aten.avg_pool2d.default: _tp_per_output,
    _aten.avg_pool3d.default: _tp_per_output,
    _aten._adaptive_avg_pool2d.default: _tp_per_output, _aten._adaptive_avg_pool3d.default: _tp_per_output,
    _aten.leaky_relu.default: _tp_per_output, _aten.leaky_relu_.default: _tp_per_output,
    _aten.upsample_bilinear2d.default: lambda args, out: 4 * out.numel(),
}


class _TorchprofileCounter(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        rule = TORCHPROFILE_RULES.get(func)
        if rule is not None:
            self.total += rule(args, out)
        return out


@register_count("torchprofile", "torchprofile.profile_macs: conv + linear MACs, plus 1 per affine-norm element, "
                                "per average-pool output and per elementwise mul")
def count_torchprofile(model: nn.Module, input_size=EXAMPLE_INPUT_SIZE) -> int:
    """What ``torchprofile.profile_macs(model, x)`` reports, per image (rules in :data:`TORCHPROFILE_RULES`)."""
    with _countable(model, input_size) as (countable, x):
        counter = _TorchprofileCounter()
        with counter:
            countable(x)
    return counter.total // input_size[0]


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(effective state dict)``: what a plain dense checkpoint of the weights costs."""
    buffer = io.BytesIO()
    torch.save(effective_state_dict(model), buffer)
    return buffer.tell()
