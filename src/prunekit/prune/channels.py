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

import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from prunekit.config import PruneConfig, make_prune_config
from prunekit.errors import PrunekitError
from prunekit.prune.allocate import estimate_macs, repair, select_channels, whole_removable_groups
from prunekit.prune.graph import ChannelGraph, as_inputs, trace_channels
from prunekit.prune.layer_handlers import handler_for, param_zero_entries, zeroed_by_layer
from prunekit.prune.trace_state import parse_param_role
from prunekit.prune.importance import effective_tensor, get_criterion, zeroed_channels
from prunekit.masking import Masks, apply_masks, make_permanent, permanent_copy
from prunekit.prune.surgery import kept_indices, remove_channels
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
    ``shapes``   {parameter name: shape} of the model it was made for: :func:`prune_channels` refuses a
                 plan on any other model (another architecture, changed layers, or one pruned already)
    ``outcome``  asked vs achieved (filters and MACs), coverage and the top blocking ops: :class:`PlanOutcome`
    """

    removed: dict[str, list[int]]
    masks: Masks
    blocked: dict[str, str]
    retraced: bool
    graph: ChannelGraph = field(repr=False)
    channel_ids: frozenset[int] = field(repr=False)
    inputs: tuple = field(repr=False)
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict, repr=False)
    outcome: PlanOutcome | None = None

    @property
    def coverage(self) -> float:
        """Fraction of the model's conv filters (filters of channels-last Linears included) that are free to
        prune: on a channel no op pins. 1.0 when nothing blocks pruning (the network output aside, almost)."""
        return self.outcome.coverage


#: Achieved below this fraction of the asked amount is a shortfall: one line names what blocked the cut.
SHORTFALL_FRACTION = 0.5


@dataclass(frozen=True)
class PlanOutcome:
    """What a plan asked for and what it achieves, before anything is cut.

    Filters are conv output channels (and outputs of Linears on a channels-last tensor), counted as slots: a
    channel shared by two convs counts twice. ``asked_filters`` is the ``ratio`` (None for other targets),
    ``asked_macs`` the MAC reduction ``1 - macs_target`` (None for other targets). MACs are the trace's
    estimate per example input (conv and linear calls). ``blockers``: ``(count, place, why)`` for the pins,
    places with the same layer pattern (``stages.*.norm1``) counted together, most frequent first.
    """

    filters: int
    filters_removed: int
    prunable_filters: int
    macs_before: int
    macs_after: int
    asked_filters: float | None = None
    asked_macs: float | None = None
    blockers: tuple[tuple[int, str, str], ...] = ()
    notes: tuple[str, ...] = ()  # what the cut changes besides widths (a weight-standardised conv made plain)

    @property
    def achieved_filters(self) -> float:
        return self.filters_removed / self.filters if self.filters else 0.0

    @property
    def achieved_macs(self) -> float:
        return 1.0 - self.macs_after / self.macs_before if self.macs_before else 0.0

    @property
    def coverage(self) -> float:
        return self.prunable_filters / self.filters if self.filters else 0.0

    def summary(self) -> str:
        """``asked 50% of filters, achieved 48.7% (MACs -61.2%)``."""
        asked = (f"asked {self.asked_filters:.1%} of filters, " if self.asked_filters is not None else
                 f"asked MACs -{self.asked_macs:.1%}, " if self.asked_macs is not None else "")
        if not self.filters:
            return f"{asked}achieved nothing: no conv in this model is one prunekit can cut (see the blocking ops)"
        notes = "".join(f"; note: {note}" for note in self.notes)
        return (f"{asked}achieved {self.achieved_filters:.1%} of filters (MACs -{self.achieved_macs:.1%}); "
                f"{self.coverage:.1%} of filters are free to prune{notes}")

    def shortfall(self) -> str | None:
        """One line when the achieved amount is below :data:`SHORTFALL_FRACTION` of the asked one, naming the
        top blocking ops with counts; None otherwise (or when the target is not a ratio or a MAC target)."""
        short = ((self.asked_filters is not None and self.achieved_filters < SHORTFALL_FRACTION * self.asked_filters)
                 or (self.asked_macs is not None and self.achieved_macs < SHORTFALL_FRACTION * self.asked_macs))
        if not short:
            return None
        return f"shortfall: {self.summary()}. Channels kept by: {blockers_text(self.blockers)}"

    def line(self) -> str:
        """The one line to print for this cut: the :meth:`shortfall` line when there is one (it starts with the
        :meth:`summary`), else the :meth:`summary`."""
        return self.shortfall() or self.summary()

    def require(self, switch: str = "--strict") -> None:
        """Raise PrunekitError with the :meth:`shortfall` line when there is one (``switch`` names what asked for
        strictness); nothing otherwise. Callers check before writing anything."""
        line = self.shortfall()
        if line:
            raise PrunekitError(f"{line} ({switch}: nothing written)")

    def as_record(self) -> dict:
        """Asked vs achieved as plain JSON values (checkpoint meta ``cut``, ``--json`` output, run records):
        the numbers, the :meth:`summary` line and the :meth:`shortfall` line (None when the cut is whole)."""
        return {"asked_filters": self.asked_filters, "achieved_filters": self.achieved_filters,
                "asked_macs": self.asked_macs, "achieved_macs": self.achieved_macs, "coverage": self.coverage,
                "summary": self.summary(), "shortfall": self.shortfall()}


def blockers_text(blockers: tuple[tuple[int, str, str], ...], top: int = 3) -> str:
    """The ``top`` blockers as ``12 × 'layer_norm' in layer 'stages.*.norm' (why); …``."""
    return "; ".join(f"{count} × {place} ({why})" for count, place, why in blockers[:top]) or "nothing recorded"


def blockers_of(blocked: dict[str, str]) -> tuple[tuple[int, str, str], ...]:
    """``blocked`` ({where: why}) counted by place pattern: module indices become ``*``, so the 44 norms of a
    network's stages count as one blocker ``44 × 'batch_norm' in layer 'stages.*.norm1'`` (with the reason
    of the first)."""
    counts: dict[str, list] = {}
    for where, why in blocked.items():
        place = re.sub(r"(?<=[.'])\d+(?=[.'])|(?<=\.)\d+$|^\d+(?=\.)", "*", where)
        counts.setdefault(place, [0, why])[0] += 1  # the first reason of a place stands for all of them
    return tuple(sorted(((n, place, why) for place, (n, why) in counts.items()), key=lambda b: -b[0]))


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
                 lambda graph: select_channels(model, graph, target, latency=latency), target)[0]


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
    ``latency``, a :class:`prunekit.measure.latency.LatencyTable` of ``model``, predicts;
    :func:`prunekit.prune.latency.prune_to_latency` also measures and corrects; a residual branch may be
    removed whole); or a ``plan`` from :func:`plan_channels`. ``round_to`` N (latency and MACs targets) makes
    every kept width a multiple of N (8 suits int8 depthwise kernels).
    ``criterion``: a name in :data:`prunekit.prune.importance.CRITERIA` (``random`` is seeded by ``seed``);
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
                             lambda graph: select_channels(model, graph, target, batches=batches, latency=latency),
                             target)
        if not plan.removed and _asks_for_removal(ratio, ratios, cfg, macs_target, latency_target):
            warnings.warn(_nothing_removed(plan), stacklevel=2)
    else:
        if any(t is not None for t in (ratio, ratios, cfg, macs_target, latency_target)):
            raise PrunekitError("prune_channels: give a plan or a target (ratio, ratios, cfg, macs_target, "
                                "latency_target), not "
                                "both: the plan fixed its channels when plan_channels made it")
        pruned = _apply_plan(model, plan)
    return _swap_in(model, pruned)


def parameter_shapes(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """{parameter name: shape}; a masked parameter is named as its unmasked self (``weight``, not ``weight_orig``)."""
    return {name.removesuffix("_orig"): tuple(p.shape) for name, p in model.named_parameters()}


def _apply_plan(model: nn.Module, plan: ChannelPlan) -> nn.Module:
    """The checked pruned copy of ``model`` that ``plan`` describes; PrunekitError naming the first difference
    when ``model`` is not the model the plan was made for."""
    shapes = parameter_shapes(model)
    if plan.shapes and shapes != plan.shapes:
        name = next((n for n in {**plan.shapes, **shapes} if plan.shapes.get(n) != shapes.get(n)))
        raise PrunekitError(f"prune_channels: this plan was made for another model ({name}: "
                            f"{_shape_text(plan.shapes.get(name))} in the plan, {_shape_text(shapes.get(name))} here; "
                            "a different or changed architecture, or a model pruned already); make a new plan with "
                            "plan_channels(model, ...)")
    try:
        return _cut_and_check(model, plan.graph, set(plan.channel_ids), plan.inputs)
    except (IndexError, KeyError, AttributeError) as exc:  # a changed module the shapes did not show
        raise PrunekitError(f"prune_channels: this plan does not fit the model ({type(exc).__name__}: {exc}); make "
                            "a new plan with plan_channels(model, ...)") from exc


def _shape_text(shape: tuple[int, ...] | None) -> str:
    return "absent" if shape is None else "×".join(map(str, shape)) or "scalar"


def _asks_for_removal(ratio, ratios, cfg, macs_target, latency_target=None) -> bool:
    """True unless the target removes nothing by definition (ratio 0, a ratio file of zeros)."""
    if ratio is not None:
        return ratio > 0
    if ratios is not None:
        return any(r > 0 for r in ratios.values())
    return cfg is not None or macs_target is not None or (latency_target is not None and latency_target < 1)


def _nothing_removed(plan: ChannelPlan) -> str:
    """The warning for a target that removed no channel: no prunable conv at all, or every one held."""
    reasons = "; ".join(f"{where}: {why}" for where, why in list(plan.blocked.items())[:3])
    what = "no conv channel could be removed" + (f" ({reasons})" if reasons else "")
    return (f"prune_channels removed nothing and returns the model unchanged: {what}; it prunes conv filters "
            "(and what depends on them) only")


def _swap_in(model: nn.Module, pruned: nn.Module) -> nn.Module:
    """Give ``model`` the checked copy's modules, parameters and hooks: the caller keeps the same object."""
    model.__dict__.update(pruned.__dict__)
    return model


