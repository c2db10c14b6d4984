"""A model prepared for inference the way a deployment prepares it: what the eager runtime
(:mod:`prunekit.runtime.eager`) runs, and what latency tables and the latency target measure, so that a dense and
a pruned model get the same inference optimisations.

:func:`prepare_for_inference` traces the model with ``torch.fx`` into one flat graph (the Python cost of calling
container modules such as a residual block or an ``nn.Sequential`` disappears; prunekit's own layers stay
leaves), then folds every BatchNorm2d that reads nothing but a convolution into it
(:func:`torch.nn.utils.fusion.fuse_conv_bn_eval`) — including the constant left by a residual branch removed
whole (a :class:`~prunekit.models.layers.ZeroWidthLayer` with no input channel), whose BatchNorm becomes part
of that constant. Such a branch then runs as one addition of its constant (:func:`fold_removed_branches`: a
block whose branch is gone costs an addition and its activation), and calls of ``nn.Identity`` and of layers
nothing reads are dropped. The prepared copy is checked against the model on the example input; a model that cannot be
traced (Python control flow on tensor values, TorchScript) or whose traced copy differs is run as it is, in
eval mode, and :data:`PREPARED_AS` says which happened.
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

#: Relative tolerance of the check that the prepared copy computes the model's function (float32 folding
#: reorders a few products; a wrong fold is off by far more).
RTOL = 1e-4

#: Attribute set on every prepared model: ``"graph"`` (traced and folded) or ``"module"`` (run as it is).
PREPARED_AS = "prunekit_prepared_as"


def describe_preparation(kind: str) -> str:
    """``"graph"`` / ``"module"`` (:data:`PREPARED_AS`) in words."""
    return {"graph": "as a traced graph with BatchNorm folded",
            "module": "as it is (it does not trace)"}.get(kind, kind)


class _LeafTracer(fx.Tracer):
    """``torch.fx`` tracer that keeps prunekit's layers (``prunekit.models.layers``) as single calls."""

    def is_leaf_module(self, module: nn.Module, qualified_name: str) -> bool:
        return type(module).__module__ == "prunekit.models.layers" or super().is_leaf_module(module, qualified_name)

    def call_module(self, module: nn.Module, forward, args, kwargs):
        """A module the model builds inside its ``forward`` (``nn.ReLU()(x)``) is not one of its submodules:
        its forward is traced inline instead of failing."""
        try:
            self.path_of_module(module)
        except NameError:
            return forward(*args, **kwargs)
        return super().call_module(module, forward, args, kwargs)


def fold_batchnorms(graph_module: fx.GraphModule) -> int:
    """Fold every eval-mode BatchNorm2d call whose only input is a Conv2d (or a no-input ZeroWidthLayer)
    called once and read by nothing else into that layer; returns how many were folded. Side effect: rewrites
    and recompiles ``graph_module``'s graph and replaces the folded layers' modules (the BatchNorm calls
    disappear; the unused BatchNorm modules stay until :func:`drop_dead_calls`)."""
    from prunekit.models.layers import ZeroWidthLayer

    modules = dict(graph_module.named_modules())
    calls: dict[str, int] = {}
    for node in graph_module.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    folded = 0
    for node in list(graph_module.graph.nodes):
        norm = modules.get(node.target) if node.op == "call_module" else None
        if not (isinstance(norm, nn.BatchNorm2d) and not norm.training and norm.running_mean is not None
                and len(node.args) == 1 and not node.kwargs and isinstance(node.args[0], fx.Node)):
            continue
        source = node.args[0]
        layer = modules.get(source.target) if source.op == "call_module" else None
        if len(source.users) != 1 or calls.get(source.target) != 1 or calls.get(node.target) != 1:
            continue
        if type(layer) is nn.Conv2d and layer.out_channels == norm.num_features:
            replacement = fuse_conv_bn_eval(layer, norm)
        elif (isinstance(layer, ZeroWidthLayer) and not layer.in_channels
              and layer.out_channels == norm.num_features):
            replacement = _constant_through_norm(layer, norm)
        else:
            continue
        graph_module.set_submodule(source.target, replacement)
        node.replace_all_uses_with(source)
        graph_module.graph.erase_node(node)
        folded += 1
    graph_module.recompile()
    return folded


