"""The model zoo: CIFAR architectures by name, user models by reference, and architectures as data.

Importing this package imports every family module, which fills the registry.
"""

from prunekit.models.registry import ModelSpec, create_model, list_models, model_spec, register_model
from prunekit.models import densenet, googlenet, mobilenetv2, resnet, vgg  # noqa: F401  (fills the registry)
from prunekit.models.layers import (FullWidthChannels, ZeroPadShortcut, ZeroWidthLayer, classifier_name,
                                    prunable_layers)
from prunekit.models.reference import is_reference, parse_model_kwargs, resolve_model
from prunekit.models.shapes import apply_channel_config, arch_label, arch_of, build_model, channel_config, saved_arch

__all__ = [
    "FullWidthChannels",
    "ModelSpec",
    "ZeroPadShortcut",
    "ZeroWidthLayer",
    "apply_channel_config",
    "arch_label",
    "arch_of",
    "build_model",
    "channel_config",
    "classifier_name",
    "create_model",
    "is_reference",
    "list_models",
    "model_spec",
    "parse_model_kwargs",
    "prunable_layers",
    "register_model",
    "resolve_model",
    "saved_arch",
]
