"""Architecture as data: per-layer channel counts, so a structurally pruned model rebuilds without code.

``arch_of(model)`` describes a registry model (``{"name", "kwargs", "channels"}``) or a user model
(``{"ref", "kwargs", "channels"}``, see :mod:`prunekit.models.reference`); ``build_model(arch)``
rebuilds it (fresh weights, pruned shapes) ready for ``load_state_dict(strict=True)``.
"""

from __future__ import annotations

import copy

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.reference import as_json_kwargs, model_from_reference, parse_reference, reference_of
from prunekit.models.registry import create_model
from prunekit.models.layers import FullWidthChannels, ZeroPadShortcut, ZeroWidthLayer, module_tensor

# kind -> (module class, config fields). ZeroPadShortcut first: order decides the kind.
_KINDS: dict[str, tuple[type, tuple[str, ...]]] = {
    "ZeroPadShortcut": (ZeroPadShortcut, ("in_channels", "out_channels", "source_index")),
    # a Conv2d / BatchNorm2d whose channels on one side were all removed (a residual branch removed whole)
    "ZeroWidthLayer": (ZeroWidthLayer, ("in_channels", "out_channels")),
    "Conv2d": (nn.Conv2d, ("in_channels", "out_channels", "groups")),
    # weight is (in, out/groups, kH, kW); the constructor takes the same three sizes as Conv2d's
    "ConvTranspose2d": (nn.ConvTranspose2d, ("in_channels", "out_channels", "groups")),
    # SyncBatchNorm (distributed training) has the same state and saves as a plain BatchNorm2d
    "BatchNorm2d": ((nn.BatchNorm2d, nn.SyncBatchNorm), ("num_features",)),
    "BatchNorm1d": (nn.BatchNorm1d, ("num_features",)),
    "Linear": (nn.Linear, ("in_features", "out_features")),
    "GroupNorm": (nn.GroupNorm, ("num_groups", "num_channels")),
    "InstanceNorm2d": (nn.InstanceNorm2d, ("num_features",)),
}
# Any other module holding parameters of its own (a layer scale, a learned per-channel bias): their shapes.
PARAMS_KIND = "Params"
# A module whose size attributes pruning changed (:func:`record_size`): split sizes (``torch.split(x, self.splits,
# 1)``), an int width the layer splits by, a global response norm's ε; each attribute's new value.
SIZES_KIND = "SplitSizes"
# A module channel surgery wrapped to run at its original width (FullWidthChannels): width, axis, kept indices.
FULL_WIDTH_KIND = "FullWidthChannels"
SIZED = "_prunekit_split_sizes"  # module attribute: names of the size attributes pruning changed


def set_split_sizes(module: nn.Module, attr: str, sizes: list[int]) -> None:
    """Set ``module.<attr>`` to ``sizes`` (same container type) and remember it (:func:`record_size`). An int
    attribute (a width the layer splits by, ``self.in_channels // k``) gets the total of ``sizes``."""
    old = getattr(module, attr)
    if type(old) is int:
        record_size(module, attr, sum(sizes))
    else:
        record_size(module, attr, type(old)(sizes) if isinstance(old, (list, tuple)) else list(sizes))


def record_size(module: nn.Module, attr: str, value: object) -> None:
    """Set ``module.<attr>`` to ``value`` (a size pruning changed: split sizes, an int width, a global response
    norm's ε scaled with its width) and list ``attr`` in ``module.<SIZED>``, so ``channel_config`` records it and
    a checkpoint rebuilds the module with this value."""
    setattr(module, attr, value)
    module.__dict__.setdefault(SIZED, [])
    if attr not in module.__dict__[SIZED]:
        module.__dict__[SIZED].append(attr)


def has_shape_record(module_type: type) -> bool:
    """True when modules of ``module_type`` are recorded by :func:`channel_config` and rebuilt by
    :func:`apply_channel_config`: the condition for prunekit to resize them (a pruned model must reload)."""
    return any(issubclass(module_type, cls) for cls, _ in _KINDS.values())


