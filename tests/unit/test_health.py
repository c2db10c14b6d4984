"""Collapse warnings (prunekit.train.health) on hand-made metrics, and the predicted-class counts behind them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.train.health import collapse_warning, majority_limit
from prunekit.evaluation import Metrics


def metrics(top1: float, predicted: list[int]) -> Metrics:
    return Metrics(top1=top1, top5=top1, loss=2.0, images=sum(predicted), predicted=predicted)


def test_one_class_for_most_images_is_named():
    warning = collapse_warning(metrics(12.0, [10, 10, 60, 5, 5, 2, 2, 2, 2, 2]), what="the pruned model")
    assert warning.startswith("warning: the pruned model predicts class 2 for 60% of the 100 images")
    assert "chance 10.0%" in warning and "\n" not in warning


def test_a_balanced_model_is_quiet_also_at_chance_without_a_reference():
    assert collapse_warning(metrics(10.0, [10] * 10)) is None
    assert collapse_warning(metrics(91.0, [50, 10, 10, 10, 10, 2, 2, 2, 2, 2])) is None  # exactly 50%: not most


def test_chance_while_the_reference_learned_is_named():
    at_chance = metrics(14.0, [12, 8, 10, 10, 10, 10, 10, 10, 10, 10])  # ≤ 1.5 × 10%
    warning = collapse_warning(at_chance, ("training top-1", 97.0), "the trained model")
    assert "scores 14.00% top-1 on 100 images, chance level (10.0%), while its training top-1 is 97.00%" in warning
    assert collapse_warning(at_chance, ("training top-1", 29.0)) is None  # reference < 3 × chance: learned little
    assert collapse_warning(metrics(16.0, [10] * 10), ("training top-1", 97.0)) is None  # above 1.5 × chance


def test_two_classes_need_more_than_half():
    assert majority_limit(2) == 0.75 and majority_limit(10) == 0.5
    assert collapse_warning(metrics(70.0, [70, 30])) is None
    assert "class 0 for 80%" in collapse_warning(metrics(60.0, [80, 20]))


def test_evaluate_counts_predicted_classes():
    from prunekit.data import DeviceLoader
    from prunekit.evaluation import evaluate

    class AlwaysThree(nn.Module):
        def __init__(self):
            super().__init__()
            self.bias = nn.Parameter(torch.tensor([0.0, 0, 0, 5, 0]))

        def forward(self, x):
            return self.bias.expand(len(x), -1)

    images = torch.zeros(7, 3, 4, 4, dtype=torch.uint8)
    labels = torch.tensor([3, 3, 0, 1, 2, 4, 3])
    result = evaluate(AlwaysThree(), DeviceLoader(images, labels, 3, mean=(0, 0, 0), std=(1, 1, 1), train=False))
    assert result.predicted == [0, 0, 0, 7, 0] and result.top1 == pytest.approx(300 / 7)
    assert "predicted" not in result.as_dict("test_")  # metrics rows keep their four columns


def test_test_meta_names_the_four_numbers_of_a_test_evaluation():
    assert metrics(40.0, [3, 1]).as_test_meta() == {"test_top1": 40.0, "test_top5": 40.0, "test_loss": 2.0,
                                                   "test_images": 4}
