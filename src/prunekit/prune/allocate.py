"""Allocation: how much to prune where, for every granularity.

* Ratio files (``layer: ratio``, ``default``, glob patterns) and their validation; schedule fractions
  (:func:`round_fraction`).
* Unstructured: the layers a global or uniform target covers (:func:`scoped_layers`) and the per-layer
  fractions of a ratio mapping (:func:`resolve_ratios`); the magnitude threshold itself is
  :mod:`prunekit.prune.unstructured`'s.
* Filters: which channels of a traced :class:`~prunekit.prune.graph.ChannelGraph` to remove
  (:func:`select_channels`) for a :class:`~prunekit.config.PruneConfig` target:

  - ``sparsity`` r: every group loses ``ceil(r × n)`` of its n prunable channels (scope ``layer``), or one
    ranking across groups removes r of all conv filters, scores LAMP-normalised per group (``global``, :func:`lamp_normalised`).
  - ``ratios`` {conv name: r} (``default`` allowed): a group's ratio is that of its first producing conv, in
    call order, that has a ratio (a residual stream takes the ratio of its first conv, e.g. the stem).
  - ``cfg`` (VGG style ``[64, 'M', 128, ...]``): new width of every producing conv in call order; the top-k
    filters by the criterion are kept (classic vggprune transplant). Needs uncoupled convs.
  - ``macs_target`` t: the smallest uniform ratio (bisection) whose estimated MACs ≤ t × current MACs.
  - ``latency_target`` t: every group's width chosen by a knapsack over a measured latency table so the
    predicted latency is ≤ t × the dense latency with the most (LAMP-normalised) importance kept
    (:func:`select_for_latency`, as HALP / NetAdapt).

  Always: a group keeps ≥ 1 channel and no module loses every channel, except that a latency target may
  remove a *branch group* whole (:func:`whole_removable_groups`: a residual branch's inner channels, so the
  branch computes a constant and costs almost nothing); a channel that copies a live channel
  through a ZeroPadShortcut is only removed together with (or after) its source; channels that are already
  zero (masked earlier) stay removed and count towards the target, so iterative masks only shrink.
"""

from __future__ import annotations

import difflib
import fnmatch
import math
from pathlib import Path
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.layers import ZeroWidthLayer, prunable_layers
from prunekit.prune.importance import LossProbe, channel_scores, zeroed_channels
from prunekit.prune.layer_handlers import WHOLE_REMOVABLE_ROLES
from prunekit.prune.sparsity import find_classifier

if TYPE_CHECKING:
    from prunekit.config import PruneConfig
    from prunekit.prune.graph import ChannelGraph


def check_ratio(name: str, ratio) -> float:
    """A pruning ratio must be a number in [0, 1): pruning a whole layer would disconnect the network."""
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
        raise PrunekitError(f"ratio for {name!r} must be a number in [0, 1), got {ratio!r}")
    if not 0.0 <= float(ratio) < 1.0:
        raise PrunekitError(f"ratio for {name!r} is {ratio}; ratios must lie in [0, 1) (0.8 prunes 80%)")
    return float(ratio)


