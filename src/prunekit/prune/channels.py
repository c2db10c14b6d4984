"""Structured (filter/channel) pruning: allocation and the public API.

Three layers, each swappable: :mod:`prunekit.prune.graph` finds what must be removed together,
:mod:`prunekit.prune.importance` scores channels, this module decides *how many* channels of each group to
remove and *which*, and :mod:`prunekit.prune.surgery` removes them.

Public API
----------
``prune_channels``  one-shot physical pruning: returns the smaller model.
``filter_masks``    masked filter pruning (shapes unchanged) for OMP/IMP schedules with retraining.
``shrink``          physically removes the channels a masked model has fully zeroed (output unchanged).
``filter_sparsity`` fraction of conv filters removed (or zeroed) between two models.

Allocation rules
----------------
* ``ratio`` r: every group loses ``round(r × n)`` of its n prunable channels (scope ``layer``), or one
  ranking across groups removes r of all conv filters, scores divided by their group's mean (``global``).
* ``ratios`` {conv name: r} (``default`` allowed): a group's ratio is that of its first producing conv, in
  call order, that has a ratio (a residual stream takes the ratio of its first conv, e.g. the stem).
* ``cfg`` (VGG style ``[64, 'M', 128, ...]``): new width of every producing conv in call order; the
  top-k filters by the criterion are kept (classic vggprune transplant). Needs uncoupled convs.
* ``macs_target`` t: the smallest uniform ratio (bisection) whose estimated MACs ≤ t × current MACs.

Always: a group keeps ≥ 1 channel and no module loses every channel; a channel that copies a live
channel through a ZeroPadShortcut is only removed together with (or after) its source; channels that are
already zero (masked earlier) stay removed and count towards the target, so iterative masks only shrink.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.prune.allocate import check_ratio, round_fraction, validate_ratios
from prunekit.prune.graph import ChannelGraph, as_inputs, trace_channels
from prunekit.prune.handlers import handler_for
from prunekit.prune.importance import channel_scores, effective_tensor, get_criterion, zeroed_channels
from prunekit.masking import Masks, apply_masks, make_permanent, permanent_copy
from prunekit.prune.surgery import remove_channels
from prunekit.prune.verify import check_equivalent


@dataclass(frozen=True)
class ChannelTarget:
    """What to remove: exactly one of ratio / ratios / cfg / macs_target, plus how to rank."""

    ratio: float | None = None
    ratios: dict | None = None
    cfg: list | None = None
    macs_target: float | None = None
    criterion: str = "l1"
    scope: str = "layer"
    seed: int = 0

    def __post_init__(self) -> None:
        given = [k for k in ("ratio", "ratios", "cfg", "macs_target") if getattr(self, k) is not None]
        if len(given) != 1:
            raise PrunekitError("give exactly one of ratio (sparsity), ratios, cfg or macs_target "
                                f"for channel pruning, got {', '.join(given) or 'none'}")
        if self.scope not in ("layer", "global"):
            raise PrunekitError(f"scope must be 'layer' or 'global', got {self.scope!r}")
        if self.ratio is not None:
            check_ratio("ratio", self.ratio)
        if self.macs_target is not None and not 0 < self.macs_target <= 1:
            raise PrunekitError(f"macs_target is the fraction of MACs to keep, in (0, 1]; got {self.macs_target}")
        get_criterion(self.criterion)


# --------------------------------------------------------------------------- public API


@dataclass(frozen=True)
class ChannelPlan:
    """What :func:`plan_channels` chose, before anything is cut.

    ``removed``  {conv name: sorted removed output-channel indices, original numbering}
    ``masks``    {parameter name: bool tensor, True = kept}: the masked twin (conv rows and biases,
                 depthwise rows, Linear rows, BN γ and β of every removed channel)
    ``blocked``  {where: why} for every channel prunekit had to keep (an op it cannot resize, the output)
    ``retraced`` True when size assumptions did not hold and the plan was made with those channels kept
    """

    removed: dict[str, list[int]]
    masks: Masks
    blocked: dict[str, str]
    retraced: bool
    graph: ChannelGraph = field(repr=False)
    channel_ids: frozenset[int] = field(repr=False)
    inputs: tuple = field(repr=False)


def plan_channels(model: nn.Module, example_inputs: Any = None, ratio: float | None = None,
                  ratios: dict | None = None, cfg: list | None = None, macs_target: float | None = None,
                  criterion: str = "l1", scope: str = "layer", seed: int = 0) -> ChannelPlan:
    """Choose the channels to remove and prove the choice on a copy; ``model`` is not modified.

    Allocation arguments as :func:`prune_channels`. The plan is checked by cutting a copy and comparing it
    with the masked twin on ``example_inputs`` (see :mod:`prunekit.prune.verify`); when a size the model
    computes turns out to be a literal (a channel shuffle or split written with fixed sizes), the model is
    traced again with those channels kept. Raises PrunekitError when no exact plan exists.
    """
    target = ChannelTarget(ratio, ratios, cfg, macs_target, criterion, scope, seed)
    return _plan(model, as_inputs(model, example_inputs), lambda graph: select_channels(model, graph, target))[0]


def prune_channels(model: nn.Module, example_inputs: Any = None, ratio: float | None = None,
                   ratios: dict | None = None, criterion: str = "l1", scope: str = "layer",
                   cfg: list | None = None, macs_target: float | None = None, seed: int = 0,
                   plan: ChannelPlan | None = None) -> nn.Module:
    """Remove whole conv filters (and everything coupled to them) from ``model``, in place; return it.

    Works on any model whose forward runs on ``example_inputs`` (a tensor or tuple; default one CIFAR
    image). Give exactly one of ``ratio``, ``ratios`` (per-conv fractions, e.g. from a YAML file;
    ``default`` allowed; a group uses the ratio of its first named producing conv), ``cfg`` (VGG widths)
    or ``macs_target`` (fraction of MACs to keep); or a ``plan`` from :func:`plan_channels`.
    ``criterion``: a registered channel criterion (l1 | l2 | bn_scale | random, seeded by ``seed``);
    ``scope``: ``layer`` (same fraction per group) or ``global`` (one normalised ranking).

    Never returns a silently different model: a pruned copy is checked against the masked twin and only
    then swapped into ``model``; on any mismatch a PrunekitError names the first diverging layer and
    ``model`` is left as it was. Side effects: ``model``'s modules are replaced by the pruned copy's
    (masks made permanent, affected layers get new, smaller parameters: rebuild any optimizer).
    """
    if plan is None:
        target = ChannelTarget(ratio, ratios, cfg, macs_target, criterion, scope, seed)
        plan, pruned = _plan(model, as_inputs(model, example_inputs),
                             lambda graph: select_channels(model, graph, target))
    else:
        pruned = _cut_and_check(model, plan.graph, set(plan.channel_ids), plan.inputs)
    return _swap_in(model, pruned)


def _swap_in(model: nn.Module, pruned: nn.Module) -> nn.Module:
    """Give ``model`` the checked copy's modules, parameters and hooks: the caller keeps the same object."""
    model.__dict__.update(pruned.__dict__)
    return model


