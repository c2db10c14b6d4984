"""Channel importance: one score per prunable channel, by a registered criterion.

Criteria (``CRITERIA``; ``register_criterion`` adds one):

``l1``        Σ |w| of the channel's filter (weight row of the producing conv; biases excluded); for a
              channel coupled across several convs (a residual stream), the sum over its producers.
``l2``        ‖w‖₂ of the filter, summed over producers the same way.
``bn_scale``  |γ| of the BatchNorm2d applied right after each producing conv, summed over producers
              (network slimming). Pre-activation networks (DenseNet) have no BN after the conv: there
              the first BN that normalises the channel is used; a channel no BN touches falls back to
              ``l1`` (scores are only compared within a group or after per-group normalisation).
``next-l2``   ‖W[:, c]‖₂ of the next layer's input-channel weights (every conv or linear that reads channel c,
              summed): what the channel contributes downstream (the efficientml.ai lab's channel
              ranking). A channel that nothing reads through a weight falls back to ``l2``.
``random``    uniform in [0, 1), from ``torch.Generator().manual_seed(seed)``, in channel-id order.
``taylor``    first-order Taylor estimate of the loss change when the channel is removed (Molchanov et
              al. 2017): per image ``|mean over positions of a · ∂L/∂a|`` of the producing conv's output
              ``a``, summed over the images of labelled ``batches`` (cross-entropy, model in eval mode, no
              parameter gradient is touched), summed over producers. Needs ``batches``.
``fpgm``      filter pruning via geometric median (He et al. 2019): ``Σ_j ‖w_i − w_j‖₂`` over the other
              filters of the same conv; a filter close to the geometric median is redundant and scores
              low. An all-zero filter scores 0. Summed over producers.

A criterion registered with ``needs_batches=True`` is called as ``fn(model, graph, seed, batches=...)``,
where ``batches`` is a sequence of ``(inputs, labels)`` on the model's device (the pipeline draws them
from the training split with a fixed seed, see :func:`prunekit.train.loop.sample_batches`).

Scores are read from the *effective* weights (``weight_orig * weight_mask`` for a masked module), so a
channel zeroed by an earlier round scores 0. Nothing is modified.

Besides per-channel scores, a :class:`LossProbe` *measures* what removing a set of channels costs: the
cross-entropy on a few labelled images with those channels zeroed, as the masked twin zeroes them. The
latency allocation uses it to value how many channels each group keeps (a residual branch removed whole
included) on one scale, the loss, while the criterion still picks which channels go.
"""

from __future__ import annotations

import difflib
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.masking import effective_tensor as forward_tensor
from prunekit.prune.graph import ChannelGraph
from prunekit.prune.layer_handlers import handler_for, zeroed_by_layer
from prunekit.prune.trace_state import parse_param_role

Criterion = Callable[[nn.Module, ChannelGraph, int], dict[int, float]]
CRITERIA: dict[str, Criterion] = {}


def register_criterion(name: str, needs_batches: bool = False) -> Callable[[Criterion], Criterion]:
    """Register ``fn(model, graph, seed) -> {channel id: score}`` under ``name``; higher = more important.

    ``needs_batches``: the criterion is data-driven and also receives ``batches=`` (labelled batches)."""

    def decorate(fn: Criterion) -> Criterion:
        if name in CRITERIA:
            raise PrunekitError(f"channel criterion '{name}' is registered twice")
        fn.needs_batches = needs_batches
        CRITERIA[name] = fn
        return fn

    return decorate