def channel_config(model: nn.Module) -> dict[str, dict]:
    """Channel counts of every module of a recorded kind (:data:`_KINDS`: Conv2d, ConvTranspose2d, BatchNorm1d/2d,
    Linear, GroupNorm, InstanceNorm2d, ZeroPadShortcut), the shapes of the parameters of any other module that
    holds its own (``Params``: a layer scale, a learned bias), and every :class:`FullWidthChannels` wrapper (its
    width, axis and kept indices; its inner module is recorded under ``<name>.inner``), by qualified name.

    Plain JSON types only; does not modify the model.
    """
    config = {name: _describe(m) for name, m in model.named_modules() if _kind_of(m) is not None}
    for name, module in model.named_modules():
        if getattr(module, SIZED, None):
            sizes = {attr: _size_value(getattr(module, attr)) for attr in module.__dict__[SIZED]}
            if name not in config:
                config[name] = {"kind": SIZES_KIND, "sizes": sizes}
            elif config[name]["kind"] == PARAMS_KIND:  # a module with its own parameters and changed sizes
                config[name]["sizes"] = sizes
    return config


def apply_channel_config(model: nn.Module, config: dict[str, dict]) -> nn.Module:
    """Resize ``model`` in place to ``config`` and return it.

    Every listed module whose current config differs is replaced by a freshly
    initialised module of the stored sizes (conv keeps kernel, stride, padding,
    dilation, bias presence and padding mode, a transposed conv also its output
    padding; BN keeps eps, momentum, affine and
    running-stat tracking; Linear keeps bias presence), on the old module's
    device, dtype and train/eval mode. Replaced modules lose their weights, hooks
    and masks: apply the config before loading a state dict. Modules absent from
    ``config`` are left alone. An unknown name, a kind mismatch or an invalid
    size raises PrunekitError naming the module.
    """
    if not isinstance(config, dict):
        raise PrunekitError(f"a channel config must be a dict of module name -> sizes, got {type(config).__name__}")
    modules = dict(model.named_modules())
    for name, stored in config.items():
        module = modules.get(name)
        if module is not None and isinstance(stored, dict) and stored.get("kind") == SIZES_KIND:
            _apply_sizes(name, module, stored.get("sizes"))
            continue
        if module is not None and isinstance(stored, dict) and stored.get("kind") == FULL_WIDTH_KIND:
            wrapper = _wrap_full_width(name, module, stored)
            _set_submodule(model, name, wrapper)
            modules.update({f"{name}.{child}" if child else name: m for child, m in wrapper.named_modules()})
            continue
        if module is None or (name == "" and _kind_of(module) != PARAMS_KIND):
            raise PrunekitError(
                f"channel config names module '{name}', which this model does not have; "
                "was the config saved from a different architecture?"
            )
        wanted = _normalise(name, module, stored)
        if wanted != _describe(module):
            new = _rebuild(name, module, wanted)
            if new is not module:
                _set_submodule(model, name, new)
        if wanted["kind"] == PARAMS_KIND and "sizes" in stored:
            _apply_sizes(name, module, stored["sizes"])
    return model


def arch_of(model: nn.Module) -> dict:
    """``{"name" | "ref", "kwargs", "channels"}`` describing a model, current (pruned) shapes included.

    Needs ``model.arch`` as set by ``create_model``/``resolve_model``/``build_model``; other models raise
    PrunekitError (see :func:`saved_arch` for models built in Python).
    """
    arch = getattr(model, "arch", None)
    if not isinstance(arch, dict) or not (isinstance(arch.get("name"), str) or isinstance(arch.get("ref"), str)):
        raise PrunekitError(
            "this model has no `arch` attribute, so it cannot be described as data; "
            "build it with prunekit.models.create_model or resolve_model, or save it with arch_ref='file.py:Class'"
        )
    key = "name" if isinstance(arch.get("name"), str) else "ref"
    library = {"library": arch["library"]} if isinstance(arch.get("library"), str) else {}
    return {key: arch[key], "kwargs": copy.deepcopy(arch.get("kwargs", {})), **library,
            "channels": channel_config(model)}


def saved_arch(model: nn.Module, arch_ref: str | None = None, kwargs: dict | None = None) -> dict | None:
    """The ``arch`` a checkpoint stores for ``model``, or None when it cannot be rebuilt from data.

    ``arch_ref``/``kwargs`` (a reference and its constructor arguments) override the model's own ``arch``;
    without them a model lacking ``arch`` is described by the reference of its class
    (:func:`prunekit.models.reference.reference_of`) with kwargs ``{}``, and None when that class cannot be
    named for import (a torch container, a class defined in a function).
    """
    if arch_ref is None and kwargs is None and hasattr(model, "arch"):
        return arch_of(model)
    ref = arch_ref or (model.arch.get("ref") if isinstance(getattr(model, "arch", None), dict) else None) \
        or reference_of(type(model))
    if ref is None:
        return None
    parse_reference(ref)
    return {"ref": ref, "kwargs": as_json_kwargs(kwargs or {}, ref), "channels": channel_config(model)}


