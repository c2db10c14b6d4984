"""The eager runtime's inference preparation (trace, fold BatchNorm, reduce removed branches) on every network
of the user-style zoo, dense and channel-pruned: the prepared copy computes the same function, and every style
traces except those named in :data:`RUN_AS_THEY_ARE` (which run as they are)."""

from __future__ import annotations

import pytest
import torch

from conftest import randomise_norms
from prunekit.inference import PREPARED_AS, prepare_for_inference
from prunekit.prune.channels import prune_channels

from . import CASES, logits, relative_error

pytestmark = pytest.mark.usefixtures("one_thread")

#: Styles torch.fx cannot trace (Python on tensor sizes, an index tensor, a pad computed at run time,
#: TorchScript): prepared as the model itself.
RUN_AS_THEY_ARE = {"shape_int_half_slice", "shape_if_size_mismatch", "shape_unpack_shape2",
                   "netslim_channel_selection", "hierarchical_split_width", "pyramid_runtime_pad",
                   "jit_script_function", "selective_kernel_split"}


@pytest.mark.filterwarnings("ignore:prune_channels removed nothing")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_the_prepared_model_computes_the_same_function(case):
    torch.manual_seed(0)
    model = randomise_norms(case.build())
    x = torch.randn(case.input_shape)
    expected = "module" if case.name in RUN_AS_THEY_ARE else "graph"
    for label, network in (("dense", model), ("pruned", prune_channels(randomise_norms(case.build()), x, ratio=0.5))):
        prepared = prepare_for_inference(network, x[:1])
        with torch.no_grad():
            assert relative_error(logits(network(x)), logits(prepared(x))) <= 1e-4, label
        assert getattr(prepared, PREPARED_AS) == expected, label


def test_the_styles_that_run_as_they_are_exist():
    assert RUN_AS_THEY_ARE <= {case.name for case in CASES}
