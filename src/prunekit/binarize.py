"""Binarized weights: 1-bit convs and linears trained with a straight-through estimator.

Binarization is a re-parametrisation of a weight, like a mask (:mod:`prunekit.masking`): the module keeps its
fp32 *latent* weight as a parameter (``weight_latent``, or the mask's ``weight_orig``), the optimizer updates
that, and a forward pre-hook (:class:`Binarizer`, a :class:`prunekit.masking.WeightTransform`) sets the weight
the forward pass uses:

* ``bwn`` (Binary-Weight-Network, the weight part of XNOR-Net): ``b = α_c · sign(w)`` with one
  ``α_c = mean |w|`` per output channel ``c`` (dim 0), the mean taken over the channel's kept weights when the
  tensor is masked (a channel with none kept gets ``α_c = 0``);
* ``binaryconnect``: ``b = sign(w) = ±1``.

``sign(0) = +1``, so every kept weight is exactly ``±α_c``. A masked weight stays masked: pruned entries are
exactly ``+0.0`` and the rest ``±α_c`` (a ternary tensor). The backward pass is the straight-through
estimator: ``∂L/∂w = ∂L/∂b · 1{|w| ≤ 1}`` (BinaryConnect's clipped identity; α is treated as a constant), so
a latent weight that leaves ``[-1, 1]`` stops moving; masked entries get no gradient through ``orig · mask``.

Binarization is idempotent (``binarize(b) = b``), so a model loaded from binarized weights alone (a compact
binary file) has the same outputs; a prunekit checkpoint also stores the latent weights, so fine-tuning
continues from them.

Why a forward pre-hook and not ``torch.nn.utils.parametrize``: masks are torch prune hooks, which rename a
real ``weight`` parameter to ``weight_orig``; a parametrized ``weight`` is a property whose state-dict key
becomes ``parametrizations.weight.original``, so the two do not compose and every checkpoint key would change.
The hook style composes after the mask and keeps the state-dict keys of the plain model.

Optional sign activations (:class:`SignActivation`, ``activations="sign"``): each binarized layer's input
becomes ``+1 where x > 0 else -1`` (post-ReLU inputs are ≥ 0, so zero maps to −1 to keep the one bit
informative), with the STE ``1{|x| ≤ 1}``. This is the full XNOR-style network, the harder setting: expect a
much larger accuracy loss than with fp32 activations. No activation scale (XNOR-Net's ``K``) is used.

By convention the first conv and the classifier stay fp32 (``keep_first_last``): the first sees the 3 input
channels (few weights, large accuracy effect) and the classifier maps to the logits. BatchNorm, biases and
every other tensor stay fp32.

Imports only torch, pydantic configs, :mod:`prunekit.masking`, :mod:`prunekit.models.layers` and errors, so
:mod:`prunekit.checkpoint` and :mod:`prunekit.export` use it without importing ``prune`` or ``train``.
"""

from __future__ import annotations

import fnmatch
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from prunekit.checkpoint import register_section
from prunekit.config import StrictModel
from prunekit.errors import PrunekitError
from prunekit.masking import WeightTransform, add_transform, is_masked, latent_tensor, transforms_of
from prunekit.models.layers import classifier_name, prunable_layers

METHODS = ("bwn", "binaryconnect")
ACTIVATIONS = ("fp32", "sign")


class BinarizeConfig(StrictModel):
    """What to binarize and how long to fine-tune (the ``binarize`` command and experiment variant)."""

    method: Literal["bwn", "binaryconnect"] = "bwn"
    layers: list[str] | None = Field(None, description="fnmatch patterns of conv/linear names (default: all)")
    keep_first_last: bool = Field(True, description="keep the first conv and the classifier fp32")
    activations: Literal["fp32", "sign"] = Field("fp32", description="sign: binary inputs too (harder, XNOR)")
    finetune_epochs: int = Field(0, ge=0, description="STE fine-tuning epochs after binarizing")


# --- the maths ----------------------------------------------------------------------------------------


def signs(weight: torch.Tensor) -> torch.Tensor:
    """``+1`` where ``weight >= 0`` else ``-1`` (same dtype): ``sign`` with ``sign(0) = +1``."""
    return torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)