def get_criterion(name: str) -> Criterion:
    """The criterion registered as ``name``; an unknown name raises PrunekitError listing the valid ones."""
    if name not in CRITERIA:
        close = difflib.get_close_matches(str(name), list(CRITERIA), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise PrunekitError(f"unknown channel criterion '{name}'.{hint} Valid criteria: {', '.join(CRITERIA)}.")
    return CRITERIA[name]


def needs_batches(criterion: str) -> bool:
    """Whether ``criterion`` scores from labelled training batches (``taylor``) rather than weights alone."""
    return getattr(get_criterion(criterion), "needs_batches", False)


def channel_scores(model: nn.Module, graph: ChannelGraph, criterion: str = "l1", seed: int = 0,
                   batches=None) -> dict[int, float]:
    """``{channel id: score}`` for every prunable channel of ``graph`` under ``criterion``; ``batches``
    (``(inputs, labels)`` pairs) are required by data-driven criteria and ignored by the others."""
    fn = get_criterion(criterion)
    if not getattr(fn, "needs_batches", False):
        return fn(model, graph, seed)
    if not batches:
        raise PrunekitError(f"criterion {criterion} scores channels from labelled training batches, but none "
                            "were given: use compute_masks(..., batches=[(inputs, labels), ...]) or `prunekit prune`, which "
                            "draws them from the training split")
    return fn(model, graph, seed, batches=batches)


def effective_tensor(module: nn.Module, name: str) -> torch.Tensor | None:
    """``module.<name>`` as the forward pass sees it: ``<name>_orig * <name>_mask`` when masked, else the
    parameter itself (None when absent). Detached."""
    value = forward_tensor(module, name)
    return None if value is None else value.detach()


def _prunable(graph: ChannelGraph) -> list[int]:
    return [cid for cid, channel in graph.channels.items() if channel.prunable]


def _filter_norm_scores(model: nn.Module, graph: ChannelGraph, p: int) -> dict[int, float]:
    modules = dict(model.named_modules())
    norms: dict[str, list[float]] = {}
    scores = {}
    for cid in _prunable(graph):
        total = 0.0
        for slot in graph.channels[cid].producers:
            if slot.module not in norms:
                module = modules[slot.module]
                weight = handler_for(module).rows(effective_tensor(module, "weight")).float()
                norms[slot.module] = weight.norm(p=p, dim=1).tolist()
            total += norms[slot.module][slot.index]
        scores[cid] = total
    return scores


@register_criterion("l1")
def l1_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """Σ |w| of each producing filter, summed over the channel's producers."""
    return _filter_norm_scores(model, graph, 1)


@register_criterion("l2")
def l2_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """‖w‖₂ of each producing filter, summed over the channel's producers."""
    return _filter_norm_scores(model, graph, 2)


@register_criterion("bn_scale")
def bn_scale_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """|γ| of the BN right after each producing conv, summed; else the first BN on the channel (a norm layer
    with its own forward, e.g. a norm + activation layer, counts: its γ is the channel's ``affine:weight:0``)."""
    modules = dict(model.named_modules())
    gammas: dict[str, list[float]] = {}

    def gamma(bn_name: str, index: int) -> float:
        if bn_name not in gammas:
            weight = effective_tensor(modules[bn_name], "weight")
            if weight is None:
                raise PrunekitError(f"criterion bn_scale: BatchNorm2d '{bn_name}' has no affine γ; use l1 or l2")
            gammas[bn_name] = weight.abs().tolist()
        return gammas[bn_name][index]

    scores, fallback = {}, None
    for cid in _prunable(graph):
        channel = graph.channels[cid]
        pairs = [(graph.bn_after[s.module], s.index) for s in channel.producers if s.module in graph.bn_after]
        if not pairs:
            pairs = [(s.module, s.index) for s in channel.slots if s.role == "bn" or (
                s.role == "affine:weight:0" and isinstance(modules[s.module], nn.modules.batchnorm._NormBase))][:1]
        if pairs:
            scores[cid] = sum(gamma(name, index) for name, index in pairs)
        else:  # no BN anywhere on this channel (e.g. a last conv feeding the classifier): its filter's L1
            fallback = fallback or l1_scores(model, graph)
            scores[cid] = fallback[cid]
    return scores


@register_criterion("next-l2")
def next_l2_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """‖W[:, c]‖₂ of every consumer's input column of channel c (conv and linear inputs), summed."""
    modules = dict(model.named_modules())
    norms: dict[str, list[float]] = {}
    scores, fallback = {}, None
    for cid in _prunable(graph):
        readers = [s for s in graph.channels[cid].slots if s.role in ("conv_in", "linear_in")]
        for slot in readers:
            if slot.module not in norms:
                norms[slot.module] = _input_column_norms(modules[slot.module]).tolist()
        if readers:
            scores[cid] = sum(norms[s.module][s.index] for s in readers)
        else:
            fallback = fallback or l2_scores(model, graph)
            scores[cid] = fallback[cid]
    return scores


def _input_column_norms(module: nn.Module) -> torch.Tensor:
    """‖W[:, i]‖₂ per input channel i of a Conv2d (grouped: the rows of i's group), ConvTranspose2d or Linear."""
    weight = effective_tensor(module, "weight").float()
    if isinstance(module, nn.ConvTranspose2d):
        return weight.reshape(weight.shape[0], -1).norm(dim=1)
    if isinstance(module, nn.Conv2d) and module.groups > 1:
        out_per_group = weight.shape[0] // module.groups
        groups = weight.reshape(module.groups, out_per_group, weight.shape[1], -1)  # g, out/g, in/g, k
        return groups.transpose(1, 2).reshape(module.in_channels, -1).norm(dim=1)
    return weight.transpose(0, 1).reshape(weight.shape[1], -1).norm(dim=1)


@register_criterion("random")
def random_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """Uniform scores from a generator seeded with ``seed`` (reproducible baseline)."""
    ids = _prunable(graph)
    values = torch.rand(len(ids), generator=torch.Generator().manual_seed(seed)).tolist()
    return dict(zip(ids, values))


def _per_producer(graph: ChannelGraph, per_module: dict[str, list[float]]) -> dict[int, float]:
    """Channel score = sum over its producing convs of ``per_module[conv][output index]``."""
    return {cid: sum(per_module[s.module][s.index] for s in graph.channels[cid].producers) for cid in _prunable(graph)}


def _producers(graph: ChannelGraph) -> list[str]:
    return list(dict.fromkeys(s.module for cid in _prunable(graph) for s in graph.channels[cid].producers))


@register_criterion("fpgm")
def fpgm_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0) -> dict[int, float]:
    """Σ_j ‖w_i − w_j‖₂ over the filters of the same producing conv (0 for an all-zero filter), summed."""
    modules = dict(model.named_modules())
    per_module = {}
    for name in _producers(graph):
        rows = handler_for(modules[name]).rows(effective_tensor(modules[name], "weight")).float()
        rows = rows.reshape(rows.shape[0], -1)
        distance = torch.cdist(rows[None], rows[None])[0].sum(1)
        per_module[name] = torch.where(rows.ne(0).any(1), distance, torch.zeros_like(distance)).tolist()
    return _per_producer(graph, per_module)