def validate_ratios(ratios: dict, valid_names: Iterable[str]) -> dict[str, float]:
    """Check layer names and ratio values; expand patterns and ``default``.

    A key is an exact layer name, its parameter name (``features.0.weight``), or a glob pattern
    (``layer1.*.conv1``); exact names win over patterns,
    and ``default`` applies to every layer left unnamed. An unknown name (or a pattern that matches
    nothing) raises an error listing the valid names and the closest match. Returns
    ``{layer_name: ratio}`` for every layer with a ratio.
    """
    valid = list(valid_names)
    if not isinstance(ratios, dict) or not ratios:
        raise PrunekitError(f"ratios must be {RATIO_FORMS}")
    ratios = {_layer_name(k, valid): v for k, v in ratios.items()}
    patterns = {k: v for k, v in ratios.items() if k != "default" and any(c in str(k) for c in "*?[")}
    resolved: dict[str, float] = {}
    for pattern, ratio in patterns.items():
        matched = fnmatch.filter(valid, str(pattern))
        if not matched:
            raise PrunekitError(f"pattern {pattern!r} in ratios matches no layer. Valid layers: {', '.join(valid)}")
        resolved.update(dict.fromkeys(matched, check_ratio(str(pattern), ratio)))
    for name, ratio in ratios.items():
        if name == "default" or name in patterns:
            continue
        if name not in valid:
            close = difflib.get_close_matches(str(name), valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PrunekitError(f"unknown layer {name!r} in ratios.{hint} Valid layers: {', '.join(valid)} "
                                f"(`prunekit layers CKPT` lists them); expected {RATIO_FORMS}")
        resolved[name] = check_ratio(name, ratio)
    if "default" in ratios:
        default = check_ratio("default", ratios["default"])
        for name in valid:
            resolved.setdefault(name, default)
    return resolved


RATIO_FORMS = ("`layer: ratio` entries (`features.0: 0.2`, or the parameter name `features.0.weight: 0.2`), "
               "glob patterns (`layer1.*.conv1: 0.5`) and `default: R`, optionally all under one `prune_ratios:` key")
RATIO_WRAPPERS = ("prune_ratios", "ratios")  # a file may nest its entries under one of these keys


def load_ratio_file(path: str | Path) -> dict:
    """Read a YAML ratio file without validating names: ``layer: ratio`` entries, optionally nested under one
    :data:`RATIO_WRAPPERS` key (the CSCI 8000 homework's ``prune_ratios:``). A value that is not a number
    raises PrunekitError naming the entry and the expected forms (:data:`RATIO_FORMS`)."""
    from prunekit.config import read_yaml_mapping

    data = read_yaml_mapping(path, "ratio file")
    wrapper = next(iter(data))
    if len(data) == 1 and wrapper in RATIO_WRAPPERS:
        data = data[wrapper]
        if not isinstance(data, dict) or not data:
            raise PrunekitError(f"{path}: the `{wrapper}:` key must hold {RATIO_FORMS}")
    for name, ratio in data.items():
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)):
            raise PrunekitError(f"{path}: entry {name!r} is {ratio!r}, not a ratio; expected {RATIO_FORMS}")
    return data


def _layer_name(key, valid: list[str]):
    """A ratio key as a layer name: a parameter name ``layer.weight`` becomes ``layer`` (when ``layer`` is one)."""
    key = str(key)
    if key.endswith(".weight") and key not in valid:
        stem = key.removesuffix(".weight")
        if stem in valid or any(c in stem for c in "*?["):
            return stem
    return key


def round_fraction(target: float, progress: float) -> float:
    """The fraction to have pruned after ``progress`` ∈ (0, 1] of an iterative schedule.

    Each of K rounds prunes the same fraction of the *remaining* weights, so after round k of K the
    pruned fraction is ``1 - (1 - target) ** (k / K)`` and the last round lands exactly on ``target``.
    """
    if progress >= 1.0:
        return target
    return 1.0 - (1.0 - target) ** progress


# --- unstructured: which layers, which fractions ------------------------------------------------------

def scoped_layers(model: nn.Module, include_classifier: bool, exclude: Iterable[str] = ()) -> dict[str, nn.Module]:
    """The prunable layers a global/uniform target applies to: all but the classifier unless included, and
    none named by an ``exclude`` name or glob pattern (see :func:`excluded_names`)."""
    classifier = None if include_classifier else find_classifier(model)
    everything = prunable_layers(model)
    skipped = excluded_names(exclude, list(everything))
    layers = {n: m for n, m in everything.items() if n != classifier and n not in skipped}
    if not layers:
        raise PrunekitError("the model has no prunable layer (nn.Conv2d / nn.Linear) besides its classifier; "
                            "pass include_classifier=True (--include-classifier) to prune it")
    return layers


