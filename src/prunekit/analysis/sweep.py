"""Accuracy against pruning rate with no retraining: how far can a trained model be pruned as is?

Each point prunes a FRESH deep copy of the loaded model to one rate with :func:`prunekit.prune.compute_masks`
(``unstructured``: the fraction of conv + linear weights in scope, classifier spared; ``filter``: the fraction
of conv filters; ``scope`` global or per layer) and evaluates it. A point records the rate, the achieved
overall sparsity (zeros over every conv + linear weight), all and non-zero parameters, the non-zero
parameters' memory footprint at 32 bits, and top-1/top-5/loss.

Resumable: the CSV is rewritten atomically after every point, and points already in it are skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from torch import nn

from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.analysis.results import PointTable
from prunekit.analysis.points import Evaluator, point_record, pruned_copy, rate_key

SWEEP_COLUMNS = ["rate", "sparsity", "params", "nonzero_params", "nonzero_bytes", "top1", "top5", "loss"]


def sweep_rates(start: float, stop: float, steps: int) -> list[float]:
    """``steps`` evenly spaced rates from ``start`` to ``stop`` inclusive (0, 0.05, …, 0.95 for 0, 0.95, 20)."""
    if not 0.0 <= start <= stop < 1.0:
        raise PrunekitError(f"need 0 <= --from <= --to < 1, got --from {start} --to {stop}")
    if steps < 1:
        raise PrunekitError(f"--steps must be at least 1, got {steps}")
    if steps == 1 or start == stop:
        return [rate_key(start)]
    return [rate_key(start + (stop - start) * i / (steps - 1)) for i in range(steps)]


def sweep_config(rate: float, granularity: str, scope: str, criterion: str = "l1",
                 include_classifier: bool = False) -> PruneConfig:
    return PruneConfig(granularity=granularity, sparsity=rate, scope=scope, criterion=criterion,
                       include_classifier=include_classifier)


def sweep_name(granularity: str, scope: str, start: float, stop: float) -> str:
    """File stem of a sweep, e.g. ``sweep_unstructured_global_0-0.95`` (the range keeps zooms apart)."""
    return f"sweep_{granularity}_{scope}_{start:g}-{stop:g}"


def run_sweep(model: nn.Module, rates: Sequence[float], evaluate: Evaluator, csv_path: str | Path,
              granularity: str = "unstructured", scope: str = "global", criterion: str = "l1",
              include_classifier: bool = False, settings: dict | None = None, progress: bool = True) -> list[dict]:
    """Evaluate ``model`` pruned to each of ``rates`` (fresh copy each) and return every row of the CSV.

    ``settings`` (e.g. the checkpoint and its checksum) are saved beside the CSV with the pruning and
    data settings; a CSV written with other settings is refused. Points already in the CSV are skipped.
    Side effect: moves ``model`` to the evaluator's device. Rows come back sorted by rate.
    """
    from tqdm.auto import tqdm

    model.to(evaluate.device).eval()
    table = PointTable(csv_path, SWEEP_COLUMNS, key=lambda row: rate_key(row["rate"]),
                       settings={"kind": "sweep", **(settings or {}), **evaluate.describe(),
                                 "granularity": granularity, "scope": scope, "criterion": criterion,
                                 "include_classifier": include_classifier})
    done = table.done()
    todo = [r for r in dict.fromkeys(rate_key(r) for r in rates) if r not in done]
    example = evaluate.example_inputs()
    bar = tqdm(total=len(rates), initial=len(rates) - len(todo), desc="sweep", unit="point",
               disable=not progress, dynamic_ncols=True)
    for rate in todo:
        config = sweep_config(rate, granularity, scope, criterion, include_classifier)
        record = point_record(pruned_copy(model, config, example), evaluate)
        table.add({"rate": rate, **record})
        bar.set_postfix(rate=f"{rate:.3f}", top1=f"{record['top1']:.2f}%")
        bar.update()
    bar.close()
    return sorted(table.rows, key=lambda row: row["rate"])