@register_criterion("taylor", needs_batches=True)
def taylor_scores(model: nn.Module, graph: ChannelGraph, seed: int = 0, batches=()) -> dict[int, float]:
    """Σ over images of |mean over positions of activation × ∂CE/∂activation| of each producing conv's
    output channel, summed over producers. Gradients come from ``torch.autograd.grad`` with respect to the
    activations only, so no parameter's ``.grad`` changes; the model runs in eval mode (BN statistics
    untouched) and gets its previous mode back."""
    modules = dict(model.named_modules())
    names = _producers(graph)
    outputs: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    totals = {n: torch.zeros(_out_channels(modules[n])) for n in names}
    hooks = [modules[n].register_forward_hook(lambda m, i, o, n=n: outputs[n].append(o)) for n in names]
    was_training = model.training
    model.eval()
    try:
        for x, y in batches:
            for captured in outputs.values():
                captured.clear()
            with torch.enable_grad():
                loss = F.cross_entropy(model(x).float(), y)
                pairs = [(n, o) for n, captured in outputs.items() for o in captured if o.requires_grad]
                grads = torch.autograd.grad(loss, [o for _, o in pairs], allow_unused=True)
            for (n, o), g in zip(pairs, grads):
                if g is not None:
                    product = (o.detach().float() * g.float()).reshape(o.shape[0], o.shape[1], -1)
                    totals[n] += product.mean(2).abs().sum(0).cpu()
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return _per_producer(graph, {n: t.tolist() for n, t in totals.items()})


def _out_channels(module: nn.Module) -> int:
    return getattr(module, "out_channels", None) or getattr(module, "out_features")