def _plan(model: nn.Module, inputs: tuple, choose: Callable[[ChannelGraph], set[int]],
          target: PruneConfig | None = None) -> tuple[ChannelPlan, nn.Module]:
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
                           dict(graph.blocked), not trust_sizes, graph, frozenset(removed), inputs,
                           parameter_shapes(model), plan_outcome(model, graph, removed, target))
        return plan, pruned
    raise AssertionError("unreachable")


def plan_outcome(model: nn.Module, graph: ChannelGraph, removed: set[int],
                 target: PruneConfig | None = None) -> PlanOutcome:
    """Asked vs achieved for removing ``removed`` from ``model`` (see :class:`PlanOutcome`)."""
    filters = sum(channel.filters for channel in graph.channels.values())
    prunable = sum(channel.filters for channel in graph.channels.values() if channel.prunable)
    asked_macs = None if target is None or target.macs_target is None else 1.0 - target.macs_target
    asked_filters = None if target is None else target.sparsity
    return PlanOutcome(filters, sum(graph.channels[cid].filters for cid in removed), prunable,
                       estimate_macs(graph, model), estimate_macs(graph, model, removed), asked_filters, asked_macs,
                       blockers_of(graph.blocking or graph.blocked), plain_conv_notes(graph, removed))


def plain_conv_notes(graph: ChannelGraph, removed: set[int]) -> tuple[str, ...]:
    """A note when the cut turns convs that compute their weight (weight standardisation) into plain Conv2d:
    exact as they stand, but fine-tuning then trains them without standardisation."""
    cut = {module for module, _ in kept_indices(graph, removed)} & set(graph.computed_weights)
    if not cut:
        return ()
    places = ", ".join(place for _, place, _ in blockers_of({f"'{m}'": "" for m in sorted(cut)})[:3])
    return (f"{len(cut)} weight-standardised conv(s) ({places}, ...) become plain Conv2d holding their standardised "
            "weight (identical output; fine-tuning trains them without standardisation)",)


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
    activation is then zero everywhere, so outputs are unchanged (up to float rounding). A residual branch
    whose inner channels are all zero is removed whole (see
    :func:`prunekit.prune.allocate.whole_removable_groups`). Side effects:
    as for ``prune_channels`` (checked against the model, then swapped in; masks end up permanent).
    """
    shrink_with_outcome(model, example_inputs)
    return model


def predict_outcome(model: nn.Module, example_inputs: Any, config: PruneConfig, batches=None,
                    latency=None) -> PlanOutcome:
    """Asked vs achieved that ``config`` (granularity ``filter``, the whole target: progress 1) would reach on
    ``model``, traced and allocated but not cut (cheaper than :func:`plan_channels`: no copy is checked). For
    ``--strict`` checks before a schedule starts. Does not modify ``model``."""
    graph = trace_channels(model, example_inputs)
    if config.latency_target is not None and latency is None:
        return plan_outcome(model, graph, set(), config)  # a latency target asks for no filter or MAC amount
    return plan_outcome(model, graph, select_channels(model, graph, config, 1.0, batches, latency), config)


def shrink_with_outcome(model: nn.Module, example_inputs: Any = None,
                        target: PruneConfig | None = None) -> PlanOutcome:
    """:func:`shrink` ``model`` (same side effects) and return what the cut achieved against ``target`` (the
    config whose masks zeroed the channels; None: nothing asked): every channel zeroed since the model was
    dense counts, so after a masked schedule this is the whole run's asked vs achieved."""
    def dead_channels(graph: ChannelGraph) -> set[int]:
        dead = zeroed_channels(model, graph)
        return repair(graph, set(dead), {cid: 0.0 for cid in dead}, dead, whole_removable_groups(model, graph))

    plan, pruned = _plan(model, as_inputs(model, example_inputs), dead_channels, target)
    _swap_in(model, pruned)
    return plan.outcome


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
    biases, Linear rows and biases, γ and β of every BN on them, and the entries of per-channel parameters a
    forward uses directly (a functional norm's γ and β, a layer scale). Only tensors with a removed entry."""
    modules = dict(model.named_modules())
    masks: Masks = {}
    zeroed: dict[tuple[str, str, int], list[int]] = {}  # (module, parameter, axis) -> entries to zero
    for cid in sorted(removed):
        for slot in graph.channels[cid].slots:
            module = modules[slot.module]
            if parse_param_role(slot.role) is not None:
                entries = param_zero_entries(slot.role, slot.index)
            elif zeroed_by_layer(slot.role):
                entries = handler_for(module).zero_entries(module, slot.role, slot.index)
            else:
                continue
            for param, index in entries:  # index: whole axes, then the entry on axis len(index) - 1
                owner, _, attr = f"{slot.module}.{param}".rpartition(".")  # param may be a submodule's: inner.weight
                zeroed.setdefault((owner, attr, len(index) - 1), []).append(index[-1])
    for (name, param, axis), indices in zeroed.items():
        tensor = effective_tensor(modules[name], param)
        if tensor is not None:  # built on the CPU (like extract_masks); apply_masks moves them
            mask = masks.setdefault(f"{name}.{param}", torch.ones(tensor.shape, dtype=torch.bool))
            mask.index_fill_(axis, torch.tensor(indices, dtype=torch.long), False)
    return masks
