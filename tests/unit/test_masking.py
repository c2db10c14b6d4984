"""Mask mechanics: masked is read from torch's re-parametrisation, never from names; all-or-nothing masks."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.errors import PrunekitError
from prunekit.masking import (apply_masks, effective_state_dict, extract_masks, has_masks, is_masked,
                              make_permanent, masked_keys, permanent_copy)
from prunekit.measure import count_nonzero_parameters, count_parameters, profile


class WithAttnMask(nn.Module):
    """An unpruned model with buffers whose names end in ``_mask`` and ``_orig`` (not pruning masks)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)
        self.register_buffer("attn_mask", torch.tensor([1.0, 0.0, 1.0, 1.0]))
        self.register_buffer("attn_orig", torch.ones(4))

    def forward(self, x):
        h = self.conv(x).mean(dim=(2, 3)) * self.attn_mask * self.attn_orig
        return self.fc(h)


def test_a_buffer_named_attn_mask_is_not_a_mask():
    torch.manual_seed(0)
    model = WithAttnMask()
    assert not has_masks(model) and not is_masked(model, "attn")
    assert extract_masks(model) == {} and masked_keys(model) == {}
    assert set(effective_state_dict(model)) == set(model.state_dict())
    make_permanent(model)  # nothing to remove: must not raise
    assert torch.equal(model.attn_mask, torch.tensor([1.0, 0.0, 1.0, 1.0]))
    assert count_parameters(model) == sum(p.numel() for p in model.parameters())


def test_model_with_attn_mask_saves_loads_and_profiles(tmp_path):
    torch.manual_seed(0)
    model = WithAttnMask().eval()
    x = torch.randn(2, 3, 8, 8)
    path = save_checkpoint(model, tmp_path / "attn.pt")
    assert torch.load(path, weights_only=True)["masks"] == {}
    loaded = load_checkpoint(path, model=WithAttnMask())
    assert loaded.masks == {}
    assert torch.equal(loaded.model.eval()(x), model(x))
    result = profile(loaded.model, input_size=(1, 3, 8, 8), timing=False)
    assert result.params == sum(p.numel() for p in model.parameters())
    assert result.nonzero_params == count_nonzero_parameters(model)


def test_a_masked_attn_model_keeps_its_own_buffer(tmp_path):
    model = WithAttnMask()
    mask = torch.ones_like(model.conv.weight, dtype=torch.bool)
    mask[0] = False
    apply_masks(model, {"conv.weight": mask})
    assert is_masked(model.conv) and not is_masked(model.fc) and has_masks(model)
    assert set(extract_masks(model)) == {"conv.weight"}
    copy = permanent_copy(model)
    assert not has_masks(copy) and torch.equal(copy.attn_mask, model.attn_mask)
    assert torch.all(copy.conv.weight[0] == 0)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("bad, message", [
    ({"features.0.weight": "half", "features.4.weight": torch.zeros(3)}, "has shape"),
    ({"features.0.weight": "half", "features.4.weight": "twos"}, "only 0 and 1"),
    ({"features.0.weight": "half", "features.99.weight": torch.ones(1)}, "not a parameter"),
    ({"features.0.weight": "half", "features.1.running_mean": torch.ones(8)}, "not a parameter"),
])
def test_an_invalid_mask_in_a_batch_leaves_the_model_untouched(tiny_vgg, bad, message):
    weight = tiny_vgg.features[0].weight
    half = (torch.arange(weight.numel()) % 2 == 0).view_as(weight)
    masks = {}
    for name, value in bad.items():
        if isinstance(value, str) and value == "half":
            masks[name] = half
        elif isinstance(value, str) and value == "twos":
            masks[name] = torch.full_like(tiny_vgg.features[4].weight, 2.0)
        else:
            masks[name] = value
    before = _state(tiny_vgg)
    with pytest.raises(PrunekitError, match=message):
        apply_masks(tiny_vgg, masks)
    assert not has_masks(tiny_vgg) and extract_masks(tiny_vgg) == {}
    after = tiny_vgg.state_dict()
    assert set(after) == set(before) and all(torch.equal(after[k], before[k]) for k in before)


def test_an_invalid_mask_leaves_an_already_masked_model_as_it_was(tiny_vgg):
    first = torch.rand_like(tiny_vgg.features[0].weight) > 0.5
    apply_masks(tiny_vgg, {"features.0.weight": first})
    before = _state(tiny_vgg)
    with pytest.raises(PrunekitError, match="has shape"):
        apply_masks(tiny_vgg, {"features.0.weight": torch.zeros_like(first), "features.4.weight": torch.ones(1)})
    assert torch.equal(extract_masks(tiny_vgg)["features.0.weight"], first)
    assert all(torch.equal(tiny_vgg.state_dict()[k], before[k]) for k in before)


def test_masks_compose_and_only_shrink(tiny_vgg):
    weight = tiny_vgg.features[0].weight
    a = (torch.arange(weight.numel()) % 2 == 0).view_as(weight)
    b = (torch.arange(weight.numel()) % 3 == 0).view_as(weight)
    apply_masks(tiny_vgg, {"features.0.weight": a})
    apply_masks(tiny_vgg, {"features.0.weight": b})
    assert torch.equal(extract_masks(tiny_vgg)["features.0.weight"], a & b)
    assert masked_keys(tiny_vgg) == {"features.0.weight": ("features.0.weight_orig", "features.0.weight_mask")}


def test_importing_train_loads_no_pruning_module():
    code = ("import prunekit.train, sys; "
            "assert not [m for m in sys.modules if m.startswith('prunekit.prune')], "
            "[m for m in sys.modules if m.startswith('prunekit.prune')]")
    subprocess.run([sys.executable, "-c", code], check=True)
