"""Latency tables and the latency-target allocation: lookups, the cache, the knapsack optimum on a hand-built
table, and an impossible target refused with asked vs reachable."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure.latency import LayerCurve, LayerShape, build_latency_table, width_grid
from prunekit.prune import prune_channels
from prunekit.prune.allocate import knapsack, lamp_normalised
from prunekit.prune.latency import Attempt, best_attempt


def test_width_grid_measures_every_small_width_and_steps_over_large_ones():
    assert width_grid(16) == list(range(1, 17))
    assert width_grid(64) == list(range(2, 65, 2))
    assert width_grid(100)[-1] == 100 and width_grid(100)[0] == 4


def test_curve_looks_up_the_next_measured_width_and_finds_the_steps():
    curve = LayerCurve(inputs=[2, 4], outputs=[2, 4, 6, 8], ms=[[1, 2, 3, 4], [2, 3.0, 3.5, 2.5]])
    assert curve.at(1, 1) == 1 and curve.at(3, 5) == 3.5 and curve.at(4, 8) == 2.5
    assert curve.steps() == [8]  # at full input, 8 channels run faster than 6


def test_table_is_cached_per_layer_shape(tmp_path, tiny_vgg):
    measured = []

    def fake_measure(shape: LayerShape, context: dict) -> LayerCurve:
        measured.append(shape)
        ins, outs = shape.grid()
        return LayerCurve(ins, outs, [[1e-6 * i * o for o in outs] for i in ins])  # below the real model

    first = build_latency_table(tiny_vgg, folder=tmp_path, measure=fake_measure)
    shapes = len(first.curves)
    assert shapes == len(measured) and first.cached == 0 and len(first.layers) >= shapes
    again = build_latency_table(tiny_vgg, folder=tmp_path, measure=fake_measure)
    assert again.cached == shapes and len(measured) == shapes  # nothing measured twice
    assert again.predict() == pytest.approx(again.dense_ms)  # at full width the prediction is the measurement
    other = build_latency_table(tiny_vgg, folder=tmp_path, batch_size=2, measure=fake_measure)
    assert other.cached == 0  # the batch size is part of the key


def test_calibrate_fits_the_fixed_overhead_through_the_measured_point(tiny_vgg, tmp_path):
    def flat(shape, context):
        ins, outs = shape.grid()
        return LayerCurve(ins, outs, [[0.0 for _ in outs] for _ in ins])

    table = build_latency_table(tiny_vgg, folder=tmp_path, measure=flat)
    table.dense_ms = 10.0  # all overhead: the prediction is 10 ms × the activation fraction
    half = {name: (max(1, i // 2), max(1, o // 2)) for name, (i, o) in table.full.items()}
    active = table.activation_fraction(half)
    assert table.predict(half) == pytest.approx(10 * active)
    table.calibrate(half, 0.8)
    assert table.predict(half) == pytest.approx(8.0) and table.predict() == pytest.approx(10.0)
    assert table.fixed_ms == pytest.approx((8 - 10 * active) / (1 - active))


def test_knapsack_finds_the_optimum_by_hand():
    values = [[0.0, 5.0, 6.0], [0.0, 4.0, 7.0]]
    costs = [[0.0, 1.0, 3.0], [0.0, 3.0, 4.0]]
    assert knapsack(values, costs, 4.0) == [1, 1]  # 9 at cost 4 (not 6 + 0, or 5 + 0, or 0 + 7)
    assert knapsack(values, costs, 3.0) == [2, 0]  # 6 at cost 3 beats 5 (cost 1) and 4 (cost 3)
    assert knapsack(values, [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]], 1.5) is None


class TwoBranches(nn.Module):
    """Two 1x1 convs side by side, concatenated into the classifier: two independent channel groups."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 1), nn.Conv2d(3, 4, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        y = torch.cat([self.a(x), self.b(x)], 1)
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(y, 1), 1))