def arch_label(arch: dict | None) -> str | None:
    """A short name for an arch: the registry name, or the reference of a user model."""
    return None if not arch else arch.get("name") or arch.get("ref")


def build_model(arch: dict, search_dirs=()) -> nn.Module:
    """Rebuild a model from ``arch_of`` output: the constructor, then ``apply_channel_config``.

    A registry arch goes through ``create_model``; a user arch (``"ref"``) imports the file or module and
    calls the named constructor with ``kwargs`` (nothing else runs), a file path being tried also in
    ``search_dirs`` (e.g. the checkpoint's folder). Weights are freshly initialised; the returned model's
    ``arch`` is the base ``{"name" | "ref", "kwargs"}`` (channels are read from the modules, not stored twice).
    """
    if not isinstance(arch, dict) or not (isinstance(arch.get("name"), str) or isinstance(arch.get("ref"), str)):
        raise PrunekitError(f"an arch must be a dict with a 'name' or a 'ref' (see arch_of), got {arch!r:.200}")
    kwargs = arch.get("kwargs") or {}
    if not isinstance(kwargs, dict):
        raise PrunekitError(f"arch['kwargs'] must be a dict, got {type(kwargs).__name__}")
    if isinstance(arch.get("name"), str):
        model = create_model(arch["name"], **kwargs)
    else:
        model = model_from_reference(arch["ref"], kwargs, search_dirs)
    if arch.get("channels"):
        apply_channel_config(model, arch["channels"])
    key = "name" if "name" in model.arch else "ref"
    library = {"library": model.arch["library"]} if "library" in model.arch else {}  # the version installed now
    model.arch = {key: model.arch[key], "kwargs": copy.deepcopy(model.arch["kwargs"]), **library}
    return model


def _kind_of(module: nn.Module) -> str | None:
    if isinstance(module, FullWidthChannels):
        return FULL_WIDTH_KIND
    for kind, (cls, _) in _KINDS.items():
        if isinstance(module, cls):
            return kind
    return PARAMS_KIND if module._parameters and any(p is not None for p in module._parameters.values()) else None


def _own_shapes(module: nn.Module) -> dict[str, list[int]]:
    return {attr: [int(v) for v in p.shape] for attr, p in module._parameters.items() if p is not None}


def _describe(module: nn.Module) -> dict:
    kind = _kind_of(module)
    if kind == PARAMS_KIND:
        return {"kind": kind, "shapes": _own_shapes(module)}
    if kind == FULL_WIDTH_KIND:
        return {"kind": kind, "width": module.width, "axis": module.axis, "kept_index": module.kept_index.tolist()}
    fields = _KINDS[kind][1]
    out = {"kind": kind}
    for field in fields:
        value = getattr(module, field)
        out[field] = [int(v) for v in value] if field == "source_index" else int(value)
    return out


def _normalise(name: str, module: nn.Module, stored: object) -> dict:
    """The stored entry reduced to its kind's fields, validated against the live module."""
    kind = _kind_of(module)
    if isinstance(stored, dict) and stored.get("kind") == "ZeroWidthLayer" and kind in _REPLACED_BY_ZERO_WIDTH:
        kind = "ZeroWidthLayer"  # the constructor built the full layer; pruning removed one side of it
    if not isinstance(stored, dict) or stored.get("kind") != kind:
        got = stored.get("kind") if isinstance(stored, dict) else stored
        raise PrunekitError(f"module '{name}' is a {type(module).__name__} (kind {kind}) but the config says {got!r}")
    if kind == PARAMS_KIND:
        return {"kind": kind, "shapes": _check_shapes(name, module, stored.get("shapes"))}
    out = {"kind": kind}
    for field in _KINDS[kind][1]:
        if field not in stored:
            raise PrunekitError(f"channel config for '{name}' ({kind}) lacks '{field}'")
        out[field] = _check_value(name, field, stored[field], zero_allowed=kind == "ZeroWidthLayer")
    return out


