"""The eager runtime's inference preparation (trace, fold BatchNorm, reduce removed branches) on every network
of the user-style zoo, dense and channel-pruned: the prepared copy computes the same function, whether it was
traced or is run as it is; most styles trace."""

from __future__ import annotations

import pytest
import torch

from prunekit.prune.channels import prune_channels
from prunekit.inference import PREPARED_AS, prepare_for_inference

from . import CASES
from tests.conftest import randomise_norms

from .test_user_styles_pruning import logits, relative_error

TRACED: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    yield


@pytest.mark.filterwarnings("ignore:prune_channels removed nothing")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_prepared_model_computes_the_same_function(case):
    torch.manual_seed(0)
    model = randomise_norms(case.build())
    x = torch.randn(case.input_shape)
    for label, network in (("dense", model), ("pruned", prune_channels(randomise_norms(case.build()), x, ratio=0.5))):
        prepared = prepare_for_inference(network, x[:1])
        with torch.no_grad():
            assert relative_error(logits(network(x)), logits(prepared(x))) <= 1e-4, label
        TRACED[f"{case.name}/{label}"] = getattr(prepared, PREPARED_AS)


def test_most_styles_trace_and_fold():
    """Run after the parametrised test (same module, file order): at least half of the zoo, dense and pruned,
    is prepared as a folded graph, so a regression that makes every model fall back is caught."""
    if len(TRACED) < 2 * len(CASES):
        for case in CASES:
            test_the_prepared_model_computes_the_same_function(case)
    graphs = sum(kind == "graph" for kind in TRACED.values())
    assert graphs >= len(TRACED) // 2, {k: v for k, v in TRACED.items() if v != "graph"}