def channel_scales(weight: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """``α_c`` = mean |w| over output channel ``c``'s (kept) entries, shaped to broadcast against ``weight``.

    Summed in float64, so a tensor that is already ``±α`` gets exactly ``α`` back (binarization is then
    idempotent bit for bit: a model loaded from its binarized weights alone computes the same outputs)."""
    magnitude = weight.detach().abs().double().flatten(1)
    if mask is None:
        alpha = magnitude.mean(dim=1)
    else:
        kept = mask.flatten(1)
        alpha = (magnitude * kept).sum(dim=1) / kept.sum(dim=1).clamp(min=1)
    return alpha.to(weight.dtype).reshape(-1, *[1] * (weight.dim() - 1))


def binary_weight(weight: torch.Tensor, method: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The binarized tensor (no gradient rule): ``α_c · sign(w)`` (bwn) or ``sign(w)`` (binaryconnect);
    exactly ``+0.0`` where ``mask`` is False."""
    if method not in METHODS:
        raise PrunekitError(f"unknown binarization method {method!r}; use one of {', '.join(METHODS)}")
    out = signs(weight)
    if method == "bwn" and weight.dim() >= 1:
        out = channel_scales(weight, mask) * out
    return out if mask is None else torch.where(mask, out, torch.zeros((), dtype=out.dtype, device=out.device))


class _BinarizeSTE(torch.autograd.Function):
    """Forward: :func:`binary_weight`. Backward: the gradient passes where ``|w| <= 1``, zero elsewhere."""

    @staticmethod
    def forward(ctx, weight, method, mask):
        ctx.save_for_backward(weight)
        return binary_weight(weight, method, mask)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return grad * (weight.abs() <= 1).to(grad.dtype), None, None


def binarize_ste(weight: torch.Tensor, method: str, mask: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`binary_weight` with the straight-through gradient ``1{|w| <= 1}``."""
    return _BinarizeSTE.apply(weight, method, mask)


class _SignSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.where(x > 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def sign_activation(x: torch.Tensor) -> torch.Tensor:
    """``+1 where x > 0 else -1``, with the straight-through gradient ``1{|x| <= 1}`` when autograd records."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _SignSTE.apply(x)
    return torch.where(x > 0, 1.0, -1.0).to(x.dtype)


# --- the re-parametrisation --------------------------------------------------------------------------


class Binarizer(WeightTransform):
    """The forward pre-hook of a binarized weight (see the module docstring)."""

    def __init__(self, method: str):
        if method not in METHODS:
            raise PrunekitError(f"unknown binarization method {method!r}; use one of {', '.join(METHODS)}")
        self.method = method

    def transform(self, module: nn.Module, latent: torch.Tensor) -> torch.Tensor:
        mask = getattr(module, f"{self.tensor_name}_mask").bool() if is_masked(module, self.tensor_name) else None
        return binarize_ste(latent, self.method, mask)


class SignActivation:
    """Forward pre-hook replacing a layer's input by :func:`sign_activation` (``activations="sign"``)."""

    def __call__(self, module: nn.Module, inputs):
        return (sign_activation(inputs[0]), *inputs[1:])


def binarizer_of(module: nn.Module) -> Binarizer | None:
    hook = transforms_of(module).get("weight")
    return hook if isinstance(hook, Binarizer) else None


def has_sign_activation(module: nn.Module) -> bool:
    return any(isinstance(h, SignActivation) for h in module._forward_pre_hooks.values())


def binarized_layers(model: nn.Module) -> dict[str, str]:
    """``{layer name: method}`` of every binarized module of ``model`` (empty when none)."""
    return {name: hook.method for name, m in model.named_modules() if (hook := binarizer_of(m)) is not None}


def binarization_spec(model: nn.Module) -> dict | None:
    """What a checkpoint records: ``{"method", "activations", "layers": [names]}``; None when not binarized."""
    layers = binarized_layers(model)
    if not layers:
        return None
    methods = set(layers.values())
    modules = dict(model.named_modules())
    signed = {has_sign_activation(modules[name]) for name in layers}
    return {"method": methods.pop() if len(methods) == 1 else sorted(methods),
            "activations": "sign" if signed == {True} else "fp32", "layers": list(layers)}


def latent_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"layer.weight": latent fp32 tensor (masked entries zero)}`` of every binarized layer (CPU copies)."""
    modules = dict(model.named_modules())
    return {f"{name}.weight": latent_tensor(modules[name], "weight").detach().cpu().clone()
            for name in binarized_layers(model)}


def select_layers(model: nn.Module, patterns: list[str] | None = None, keep_first_last: bool = True) -> list[str]:
    """The conv/linear names to binarize: those matching any fnmatch ``pattern`` (all when None), without the
    first conv and the classifier when ``keep_first_last``. Raises PrunekitError for a pattern that matches
    no layer, or when nothing is left."""
    candidates = list(prunable_layers(model))
    if not candidates:
        raise PrunekitError("the model has no nn.Conv2d or nn.Linear to binarize")
    chosen = candidates
    if patterns:
        for pattern in patterns:
            if not fnmatch.filter(candidates, pattern):
                raise PrunekitError(f"--layers pattern {pattern!r} matches no conv/linear layer; names look like "
                                    f"{', '.join(candidates[:4])} (`prunekit layers CKPT` lists them)")
        chosen = [name for name in candidates if any(fnmatch.fnmatchcase(name, p) for p in patterns)]
    if keep_first_last:
        kept = {first_conv(model, candidates), classifier_or_none(model)}
        chosen = [name for name in chosen if name not in kept]
    if not chosen:
        raise PrunekitError("no layer left to binarize: the first conv and the classifier stay fp32 by default; "
                            "name other layers or pass --no-keep-first-last")
    return chosen


def first_conv(model: nn.Module, candidates: list[str]) -> str | None:
    modules = dict(model.named_modules())
    return next((name for name in candidates if isinstance(modules[name], nn.Conv2d)), None)


def classifier_or_none(model: nn.Module) -> str | None:
    try:
        return classifier_name(model)
    except PrunekitError:
        return None


def binarize_model(model: nn.Module, layers: list[str], method: str = "bwn", activations: str = "fp32",
                   latent: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Binarize the named conv/linear layers of ``model`` in place. Apply masks first (they compose).

    Side effects, per layer: ``weight`` becomes the latent parameter ``weight_latent`` (a masked layer keeps
    ``weight_orig``/``weight_mask``) and a :class:`Binarizer` hook; with ``activations="sign"`` also a
    :class:`SignActivation` input hook. ``latent`` (``{"layer.weight": tensor}``, from a checkpoint) replaces
    the latent values; without it the current weights are the latent ones. All or nothing: names, method and
    activations are checked before anything changes. Returns ``model``.
    """
    if activations not in ACTIVATIONS:
        raise PrunekitError(f"unknown activations {activations!r}; use one of {', '.join(ACTIVATIONS)}")
    modules = dict(model.named_modules())
    for name in layers:
        module = modules.get(name)
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            raise PrunekitError(f"{name!r} is not a conv/linear layer of this model; cannot binarize it")
        if binarizer_of(module) is not None:
            raise PrunekitError(f"{name!r} is binarized already")
    for name in layers:
        module = modules[name]
        add_transform(module, Binarizer(method))
        if latent is not None and f"{name}.weight" in latent:
            set_latent(module, latent[f"{name}.weight"])
        if activations == "sign":
            module.register_forward_pre_hook(SignActivation())
    return model


def set_latent(module: nn.Module, value: torch.Tensor) -> None:
    """Copy ``value`` into a binarized module's latent parameter and recompute its weight."""
    param = getattr(module, "weight_orig" if is_masked(module) else "weight_latent")
    if tuple(value.shape) != tuple(param.shape):
        raise PrunekitError(f"latent weight of shape {tuple(value.shape)} for a layer of shape {tuple(param.shape)}; "
                            "the checkpoint is inconsistent")
    with torch.no_grad():
        param.copy_(value.to(param.device, param.dtype))
    binarizer_of(module)(module, None)


def restore_binarization(model: nn.Module, spec: dict | None, latent: dict[str, torch.Tensor] | None = None) -> nn.Module:
    """Re-apply a checkpoint's ``binarized`` record (see :func:`binarization_spec`) to a freshly loaded model."""
    if not spec:
        return model
    method = spec.get("method", "bwn")
    if not isinstance(method, str):
        raise PrunekitError("this checkpoint mixes binarization methods; this prunekit stores one per model")
    return binarize_model(model, list(spec.get("layers") or []), method, spec.get("activations", "fp32"), latent)


def binarization_entries(model: nn.Module) -> dict | None:
    """The checkpoint section of a binarized ``model``: ``{"binarized": spec, "latent": latent weights}``;
    None when it is not binarized."""
    spec = binarization_spec(model)
    return {"binarized": spec, "latent": latent_weights(model)} if spec else None


def restore_binarization_entries(model: nn.Module, raw: dict) -> None:
    """Re-apply a raw checkpoint's ``binarized``/``latent`` entries, if any, to ``model`` (loaded already)."""
    restore_binarization(model, raw.get("binarized"), raw.get("latent"))


register_section("binarized", binarization_entries, restore_binarization_entries)