def _check_value(name: str, field: str, value: object, zero_allowed: bool = False) -> int | list[int]:
    def is_int(v: object) -> bool:
        return isinstance(v, int) and not isinstance(v, bool)

    if field == "source_index":
        if isinstance(value, (list, tuple)) and all(is_int(v) for v in value):
            return [int(v) for v in value]
    elif is_int(value) and (value > 0 or (zero_allowed and value == 0)):
        return int(value)
    raise PrunekitError(f"channel config for '{name}': '{field}' has invalid value {value!r}")


def _size_value(value: object) -> int | float | list[int]:
    """A size attribute as JSON: an int width or a float ε stays a number, a list of sizes a list of ints."""
    return value if type(value) in (int, float) else [int(v) for v in value]


def _fits_size_attribute(current: object, value: object) -> bool:
    def positive(v: object) -> bool:
        return type(v) is int and v > 0

    if type(current) is int:
        return positive(value)
    if type(current) is float:
        return type(value) in (int, float) and value > 0
    return (isinstance(current, (list, tuple)) and isinstance(value, list) and len(value) == len(current)
            and all(positive(i) for i in value))


def _apply_sizes(name: str, module: nn.Module, sizes: object) -> None:
    ok = isinstance(sizes, dict) and all(_fits_size_attribute(getattr(module, a, None), v) for a, v in sizes.items())
    if not ok:
        raise PrunekitError(f"channel config for '{name}': 'sizes' must give split-size attributes of the module "
                            f"as lists of positive ints of their current length (a positive int for an int width), "
                            f"got {sizes!r:.200}")
    for attr, values in sizes.items():
        if type(values) in (int, float):
            record_size(module, attr, type(getattr(module, attr))(values))
        else:
            set_split_sizes(module, attr, values)


def _wrap_full_width(name: str, module: nn.Module, stored: dict) -> FullWidthChannels:
    """``module`` (as the constructor built it, at its original width) wrapped as recorded; a module that is
    already a wrapper gets its inner module re-wrapped with the recorded indices."""
    inner = module.inner if isinstance(module, FullWidthChannels) else module
    width, axis, kept = stored.get("width"), stored.get("axis"), stored.get("kept_index")
    if not (type(width) is int and type(axis) is int and isinstance(kept, list) and all(type(i) is int for i in kept)):
        raise PrunekitError(f"channel config for '{name}' ({FULL_WIDTH_KIND}) needs an int 'width' and 'axis' and a "
                            f"list of ints 'kept_index', got {stored!r:.200}")
    return FullWidthChannels.wrapping(inner, kept, width, axis, like=module)


def _check_shapes(name: str, module: nn.Module, shapes: object) -> dict[str, list[int]]:
    own = _own_shapes(module)
    if not isinstance(shapes, dict) or set(shapes) != set(own) or not all(
            isinstance(v, list) and len(v) == len(own[k]) and all(isinstance(i, int) and i > 0 for i in v)
            for k, v in shapes.items()):
        raise PrunekitError(f"channel config for '{name}': 'shapes' must give each of its parameters {sorted(own)} "
                            f"a shape of the same rank, got {shapes!r:.200}")
    return {k: list(v) for k, v in shapes.items()}


def _rebuild(name: str, old: nn.Module, c: dict) -> nn.Module:
    try:
        new = _BUILDERS[c["kind"]](old, c)
    except (ValueError, PrunekitError) as exc:
        raise PrunekitError(f"cannot resize module '{name}' to {c}: {exc}") from None
    return new if new is old else new.train(old.training)


def _factory(old: nn.Module) -> dict:
    tensor = module_tensor(old)
    return {} if tensor is None else {"device": tensor.device, "dtype": tensor.dtype}


def _new_conv(old: nn.Conv2d, c: dict) -> nn.Module:
    return nn.Conv2d(
        c["in_channels"], c["out_channels"], old.kernel_size, stride=old.stride, padding=old.padding,
        dilation=old.dilation, groups=c["groups"], bias=old.bias is not None, padding_mode=old.padding_mode,
        **_factory(old),
    )


