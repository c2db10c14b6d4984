"""The public pretrained ResNets reproduce their stated accuracy on the real 509 test images."""

from __future__ import annotations

import pytest

from conftest import PRETRAINED, REAL_DATA, needs_shared
from prunekit.foreign import load_weights
from prunekit.data.normalisation import NORMALISATIONS
from prunekit.data import get_data
from prunekit.models import create_model
from prunekit.evaluation import evaluate_split


@needs_shared
@pytest.mark.parametrize("name,file,expected", [("resnet20", "resnet20-12fca82f.th", 91.2),
                                                  ("resnet56", "resnet56-4bfd9763.th", 94.1)])
def test_pretrained_accuracy_on_real_test_images(name, file, expected):
    data = get_data("cifar10", root=REAL_DATA)
    model = load_weights(create_model(name), PRETRAINED / file)
    mean, std = NORMALISATIONS["imagenet"]
    metrics = evaluate_split(model, data, "test", mean, std)
    assert metrics.images == 509
    assert metrics.top1 == pytest.approx(expected, abs=0.1)