def _plan(model: nn.Module, inputs: tuple,
          choose: Callable[[ChannelGraph], set[int]]) -> tuple[ChannelPlan, nn.Module]:
    """(plan, the checked pruned copy) for the channels ``choose(graph)`` picks; retraces with size
    assumptions off when the check fails and the trace made some."""
    for trust_sizes in (True, False):
        graph = trace_channels(model, inputs, trust_sizes=trust_sizes)
        removed = choose(graph)
        try:
            pruned = _cut_and_check(model, graph, removed, inputs)
        except PrunekitError:
            if not trust_sizes or not graph.assumed:
                raise
            continue
        removed_by_conv: dict[str, list[int]] = {}
        for cid in sorted(removed):
            for slot in graph.channels[cid].slots:
                if slot.role in ("conv_out", "depthwise"):
                    removed_by_conv.setdefault(slot.module, []).append(slot.index)
        plan = ChannelPlan({k: sorted(v) for k, v in removed_by_conv.items()}, channel_masks(model, graph, removed),
                           dict(graph.blocked), not trust_sizes, graph, frozenset(removed), inputs)
        return plan, pruned
    raise AssertionError("unreachable")


def _cut_and_check(model: nn.Module, graph: ChannelGraph, removed: set[int], inputs: tuple) -> nn.Module:
    """A permanent, physically pruned copy of ``model``, proven equal to the masked twin on ``inputs``."""
    twin = make_permanent(apply_masks(permanent_copy(model), channel_masks(model, graph, removed)))
    pruned = remove_channels(permanent_copy(model), graph, removed)
    _reuse_script_blocks(model, pruned)
    check_equivalent(twin, pruned, graph, removed, inputs)
    return pruned


