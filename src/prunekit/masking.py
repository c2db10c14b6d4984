"""Mask mechanics: which weights of which tensor are kept, and how a model carries that.

A mask is a bool tensor shaped like the weight it belongs to (True = kept). A masked model keeps its
original parameter (``weight_orig``) and a ``weight_mask`` buffer through ``torch.nn.utils.prune``'s
re-parametrisation, so optimizers stay valid and the effective weight ``weight_orig * weight_mask`` is
exactly zero where pruned, whatever momentum and weight decay do to ``weight_orig``. Masks are keyed by
parameter name, e.g. ``"features.0.weight"``. Making pruning permanent is the explicit step
:func:`make_permanent`.

Whether a tensor is masked is read from torch's own re-parametrisation (a ``BasePruningMethod`` forward
pre-hook naming the tensor), never from buffer names: a model's own ``attn_mask`` buffer is not a mask.

A :class:`WeightTransform` (e.g. binarization, :mod:`prunekit.binarize`) is a second re-parametrisation
composed after the mask: the forward pass uses ``transform(orig * mask)`` (or ``transform(<param>_latent)``
for an unmasked tensor) and the optimizer holds the latent tensor. The functions here (effective tensors,
state dicts, permanent copies) see through both.

This module sits below ``prune``, ``checkpoint``, ``measure``, ``export`` and ``train``; it imports only
torch and :mod:`prunekit.errors`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunekit.errors import PrunekitError

Masks = dict[str, torch.Tensor]


def split_param_name(name: str) -> tuple[str, str]:
    """``"layer1.0.conv1.weight"`` → ``("layer1.0.conv1", "weight")``."""
    module_name, _, param = name.rpartition(".")
    return module_name, param


def masked_names(module: nn.Module) -> list[str]:
    """The tensors of ``module`` itself (not its children) re-parametrised by a pruning hook, e.g. ``["weight"]``."""
    return [hook._tensor_name for hook in module._forward_pre_hooks.values()
            if isinstance(hook, torch_prune.BasePruningMethod)]


def is_masked(module: nn.Module, param: str = "weight") -> bool:
    """True when ``module.<param>`` is re-parametrised as ``<param>_orig * <param>_mask`` by a pruning hook."""
    return param in masked_names(module)


class WeightTransform:
    """A forward pre-hook that maps a module's latent weight to the weight its forward pass uses.

    Subclasses implement :meth:`transform`. Attach with :func:`add_transform`, which moves an unmasked
    parameter ``<param>`` to ``<param>_latent``; a masked tensor keeps ``<param>_orig``/``<param>_mask`` and
    is transformed after the mask (``transform(module, orig * mask)``). Masks come first: a transformed
    tensor refuses new masks (:func:`apply_masks`).
    """

    tensor_name = "weight"

    def transform(self, module: nn.Module, latent: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, module: nn.Module, inputs) -> None:
        setattr(module, self.tensor_name, self.transform(module, latent_tensor(module, self.tensor_name)))


def transforms_of(module: nn.Module) -> dict[str, WeightTransform]:
    """``{param: transform}`` for the tensors of ``module`` itself re-parametrised by a :class:`WeightTransform`."""
    return {hook.tensor_name: hook for hook in module._forward_pre_hooks.values() if isinstance(hook, WeightTransform)}


def latent_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor:
    """The tensor a transform reads: ``<name>_orig * <name>_mask`` when masked, else ``<name>_latent``."""
    if is_masked(module, name):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, f"{name}_latent")


def add_transform(module: nn.Module, transform: WeightTransform) -> WeightTransform:
    """Re-parametrise ``module.<transform.tensor_name>`` as ``transform(latent)``.

    Side effects: an unmasked parameter ``<param>`` becomes the parameter ``<param>_latent`` (same tensor,
    so optimizers built later train it); a forward pre-hook is registered after any mask hook; the
    attribute ``<param>`` is computed immediately. Raises PrunekitError if the tensor already has one."""
    name = transform.tensor_name
    if name in transforms_of(module):
        raise PrunekitError(f"{type(module).__name__}.{name} is already transformed (e.g. binarized)")
    if not is_masked(module, name):
        param = module._parameters.pop(name)
        module.register_parameter(f"{name}_latent", param)
    module.register_forward_pre_hook(transform)
    transform(module, None)
    return transform


def has_transforms(model: nn.Module) -> bool:
    """True when any module of ``model`` carries a :class:`WeightTransform` (e.g. is binarized)."""
    return any(transforms_of(module) for module in model.modules())


def has_masks(model: nn.Module) -> bool:
    """True when any module of ``model`` carries a pruning re-parametrisation (``torch_prune.is_pruned``)."""
    return torch_prune.is_pruned(model)


def masked_keys(model: nn.Module) -> dict[str, tuple[str, str]]:
    """``{"features.0.weight": ("features.0.weight_orig", "features.0.weight_mask")}`` for every masked tensor:
    the effective name and the two state-dict keys that stand for it."""
    keys = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param in masked_names(module):
            keys[prefix + param] = (f"{prefix}{param}_orig", f"{prefix}{param}_mask")
    return keys


def effective_tensor(module: nn.Module, name: str = "weight") -> torch.Tensor | None:
    """``module.<name>`` as the forward pass sees it: ``<name>_orig * <name>_mask`` when masked, else the
    tensor itself (None when absent); a :class:`WeightTransform` is applied on top. Not detached: gradients
    flow to ``<name>_orig`` (or ``<name>_latent``)."""
    transform = transforms_of(module).get(name)
    if transform is not None:
        return transform.transform(module, latent_tensor(module, name))
    if is_masked(module, name):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    value = getattr(module, name, None)
    return value if isinstance(value, torch.Tensor) else None


def effective_weight(module: nn.Module, param: str = "weight") -> torch.Tensor:
    """The tensor the forward pass uses for ``param`` (see :func:`effective_tensor`); raises when absent."""
    value = effective_tensor(module, param)
    if value is None:
        raise AttributeError(f"{type(module).__name__} has no tensor {param!r}")
    return value


def validate_mask(name: str, mask: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Return ``mask`` as a bool tensor; raise if it is not 0/1 or has the wrong shape."""
    if tuple(mask.shape) != tuple(shape):
        raise PrunekitError(f"mask for {name!r} has shape {tuple(mask.shape)}, the weight has {tuple(shape)}")
    if mask.dtype != torch.bool:
        if not bool(((mask == 0) | (mask == 1)).all()):
            raise PrunekitError(f"mask for {name!r} must hold only 0 and 1")
        mask = mask.bool()
    return mask