class HandTable:
    """A latency table written by hand: ms per output width of ``a`` and ``b`` plus 1 ms for the rest."""

    A = {1: 1.0, 2: 1.0, 3: 3.0, 4: 3.0}  # a step: 2 channels cost what 1 does
    B = {1: 0.5, 2: 1.5, 3: 2.5, 4: 3.5}
    full = {"a": (3, 4), "b": (3, 4), "fc": (8, 10)}
    dense_ms = 1.0 + A[4] + B[4]

    def predict(self, widths=None):
        widths = widths or {}
        return 1.0 + self.A[widths.get("a", (3, 4))[1]] + self.B[widths.get("b", (3, 4))[1]]

    def grid_for(self, full):
        return list(range(1, full + 1))


def scored_model() -> TwoBranches:
    model = TwoBranches()
    with torch.no_grad():
        for conv, norms in ((model.a, [4.0, 1.0, 3.0, 2.0]), (model.b, [8.0, 0.5, 6.0, 1.0])):
            conv.weight.copy_(torch.tensor(norms).view(4, 1, 1, 1).expand(4, 3, 1, 1) / 3)
            conv.bias.zero_()
    return model


def best_by_brute_force(target: float) -> tuple[int, int]:
    """The (width a, width b) with the most LAMP-normalised L1 importance kept within the budget."""
    kept = {}
    for name, norms in (("a", [4.0, 1.0, 3.0, 2.0]), ("b", [8.0, 0.5, 6.0, 1.0])):
        scores = lamp_normalised(dict(enumerate(norms)))
        ranked = sorted(scores.values(), reverse=True)
        kept[name] = {w: sum(ranked[:w]) for w in range(1, 5)}
    table = HandTable()
    fits = [(wa, wb) for wa, wb in itertools.product(range(1, 5), repeat=2)
            if 1.0 + table.A[wa] + table.B[wb] <= target * table.dense_ms]
    return max(fits, key=lambda w: kept["a"][w[0]] + kept["b"][w[1]])


@pytest.mark.parametrize("target", [0.9, 0.75, 0.6, 0.45])
def test_latency_target_keeps_the_most_importance_within_the_predicted_latency(target):
    model = scored_model()
    prune_channels(model, latency_target=target, latency=HandTable())
    widths = (model.a.out_channels, model.b.out_channels)
    assert widths == best_by_brute_force(target)
    assert HandTable().predict({"a": (3, widths[0]), "b": (3, widths[1])}) <= target * HandTable.dense_ms


def test_round_to_forces_multiples():
    model = scored_model()
    prune_channels(model, latency_target=0.75, latency=HandTable(), round_to=2)
    assert model.a.out_channels % 2 == 0 and model.b.out_channels % 2 == 0


def test_an_impossible_latency_target_is_refused_with_asked_and_reachable():
    # the narrowest widths (1, 1) are predicted at 1 + 1 + 0.5 = 2.5 ms of 7.5: 0.333 of the dense latency
    with pytest.raises(PrunekitError, match=r"latency target 0\.200 cannot be reached.*0\.333 of the dense latency"
                                            r".*ask for at least 0\.34"):
        prune_channels(scored_model(), latency_target=0.2, latency=HandTable())


def test_the_attempt_kept_is_the_closest_within_tolerance_else_the_closest_faster():
    attempts = [Attempt(0.5, 0.60, 1, 1), Attempt(0.5, 0.52, 1, 1), Attempt(0.5, 0.49, 1, 1)]
    assert best_attempt(attempts, 0.5, 0.05) == 2
    assert best_attempt([Attempt(0.5, 0.7, 1, 1), Attempt(0.5, 0.4, 1, 1)], 0.5, 0.05) == 1
    assert best_attempt([Attempt(0.5, 0.7, 1, 1), Attempt(0.5, 0.6, 1, 1)], 0.5, 0.05) == 1