def _reuse_script_blocks(model: nn.Module, pruned: nn.Module) -> None:
    """Put ``model``'s own TorchScript blocks into ``pruned``: a deep-copied ScriptModule no longer trains
    (its parameters get no gradients), and tracing keeps every channel of a block, so none was cut."""
    for name, module in model.named_modules():
        parent, _, child = name.rpartition(".")
        if isinstance(module, torch.jit.ScriptModule) and name and not isinstance(
                model.get_submodule(parent), torch.jit.ScriptModule):
            setattr(pruned.get_submodule(parent), child, module)


def filter_masks(model: nn.Module, example_inputs: Any, config: PruneConfig, progress: float = 1.0) -> Masks:
    """Masks for filter pruning: the shapes stay, the removed channels become exactly zero everywhere.

    For every removed channel the masks zero the producing conv weight rows (and biases), depthwise rows
    (and biases), and γ *and* β of every BatchNorm2d on the channel (also pre-activation BNs after a
    concatenation), so its activation is zero wherever it appears and :func:`shrink` later changes no
    output. Keys are parameter names (``"features.0.weight"``); only tensors with a removed entry appear.

    ``config``: granularity ``filter`` with exactly one of ``sparsity`` (fraction of conv filters; scope
    layer or global), ``ratios``, ``cfg`` or ``macs_target``; ``criterion`` and ``seed``. ``progress`` ∈ (0, 1]
    is the fraction of an iterative schedule done: the removed fraction is ``round_fraction(target,
    progress)`` for sparsity/ratios, a linear interpolation of channel counts for cfg/macs_target.
    An already masked model is fine: zeroed channels score 0 and stay removed, so masks only shrink.
    Does not modify ``model``.
    """
    if config.granularity != "filter":
        raise PrunekitError(f"filter_masks needs granularity 'filter', the config says '{config.granularity}'")
    if not 0 < progress <= 1:
        raise PrunekitError(f"progress is the fraction of the schedule done, in (0, 1]; got {progress}")
    target = ChannelTarget(config.sparsity, config.ratios, config.cfg, config.macs_target,
                           config.criterion, config.scope, config.seed)
    graph = trace_channels(model, example_inputs)
    removed = select_channels(model, graph, target, progress)
    return channel_masks(model, graph, removed)


def shrink(model: nn.Module, example_inputs: Any = None) -> nn.Module:
    """Physically remove every channel a (masked) model has fully zeroed; return the equivalent smaller model.

    A channel is removed when every parameter slice on it is zero (producing conv rows and biases,
    depthwise rows, γ and β of every BN on it) and every channel copied into it is removed too: its
    activation is then zero everywhere, so outputs are unchanged (up to float rounding). Side effects:
    as for ``prune_channels`` (checked against the model, then swapped in; masks end up permanent).
    """
    def dead_channels(graph: ChannelGraph) -> set[int]:
        dead = zeroed_channels(model, graph)
        return _repair(graph, set(dead), {cid: 0.0 for cid in dead}, dead)

    return _swap_in(model, _plan(model, as_inputs(model, example_inputs), dead_channels)[1])