def zeroed_channels(model: nn.Module, graph: ChannelGraph) -> set[int]:
    """Prunable channels that are exactly zero wherever they appear: every slot's parameters are zero
    (producing conv rows and biases, depthwise rows and biases, γ and β of every BN on the channel) and
    every channel copied into it by a ZeroPadShortcut is zeroed too. Removing these changes no output."""
    modules = dict(model.named_modules())
    nonzero: dict[tuple[str, str], torch.Tensor] = {}

    def live(module: str, role: str, index: int) -> bool:
        key = (module, role)
        if key not in nonzero:
            nonzero[key] = _nonzero_rows(modules[module], role)
        return bool(nonzero[key][index]) if nonzero[key] is not None else False

    own = {cid for cid in _prunable(graph)
           if not any(live(s.module, s.role, s.index) for s in graph.channels[cid].slots
                      if zeroed_by_layer(s.role) or _zeroed_param(s.role))}
    changed = True
    while changed:  # a copy of a live channel keeps a channel alive
        dead = {cid for cid in own if graph.channels[cid].depends_on <= own}
        changed, own = dead != own, dead
    return own


def _zeroed_param(role: str) -> bool:
    parsed = parse_param_role(role)
    return parsed is not None and parsed[2]


def _nonzero_rows(module: nn.Module, role: str) -> torch.Tensor | None:
    """Per output index: whether any parameter entry of that index (weight row, bias; for a parameter role
    the parameter's entries) is non-zero."""
    parsed = parse_param_role(role)
    if parsed is not None:
        tensor = effective_tensor(module, parsed[0]).detach()
        return tensor.movedim(parsed[1], 0).reshape(tensor.shape[parsed[1]], -1).ne(0).any(dim=1).cpu()
    flags = None
    for name in ("weight", "bias"):
        tensor = effective_tensor(module, name)
        if tensor is None:
            continue
        if name == "weight":
            tensor = handler_for(module).rows(tensor)
        rows = tensor.reshape(tensor.shape[0], -1).ne(0).any(dim=1).cpu()  # one transfer, not one per channel
        flags = rows if flags is None else flags | rows
    if role == "bn" and flags is None:  # a non-affine BN never zeroes a channel
        return torch.ones(module.num_features, dtype=torch.bool)
    return flags


#: Images a LossProbe evaluates (the first ones of its batches): enough to rank options, cheap to repeat.
PROBE_IMAGES = 256


class LossProbe:
    """The loss of ``model`` on the first :data:`PROBE_IMAGES` images of labelled ``batches`` when channels
    are removed, memoised per channel set (so the attempts of a latency search reuse it).

    A removed channel is zeroed where its producers' output enters the network: at the BatchNorm right after
    each producing conv (else the conv itself), which is what the masked twin computes (γ and β zeroed).
    The model runs in eval mode (its stored BN statistics: the twin exactly; normalising with the probe
    images' own statistics instead, to mimic a later BN recalibration, ranked ResNet-56's branches worse)
    under ``no_grad``; forward hooks are added and removed per call and the model's mode is restored.
    Iterating a probe yields its batches (so data-driven criteria take it too)."""

    def __init__(self, model: nn.Module, batches, images: int = PROBE_IMAGES):
        self.model, self.batches, self.memo = model, list(batches), {}
        self.inputs, self.labels = _first_images(self.batches, images)

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)

    def loss(self, graph: ChannelGraph, removed) -> float:
        """Mean cross-entropy with the channels ``removed`` (ids of ``graph``) zeroed."""
        zeroed: dict[str, list[int]] = {}
        for cid in removed:
            for slot in graph.channels[cid].producers:
                zeroed.setdefault(graph.bn_after.get(slot.module, slot.module), []).append(slot.index)
        key = frozenset((name, i) for name, indices in zeroed.items() for i in indices)
        if key not in self.memo:
            self.memo[key] = self._measure(zeroed)
        return self.memo[key]

    def _measure(self, zeroed: dict[str, list[int]]) -> float:
        modules = dict(self.model.named_modules())

        def zero(indices):
            def hook(module, inputs, output):
                output = output.clone()
                output[:, indices] = 0
                return output
            return hook

        hooks = [modules[name].register_forward_hook(zero(sorted(indices))) for name, indices in zeroed.items()]
        was_training = self.model.training
        try:
            with torch.no_grad():
                return F.cross_entropy(self.model.eval()(self.inputs).float(), self.labels).item()
        finally:
            for hook in hooks:
                hook.remove()
            self.model.train(was_training)


def _first_images(batches: list, images: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not batches:
        raise PrunekitError("a loss probe needs labelled batches [(inputs, labels), ...]")
    inputs = torch.cat([x for x, _ in batches])[:images]
    labels = torch.cat([y for _, y in batches])[:images]
    return inputs, labels
