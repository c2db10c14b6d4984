"""Static counts: parameters, non-zero parameters, MACs, serialised size."""

from __future__ import annotations

import io

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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


def count_macs(model: nn.Module, input_size=(1, 3, 32, 32)) -> int:
    """Multiply-accumulates of one forward pass per image, counted by ``torch.utils.flop_counter``.

    Convention of the pruning papers: convolutions and linear layers (matrix products) only; BN, ReLU,
    pooling and additions are not counted; zeros in masked weights still count (dense maths). The
    counter reports FLOPs = 2 × MACs; we divide by 2 and by the batch size. An int8 model (see
    :mod:`prunekit.export.quantize`) performs the MACs of its fp32 architecture, in int8.
    """
    int8_arch = (getattr(model, "prunekit_int8", None) or {}).get("arch")
    if int8_arch:  # quantized ops are invisible to the counter: count the same network in fp32
        from prunekit.models import build_model

        return count_macs(build_model(int8_arch), input_size)
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(input_size, device=device))
    model.train(was_training)
    return counter.get_total_flops() // 2 // input_size[0]


def serialized_size(model: nn.Module) -> int:
    """Bytes of ``torch.save(effective state dict)``: what a plain dense checkpoint of the weights costs."""
    buffer = io.BytesIO()
    torch.save(effective_state_dict(model), buffer)
    return buffer.tell()