def _checked_masks(model: nn.Module, masks: Masks) -> list[tuple[nn.Module, str, torch.Tensor]]:
    """``(module, param, bool mask on the weight's device)`` for every entry; raises before anything changes."""
    modules = dict(model.named_modules())
    checked = []
    for name, mask in masks.items():
        module_name, param = split_param_name(name)
        module = modules.get(module_name)
        if module is not None and param in transforms_of(module):
            raise PrunekitError(f"{name!r} is binarized (transformed); masks come first: prune, then binarize")
        current = None if module is None else effective_tensor(module, param)
        if current is None or (not is_masked(module, param) and param not in dict(module.named_parameters(recurse=False))):
            raise PrunekitError(f"mask names {name!r}, which is not a parameter of this model")
        checked.append((module, param, validate_mask(name, mask.to(current.device), current.shape)))
    return checked


def apply_masks(model: nn.Module, masks: Masks) -> nn.Module:
    """Mask ``model`` in place: each named weight is re-parametrised as ``orig * mask``. All or nothing:
    every entry is checked (name, shape, 0/1 values) before the first one is applied, so an invalid mask
    raises PrunekitError and leaves the model untouched.

    Side effects: for every entry, the module's parameter ``<param>`` is replaced by ``<param>_orig``
    (same tensor, so existing values are kept) plus a ``<param>_mask`` buffer and a forward pre-hook.
    A tensor that is already masked gets the product of its old and new mask (masks only shrink).
    The effective weight is recomputed immediately. Returns ``model``.
    """
    for module, param, mask in _checked_masks(model, masks):
        dtype = getattr(module, f"{param}_orig" if is_masked(module, param) else param).dtype
        torch_prune.custom_from_mask(module, param, mask.to(dtype))
    return model