def fold_removed_branches(graph_module: fx.GraphModule, example_input: torch.Tensor) -> int:
    """Replace every addition of a no-input ZeroWidthLayer's constant output (a residual branch removed whole)
    to a tensor of its own shape by an addition of the constant itself, broadcast from one ``(1, C, 1, 1)``
    buffer (by the other operand alone when the constant is zero); the branch's empty layers are then read by
    nothing (see :func:`drop_dead_calls`). Returns how many additions were rewritten. Side effect: rewrites
    ``graph_module``'s graph (shapes propagated from ``example_input``) and adds the buffers."""
    import operator

    from torch.fx.passes.shape_prop import ShapeProp

    from prunekit.models.layers import ZeroWidthLayer

    ShapeProp(graph_module).propagate(example_input)
    modules = dict(graph_module.named_modules())
    rewritten = 0
    for node in list(graph_module.graph.nodes):
        module = modules.get(node.target) if node.op == "call_module" else None
        if not (isinstance(module, ZeroWidthLayer) and not module.in_channels and "tensor_meta" in node.meta):
            continue
        shape, dtype = node.meta["tensor_meta"].shape, node.meta["tensor_meta"].dtype
        for user in list(node.users):
            if user.target not in (operator.add, torch.add) or len(user.args) != 2 or user.kwargs:
                continue
            other = user.args[1] if user.args[0] is node else user.args[0]
            meta = getattr(other, "meta", {}).get("tensor_meta")
            if meta is None or meta.shape != shape or meta.dtype != dtype:
                continue  # broadcasting the constant would change the sum's shape
            if module.bias is None:
                user.replace_all_uses_with(other)
            else:
                name = f"{node.target.replace('.', '_')}_constant"
                graph_module.register_buffer(name, module.bias.detach().view(1, -1, 1, 1).clone())
                with graph_module.graph.inserting_before(user):
                    user.args = (other, graph_module.graph.get_attr(name))
            rewritten += 1
    return rewritten


def drop_dead_calls(graph_module: fx.GraphModule) -> None:
    """Skip every ``nn.Identity`` call, remove the calls whose result nothing reads and the modules no call
    uses any more. Side effect: rewrites and recompiles ``graph_module``."""
    modules = dict(graph_module.named_modules())
    for node in list(graph_module.graph.nodes):
        if node.op == "call_module" and isinstance(modules.get(node.target), nn.Identity) and len(node.args) == 1:
            node.replace_all_uses_with(node.args[0])
    graph_module.graph.eliminate_dead_code()
    graph_module.delete_all_unused_submodules()
    graph_module.graph.lint()
    graph_module.recompile()


def _constant_through_norm(layer, norm: nn.BatchNorm2d):
    """A copy of the no-input ZeroWidthLayer ``layer`` whose constant output is ``norm`` applied to its own."""
    from prunekit.models.layers import ZeroWidthLayer

    constant = layer.bias.detach() if layer.bias is not None else torch.zeros(norm.num_features)
    scale = norm.weight.detach() if norm.weight is not None else torch.ones_like(constant)
    shift = norm.bias.detach() if norm.bias is not None else torch.zeros_like(constant)
    value = (constant - norm.running_mean) * scale / torch.sqrt(norm.running_var + norm.eps) + shift
    return ZeroWidthLayer.replacing(layer, 0, layer.out_channels, bias=value).eval()


def _same_function(prepared, model: nn.Module, example_input: torch.Tensor) -> bool:
    """True when ``prepared`` and ``model`` give the same output (within :data:`RTOL` of its largest entry) on
    a seeded random batch shaped like ``example_input`` (random: a zero input would hide a wrong fold)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(example_input.shape, generator=generator).to(example_input.device, example_input.dtype)
    with torch.inference_mode():
        expected, got = _tensors(model(x)), _tensors(prepared(x))
    if expected is None or got is None or len(expected) != len(got):
        return False
    for want, have in zip(expected, got):
        if have.shape != want.shape or have.dtype != want.dtype:
            return False
        scale = want.abs().max().item() if want.numel() else 0.0
        if want.numel() and not ((have - want).abs().max() <= RTOL * (scale or 1.0)).item():
            return False
    return True


def _tensors(output) -> list[torch.Tensor] | None:
    """A model's output as a list of tensors (a tensor, or a tuple/list of them), else None."""
    if isinstance(output, torch.Tensor):
        return [output]
    if isinstance(output, (tuple, list)) and all(isinstance(t, torch.Tensor) for t in output):
        return list(output)
    return None


def prepare_for_inference(model: nn.Module, example_input: torch.Tensor, device: str = "cpu") -> nn.Module:
    """An inference copy of ``model`` on ``device`` in eval mode: traced flat and BatchNorm-folded (see the
    module doc) where that works and computes the same outputs on ``example_input``, else the model as it is.
    ``model`` is not changed (a copy is moved to ``device``)."""
    module = copy.deepcopy(model).to(device).eval()
    example = example_input.to(device)
    try:
        root = copy.deepcopy(module)  # its own modules, so the check below compares against untouched ones
        prepared = fx.GraphModule(root, _LeafTracer().trace(root), module.__class__.__name__)
        fold_batchnorms(prepared)
        fold_removed_branches(prepared, example)
        drop_dead_calls(prepared)
        usable = _same_function(prepared, module, example)
    except Exception:  # noqa: BLE001 — any tracing failure means "run it as it is"
        usable = False
    runnable = prepared.eval() if usable else module
    setattr(runnable, PREPARED_AS, "graph" if usable else "module")
    return runnable

