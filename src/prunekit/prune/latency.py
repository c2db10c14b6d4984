"""Prune to a measured latency: allocate widths on a latency table, measure the pruned model against the dense
one, correct the table, and repeat until the measured ratio is within tolerance of the target.

The allocation is :func:`prunekit.prune.allocate.select_for_latency` (a knapsack over the table of
:mod:`prunekit.measure.latency`). The table's prediction is a model: after each pruned candidate is timed
interleaved with the dense model (:func:`prunekit.measure.time_interleaved`, paired per-round ratios), the
table's constant overhead is fitted to that measurement (:meth:`LatencyTable.calibrate`); where that cannot
explain the measurement (a layer time the table has wrong), the next allocation aims lower or higher by the
remaining error (:func:`corrected_aim`). The allocation then runs again from the dense model. :class:`LatencyResult` records what was asked, predicted and measured at
every attempt, and why it stopped.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.layers import ZeroWidthLayer

#: Stop once the measured latency ratio is within this fraction of the target (0.05: 0.5 ± 0.025).
TOLERANCE = 0.05
#: Attempts (allocate, prune, measure) at most.
ATTEMPTS = 3


@dataclass
class Attempt:
    """One allocation: the table's ``predicted`` ratio to the dense latency and the ``measured`` one
    (median of paired per-round ratios pruned / dense), with the measured speed-up's quartiles."""

    predicted: float
    measured: float
    speedup_q1: float
    speedup_q3: float


@dataclass
class LatencyResult:
    """``asked``: the target ratio; ``attempts`` in order; ``chosen``: index of the attempt kept (the one
    closest to the target without exceeding it by more than the tolerance, else the fastest);
    ``reason``: why the loop stopped."""

    asked: float
    attempts: list[Attempt] = field(default_factory=list)
    chosen: int = 0
    reason: str = ""
    context: dict = field(default_factory=dict)

    @property
    def predicted(self) -> float:
        return self.attempts[self.chosen].predicted

    @property
    def measured(self) -> float:
        return self.attempts[self.chosen].measured

    def as_dict(self) -> dict:
        return {"asked": self.asked, "predicted": self.predicted, "measured": self.measured,
                "speedup": 1 / self.measured, "reason": self.reason, "context": self.context,
                "attempts": [asdict(a) for a in self.attempts], "chosen": self.chosen}


def within(measured: float, asked: float, tolerance: float = TOLERANCE) -> bool:
    return abs(measured - asked) <= tolerance * asked


def measure_ratio(prepared_dense, pruned: nn.Module, context: dict, repeats: int = 40):
    """Pruned / dense latency as the median of paired per-round ratios, interleaved, in the table's context
    (device, threads, batch size). ``prepared_dense``: the dense model as the eager runtime runs it
    (:func:`prunekit.inference.prepare_for_inference`, made once by the caller); ``pruned`` is prepared the same
    way here. Returns (ratio, speed-up q1, speed-up q3)."""
    from prunekit.images import example_input
    from prunekit.inference import prepare_for_inference
    from prunekit.measure import paired_ratio, time_interleaved

    pruned = prepare_for_inference(pruned, example_input(), context["device"])
    dense_t, pruned_t = time_interleaved([prepared_dense, pruned], context["batch_size"], context["device"],
                                         repeats=repeats, threads=context["threads"])
    speedup = paired_ratio(dense_t, pruned_t)
    return 1 / speedup.median, speedup.q1, speedup.q3