def filter_sparsity(before: nn.Module, after: nn.Module) -> float:
    """Filter sparsity: the fraction of conv output channels removed, counted over all prunable conv layers.

    Prunable conv layers: every Conv2d of ``before`` except depthwise ones (their channels follow the
    conv that feeds them). A filter of ``after`` counts as removed when it no longer exists (physical
    pruning) or its effective weight row is all zero (masked pruning). Neither model is modified.
    """
    modules_after = dict(after.named_modules())
    total = alive = 0
    for name, conv in before.named_modules():
        if not isinstance(conv, nn.Conv2d) or (conv.groups > 1 and conv.groups == conv.in_channels):
            continue
        total += conv.out_channels
        other = modules_after.get(name)
        if isinstance(other, nn.Conv2d):
            alive += int(effective_tensor(other, "weight").flatten(1).ne(0).any(dim=1).sum())
    return 0.0 if total == 0 else 1.0 - alive / total


def channel_masks(model: nn.Module, graph: ChannelGraph, removed: set[int]) -> Masks:
    """Bool masks (True = kept) zeroing the channels ``removed``: conv rows and biases, depthwise rows and
    biases, Linear rows and biases, γ and β of every BN on them. Only tensors with a removed entry."""
    modules = dict(model.named_modules())
    masks: Masks = {}
    for cid in sorted(removed):
        for slot in graph.channels[cid].slots:
            if slot.role not in ("conv_out", "depthwise", "bn", "linear_out"):
                continue
            module = modules[slot.module]
            for param, index in handler_for(module).zero_entries(module, slot.role, slot.index):
                tensor = effective_tensor(module, param)
                if tensor is None:
                    continue
                key = f"{slot.module}.{param}"
                if key not in masks:  # built on the CPU (like extract_masks); apply_masks moves them
                    masks[key] = torch.ones(tensor.shape, dtype=torch.bool)
                masks[key][index] = False
    return masks


def estimate_macs(graph: ChannelGraph, model: nn.Module, removed: set[int] = frozenset()) -> int:
    """MACs per image of every Conv and Linear call after removing ``removed`` (the convention of
    :func:`prunekit.measure.count_macs`: conv and linear only), from the traced output sizes."""
    modules = dict(model.named_modules())
    lost = {key: sum(1 for cid in port.values() if cid in removed) for key, port in graph.ports.items()}
    total = 0
    for call in graph.calls:
        module = modules[call.module]
        if call.kind == "linear":
            features = module.in_features - lost.get((call.module, "linear_in"), 0)
            total += call.positions * features * (module.out_features - lost.get((call.module, "linear_out"), 0))
            continue
        kernel = math.prod(module.kernel_size)
        if (call.module, "depthwise") in graph.ports:
            total += call.positions * kernel * (module.out_channels - lost.get((call.module, "depthwise"), 0))
            continue
        cin = module.in_channels - lost.get((call.module, "conv_in"), 0)
        cout = module.out_channels - lost.get((call.module, "conv_out"), 0)
        total += call.positions * kernel * cin // module.groups * cout
    return total


# --------------------------------------------------------------------------- allocation


def select_channels(model: nn.Module, graph: ChannelGraph, target: ChannelTarget,
                    progress: float = 1.0) -> set[int]:
    """The ids of the channels to remove for ``target`` at ``progress`` of a schedule (see module doc)."""
    scores = channel_scores(model, graph, target.criterion, target.seed)
    dead = zeroed_channels(model, graph)
    if target.macs_target is not None:
        final = _select_for_macs(model, graph, scores, dead, target)
        counts = {g: _round(progress * n) for g, n in _group_counts(graph, final).items()}
        removed = _select_counts(graph, scores, counts, dead)
    elif target.cfg is not None:
        removed = _select_counts(graph, scores, _cfg_counts(graph, model, target.cfg, progress), dead)
    elif target.ratios is not None:
        ratios = _group_ratios(graph, target.ratios)
        counts = _ratio_counts(graph, {g: round_fraction(r, progress) for g, r in ratios.items()})
        removed = _select_counts(graph, scores, counts, dead)
    else:
        removed = _select_fraction(graph, scores, round_fraction(target.ratio, progress), target.scope, dead)
    return _repair(graph, removed, scores, dead)


