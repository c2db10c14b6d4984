"""The structured-pruning engine on networks written in styles it was not designed for.

Every case of the user-style zoo, at several ratios and criteria: the plan changes nothing, the masked
twin equals the physical model (eval mode, randomised BN statistics), ``plan.removed`` matches the new
widths, forward and backward run, and a checkpoint round trip gives the same output.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.prune import apply_masks
from prunekit.prune.channels import plan_channels, prune_channels

from conftest import randomise_norms

from . import CASES, logits, relative_error

SETTINGS = [dict(ratio=0.3, criterion="l1"), dict(ratio=0.5, criterion="random", seed=3),
            dict(ratio=0.4, criterion="l2", scope="global")]


pytestmark = pytest.mark.usefixtures("one_thread")


def width(module: nn.Module) -> int:
    """Output channels of a conv, output features of a Linear (a channels-last Linear's filters)."""
    return module.out_features if isinstance(module, nn.Linear) else module.out_channels


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: "-".join(str(v) for v in s.values()))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_masked_twin_equals_physical_model(case, setting):
    torch.manual_seed(0)
    model = randomise_norms(case.build())
    x = torch.randn(case.input_shape)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    layers = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
    widths = {n: width(m) for n, m in model.named_modules() if isinstance(m, layers)}

    plan = plan_channels(model, x, **setting)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "plan_channels changed the model"
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    with torch.no_grad():
        expected = logits(twin(x))
    pruned = prune_channels(model, x, plan=plan)
    assert pruned is model
    with torch.no_grad():
        actual = logits(model(x))
    assert relative_error(expected, actual) <= 1e-5

    modules = dict(model.named_modules())
    for name, removed in plan.removed.items():
        assert removed == sorted(set(removed)) and width(modules[name]) == widths[name] - len(removed)
    untouched = set(widths) - set(plan.removed)
    assert all(width(modules[n]) == widths[n] for n in untouched if not isinstance(modules[n], nn.Linear))

    model.train()
    logits(model(x)).square().mean().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "indexes" not in n)


def test_most_cases_lose_channels_and_every_kept_channel_has_a_reason():
    pruned = 0
    for case in CASES:
        model = randomise_norms(case.build())
        plan = plan_channels(model, torch.randn(case.input_shape), ratio=0.5)
        pruned += bool(plan.removed)
        assert plan.blocked, case.name  # at least the network output is named
    assert pruned >= len(CASES) - 3  # the TorchScript cases keep almost everything by design
@pytest.mark.parametrize("case", [c for c in CASES if isinstance(c.build, type)],
                         ids=lambda c: c.name)
def test_pruned_user_model_checkpoint_round_trip(case, tmp_path):
    """Cases built by a plain class call: the checkpoint records the class and rebuilds it with no code."""
    model = randomise_norms(case.build())
    x = torch.randn(case.input_shape)
    prune_channels(model, x, ratio=0.5)
    path = save_checkpoint(model, tmp_path / "pruned.pt")
    loaded = load_checkpoint(path).model.eval()
    with torch.no_grad():
        torch.testing.assert_close(logits(loaded(x)), logits(model(x)))


def test_unstructured_pruning_refuses_weights_inside_torchscript_blocks_by_name():
    from prunekit.errors import PrunekitError
    from prunekit.prune import prune_unstructured

    case = next(c for c in CASES if c.name == "jit_script_block")
    model = case.build()
    with pytest.raises(PrunekitError, match="TorchScript block .*block1"):
        prune_unstructured(model, sparsity=0.5)
    assert not any(n.endswith("_orig") for n, _ in model.named_parameters())  # nothing was masked


# Patterns whose every channel group can follow pruning (the ConvNeXt-style residual streams too: their LayerNorms
# over channels run at full width).
SECOND_ZOO = [c for c in CASES if c.pattern in ("norms", "channels_last", "kernels")
              or c.name in ("dpn_dual_path", "partial_residual_slices", "hierarchical_split_width")]


@pytest.mark.parametrize("case", SECOND_ZOO, ids=lambda c: c.name)
def test_second_zoo_achieves_what_is_asked(case):
    outcome = plan_channels(randomise_norms(case.build()), torch.randn(case.input_shape), ratio=0.5).outcome
    assert outcome.achieved_filters >= 0.8 * 0.5 and outcome.achieved_macs >= 0.4, outcome.summary()
    assert outcome.shortfall() is None


@pytest.mark.parametrize("case", SECOND_ZOO + [c for c in CASES if c.name in ("dpn_dual_path", "csp_half_split")],
                         ids=lambda c: c.name)
def test_plan_predicts_the_cut_made_without_it(case):
    """plan_channels(m, x, **args) then prune_channels(m, x, **args) with no plan removes exactly plan.removed."""
    torch.manual_seed(0)
    model = randomise_norms(case.build())
    x = torch.randn(case.input_shape)
    widths = {n: width(m) for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    plan = plan_channels(model, x, ratio=0.5, criterion="l1")
    prune_channels(model, x, ratio=0.5, criterion="l1")
    modules = dict(model.named_modules())
    assert plan.removed
    assert {n: widths[n] - width(modules[n]) for n in widths if width(modules[n]) != widths[n]} == \
        {n: len(r) for n, r in plan.removed.items()}
