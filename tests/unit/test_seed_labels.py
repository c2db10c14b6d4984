"""The --seeds summary names models without one seed's accuracy (issue 17)."""

import pytest

from prunekit.experiment.seeds import model_label


@pytest.mark.parametrize("name, label", [
    ("00_baseline.pt", "00_baseline"),
    ("l1-50__Omp_filter_0.50_acc_91.52.pt", "l1-50"),
    ("l1-50__Omp_filter_0.50_acc_91.52_int8.pt", "l1-50_int8"),
    ("ft_acc_90.10.pt", "ft"),
    ("ft_acc_90.10_int8.pt", "ft_int8"),
])
def test_model_label_drops_the_seed_specific_accuracy(name, label):
    assert model_label(name) == label