def prune_to_latency(model: nn.Module, latency_target: float, table=None, example_inputs: Any = None,
                     criterion: str = "l1", round_to: int | None = None, seed: int = 0,
                     tolerance: float = TOLERANCE, attempts: int = ATTEMPTS, repeats: int = 40,
                     batches=None) -> tuple[nn.Module, LatencyResult]:
    """A physically pruned copy of ``model`` whose measured latency is ``latency_target`` × the dense one
    (within ``tolerance`` when reachable), and the :class:`LatencyResult`. ``table``: a
    :class:`prunekit.measure.latency.LatencyTable` of ``model`` (default: built now on the CPU, 1 thread,
    batch 1, from the cache when there). ``model`` is not changed; the table's ``fixed_ms`` is refitted.
    ``batches``: labelled batches; with them every group's widths are valued by the measured loss (a
    :class:`~prunekit.prune.importance.LossProbe` on ``model``, shared by the attempts; see
    :func:`prunekit.prune.allocate.measured_values`), and a data-driven ``criterion`` (``taylor``) reads
    them. Without them widths are valued by the criterion's scores. Raises PrunekitError (asked vs
    reachable) when the table predicts the target cannot be reached."""
    from prunekit.images import example_input
    from prunekit.inference import prepare_for_inference
    from prunekit.measure.latency import build_latency_table
    from prunekit.prune.channels import prune_channels

    from prunekit.prune.importance import LossProbe

    table = table or build_latency_table(model)
    dense = copy.deepcopy(model).eval()
    prepared_dense = prepare_for_inference(dense, example_input(), table.context["device"])
    batches = LossProbe(dense, batches) if batches else None
    result = LatencyResult(latency_target, context=dict(table.context))
    candidates, aim = [], latency_target
    for _ in range(attempts):
        pruned = copy.deepcopy(dense)
        try:
            prune_channels(pruned, example_inputs, criterion=criterion, seed=seed, latency_target=aim,
                           round_to=round_to, latency=table, batches=batches)
        except PrunekitError as exc:
            if not result.attempts:
                raise
            result.reason = f"stopped: after recalibration {exc}"
            break
        widths = pruned_widths(pruned)
        predicted = table.predict(widths) / table.dense_ms
        measured, q1, q3 = measure_ratio(prepared_dense, pruned, table.context, repeats)
        result.attempts.append(Attempt(predicted, measured, q1, q3))
        candidates.append(pruned)
        if within(measured, latency_target, tolerance):
            result.reason = f"measured {measured:.3f} is within {100 * tolerance:.0f}% of the target"
            break
        table.calibrate(widths, measured)
        aim = corrected_aim(latency_target, table.predict(widths) / table.dense_ms, measured)
    else:
        result.reason = (f"not within {100 * tolerance:.0f}% of the target after {attempts} attempts "
                         "(machine noise or a latency the table cannot model)")
    result.chosen = best_attempt(result.attempts, latency_target, tolerance)
    return candidates[result.chosen], result


def corrected_aim(asked: float, predicted: float, measured: float) -> float:
    """The target the next allocation aims at: ``asked`` when the recalibrated table now predicts the measured
    ratio (within the tolerance), else ``asked`` scaled by what the table still gets wrong (``predicted /
    measured``), so the next model lands nearer ``asked``; kept in (0, 1]."""
    if within(predicted, measured):
        return asked
    return min(1.0, max(1e-3, asked * predicted / measured))


def pruned_widths(model: nn.Module) -> dict[str, tuple[int, int]]:
    """{Conv2d / Linear name: (input width, output width)} of a (pruned) model; a conv of a removed residual
    branch (a ZeroWidthLayer) has a width 0."""
    widths = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, ZeroWidthLayer)):
            widths[name] = (module.in_channels, module.out_channels)
        elif isinstance(module, nn.Linear):
            widths[name] = (module.in_features, module.out_features)
    return widths


def best_attempt(attempts: list[Attempt], asked: float, tolerance: float) -> int:
    """The attempt within tolerance closest to the target, else the one closest to it from below (faster),
    else the fastest."""
    close = [i for i, a in enumerate(attempts) if within(a.measured, asked, tolerance)]
    if close:
        return min(close, key=lambda i: abs(attempts[i].measured - asked))
    below = [i for i, a in enumerate(attempts) if a.measured <= asked]
    if below:
        return max(below, key=lambda i: attempts[i].measured)
    return min(range(len(attempts)), key=lambda i: attempts[i].measured)
