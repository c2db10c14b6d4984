"""Per-layer sensitivity: each prunable layer pruned ALONE at each sparsity, no retraining.

A point is one layer at one sparsity: a fresh copy of the model is masked with
``PruneConfig(granularity, ratios={layer: s})`` and evaluated; ``drop`` is the dense top-1 minus the
pruned top-1 (percentage points). The dense model is evaluated once and stored as layer ``dense``.
Resumable like a sweep (the CSV is rewritten atomically after every point; finished points are skipped).

:func:`suggest_ratios` turns the curves into a layer-wise ratio file reaching an overall sparsity S:

1. per layer, the drop curve is made non-decreasing (running maximum) and linearly interpolated;
2. one common accuracy-drop threshold ``t`` is found by bisection: each layer takes the largest sparsity
   whose drop stays <= ``t`` (sensitive layers therefore get less), until the parameter-weighted mean of
   the ratios is as close to S as the curves allow;
3. a final rescale multiplies every ratio by the same factor so the weighted mean is exactly S, capping
   each at :data:`MAX_SUGGESTED_RATIO` (< 1) and spreading what the capped layers cannot take over the rest.

Those curves measure each layer alone; pruned together, the layers' errors add up in ways a per-layer
threshold cannot see (a layer that tolerates 95% alone may break the network next to others at 80%), so
the curve-shaped ratios are only one *candidate*. :func:`choose_allocation` evaluates the whole pruned
model for every candidate allocation at the same overall sparsity (``uniform``: S in every layer;
``global``: the per-layer fractions one magnitude threshold yields; ``lamp``: those of one LAMP-score
threshold; ``sensitivity``: the curve-shaped ratios above; for filter pruning only uniform and
sensitivity) on the same held-out images and keeps the best (top-1, then lower loss). Uniform is always a
candidate, so the suggestion is never worse than uniform on that evaluation.

"Overall" is ``Σ params_l × ratio_l / Σ params_l`` over the analysed layers (the classifier is left out
unless asked): for unstructured pruning the fraction of those weights pruned; for filter pruning the
parameter-weighted fraction of filters (input channels removed in the next layer are not counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.analysis.results import PointTable
from prunekit.atomic import atomic_write_text
from prunekit.analysis.points import Evaluator, point_record, pruned_copy, rate_key

SENSITIVITY_COLUMNS = ["layer", "layer_params", "sparsity", "top1", "top5", "loss", "drop", "overall_sparsity",
                       "nonzero_params", "nonzero_bytes"]
DENSE = "dense"  # the layer name of the unpruned reference row
DEFAULT_SPARSITIES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
MAX_SUGGESTED_RATIO = 0.99  # a ratio file must stay below 1: a fully pruned layer disconnects the network
BISECTION_STEPS = 60


def parse_sparsities(text: str) -> list[float]:
    """``"0.1,0.5,0.9"`` → ``[0.1, 0.5, 0.9]``, each in (0, 1)."""
    try:
        values = sorted({rate_key(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise PrunekitError(f"--sparsities {text!r}: give comma-separated numbers, e.g. 0.1,0.3,0.5") from None
    if not values or not all(0.0 < v < 1.0 for v in values):
        raise PrunekitError(f"--sparsities {text!r}: every value must lie in (0, 1)")
    return values


def sensitivity_layers(model: nn.Module, granularity: str, example_inputs, include_classifier: bool = False
                       ) -> dict[str, int]:
    """``{layer name: weight count}`` of the layers a ratio file may name, in registration order.

    Unstructured: every Conv2d/Linear (the classifier only with ``include_classifier``). Filter: every conv
    that produces a group of prunable channels (traced with ``example_inputs``).
    """
    from prunekit.models.layers import prunable_layers
    from prunekit.prune.granularity import get_granularity

    names = set(get_granularity(granularity).ratio_layers(model, example_inputs, include_classifier))
    return {n: m.weight.numel() for n, m in prunable_layers(model).items() if n in names}


def run_sensitivity(model: nn.Module, sparsities: Sequence[float], evaluate: Evaluator, csv_path: str | Path,
                    granularity: str = "unstructured", criterion: str = "l1", include_classifier: bool = False,
                    settings: dict | None = None, progress: bool = True) -> list[dict]:
    """Evaluate every analysed layer pruned alone at every sparsity (plus the dense model once).

    Returns every row of the CSV (``layer``, ``layer_params``, ``sparsity``, ``top1``, ``top5``, ``loss``,
    ``drop`` and the whole model's ``overall_sparsity`` and non-zero parameters). Points already in the CSV
    are skipped. Side effect: moves ``model`` to the evaluator's device.
    """
    from tqdm.auto import tqdm

    model.to(evaluate.device).eval()
    example = evaluate.example_inputs()
    layers = sensitivity_layers(model, granularity, example, include_classifier)
    table = PointTable(csv_path, SENSITIVITY_COLUMNS, key=lambda row: (row["layer"], rate_key(row["sparsity"])),
                       settings={"kind": "sensitivity", **(settings or {}), **evaluate.describe(),
                                 "granularity": granularity, "criterion": criterion,
                                 "include_classifier": include_classifier})
    done = table.done()
    points = [(DENSE, 0.0)] + [(layer, rate_key(s)) for layer in layers for s in sparsities]
    todo = [p for p in points if p not in done]
    bar = tqdm(total=len(points), initial=len(points) - len(todo), desc="sensitivity", unit="point",
               disable=not progress, dynamic_ncols=True)
    dense_top1 = next((r["top1"] for r in table.rows if r["layer"] == DENSE), None)
    for layer, sparsity in todo:
        if layer == DENSE:
            pruned, params = model, sum(layers.values())
        else:
            config = PruneConfig(granularity=granularity, ratios={layer: sparsity}, criterion=criterion)
            pruned, params = pruned_copy(model, config, example), layers[layer]
        record = point_record(pruned, evaluate)
        dense_top1 = record["top1"] if layer == DENSE else dense_top1
        table.add({"layer": layer, "layer_params": params, "sparsity": sparsity, "top1": record["top1"],
                   "top5": record["top5"], "loss": record["loss"], "drop": dense_top1 - record["top1"],
                   "overall_sparsity": record["sparsity"], "nonzero_params": record["nonzero_params"],
                   "nonzero_bytes": record["nonzero_bytes"]})
        bar.set_postfix(layer=layer, s=f"{sparsity:.2f}", top1=f"{record['top1']:.2f}%")
        bar.update()
    bar.close()
    return table.rows


# --- suggestion: a ratio file from the curves ----------------------------------------------------------


def drop_curves(rows: Sequence[dict]) -> dict[str, tuple[list[float], list[float], int]]:
    """Per layer: sparsities (starting at 0), the running-maximum drop at each, and the layer's weight count."""
    curves: dict[str, tuple[list[float], list[float], int]] = {}
    for layer in dict.fromkeys(r["layer"] for r in rows if r["layer"] != DENSE):
        points = sorted((r["sparsity"], r["drop"]) for r in rows if r["layer"] == layer)
        xs, ys, worst = [0.0], [0.0], 0.0
        for s, drop in points:
            worst = max(worst, drop)
            xs.append(s)
            ys.append(worst)
        size = next(r["layer_params"] for r in rows if r["layer"] == layer)
        curves[layer] = (xs, ys, int(size))
    return curves


def ratio_at(xs: Sequence[float], ys: Sequence[float], threshold: float) -> float:
    """The largest sparsity on a non-decreasing drop curve whose (interpolated) drop is <= ``threshold``."""
    if ys[-1] <= threshold:
        return xs[-1]
    for i in range(1, len(xs)):
        if ys[i] > threshold:  # crosses between i-1 (<= threshold) and i
            low_x, low_y, high_x, high_y = xs[i - 1], ys[i - 1], xs[i], ys[i]
            return low_x + (high_x - low_x) * (threshold - low_y) / (high_y - low_y)
    return xs[-1]


def weighted_mean(ratios: dict[str, float], sizes: dict[str, int]) -> float:
    total = sum(sizes[layer] for layer in ratios)
    return sum(sizes[layer] * r for layer, r in ratios.items()) / total


def rescale(ratios: dict[str, float], sizes: dict[str, int], target: float,
            cap: float = MAX_SUGGESTED_RATIO) -> dict[str, float]:
    """Scale ``ratios`` by one factor so their weighted mean is ``target``, capping each at ``cap`` and giving
    what capped layers cannot take to the others (in proportion to their ratios; uniformly if all are 0)."""
    if not 0.0 <= target <= cap:
        raise PrunekitError(f"--suggest {target}: the overall sparsity must lie in [0, {cap}]")
    capped: set[str] = set()
    result = dict(ratios)
    for _ in range(len(ratios) + 1):
        free = [layer for layer in ratios if layer not in capped]
        needed = target * sum(sizes.values()) - cap * sum(sizes[layer] for layer in capped)
        weight = sum(sizes[layer] * ratios[layer] for layer in free)
        if weight > 0:
            result.update({layer: ratios[layer] * needed / weight for layer in free})
        else:
            result.update({layer: needed / sum(sizes[layer] for layer in free) for layer in free})
        over = {layer for layer in free if result[layer] > cap}
        if not over:
            break
        capped |= over
        result.update({layer: cap for layer in capped})
    return result


def suggest_ratios(rows: Sequence[dict], target: float) -> tuple[dict[str, float], float]:
    """Layer-wise ratios with parameter-weighted mean ``target`` from sensitivity rows (see the module doc).

    Returns ``(ratios, threshold)``: every ratio lies in [0, MAX_SUGGESTED_RATIO], rounded to 4 decimals;
    ``threshold`` is the common accuracy-drop (percentage points) the bisection settled on.
    """
    curves = drop_curves(rows)
    if not curves:
        raise PrunekitError("the sensitivity table holds no pruned layer; run the analysis first")
    sizes = {layer: size for layer, (_, _, size) in curves.items()}

    def at(threshold: float) -> dict[str, float]:
        return {layer: ratio_at(xs, ys, threshold) for layer, (xs, ys, _) in curves.items()}

    low, high = 0.0, max(max(ys) for _, ys, _ in curves.values())
    if weighted_mean(at(low), sizes) >= target:
        high = low
    for _ in range(BISECTION_STEPS):
        middle = (low + high) / 2
        if weighted_mean(at(middle), sizes) < target:
            low = middle
        else:
            high = middle
    ratios = rescale(at(high), sizes, target)
    return {layer: round(min(r, MAX_SUGGESTED_RATIO), 4) for layer, r in ratios.items()}, high


def allocation_candidates(model: nn.Module, rows: Sequence[dict], target: float, granularity: str = "unstructured",
                          include_classifier: bool = False) -> dict[str, dict[str, float]]:
    """``{name: {layer: ratio}}`` of the allocations :func:`choose_allocation` compares, all reaching
    ``target`` over the analysed layers (see the module doc). Does not modify ``model``."""
    sized = {layer: size for layer, (_, _, size) in drop_curves(rows).items()}
    candidates = {"uniform": {layer: round(target, 6) for layer in sized}}
    if granularity == "unstructured":
        from prunekit.models.layers import prunable_layers
        from prunekit.prune.unstructured import global_masks

        modules = {name: m for name, m in prunable_layers(model).items() if name in sized}
        for scoring, name in (("magnitude", "global"), ("lamp", "lamp")):
            masks = global_masks(modules, target, scoring)
            candidates[name] = {layer: round(min(1.0 - float(masks[f"{layer}.weight"].float().mean()),
                                                 MAX_SUGGESTED_RATIO), 6) for layer in modules}
    candidates["sensitivity"] = suggest_ratios(rows, target)[0]
    return candidates


def choose_allocation(model: nn.Module, candidates: dict[str, dict[str, float]], evaluate: Evaluator,
                      granularity: str = "unstructured", criterion: str = "l1") -> tuple[str, list[dict]]:
    """Prune a copy of ``model`` by every candidate and evaluate the whole network with ``evaluate``;
    returns ``(best name, [{"allocation", "top1", "loss"}, ...])``. Best = highest top-1, then lowest loss,
    then earlier in ``candidates`` (put ``uniform`` first so a tie keeps it). ``model`` is not modified."""
    example = evaluate.example_inputs()
    results = []
    for name, ratios in candidates.items():
        config = PruneConfig(granularity=granularity, ratios=ratios, criterion=criterion)
        record = point_record(pruned_copy(model, config, example), evaluate)
        results.append({"allocation": name, "top1": record["top1"], "loss": record["loss"]})
    best = min(results, key=lambda r: (-r["top1"], r["loss"]))
    return best["allocation"], results


def write_ratio_file(ratios: dict[str, float], path: str | Path, header: Sequence[str] = ()) -> Path:
    """A YAML ratio file (``layer: ratio``) for ``prunekit prune --ratios``, with ``header`` comment lines."""
    import yaml

    comments = "".join(f"# {line}\n" for line in header)
    return atomic_write_text(path, comments + yaml.safe_dump(ratios, sort_keys=False))