class Chain(nn.Module):
    """conv a → conv b → pool → fc: conv b's time depends on both pruned widths."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 8, 1)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(self.b(self.a(x)), 1), 1))


class ProductTable:
    """1 ms + 0.1 ms per channel of a + 0.02 ms per (a channel × b channel) pair: not separable."""

    full = {"a": (3, 8), "b": (8, 8), "fc": (8, 10)}
    dense_ms = 1.0 + 0.8 + 0.02 * 64

    def predict(self, widths=None):
        widths = widths or {}
        wa, wb = widths.get("a", (3, 8))[1], widths.get("b", (8, 8))[1]
        return 1.0 + 0.1 * wa + 0.02 * wa * wb

    def grid_for(self, full):
        return list(range(1, full + 1))


@pytest.mark.parametrize("target", [0.8, 0.6, 0.5])
def test_a_layer_between_two_pruned_groups_still_gets_a_feasible_allocation(target):
    torch.manual_seed(0)
    model = Chain()
    prune_channels(model, latency_target=target, latency=ProductTable())
    wa, wb = model.a.out_channels, model.b.out_channels
    predicted = ProductTable().predict({"a": (3, wa), "b": (wa, wb)})
    assert predicted <= target * ProductTable.dense_ms
    assert wa * wb > 1 and predicted > 0.8 * target * ProductTable.dense_ms  # not the narrowest: near the budget


def test_the_next_attempt_aims_by_what_the_table_still_gets_wrong():
    from prunekit.prune.latency import corrected_aim

    assert corrected_aim(0.5, 0.51, 0.50) == 0.5  # the recalibrated table now explains the measurement
    assert corrected_aim(0.5, 0.4, 0.8) == pytest.approx(0.25)  # the table was optimistic: aim lower
    assert corrected_aim(0.5, 0.6, 0.3) == pytest.approx(1.0)  # pessimistic: aim higher, never above 1


def test_a_cache_that_adds_up_to_more_than_the_dense_model_is_measured_again(tmp_path, tiny_vgg):
    def slow(shape, context):  # entries from a busy machine: far slower than the model measured now
        ins, outs = shape.grid()
        return LayerCurve(ins, outs, [[1e3 for _ in outs] for _ in ins])

    measured = []

    def fast(shape, context):
        measured.append(shape)
        ins, outs = shape.grid()
        return LayerCurve(ins, outs, [[0.0 for _ in outs] for _ in ins])

    build_latency_table(tiny_vgg, folder=tmp_path, measure=slow)
    table = build_latency_table(tiny_vgg, folder=tmp_path, measure=fast)
    assert table.cached == 0 and len(measured) == len(table.curves) and table.overhead_ms >= 0
    assert build_latency_table(tiny_vgg, folder=tmp_path, measure=fast).cached == len(table.curves)  # replaced


def test_round_to_rounds_a_macs_target_up_to_multiples_and_still_meets_it(tiny_vgg):
    from prunekit.measure import count_macs

    dense = count_macs(tiny_vgg)
    model = prune_channels(tiny_vgg, macs_target=0.5, round_to=4)
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(w % 4 == 0 for w in widths) and widths != [8, 16, 16, 16]  # pruned, in multiples of 4
    assert count_macs(model) <= 0.5 * dense


def test_prune_and_prune_channels_value_latency_widths_on_the_same_batches(tiny_data):
    """One rule (pipeline.pruning.scoring_batches) for both commands: a latency target reads training batches
    whatever the criterion; a ratio with a score-only criterion reads none."""
    from prunekit.pipeline.pruning import LATENCY_VALUE_BATCHES, SCORING_BATCHES, scoring_batches
    from prunekit.prune.channels import channel_target
    from prunekit.prune.importance import PROBE_IMAGES

    cpu = torch.device("cpu")
    l1 = scoring_batches(tiny_data, channel_target(latency_target=0.5, criterion="l1", seed=3), cpu)
    assert len(l1) == LATENCY_VALUE_BATCHES and sum(len(labels) for _, labels in l1) >= PROBE_IMAGES
    taylor = scoring_batches(tiny_data, channel_target(latency_target=0.5, criterion="taylor", seed=3), cpu)
    assert len(taylor) == SCORING_BATCHES and torch.equal(taylor[0][1], l1[0][1])  # same seed: same images
    assert scoring_batches(tiny_data, channel_target(ratio=0.5, criterion="l1"), cpu) is None