def excluded_names(patterns: Iterable[str], names: list[str]) -> set[str]:
    """The ``names`` matching any of ``patterns`` (exact names or globs, ``.weight`` suffix allowed); a
    pattern that matches nothing raises PrunekitError listing the valid names."""
    skipped: set[str] = set()
    for pattern in patterns:
        pattern = _layer_name(pattern, names)
        matched = fnmatch.filter(names, pattern)
        if not matched:
            close = difflib.get_close_matches(pattern, names, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise PrunekitError(f"--exclude {pattern!r} matches no layer.{hint} Valid layers: {', '.join(names)}")
        skipped.update(matched)
    return skipped


def resolve_ratios(model: nn.Module, ratios: dict, include_classifier: bool = False) -> dict[str, float]:
    """``{layer: fraction}`` from a ratio mapping (names checked by ``validate_ratios``).

    ``default`` covers every unnamed layer except the classifier, which is pruned only when named
    explicitly or when ``include_classifier`` is set.
    """
    layers = prunable_layers(model)
    resolved = validate_ratios(ratios, layers)
    classifier = find_classifier(model)
    if classifier in resolved and classifier not in ratios and not include_classifier:
        del resolved[classifier]
    return resolved


# --- filters: which channels --------------------------------------------------------------------------


def estimate_macs(graph: ChannelGraph, model: nn.Module, removed: set[int] = frozenset()) -> int:
    """MACs per image of every Conv and Linear call after removing ``removed`` (the convention of
    :func:`prunekit.measure.count_macs`: conv and linear only), from the traced output sizes."""
    modules = dict(model.named_modules())
    widths = layer_widths(graph, model, lost_channels(graph, removed))
    total = 0
    for call in graph.calls:
        module = modules[call.module]
        cin, cout = widths[call.module]
        if call.kind == "linear":
            total += call.positions * cin * cout
        elif (call.module, "depthwise") in graph.ports:
            total += call.positions * math.prod(module.kernel_size) * cout
        else:
            total += call.positions * math.prod(module.kernel_size) * cin // module.groups * cout
    return total


def select_channels(model: nn.Module, graph: ChannelGraph, config: PruneConfig,
                    progress: float = 1.0, batches=None, latency: LatencyModel | None = None) -> set[int]:
    """The ids of the channels to remove for ``config``'s target at ``progress`` of a schedule (see module doc);
    ``batches`` feed a data-driven criterion (see :func:`prunekit.prune.importance.channel_scores`);
    ``latency`` (a latency table of ``model``) is needed by a latency target."""
    scores = channel_scores(model, graph, config.criterion, config.seed, batches)
    dead = zeroed_channels(model, graph)
    whole = whole_removable_groups(model, graph) if config.latency_target is not None else frozenset()
    if config.macs_target is not None or config.latency_target is not None:
        final = (_select_for_macs(model, graph, scores, dead, config) if config.macs_target is not None
                 else select_for_latency(model, graph, scores, dead, whole, config, latency, batches))
        counts = {g: _round(progress * n) for g, n in _group_counts(graph, final).items()}
        removed = _select_counts(graph, scores, counts, dead, whole)
    elif config.cfg is not None:
        removed = _select_counts(graph, scores, _cfg_counts(graph, model, config.cfg, progress), dead)
    elif config.ratios is not None:
        ratios = _group_ratios(graph, config.ratios)
        counts = _ratio_counts(graph, {g: round_fraction(r, progress) for g, r in ratios.items()})
        removed = _select_counts(graph, scores, counts, dead)
    elif config.exclude:
        removed = _select_excluding(graph, scores, round_fraction(config.sparsity, progress), config, dead)
    else:
        removed = _select_fraction(graph, scores, round_fraction(config.sparsity, progress), config.scope, dead)
    return repair(graph, removed, scores, dead, whole)


def _select_excluding(graph: ChannelGraph, scores: dict[int, float], fraction: float, config: PruneConfig,
                      dead: set[int]) -> set[int]:
    """A uniform ``fraction`` of every group, except groups one of whose producing convs ``config.exclude``
    names (they keep every channel)."""
    if config.scope != "layer":
        raise PrunekitError("--exclude (exclude:) leaves layers out of a uniform filter sparsity; use scope layer")
    producers = [conv for group in graph.groups for conv in group.producers]
    skipped = excluded_names(config.exclude, producers)
    ratios = {g.id: 0.0 if skipped & set(g.producers) else fraction for g in graph.groups}
    return _select_counts(graph, scores, _ratio_counts(graph, ratios), dead)


def _select_fraction(graph: ChannelGraph, scores: dict[int, float], fraction: float, scope: str,
                     dead: set[int]) -> set[int]:
    if scope == "global":
        return _select_global(graph, scores, fraction, dead)
    return _select_counts(graph, scores, _ratio_counts(graph, {g.id: fraction for g in graph.groups}), dead)


def _ratio_counts(graph: ChannelGraph, ratios: dict[int, float]) -> dict[int, int]:
    """Channels to remove per group: :func:`target_count` (ratio, prunable channels of the group), so every
    group, and hence the total, reaches its ratio."""
    return {gid: target_count(r, len(graph.prunable(graph.groups[gid]))) for gid, r in ratios.items()}


def target_count(fraction: float, n: int) -> int:
    """How many of ``n`` items pruning ``fraction`` removes: the fewest that reach it, ``ceil(fraction × n)``
    (a target is met, never rounded down to below itself); products within 1e-9 of an integer count as it,
    so 0.25 × 64 is 16, not 17."""
    return max(0, math.ceil(fraction * n - 1e-9))


def _round(x: float) -> int:
    """Half up (2.5 -> 3), unlike Python's round-half-to-even."""
    return math.floor(x + 0.5)


def _group_counts(graph: ChannelGraph, removed: set[int]) -> dict[int, int]:
    counts = {g.id: 0 for g in graph.groups}
    for cid in removed:
        counts[graph.channels[cid].group] += 1
    return counts


def _removable(graph: ChannelGraph, cid: int, removed: set[int], per_group: dict[int, int],
               whole: frozenset[int] = frozenset()) -> bool:
    """Whether channel ``cid`` may join ``removed``: its group keeps a channel (unless it is in ``whole``, the
    groups that may go whole) and its copies' sources go.

    ``per_group``: how many channels of each group ``removed`` already holds.
    """
    channel = graph.channels[cid]
    return ((channel.group in whole or per_group.get(channel.group, 0) + 1 < len(graph.groups[channel.group].channels))
            and channel.depends_on <= removed)


def _add(graph: ChannelGraph, cid: int, removed: set[int], per_group: dict[int, int]) -> None:
    removed.add(cid)
    group = graph.channels[cid].group
    per_group[group] = per_group.get(group, 0) + 1


def _select_counts(graph: ChannelGraph, scores: dict[int, float], counts: dict[int, int],
                   dead: set[int], whole: frozenset[int] = frozenset()) -> set[int]:
    """Per group, the ``counts[g]`` lowest-scoring removable channels (already-zero ones first); a group in
    ``whole`` may lose all of them."""
    removed = set(dead)
    per_group = _group_counts(graph, removed)
    for gid in _dependency_order(graph):
        candidates = sorted((c for c in graph.prunable(graph.groups[gid]) if c not in removed), key=scores.get)
        wanted = counts.get(gid, 0) - per_group[gid]
        for cid in candidates:
            if wanted <= 0:
                break
            if _removable(graph, cid, removed, per_group, whole):
                _add(graph, cid, removed, per_group)
                wanted -= 1
    return removed


def lamp_normalised(scores: dict[int, float]) -> dict[int, float]:
    """LAMP normalisation (Lee et al. 2021) of one group's scores: with the group sorted ascending, channel
    ``u`` gets ``s_u² / Σ_{v ≥ u} s_v²``. The best channel of every group scores 1 and a group's k-th best
    about 1/k whatever its size or score scale, so one global threshold leaves every group roughly the same
    number of its strongest channels: a small group is never emptied because its raw scores are small
    (which a division by the group mean allows when a few channels dominate it)."""
    ordered = sorted(scores, key=lambda c: (scores[c], c))
    result, mass = {}, 0.0
    for cid in reversed(ordered):
        mass += scores[cid] ** 2
        result[cid] = scores[cid] ** 2 / mass if mass > 0 else 0.0
    return result


def _select_global(graph: ChannelGraph, scores: dict[int, float], fraction: float, dead: set[int]) -> set[int]:
    """One ranking across groups (LAMP-normalised scores, :func:`lamp_normalised`) removing ``fraction`` of
    all conv filters."""
    normalised = {}
    for group in graph.groups:
        normalised.update(lamp_normalised({c: scores[c] for c in graph.prunable(group)}))
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
                     config: PruneConfig) -> set[int]:
    """Bisection on a uniform fraction until the estimated MACs are ≤ macs_target × the unpruned MACs; with
    ``round_to`` N every group keeps a multiple of N channels (rounded up, so the fraction grows to pay)."""
    budget = config.macs_target * estimate_macs(graph, model)

    def select(fraction: float) -> set[int]:
        chosen = repair(graph, _select_fraction(graph, scores, fraction, config.scope, dead), scores, dead)
        if not config.round_to:
            return chosen
        counts = rounded_counts(graph, _group_counts(graph, chosen), config.round_to)
        return repair(graph, _select_counts(graph, scores, counts, dead), scores, dead)

    best = select(0.999)
    if estimate_macs(graph, model, best) > budget:
        reachable = estimate_macs(graph, model, best) / estimate_macs(graph, model)
        narrowest = f"{config.round_to} channels" if config.round_to else "one channel"
        raise PrunekitError(f"macs_target {config.macs_target} cannot be reached: removing all but {narrowest} "
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


def rounded_counts(graph: ChannelGraph, counts: dict[int, int], multiple: int) -> dict[int, int]:
    """``counts`` (channels removed per group) lowered so every group keeps a multiple of ``multiple``
    channels (or all of them): kept widths round up, e.g. int8 depthwise kernels (fbgemm) run 10–35× slower
    at widths above 100 that are not multiples of 8."""
    rounded = {}
    for gid, count in counts.items():
        full = len(graph.groups[gid].channels)
        kept = min(full, -(-(full - count) // multiple) * multiple)
        rounded[gid] = full - kept
    return rounded


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


def repair(graph: ChannelGraph, removed: set[int], scores: dict[int, float], dead: set[int],
           whole: frozenset[int] = frozenset()) -> set[int]:
    """Put channels back until no module port is emptied, no group is emptied (except groups of ``whole``
    removed entirely, and the ports only they fill) and every removed channel's copy sources are removed or
    already zero. Only ever un-removes, so it terminates."""
    removed = set(removed)
    collections = [port.values() for port in graph.ports.values()] + [g.channels for g in graph.groups]
    changed = True
    while changed:
        changed = False
        gone = {cid for gid in whole if all(c in removed for c in graph.groups[gid].channels)
                for cid in graph.groups[gid].channels}
        for ids in collections:
            if ids and all(c in removed for c in ids) and not all(c in gone for c in ids):
                removed.discard(max(ids, key=lambda c: scores.get(c, 0.0)))
                changed = True
        allowed = removed | dead
        broken = {cid for cid in removed if not graph.channels[cid].depends_on <= allowed}
        if broken:
            removed -= broken
            changed = True
    return removed


# --- filters: to a latency target ---------------------------------------------------------------------------

def whole_removable_groups(model: nn.Module, graph: ChannelGraph) -> frozenset[int]:
    r"""Ids of the groups that may lose every channel exactly: the inner channels of a residual branch
    (``conv1 → BN → ReLU → conv2``), which only stock Conv2d and BatchNorm2d layers produce, normalise and
    read, with every channel prunable, no copy (ZeroPadShortcut) from or into them and no split size over
    them, and every conv reading them adds its output to another producer's (a residual addition: its
    filters' group has several producing convs), so the branch's removal leaves the other path; a plain
    chain (VGG) never qualifies. Removed whole, the producing conv and its BN become empty
    :class:`~prunekit.models.layers.ZeroWidthLayer`\ s and a conv reading nothing else becomes its bias, so
    the branch adds a per-channel constant (its BN's ``β − mean·γ/√(var+ε)``), which the masked twin computes
    too: a block whose branch is gone is (up to that constant) an identity."""
    modules = dict(model.named_modules())
    copied = {dep for channel in graph.channels.values() for dep in channel.depends_on}
    sized = {cid for _, _, pieces in graph.sizes for piece in pieces for cid in piece}

    def stock(slot) -> bool:
        module = modules.get(slot.module)
        kind = WHOLE_REMOVABLE_ROLES.get(slot.role)
        return kind is not None and (isinstance(module, ZeroWidthLayer) or (
            isinstance(module, kind) and type(module).forward is kind.forward))

    producers = {conv: len(group.producers) for group in graph.groups for conv in group.producers}

    def joins_a_sum(slot) -> bool:
        return slot.role != "conv_in" or producers.get(slot.module, 0) > 1

    return frozenset(group.id for group in graph.groups if all(
        graph.channels[cid].prunable and not graph.channels[cid].depends_on and cid not in copied
        and cid not in sized and all(stock(slot) and joins_a_sum(slot) for slot in graph.channels[cid].slots)
        for cid in group.channels))


class LatencyModel(Protocol):
    """What the latency allocation needs of a latency table (:class:`prunekit.measure.latency.LatencyTable`):
    ``predict({layer: (in, out)})`` in ms, the layers' full widths, and the dense model's latency."""

    full: dict[str, tuple[int, int]]
    dense_ms: float

    def predict(self, widths: dict[str, tuple[int, int]] | None = None) -> float: ...


def layer_widths(graph: ChannelGraph, model: nn.Module, lost: dict[tuple[str, str], int]) -> dict[str, tuple[int, int]]:
    """{Conv/Linear call: (input width, output width)} when ``lost[(module, role)]`` channels leave each port."""
    modules = dict(model.named_modules())
    widths = {}
    for call in graph.calls:
        module = modules[call.module]
        if call.kind == "linear":  # a Linear on a channels-last tensor registers conv roles (a 1x1 conv)
            gone_in = lost.get((call.module, "linear_in"), 0) + lost.get((call.module, "conv_in"), 0)
            gone_out = lost.get((call.module, "linear_out"), 0) + lost.get((call.module, "conv_out"), 0)
            widths[call.module] = (module.in_features - gone_in, module.out_features - gone_out)
        elif (call.module, "depthwise") in graph.ports:
            width = module.out_channels - lost.get((call.module, "depthwise"), 0)
            widths[call.module] = (width, width)
        else:
            widths[call.module] = (module.in_channels - lost.get((call.module, "conv_in"), 0),
                                   module.out_channels - lost.get((call.module, "conv_out"), 0))
    return widths


def lost_channels(graph: ChannelGraph, removed: set[int]) -> dict[tuple[str, str], int]:
    """{(module, role): how many of ``removed`` occupy that port}."""
    return {key: sum(1 for cid in port.values() if cid in removed) for key, port in graph.ports.items()}


def predict_latency(graph: ChannelGraph, model: nn.Module, latency: LatencyModel, removed: set[int] = frozenset()) -> float:
    """The latency (ms) ``latency`` predicts once ``removed`` is gone."""
    return latency.predict(layer_widths(graph, model, lost_channels(graph, removed)))


@dataclass
class GroupChoices:
    """One group's options for the latency knapsack: remove ``counts[i]`` channels (its lowest-scoring ones,
    ``order``), keeping ``values[i]`` of its importance; ``ports``: {port: cumulative channels lost per count}."""

    gid: int
    order: list[int]
    counts: list[int]
    values: list[float]
    ports: dict[tuple[str, str], list[int]]


def group_choices(graph: ChannelGraph, scores: dict[int, float], dead: set[int], round_to: int | None,
                  grid: Callable[[int], list[int]], whole: frozenset[int] = frozenset()) -> list[GroupChoices]:
    """Every group's candidate widths: ``grid(full width)`` (the latency table's measured widths), or the
    multiples of ``round_to`` (plus the full width) when given; at least one channel stays, except that a
    group of ``whole`` (:func:`whole_removable_groups`) may also take width 0 (its branch removed). Importance is
    LAMP-normalised per group (:func:`lamp_normalised`), so groups compare on one scale, and counted once per
    conv filter the channel removes (a residual stream's channel is the output of every conv adding into it,
    so cutting it costs each of them); dead channels go first."""
    choices = []
    for group in graph.groups:
        prunable = graph.prunable(group)
        if not prunable:
            continue
        lamp = lamp_normalised({c: scores[c] for c in prunable})
        normalised = {c: lamp[c] * max(1, graph.channels[c].filters) for c in prunable}
        order = sorted(prunable, key=lambda c: (c not in dead, normalised[c], c))
        full = len(group.channels)
        widths = range(round_to, full + 1, round_to) if round_to else grid(full)
        keep_min = full - len(prunable)
        narrowest = 0 if group.id in whole else max(1, keep_min)  # 0: the branch removed
        counts = sorted({full - w for w in [*widths, full, 0] if narrowest <= w <= full})
        total = sum(normalised.values())
        lost = [0.0]
        for cid in order:
            lost.append(lost[-1] + normalised[cid])
        values = [total - lost[k] for k in counts]
        ports = {}
        for key, port in graph.ports.items():
            member = {cid for cid in port.values() if graph.channels[cid].group == group.id}
            if member:
                running = [0]
                for cid in order:
                    running.append(running[-1] + (cid in member))
                ports[key] = running
        choices.append(GroupChoices(group.id, order, counts, values, ports))
    return choices


def _lost_for(choices: list[GroupChoices], counts: dict[int, int]) -> dict[tuple[str, str], int]:
    lost: dict[tuple[str, str], int] = {}
    for choice in choices:
        k = counts.get(choice.gid, 0)
        for key, running in choice.ports.items():
            lost[key] = lost.get(key, 0) + running[k]
    return lost


#: Widths per group whose loss a LossProbe measures (evenly spread over its options, the narrowest included);
#: the other widths are interpolated.
PROBE_POINTS = 4


def measured_values(graph: ChannelGraph, choices: list[GroupChoices], probe: LossProbe,
                    whole: frozenset[int] = frozenset(), points: int = PROBE_POINTS) -> None:
    """Value every group's options by measurement: minus the loss increase when that group alone loses its
    ``counts[i]`` lowest-scoring channels (:class:`~prunekit.prune.importance.LossProbe`), measured at
    ``points`` of its options and interpolated linearly in the count between them (0 at full width), so
    groups compare on one scale and a residual branch removed whole is valued by what its removal costs.
    A loss that falls as more is removed counts as no change (the running maximum of the increase), and
    :data:`TIE_BREAK` × the criterion's value is added, so equal losses keep the higher-scoring widths.

    A group of ``whole`` (a residual branch) keeps two options: full width or removed. A narrowed branch
    still runs every op of the block, so at small batches it saves little time for the accuracy it costs,
    while removing it saves most of the block's time; and each narrowed branch adds error that the
    per-group (additive) values underestimate. On ResNet-56 (batch 1, target 0.5, top-1 after BN
    recalibration) branches-or-nothing kept more accuracy than branches at any width (48% vs 46%).
    Side effect: replaces each choice's ``counts`` (branches) and ``values``."""
    base = probe.loss(graph, ())
    for choice in choices:
        if choice.gid in whole and choice.counts[-1] == len(graph.groups[choice.gid].channels):
            choice.counts = [0, choice.counts[-1]]
        options = len(choice.counts) - 1
        picked = sorted({round(options * (j + 1) / points) for j in range(points)} - {0})
        known, worst = {0: 0.0}, 0.0
        for i in picked:  # removing more never counts as a gain: noise (or a random model) must not pay
            worst = max(worst, probe.loss(graph, choice.order[:choice.counts[i]]) - base)
            known[choice.counts[i]] = -worst
        choice.values = [_interpolate(known, k) + TIE_BREAK * v for k, v in zip(choice.counts, choice.values)]


def _interpolate(known: dict[int, float], x: int) -> float:
    """Piecewise-linear through the points ``known`` {x: y} (x within their range)."""
    xs = sorted(known)
    upper = next(i for i, v in enumerate(xs) if v >= x)
    if xs[upper] == x or upper == 0:
        return known[xs[upper]]
    x0, x1 = xs[upper - 1], xs[upper]
    return known[x0] + (known[x1] - known[x0]) * (x - x0) / (x1 - x0)


#: Weight of the criterion's (LAMP-normalised) values added to measured losses: breaks ties (options that
#: measure the same loss, e.g. all of a randomly initialised model's) towards keeping important channels.
TIE_BREAK = 1e-4

#: Cost resolution of the latency knapsack: the budget is split into this many units.
KNAPSACK_UNITS = 2000


def knapsack(values: list[list[float]], costs: list[list[float]], capacity: float) -> list[int] | None:
    """Multiple-choice knapsack: one option per group, maximising the summed value with summed cost ≤
    ``capacity``. Returns the chosen option index per group, or None when nothing fits. Costs are rounded
    UP to ``capacity / KNAPSACK_UNITS`` units, so the choice truly fits; negative costs are allowed."""
    import numpy as np

    shifts = [min(c) for c in costs]
    room = capacity - sum(shifts)
    if room < -1e-12:
        return None
    unit = max(room, 1e-12) / KNAPSACK_UNITS
    best = np.zeros(KNAPSACK_UNITS + 1)
    picks = []
    for value, cost in zip(values, costs):
        new = np.full(KNAPSACK_UNITS + 1, -np.inf)
        pick = np.zeros(KNAPSACK_UNITS + 1, dtype=np.int64)
        for i, (v, c) in enumerate(zip(value, cost)):
            units = math.ceil((c - min(cost)) / unit - 1e-9)
            if units > KNAPSACK_UNITS:
                continue
            candidate = np.full(KNAPSACK_UNITS + 1, -np.inf)
            candidate[units:] = best[:KNAPSACK_UNITS + 1 - units] + v
            better = candidate > new
            new[better], pick[better] = candidate[better], i
        best = new
        picks.append(pick)
    if not np.isfinite(best[-1]):
        return None
    chosen, slot = [], KNAPSACK_UNITS
    for cost, pick in zip(reversed(costs), reversed(picks)):
        i = int(pick[slot])
        chosen.append(i)
        slot -= math.ceil((cost[i] - min(cost)) / unit - 1e-9)
    return chosen[::-1]


def allocate_latency(graph: ChannelGraph, model: nn.Module, latency: LatencyModel, choices: list[GroupChoices],
                     budget_ms: float, rounds: int = 10) -> dict[int, int]:
    """Channels to remove per group so the predicted latency is ≤ ``budget_ms`` with the most importance
    kept: a multiple-choice knapsack (:func:`knapsack`) over every group's candidate widths, each option
    costed by the table with the other groups at their current widths; repeated from the new widths (the
    cost of a layer between two pruned groups depends on both) until the choice settles, aiming lower by the
    overshoot whenever the full prediction exceeds the budget (and easing back once it fits). Exact when no layer sits between two pruned
    groups. Returns the best choice whose full prediction fits; raises PrunekitError
    (asked vs reachable) when even the smallest widths do not fit."""
    smallest = {c.gid: c.counts[-1] for c in choices}
    reachable = latency.predict(layer_widths(graph, model, _lost_for(choices, smallest)))
    if reachable > budget_ms:
        raise PrunekitError(f"latency target {budget_ms / latency.dense_ms:.3f} cannot be reached by widths: the "
                            f"narrowest allowed widths are predicted at {reachable / latency.dense_ms:.3f} of the "
                            f"dense latency ({reachable:.3f} of {latency.dense_ms:.3f} ms); ask for at least "
                            f"{math.ceil(100 * reachable / latency.dense_ms) / 100:.2f}")
    counts = {c.gid: 0 for c in choices}
    best, best_value, effective = smallest, -math.inf, budget_ms
    for _ in range(rounds):
        now = latency.predict(layer_widths(graph, model, _lost_for(choices, counts)))
        costs = [[latency.predict(layer_widths(graph, model, _lost_for(choices, {**counts, c.gid: k}))) - now
                  for k in c.counts] for c in choices]
        picked = knapsack([c.values for c in choices], costs, effective - now)
        if picked is None:
            break
        new = {c.gid: c.counts[i] for c, i in zip(choices, picked)}
        value = sum(c.values[i] for c, i in zip(choices, picked))
        predicted = latency.predict(layer_widths(graph, model, _lost_for(choices, new)))
        if predicted > budget_ms:  # the separate costs missed how two pruned neighbours share a layer: aim lower
            effective -= predicted - budget_ms
        else:
            if value > best_value:
                best, best_value = new, value
            if new == counts:
                break
            effective = (effective + budget_ms) / 2  # fits: give back half of any earlier tightening
        counts = new
    return best


def select_for_latency(model: nn.Module, graph: ChannelGraph, scores: dict[int, float], dead: set[int],
                       whole: frozenset[int], config: PruneConfig, latency: LatencyModel, batches=None) -> set[int]:
    """The channels to remove so ``latency`` predicts ≤ ``config.latency_target`` × the dense latency
    (:func:`allocate_latency`), the lowest-scoring of each group, then :func:`repair`ed; the groups of ``whole``
    (:func:`whole_removable_groups` of ``model`` and ``graph``) may also go whole. If the repaired set
    is predicted over budget (a copy rule kept channels), the budget tightens and the allocation reruns.
    With labelled ``batches`` (or a :class:`~prunekit.prune.importance.LossProbe`), each group's widths are
    valued by the measured loss (:func:`measured_values`), else by the criterion's LAMP-normalised scores."""
    if latency is None:
        raise PrunekitError("a latency target needs a latency table (prunekit.measure.latency.build_latency_table)")
    grid = getattr(latency, "grid_for", None) or (lambda full: list(range(1, full + 1)))
    choices = group_choices(graph, scores, dead, config.round_to, grid, whole)
    if batches:
        probe = batches if isinstance(batches, LossProbe) else LossProbe(model, batches)
        measured_values(graph, choices, probe, whole)
    budget = config.latency_target * latency.dense_ms
    for _ in range(4):
        counts = allocate_latency(graph, model, latency, choices, budget)
        removed = repair(graph, _select_counts(graph, scores, counts, dead, whole), scores, dead, whole)
        predicted = predict_latency(graph, model, latency, removed)
        if predicted <= config.latency_target * latency.dense_ms:
            return removed
        budget -= predicted - config.latency_target * latency.dense_ms
    return removed
