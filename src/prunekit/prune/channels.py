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
* ``latency_target`` t: widths chosen on a measured latency table so the predicted latency is ≤ t × the
  dense one (see :func:`prunekit.prune.allocate.select_for_latency`; :mod:`prunekit.prune.latency` also
  measures the result and corrects).

Always: a group keeps ≥ 1 channel and no module loses every channel; a channel that copies a live
channel through a ZeroPadShortcut is only removed together with (or after) its source; channels that are
already zero (masked earlier) stay removed and count towards the target, so iterative masks only shrink.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from prunekit.config import PruneConfig, make_prune_config
from prunekit.errors import PrunekitError
from prunekit.prune.allocate import repair, select_channels
from prunekit.prune.graph import ChannelGraph, as_inputs, trace_channels
from prunekit.prune.handlers import handler_for
from prunekit.prune.importance import effective_tensor, get_criterion, zeroed_channels
from prunekit.masking import Masks, apply_masks, make_permanent, permanent_copy
from prunekit.prune.surgery import remove_channels
from prunekit.prune.verify import check_equivalent


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


def channel_target(ratio: float | None = None, ratios: dict | None = None, cfg: list | None = None,
                   macs_target: float | None = None, criterion: str = "l1", scope: str | None = None,
                   seed: int = 0, exclude: list[str] = (), latency_target: float | None = None,
                   round_to: int | None = None) -> PruneConfig:
    """The :class:`PruneConfig` (granularity ``filter``) that :func:`prune_channels`'s keywords describe; its
    defaults (e.g. ``scope``) are the config's, shared with ``prunekit prune``."""
    config = make_prune_config(granularity="filter", sparsity=ratio, ratios=ratios, cfg=cfg,
                               macs_target=macs_target, criterion=criterion, scope=scope, seed=seed,
                               exclude=list(exclude), latency_target=latency_target, round_to=round_to)
    config.check_target()
    get_criterion(config.criterion)
    return config


def plan_channels(model: nn.Module, example_inputs: Any = None, ratio: float | None = None,
                  ratios: dict | None = None, cfg: list | None = None, macs_target: float | None = None,
                  criterion: str = "l1", scope: str | None = None, seed: int = 0,
                  exclude: list[str] = (), latency_target: float | None = None, round_to: int | None = None,
                  latency=None) -> ChannelPlan:
    """Choose the channels to remove and prove the choice on a copy; ``model`` is not modified.

    Allocation arguments as :func:`prune_channels`. The plan is checked by cutting a copy and comparing it
    with the masked twin on ``example_inputs`` (see :mod:`prunekit.prune.verify`); when a size the model
    computes turns out to be a literal (a channel shuffle or split written with fixed sizes), the model is
    traced again with those channels kept. Raises PrunekitError when no exact plan exists.
    """
    target = channel_target(ratio, ratios, cfg, macs_target, criterion, scope, seed, exclude, latency_target,
                            round_to)
    return _plan(model, as_inputs(model, example_inputs),
                 lambda graph: select_channels(model, graph, target, latency=latency))[0]


def prune_channels(model: nn.Module, example_inputs: Any = None, ratio: float | None = None,
                   ratios: dict | None = None, criterion: str = "l1", scope: str | None = None,
                   cfg: list | None = None, macs_target: float | None = None, seed: int = 0,
                   plan: ChannelPlan | None = None, exclude: list[str] = (), latency_target: float | None = None,
                   round_to: int | None = None, latency=None, batches=None) -> nn.Module:
    """Remove whole conv filters (and everything coupled to them) from ``model``, in place; return it.

    Works on any model whose forward runs on ``example_inputs`` (a tensor or tuple; default one CIFAR
    image). Give exactly one of ``ratio``, ``ratios`` (per-conv fractions, e.g. from a YAML file;
    ``default`` allowed; a group uses the ratio of its first named producing conv), ``cfg`` (VGG widths)
    or ``macs_target`` (fraction of MACs to keep) or ``latency_target`` (fraction of the dense latency that
    ``latency``, a :class:`prunekit.measure.latency.LatencyTable` of ``model``, predicts; ``round_to`` N
    makes every width a multiple of N; :func:`prunekit.prune.latency.prune_to_latency` also measures and
    corrects); or a ``plan`` from :func:`plan_channels`.
    ``criterion``: a registered channel criterion (l1 | l2 | bn_scale | random, seeded by ``seed``);
    ``scope``: ``layer`` (same fraction per group; the default for filters, see
    :class:`prunekit.config.PruneConfig`) or ``global`` (one normalised ranking). ``exclude``: conv names or
    glob patterns whose groups ``ratio`` leaves whole (e.g. the last conv). ``batches``: labelled batches for a
    data-driven criterion (``taylor``).

    Never returns a silently different model: a pruned copy is checked against the masked twin and only
    then swapped into ``model``; on any mismatch a PrunekitError names the first diverging layer and
    ``model`` is left as it was. Side effects: ``model``'s modules are replaced by the pruned copy's
    (masks made permanent, affected layers get new, smaller parameters: rebuild any optimizer).
    """
    if plan is None:
        target = channel_target(ratio, ratios, cfg, macs_target, criterion, scope, seed, exclude, latency_target,
                                round_to)
        plan, pruned = _plan(model, as_inputs(model, example_inputs),
                             lambda graph: select_channels(model, graph, target, batches=batches, latency=latency))
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


def filter_masks(model: nn.Module, example_inputs: Any, config: PruneConfig, progress: float = 1.0,
                 batches=None, latency=None) -> Masks:
    """Masks for filter pruning: the shapes stay, the removed channels become exactly zero everywhere.

    For every removed channel the masks zero the producing conv weight rows (and biases), depthwise rows
    (and biases), and γ *and* β of every BatchNorm2d on the channel (also pre-activation BNs after a
    concatenation), so its activation is zero wherever it appears and :func:`shrink` later changes no
    output. Keys are parameter names (``"features.0.weight"``); only tensors with a removed entry appear.

    ``config``: granularity ``filter`` with exactly one of ``sparsity`` (fraction of conv filters; scope
    layer or global), ``ratios``, ``cfg`` or ``macs_target``; ``criterion`` and ``seed``. ``progress`` ∈ (0, 1]
    is the fraction of an iterative schedule done: the removed fraction is ``round_fraction(target,
    progress)`` for sparsity/ratios, a linear interpolation of channel counts for cfg/macs_target/latency_target.
    A ``latency_target`` uses ``latency`` (a latency table of ``model``), else builds one of the model as
    deployed (CPU, 1 thread, batch 1; from the cache when there; see :mod:`prunekit.measure.latency`).
    An already masked model is fine: zeroed channels score 0 and stay removed, so masks only shrink.
    Does not modify ``model``.
    """
    if config.granularity != "filter":
        raise PrunekitError(f"filter_masks needs granularity 'filter', the config says '{config.granularity}'")
    if not 0 < progress <= 1:
        raise PrunekitError(f"progress is the fraction of the schedule done, in (0, 1]; got {progress}")
    config.check_target()
    get_criterion(config.criterion)
    graph = trace_channels(model, example_inputs)
    if config.latency_target is not None and latency is None:
        from prunekit.measure.latency import build_latency_table

        latency = build_latency_table(permanent_copy(model))
    removed = select_channels(model, graph, config, progress, batches, latency)
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
        return repair(graph, set(dead), {cid: 0.0 for cid in dead}, dead)

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