def _select_fraction(graph: ChannelGraph, scores: dict[int, float], fraction: float, scope: str,
                     dead: set[int]) -> set[int]:
    if scope == "global":
        return _select_global(graph, scores, fraction, dead)
    return _select_counts(graph, scores, _ratio_counts(graph, {g.id: fraction for g in graph.groups}), dead)


def _ratio_counts(graph: ChannelGraph, ratios: dict[int, float]) -> dict[int, int]:
    """Channels to remove per group: round(ratio × prunable channels of the group)."""
    return {gid: _round(r * len(graph.prunable(graph.groups[gid]))) for gid, r in ratios.items()}


def _round(x: float) -> int:
    """Half up (2.5 -> 3), unlike Python's round-half-to-even."""
    return math.floor(x + 0.5)


def _group_counts(graph: ChannelGraph, removed: set[int]) -> dict[int, int]:
    counts = {g.id: 0 for g in graph.groups}
    for cid in removed:
        counts[graph.channels[cid].group] += 1
    return counts


def _removable(graph: ChannelGraph, cid: int, removed: set[int], per_group: dict[int, int]) -> bool:
    """Whether channel ``cid`` may join ``removed``: its group keeps a channel and its copies' sources go.

    ``per_group``: how many channels of each group ``removed`` already holds.
    """
    channel = graph.channels[cid]
    return (per_group.get(channel.group, 0) + 1 < len(graph.groups[channel.group].channels)
            and channel.depends_on <= removed)


def _add(graph: ChannelGraph, cid: int, removed: set[int], per_group: dict[int, int]) -> None:
    removed.add(cid)
    group = graph.channels[cid].group
    per_group[group] = per_group.get(group, 0) + 1


def _select_counts(graph: ChannelGraph, scores: dict[int, float], counts: dict[int, int],
                   dead: set[int]) -> set[int]:
    """Per group, the ``counts[g]`` lowest-scoring removable channels (already-zero ones first)."""
    removed = set(dead)
    per_group = _group_counts(graph, removed)
    for gid in _dependency_order(graph):
        candidates = sorted((c for c in graph.prunable(graph.groups[gid]) if c not in removed), key=scores.get)
        wanted = counts.get(gid, 0) - per_group[gid]
        for cid in candidates:
            if wanted <= 0:
                break
            if _removable(graph, cid, removed, per_group):
                _add(graph, cid, removed, per_group)
                wanted -= 1
    return removed


def _select_global(graph: ChannelGraph, scores: dict[int, float], fraction: float, dead: set[int]) -> set[int]:
    """One ranking across groups (score / group mean) removing ``fraction`` of all conv filters."""
    normalised = {}
    for group in graph.groups:
        ids = graph.prunable(group)
        mean = sum(scores[c] for c in ids) / len(ids) if ids else 0.0
        normalised.update({c: scores[c] / mean if mean > 0 else 0.0 for c in ids})
    total = sum(graph.channels[c].filters for g in graph.groups for c in g.channels)
    budget = fraction * total
    removed = set(dead)
    per_group = _group_counts(graph, removed)
    spent = sum(graph.channels[c].filters for c in removed)
    ranking = sorted((c for c in normalised if c not in removed), key=normalised.get)
    progress = True
    while progress and spent < budget:  # repeat: removing a source can unlock its copies
        progress = False
        for cid in ranking:
            cost = graph.channels[cid].filters
            if cid in removed or spent + cost / 2 > budget or not _removable(graph, cid, removed, per_group):
                continue
            _add(graph, cid, removed, per_group)
            spent += cost
            progress = True
    return removed


def _select_for_macs(model: nn.Module, graph: ChannelGraph, scores: dict[int, float], dead: set[int],
                     target: ChannelTarget) -> set[int]:
    """Bisection on a uniform fraction until the estimated MACs are ≤ macs_target × the unpruned MACs."""
    budget = target.macs_target * estimate_macs(graph, model)

    def select(fraction: float) -> set[int]:
        return _repair(graph, _select_fraction(graph, scores, fraction, target.scope, dead), scores, dead)

    best = select(0.999)
    if estimate_macs(graph, model, best) > budget:
        reachable = estimate_macs(graph, model, best) / estimate_macs(graph, model)
        raise PrunekitError(f"macs_target {target.macs_target} cannot be reached: removing all but one channel "
                            f"of every group keeps {reachable:.3f} of the MACs")
    low, high = 0.0, 0.999
    for _ in range(20):
        middle = (low + high) / 2
        chosen = select(middle)
        if estimate_macs(graph, model, chosen) <= budget:
            high, best = middle, chosen
        else:
            low = middle
    return best


