"""A LayerNorm (or RMSNorm) module over the channel axis, or an ECA-style gate, is cut by running it at full width
(FullWidthChannels): the wrapper's maths, ConvNeXt-style blocks (channels-last nn.LayerNorm, channels-first
LayerNorm2d-style subclass) and an ECA block pruned exactly and rebuilt from their channel config, and the cases
that keep their channels, with the reason."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models import FullWidthChannels, apply_channel_config, channel_config
from prunekit.prune.channels import plan_channels, prune_channels
from prunekit.prune.graph import trace_channels
from prunekit.prune.mask import apply_masks
from conftest import ConvMiddleConv

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channels of an NCHW tensor: permute, F.layer_norm, permute back."""

    def forward(self, x):
        x = F.layer_norm(x.permute(0, 2, 3, 1), self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNeXtBlock(nn.Module):
    """dwconv -> permute -> nn.LayerNorm -> Linear -> GELU -> Linear -> layer scale -> permute -> residual add."""

    def __init__(self, dim: int):
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.fc1, self.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x):
        y = self.norm(self.dwconv(x).permute(0, 2, 3, 1))
        y = self.gamma * self.fc2(F.gelu(self.fc1(y)))
        return x + y.permute(0, 3, 1, 2)


class TinyConvNeXt(nn.Module):
    """Patchify stem + LayerNorm2d, two blocks on an 8-channel stream, LayerNorm2d + stride-2 conv, pooled head."""

    def __init__(self):
        super().__init__()
        self.stem, self.stem_norm = nn.Conv2d(3, 8, 2, 2), LayerNorm2d(8)
        self.blocks = nn.Sequential(ConvNeXtBlock(8), ConvNeXtBlock(8))
        self.down = nn.Sequential(LayerNorm2d(8), nn.Conv2d(8, 16, 2, 2))
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        x = self.down(self.blocks(self.stem_norm(self.stem(x))))
        return self.head(x.mean((2, 3)))


def randomise(model: nn.Module) -> nn.Module:
    """Every 1-d parameter (norm γ and β, biases, layer scales) away from 0 and 1, so no zero is an accident."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.rand(p.shape, generator=g) + 0.5 if p.dim() == 1 else torch.randn(p.shape, generator=g))
    return model.eval()


def test_full_width_channels_runs_the_norm_on_zeros_for_the_removed_channels():
    norm = nn.LayerNorm(3, eps=0.0, elementwise_affine=False)
    x = torch.tensor([1.0, 3.0]).reshape(1, 1, 1, 2)  # channels 0 and 2 of 3, channels-last
    out = FullWidthChannels(norm, [0, 2], width=3, axis=3)(x)
    # on (1, 0, 3): mean 4/3, variance 14/9, so (x - mean) / std = (-1/3, 5/3) / (sqrt(14) / 3)
    torch.testing.assert_close(out.flatten(), torch.tensor([-1.0, 5.0]) / math.sqrt(14))
    with pytest.raises(PrunekitError, match="kept_index"):
        FullWidthChannels(norm, [2, 0], width=3, axis=3)


def test_convnext_style_stream_prunes_exactly_and_rebuilds_from_its_channel_config():
    model = randomise(TinyConvNeXt())
    widths = {n: getattr(m, "out_channels", getattr(m, "out_features", 0)) for n, m in model.named_modules()}
    plan = plan_channels(model, X, ratio=0.5)
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    assert plan.outcome.achieved_filters >= 0.8 * 0.5 and plan.outcome.shortfall() is None
    assert "stem" in plan.removed and "blocks.0.fc1" in plan.removed  # the stream and the MLP widths both go
    prune_channels(model, X, plan=plan)

    modules = dict(model.named_modules())
    for name, removed in plan.removed.items():
        now = getattr(modules[name], "out_channels", getattr(modules[name], "out_features", 0))
        assert now == widths[name] - len(removed)
    kept = [i for i in range(8) if i not in plan.removed["stem"]]
    for name in ("stem_norm", "blocks.0.norm", "blocks.1.norm", "down.0"):
        assert isinstance(modules[name], FullWidthChannels) and modules[name].kept_index.tolist() == kept
    assert modules["blocks.0.norm"].axis == 3 and modules["stem_norm"].axis == 1
    other = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(model(other), twin(other), rtol=1e-4, atol=1e-5)

    rebuilt = apply_channel_config(TinyConvNeXt(), channel_config(model))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(other), model(other))
    model.train()
    model(other).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_the_twin_zeroes_the_norm_gamma_and_beta_of_a_removed_channel():
    model = randomise(TinyConvNeXt())
    plan = plan_channels(model, X, ratio=0.5)
    removed = plan.removed["stem"]
    for name in ("stem_norm", "blocks.0.norm"):
        for param in ("weight", "bias"):
            mask = plan.masks[f"{name}.{param}"]
            assert [i for i in range(8) if not mask[i]] == removed


def test_a_pruned_model_prunes_again_through_its_full_width_norms():
    model = randomise(TinyConvNeXt())
    prune_channels(model, X, ratio=0.5)
    first = model.blocks[0].norm.kept_index.tolist()
    plan = plan_channels(model, X, ratio=0.5)
    assert len(plan.removed["stem"]) == 2 and plan.outcome.shortfall() is None
    assert [i for i in range(8) if not plan.masks["blocks.0.norm.inner.weight"][i]] == \
        [first[i] for i in plan.removed["stem"]]  # the twin zeroes the inner norm's entries of removed channels
    prune_channels(model, X, plan=plan)
    second = model.blocks[0].norm
    assert second.kept_index.tolist() == [c for i, c in enumerate(first) if i not in plan.removed["stem"]]
    assert second.width == 8 and isinstance(second.inner, nn.LayerNorm)
    rebuilt = apply_channel_config(TinyConvNeXt(), channel_config(model))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(X), model(X))


class WrongAxisNorm(nn.LayerNorm):
    """A LayerNorm subclass over the last axis of NCHW (the width, 4 like the channels): not over channels."""

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


def test_a_subclass_that_does_not_normalise_over_channels_fails_the_self_check_and_is_kept():
    x = X[:, :, :4, :4]  # width 4 = channels
    model = randomise(ConvMiddleConv(WrongAxisNorm(4)))
    with torch.no_grad():
        expected = model(x)
    plan = plan_channels(model, x, ratio=0.5)
    assert "conv1" not in plan.removed
    assert any("normalises over the channel axis" in why for why in plan.blocked.values())
    prune_channels(model, x, plan=plan)
    assert type(model.middle) is WrongAxisNorm
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_a_stock_layer_norm_over_another_axis_is_not_a_norm_over_channels():
    graph = trace_channels(randomise(ConvMiddleConv(nn.LayerNorm(8))), X[:1])  # over the width of NCHW, per channel
    assert not any(role.startswith("full_width") for _, role in graph.ports)
    assert not any("channel axis" in why for why in graph.blocked.values())


def test_a_norm_over_channels_without_gamma_keeps_its_channels_and_says_why():
    model = randomise(ConvMiddleConv(LayerNorm2d(4, elementwise_affine=False)))
    plan = plan_channels(model, X, ratio=0.5)
    assert "conv1" not in plan.removed
    assert any("it has γ" in why for why in plan.blocked.values())


def test_functional_layer_norm_over_channels_inside_a_larger_module_keeps_its_channels_and_says_why():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight, self.bias = nn.Parameter(torch.ones(4)), nn.Parameter(torch.zeros(4))

        def forward(self, x):
            y = F.layer_norm(x.permute(0, 2, 3, 1), (4,), self.weight, self.bias)
            return F.relu(y.permute(0, 3, 1, 2))

    plan = plan_channels(randomise(ConvMiddleConv(Block())), X, ratio=0.5)
    assert "conv1" not in plan.removed
    assert any("cannot be cut at full width" in why for why in plan.blocked.values())


class Eca(nn.Module):
    """ECA attention: each channel gated by a conv1d over the pooled channel vector (its neighbours)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 1, 3, padding=1, bias=False)

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x * torch.sigmoid(y).view(x.shape[0], -1, 1, 1)