def extract_masks(model: nn.Module) -> Masks:
    """The bool masks of every masked parameter of ``model`` (CPU copies); empty when nothing is masked."""
    modules = dict(model.named_modules())
    masks: Masks = {}
    for name in masked_keys(model):
        module_name, param = split_param_name(name)
        masks[name] = getattr(modules[module_name], f"{param}_mask").detach().bool().cpu().clone()
    return masks


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with every masked ``x_orig``/``x_mask`` pair replaced by ``x = orig * mask``
    and every transformed tensor (``x_latent``, or the masked pair) by ``x = transform(latent)``.

    The result loads into a plain model of the same architecture; pruned entries are exactly zero.
    """
    transformed = transformed_values(model)
    renamed = {latent: base for base, latent in latent_keys(model).items()}
    state = {renamed.get(k, k): v for k, v in model.state_dict().items()}
    pairs = masked_keys(model)
    by_orig = {orig: (base, mask) for base, (orig, mask) in pairs.items()}
    skip = {mask for _, mask in pairs.values()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key in skip:
            continue
        if key in by_orig:
            base, mask = by_orig[key]
            out[base] = (value * state[mask]).detach().clone()
            continue
        out[key] = value
    return {k: transformed.get(k, v) for k, v in out.items()}


def latent_keys(model: nn.Module) -> dict[str, str]:
    """``{"layer.weight": "layer.weight_latent"}`` for every transformed tensor that is not masked (a masked
    one's latent is its ``_orig``, see :func:`masked_keys`)."""
    keys = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param in transforms_of(module):
            if not is_masked(module, param):
                keys[prefix + param] = f"{prefix}{param}_latent"
    return keys


def transformed_values(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{"layer.weight": transform(latent)}`` (detached) for every transformed tensor of ``model``."""
    values = {}
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        for param in transforms_of(module):
            values[prefix + param] = effective_tensor(module, param).detach().clone()
    return values


def remove_transforms(module: nn.Module) -> nn.Module:
    """Bake every :class:`WeightTransform` of ``module`` (not its children) into a plain parameter.

    Side effects: each transformed ``<param>`` becomes a plain parameter holding ``transform(latent)``; its
    hook and ``<param>_latent`` (or mask pair) are removed. Returns ``module``."""
    for name, transform in transforms_of(module).items():
        value = effective_tensor(module, name).detach()
        for key, hook in list(module._forward_pre_hooks.items()):
            if hook is transform:
                del module._forward_pre_hooks[key]
        if is_masked(module, name):
            torch_prune.remove(module, name)
            with torch.no_grad():
                getattr(module, name).copy_(value)
            continue
        latent = module._parameters.pop(f"{name}_latent")
        vars(module).pop(name, None)
        with torch.no_grad():
            latent.copy_(value)
        module.register_parameter(name, latent)
    return module


def make_permanent(model: nn.Module) -> nn.Module:
    """Remove every mask re-parametrisation in place, keeping the zeros in plain parameters.

    Side effects: each masked ``<param>_orig``/``<param>_mask`` pair and its hook are replaced by a plain
    parameter ``<param>`` holding ``orig * mask``; a transformed tensor (:class:`WeightTransform`) becomes
    a plain parameter holding ``transform(orig * mask)``. Other buffers are left alone. Returns ``model``."""
    for module in model.modules():
        remove_transforms(module)
        for param in masked_names(module):
            torch_prune.remove(module, param)
    return model


def permanent_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every mask made permanent (plain parameters holding the zeros, no
    hooks); ``model`` is not modified. Same device and dtype.

    A masked module's ``weight`` attribute is the product ``orig * mask`` of the last forward, which
    ``copy.deepcopy`` refuses (not a leaf tensor); the copy gets a detached clone, and ``make_permanent``
    then recomputes it from the copied ``weight_orig`` and ``weight_mask``.
    """
    memo = {}
    for module in model.modules():
        for name in [*masked_names(module), *transforms_of(module)]:
            value = vars(module).get(name)
            if isinstance(value, torch.Tensor):
                memo[id(value)] = value.detach().clone()
    return make_permanent(copy.deepcopy(model, memo))


def sparsity_of(masks: Masks) -> float:
    """Fraction of pruned entries over all masked tensors (0 for no masks)."""
    total = sum(m.numel() for m in masks.values())
    return 0.0 if total == 0 else sum(int((~m).sum()) for m in masks.values()) / total
