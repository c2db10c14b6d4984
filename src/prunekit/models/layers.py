"""Which layers of any nn.Module can be pruned, and which one is the classifier."""

from __future__ import annotations

from torch import nn

from prunekit.errors import PrunekitError


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Conv2d and nn.Linear of ``model`` by qualified name, in registration order.

    The classifier is included; callers that must spare it exclude ``classifier_name(model)``.
    Works for any nn.Module; does not modify it.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the output layer: ``model.classifier_name`` if set, else the last nn.Linear.

    Raises PrunekitError when the declared name is not a submodule, or when the
    model declares nothing and has no nn.Linear.
    """
    declared = getattr(model, "classifier_name", None)
    if isinstance(declared, str):
        try:
            model.get_submodule(declared)
        except AttributeError:
            raise PrunekitError(
                f"model.classifier_name is '{declared}' but the model has no such submodule; "
                "set it to the qualified name of the output layer"
            ) from None
        return declared
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PrunekitError(
            "the model has no nn.Linear to use as classifier; set model.classifier_name to its output layer's name"
        )
    return linears[-1]
