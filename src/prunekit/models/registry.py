"""Models by name: one registry, one ``create_model``.

Family modules register their constructors with ``@register_model``; importing
``prunekit.models`` imports every family, so the registry is full as soon as any
part of this package is imported.
"""

from __future__ import annotations

import difflib
import inspect
import json
from dataclasses import dataclass
from typing import Callable

from torch import nn

from prunekit.errors import PrunekitError

_REGISTRY: dict[str, "ModelSpec"] = {}


@dataclass(frozen=True)
class ModelSpec:
    """One registered architecture: its name, family module, constructor and a one-line description."""

    name: str
    family: str
    builder: Callable[..., nn.Module]
    description: str


def register_model(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``builder`` under its function name; return it unchanged.

    The family is the defining module's last name (``vgg``, ``resnet`` ...), the
    description the docstring's first line. Registering a name twice raises
    PrunekitError, so two families cannot silently shadow each other.
    """
    name = builder.__name__
    if name in _REGISTRY:
        raise PrunekitError(f"model name '{name}' is registered twice; rename one of the constructors")
    doc = (builder.__doc__ or "").strip().splitlines()
    _REGISTRY[name] = ModelSpec(
        name=name,
        family=builder.__module__.rsplit(".", 1)[-1],
        builder=builder,
        description=doc[0] if doc else "",
    )
    return builder


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The ModelSpec of ``name``; an unknown name raises PrunekitError listing the valid ones."""
    spec = _REGISTRY.get(name)
    if spec is None:
        raise PrunekitError(_unknown_name_message(name))
    return spec


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a freshly initialised model by registry name.

    ``kwargs`` go to the family constructor and must be JSON-serialisable. The
    returned model carries ``model.arch = {"name": name, "kwargs": {"num_classes":
    num_classes, **kwargs}}`` (plain JSON types), enough for ``build_model`` to
    rebuild it. Unknown names or arguments raise PrunekitError.
    """
    spec = model_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise PrunekitError(f"num_classes must be a positive integer, got {num_classes!r}")
    _check_arguments(spec, num_classes, kwargs)
    arch_kwargs = _as_json({"num_classes": num_classes, **kwargs}, name)
    model = spec.builder(num_classes=num_classes, **kwargs)
    model.arch = {"name": name, "kwargs": arch_kwargs}
    return model


def _unknown_name_message(name: str) -> str:
    valid = list_models()
    close = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    return f"unknown model '{name}'.{hint} Valid names: {', '.join(valid)}."


def _check_arguments(spec: ModelSpec, num_classes: int, kwargs: dict) -> None:
    signature = inspect.signature(spec.builder)
    try:
        signature.bind(num_classes=num_classes, **kwargs)
    except TypeError as exc:
        accepted = ", ".join(signature.parameters)
        raise PrunekitError(f"bad arguments for model '{spec.name}' ({exc}); it accepts: {accepted}") from None


def _as_json(kwargs: dict, name: str) -> dict:
    # A round trip turns tuples into lists, so model.arch compares equal to its saved copy.
    try:
        return json.loads(json.dumps(kwargs))
    except (TypeError, ValueError) as exc:
        raise PrunekitError(
            f"arguments for model '{name}' must be JSON-serialisable (ints, strings, lists): {exc}"
        ) from None