def _group_ratios(graph: ChannelGraph, ratios: dict) -> dict[int, float]:
    """Per group, the ratio of its first producing conv (call order) that has one; 0 when none does."""
    producers = [conv for group in graph.groups for conv in group.producers]
    resolved = validate_ratios(ratios, producers)
    result = {}
    for group in graph.groups:
        named = [conv for conv in group.producers if conv in resolved]
        result[group.id] = resolved[named[0]] if named else 0.0
    return result


def _cfg_counts(graph: ChannelGraph, model: nn.Module, cfg: list, progress: float) -> dict[int, int]:
    """Channels to remove per group for a VGG-style width list; checks it against the model."""
    convs = [item for item in graph.layout if item != "M"]
    widths = [v for v in cfg if v != "M"]
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in widths) or any(
            isinstance(v, str) and v != "M" for v in cfg):
        raise PrunekitError(f"cfg must list positive conv widths and 'M', got {cfg!r}")
    model_cfg = ["M" if item == "M" else len(graph.ports[(item, "conv_out")]) for item in graph.layout]
    if len(widths) != len(convs) or ("M" in cfg and [v == "M" for v in cfg] != [v == "M" for v in model_cfg]):
        raise PrunekitError(f"cfg {_cfg_text(cfg)} does not fit this model, whose layout is {_cfg_text(model_cfg)}; "
                            "give one width per conv (and 'M' where the model max-pools)")
    group_of = graph.producer_group()
    counts = {}
    for conv, width in zip(convs, widths):
        group = graph.groups[group_of[conv]]
        current = len(graph.ports[(conv, "conv_out")])
        if len(group.producers) > 1:
            raise PrunekitError(f"cfg sets one width per conv, but '{conv}' is coupled with "
                                f"{', '.join(p for p in group.producers if p != conv)} (addition); use ratios")
        if width > current:
            raise PrunekitError(f"cfg asks {width} channels for '{conv}', which has only {current}")
        counts[group.id] = _round(progress * (current - width))
    return counts


def _cfg_text(cfg: list) -> str:
    return ",".join(str(v) for v in cfg)


def _dependency_order(graph: ChannelGraph) -> list[int]:
    """Group ids such that a group comes after the groups whose channels its channels copy."""
    after: dict[int, set[int]] = {g.id: set() for g in graph.groups}
    for channel in graph.channels.values():
        if channel.group is None:
            continue
        for dep in channel.depends_on:
            source = graph.channels[dep].group
            if source is not None and source != channel.group:
                after[channel.group].add(source)
    order, placed = [], set()
    while len(order) < len(after):
        ready = [g for g in after if g not in placed and after[g] <= placed]
        if not ready:  # a cycle: fall back to call order for the rest
            ready = [g for g in after if g not in placed]
        order.extend(ready)
        placed.update(ready)
    return order


def _repair(graph: ChannelGraph, removed: set[int], scores: dict[int, float], dead: set[int]) -> set[int]:
    """Put channels back until no module port is emptied, no group is emptied and every removed channel's
    copy sources are removed or already zero. Only ever un-removes, so it terminates."""
    removed = set(removed)
    collections = [port.values() for port in graph.ports.values()] + [g.channels for g in graph.groups]
    changed = True
    while changed:
        changed = False
        for ids in collections:
            if ids and all(c in removed for c in ids):
                removed.discard(max(ids, key=lambda c: scores.get(c, 0.0)))
                changed = True
        allowed = removed | dead
        broken = {cid for cid in removed if not graph.channels[cid].depends_on <= allowed}
        if broken:
            removed -= broken
            changed = True
    return removed