class NotAGate(Eca):
    """Like Eca, but adds the gate: a removed (zero) channel's output is its gate, not zero."""

    def forward(self, x):
        y = self.conv(x.mean((2, 3)).view(x.shape[0], 1, -1))
        return x + torch.sigmoid(y).view(x.shape[0], -1, 1, 1)


class EcaBlock(nn.Module):
    """stem conv -> residual (conv -> BN -> ECA) + stem, then a head conv: the residual stream passes the gate."""

    def __init__(self, gate: nn.Module):
        super().__init__()
        self.stem, self.conv, self.bn, self.gate = nn.Conv2d(3, 8, 3), nn.Conv2d(8, 8, 3, padding=1), \
            nn.BatchNorm2d(8), gate
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        x = F.relu(self.stem(x))
        return self.head(x + self.gate(self.bn(self.conv(x)))).mean((2, 3))


def test_an_eca_gate_is_cut_at_full_width_and_rebuilds_from_its_channel_config():
    model = randomise(EcaBlock(Eca()))
    plan = plan_channels(model, X, ratio=0.5)
    assert len(plan.removed["stem"]) == len(plan.removed["conv"]) == 4 and plan.outcome.shortfall() is None
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    prune_channels(model, X, plan=plan)
    assert isinstance(model.gate, FullWidthChannels) and model.gate.width == 8 and type(model.gate.inner) is Eca
    assert model.gate.kept_index.tolist() == [i for i in range(8) if i not in plan.removed["stem"]]
    with torch.no_grad():
        torch.testing.assert_close(model(X), twin(X), rtol=1e-4, atol=1e-5)
    rebuilt = apply_channel_config(EcaBlock(Eca()), channel_config(model))
    rebuilt.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(X), model(X))
    first = model.gate.kept_index.tolist()
    prune_channels(model, X, ratio=0.5)  # pruned again through the wrapper: fewer of the same 8 gate positions
    assert model.gate.width == 8 and len(model.gate.kept_index) == 2 and set(model.gate.kept_index.tolist()) < set(first)


def test_a_conv1d_module_whose_output_is_not_a_gate_fails_the_self_check_and_is_kept():
    model = randomise(EcaBlock(NotAGate()))
    with torch.no_grad():
        expected = model(X)
    plan = plan_channels(model, X, ratio=0.5)
    assert "stem" not in plan.removed and "conv1d along the channel axis" in plan.blocked["gate"]
    prune_channels(model, X, plan=plan)
    assert type(model.gate) is NotAGate
    with torch.no_grad():
        torch.testing.assert_close(model(X), expected)


def test_a_bad_full_width_record_in_a_channel_config_names_the_module():
    config = {"middle": {"kind": "FullWidthChannels", "width": 4, "axis": 1, "kept_index": "0,1"}}
    with pytest.raises(PrunekitError, match="'middle'.*kept_index"):
        apply_channel_config(ConvMiddleConv(LayerNorm2d(4)), config)
