"""The self-check of structured pruning: the physical model must compute what the masked twin computes.

The masked twin is the model with every removed channel zeroed by masks (shapes unchanged). Both run on
the example input in float64 and eval mode, so float rounding cannot hide or fake a difference; every
traced layer's output is compared channel by channel, so a mismatch names the first layer where the two
diverge rather than only the logits.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.prune.graph import ChannelGraph
from prunekit.prune.trace_state import tensors_in

RELATIVE_TOLERANCE = 1e-6  # in float64; a real surgery error is many orders of magnitude larger


def check_equivalent(twin: nn.Module, physical: nn.Module, graph: ChannelGraph, removed: set[int],
                     inputs: tuple) -> None:
    """Raise PrunekitError unless ``physical`` reproduces ``twin`` on ``inputs`` (see the module doc).

    Neither model is modified (both are copied to float64)."""
    twin_outputs, twin_result, _ = _run(twin, graph, inputs)
    physical_outputs, physical_result, failure = _run(physical, graph, inputs)
    if failure is not None:
        layer, exc = failure
        raise PrunekitError(f"the pruned model fails in forward at layer '{layer}' ({type(exc).__name__}: {exc}); "
                            "the model was left unchanged. Please report this model to prunekit")
    for name, expected in twin_outputs.items():
        kept = [i for i, cid in enumerate(graph.outputs.get(name, ())) if cid not in removed]
        actual = physical_outputs.get(name)
        if actual is None or not kept or expected.dim() < 2 or expected.shape[1] != len(graph.outputs[name]):
            continue
        if not _close(expected.index_select(1, torch.tensor(kept, device=expected.device)), actual):
            raise PrunekitError(f"pruning changed what the model computes, first at layer '{name}': its kept channels "
                                "differ from the masked model's; the model was left unchanged")
    for expected, actual in zip(tensors_in(twin_result), tensors_in(physical_result)):
        if not _close(expected, actual):
            raise PrunekitError("pruning changed the model's output (every traced layer agreed): an op between "
                                "layers does not follow the removed channels; the model was left unchanged")


def _run(model: nn.Module, graph: ChannelGraph, inputs: tuple):
    model = copy.deepcopy(model).double().eval()
    names = {id(m): n for n, m in model.named_modules()}
    outputs: dict[str, torch.Tensor] = {}
    entered: list[str] = []

    def record(module: nn.Module, args: Any, output: Any) -> None:
        name = names.get(id(module))
        if name in graph.outputs and isinstance(output, torch.Tensor) and name not in outputs:
            outputs[name] = output.detach()

    def enter(module: nn.Module, args: Any) -> None:
        if id(module) in names:
            entered.append(names[id(module)])

    traced = [m for m in model.modules() if not isinstance(m, torch.jit.ScriptModule)]
    hooks = [m.register_forward_hook(record) for m in traced] + [m.register_forward_pre_hook(enter) for m in traced]
    double = tuple(t.double() if isinstance(t, torch.Tensor) and t.is_floating_point() else t for t in inputs)
    try:
        with torch.no_grad():
            result = model(*double)
        return outputs, result, None
    except Exception as exc:  # the physical model may fail anywhere; report where
        return outputs, None, (entered[-1] if entered else "<top level>", exc)
    finally:
        for hook in hooks:
            hook.remove()



def _close(expected: torch.Tensor, actual: torch.Tensor) -> bool:
    if expected.shape != actual.shape:
        return False
    scale = expected.abs().max().item() if expected.numel() else 0.0
    return (expected - actual).abs().max().item() <= RELATIVE_TOLERANCE * max(scale, 1e-12) if expected.numel() else True