def _new_conv_transpose(old: nn.ConvTranspose2d, c: dict) -> nn.Module:
    return nn.ConvTranspose2d(
        c["in_channels"], c["out_channels"], old.kernel_size, stride=old.stride, padding=old.padding,
        output_padding=old.output_padding, groups=c["groups"], bias=old.bias is not None, dilation=old.dilation,
        padding_mode=old.padding_mode, **_factory(old),
    )


def _resized_copy(old: nn.Module, count: int, sizes: dict[str, int]) -> nn.Module:
    """A copy of ``old`` (its class, so its own forward, and its settings) whose per-channel parameters and
    buffers have ``count`` entries (zeros) and whose size attributes are ``sizes``."""
    new = copy.deepcopy(old)
    width = next((t.shape[0] for t in (*old._parameters.values(), *old._buffers.values())
                  if t is not None and t.dim() >= 1), None)
    for store in (new._parameters, new._buffers):
        for attr, tensor in store.items():
            if tensor is not None and tensor.dim() >= 1 and tensor.shape[0] == width:
                fresh = tensor.new_zeros((count, *tensor.shape[1:]))
                store[attr] = nn.Parameter(fresh, tensor.requires_grad) if isinstance(tensor, nn.Parameter) else fresh
    for attr, value in sizes.items():
        setattr(new, attr, value)
    return new


def _new_norm(old: nn.Module, c: dict) -> nn.Module:
    """GroupNorm, InstanceNorm2d, or a BatchNorm2d subclass with its own forward (a norm + activation)."""
    count = c.get("num_features", c.get("num_channels"))
    if count is None or ("num_groups" in c and count % c["num_groups"]):
        raise PrunekitError(f"{c.get('num_channels')} channels do not split into {c.get('num_groups')} groups")
    return _resized_copy(old, count, {k: v for k, v in c.items() if k != "kind"})


def _new_params(old: nn.Module, c: dict) -> nn.Module:
    """``old`` itself (it may be the model), its own parameters replaced by zeros of the stored shapes."""
    for attr, shape in c["shapes"].items():
        tensor = old._parameters[attr]
        old._parameters[attr] = nn.Parameter(tensor.new_zeros(shape), tensor.requires_grad)
    return old


def _new_bn(old: nn.Module, c: dict) -> nn.Module:
    if type(old) not in (nn.BatchNorm1d, nn.BatchNorm2d, nn.SyncBatchNorm):
        return _new_norm(old, c)
    kind = nn.BatchNorm1d if c["kind"] == "BatchNorm1d" else nn.BatchNorm2d  # SyncBatchNorm rebuilds as 2d
    return kind(c["num_features"], eps=old.eps, momentum=old.momentum, affine=old.affine,
                track_running_stats=old.track_running_stats, **_factory(old))


def _new_linear(old: nn.Linear, c: dict) -> nn.Module:
    return nn.Linear(c["in_features"], c["out_features"], bias=old.bias is not None, **_factory(old))


def _new_shortcut(old: ZeroPadShortcut, c: dict) -> nn.Module:
    new = ZeroPadShortcut(c["in_channels"], c["out_channels"], old.stride, c["source_index"])
    return new.to(old.gather_index.device)


def _new_zero_width(old: nn.Module, c: dict) -> nn.Module:
    """The ZeroWidthLayer standing for ``old`` (the constructor's Conv2d or BatchNorm2d) at the stored widths;
    it has a bias when ``old`` had one (a conv) and it keeps output channels."""
    bias = getattr(old, "bias", None) if isinstance(old, (nn.Conv2d, ZeroWidthLayer)) else None
    bias = None if bias is None or not c["out_channels"] else bias.new_zeros(c["out_channels"])
    return ZeroWidthLayer.replacing(old, c["in_channels"], c["out_channels"], bias)


# the kinds a stored ZeroWidthLayer may replace (pruning removed every channel on one side of them)
_REPLACED_BY_ZERO_WIDTH = ("Conv2d", "BatchNorm2d")

_BUILDERS = {"ZeroWidthLayer": _new_zero_width, "Conv2d": _new_conv, "ConvTranspose2d": _new_conv_transpose, "BatchNorm2d": _new_bn,
             "BatchNorm1d": _new_bn, "Linear": _new_linear, "ZeroPadShortcut": _new_shortcut, "GroupNorm": _new_norm,
             "InstanceNorm2d": _new_norm, PARAMS_KIND: _new_params}


def _set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name), child, new)
