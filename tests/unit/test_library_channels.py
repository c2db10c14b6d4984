"""Channels through the blocks of downloaded model libraries, on tiny models: selective kernels (branches stacked
on a new axis, a softmax over it, a split by a width the block holds), weight-standardised convs (the weight
computed in forward) and the global response norm (a mean over the channels)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.models import apply_channel_config, channel_config
from prunekit.prune.channels import plan_channels, prune_channels
from prunekit.prune.layer_handlers import plain_conv
from prunekit.prune.mask import apply_masks

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


class SplitStack(nn.Module):
    """stem (3 -> 8); two 3x3 paths on the halves ``split(x, self.in_channels // 2)``, stacked on axis 1, gated by
    a softmax over axis 1 of a (2, C) view of ``gate``'s output, summed over the paths; head conv (6 -> 2)."""

    def __init__(self):
        super().__init__()
        self.in_channels = 8
        self.stem = nn.Conv2d(3, 8, 1)
        self.paths = nn.ModuleList(nn.Conv2d(4, 6, 3, padding=1) for _ in range(2))
        self.gate = nn.Conv2d(6, 12, 1)
        self.head = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        halves = torch.split(self.stem(x), self.in_channels // 2, 1)
        paths = torch.stack([p(h) for p, h in zip(self.paths, halves)], dim=1)
        gate = self.gate(paths.sum(1).mean((2, 3), keepdim=True))
        weights = torch.softmax(gate.view(gate.shape[0], 2, gate.shape[1] // 2, 1, 1), dim=1)
        return self.head((paths * weights).sum(1)).mean((2, 3))


def test_stacked_branches_share_channels_and_the_split_width_follows_the_cut():
    model = SplitStack().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced
    # position c of both paths and of both gate halves is one channel: both paths lose the same filters
    assert plan.removed["paths.0"] == plan.removed["paths.1"] and len(plan.removed["paths.0"]) == 3
    gate = plan.removed["gate"]
    assert gate == sorted(plan.removed["paths.0"] + [c + 6 for c in plan.removed["paths.0"]])
    # the stem's halves lose the same positions, so split(x, in_channels // 2) still splits evenly
    stem = plan.removed["stem"]
    assert len(stem) == 4 and sorted(c % 4 for c in stem[:2]) == sorted(c % 4 for c in stem[2:])
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    pruned = prune_channels(copy.deepcopy(model), X, plan=plan)
    assert pruned.in_channels == 4 and pruned.paths[0].in_channels == 2
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), twin(X))


def test_the_split_width_attribute_survives_a_rebuild():
    pruned = prune_channels(SplitStack().eval(), X, ratio=0.5)
    rebuilt = apply_channel_config(SplitStack(), channel_config(pruned))
    assert rebuilt.in_channels == 4 and channel_config(pruned)[""]["sizes"] == {"in_channels": 4}
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(X), pruned(X))


def test_among_int_attributes_equal_to_the_width_the_input_width_is_the_one_written():
    model = SplitStack().eval()
    model.out_channels = model.hidden = 8  # other ints of the same value: only in_channels is the split's source
    pruned = prune_channels(model, X, ratio=0.5)
    assert pruned.in_channels == 4 and pruned.out_channels == 8 and pruned.hidden == 8


def test_a_literal_split_width_is_kept_with_its_reason():
    class Literal(SplitStack):
        def forward(self, x):
            self.in_channels = 8  # the width is written in forward, so surgery's new value does not hold
            return super().forward(x)

    model = Literal().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert plan.retraced and "stem" not in plan.removed
    assert any("split" in where for where in plan.blocked)


def test_softmax_over_the_channel_axis_of_stacked_branches_still_pins():
    class ChannelSoftmax(SplitStack):
        def forward(self, x):
            halves = torch.split(self.stem(x), self.in_channels // 2, 1)
            paths = torch.stack([p(h) for p, h in zip(self.paths, halves)], dim=1)
            return self.head(torch.softmax(paths, dim=2).sum(1)).mean((2, 3))

    plan = plan_channels(ChannelSoftmax().eval(), X, ratio=0.5)
    assert "paths.0" not in plan.removed
    assert any("softmax over the channel axis" in why for why in plan.blocked.values())


class Standardised(nn.Conv2d):
    """Each filter standardised over its fan-in in forward, times a per-filter gain."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gain = nn.Parameter(torch.rand(self.out_channels, 1, 1, 1) + 0.5)

    def forward(self, x):
        flat = self.weight.reshape(self.out_channels, -1)
        weight = (flat - flat.mean(1, keepdim=True)) / torch.sqrt(flat.var(1, unbiased=False, keepdim=True) + 1e-5)
        return F.conv2d(x, weight.reshape_as(self.weight) * self.gain, self.bias, self.stride, self.padding)


class WholeTensorScaled(nn.Conv2d):
    """The weight divided by the norm of the whole tensor: a filter depends on every other one."""

    def forward(self, x):
        return F.conv2d(x, self.weight / self.weight.norm(), self.bias, self.stride, self.padding)


def test_plain_conv_holds_the_standardised_weight():
    conv = Standardised(2, 2, 1)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 3.0, -2.0, 2.0]).reshape(2, 2, 1, 1))
        conv.gain.copy_(torch.tensor([2.0, 0.5]).reshape(2, 1, 1, 1))
    plain = plain_conv(conv)
    assert type(plain) is nn.Conv2d
    # filter 0: mean 2, std 1 -> (-1, 1) * 2; filter 1: mean 0, std 2 -> (-1, 1) * 0.5 (eps 1e-5 aside)
    expected = torch.tensor([-2.0, 2.0, -0.5, 0.5]).reshape(2, 2, 1, 1)
    torch.testing.assert_close(plain.weight.detach(), expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(plain(X[:, :2]), conv(X[:, :2]))


class StdNet(nn.Module):
    def __init__(self, conv=Standardised):
        super().__init__()
        self.conv1 = conv(3, 6, 3, padding=1)
        self.conv2 = conv(6, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(F.relu(self.conv2(F.relu(self.conv1(x)))).mean((2, 3)))


def test_a_weight_standardised_conv_prunes_both_ways_into_a_plain_conv_and_says_so():
    model = StdNet().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert plan.removed == {"conv1": plan.removed["conv1"], "conv2": plan.removed["conv2"]}
    assert len(plan.removed["conv1"]) == 3 and len(plan.removed["conv2"]) == 2
    assert not plan.blocked.keys() - {"model output"}  # the ops computing the weight hold no channel
    assert "2 weight-standardised conv(s)" in plan.outcome.summary()
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    pruned = prune_channels(copy.deepcopy(model), X, plan=plan)
    assert type(pruned.conv1) is nn.Conv2d and type(pruned.conv2) is nn.Conv2d
    assert pruned.conv2.in_channels == 3 and pruned.conv2.out_channels == 2
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), twin(X))


def test_a_weight_computed_across_filters_is_kept_with_its_reason():
    plan = plan_channels(StdNet(WholeTensorScaled).eval(), X, ratio=0.5)
    assert plan.retraced and not plan.removed
    assert any("computes its weight in forward" in why for why in plan.blocked.values())


class GlobalResponseNorm(nn.Module):
    """``x + β + γ · x · g / (mean over channels of g + ε)``, g the L2 norm over positions (NCHW here)."""

    def __init__(self, dim: int, eps: float = 0.25):
        super().__init__()
        self.weight = nn.Parameter(torch.linspace(-1.0, 2.0, dim))
        self.bias = nn.Parameter(torch.linspace(0.5, -0.5, dim))
        self.eps = eps  # large, so a cut that ignored ε would show

    def forward(self, x):
        g = x.norm(p=2, dim=(2, 3), keepdim=True)
        n = g / (g.mean(dim=1, keepdim=True) + self.eps)
        return x + self.bias[:, None, None] + self.weight[:, None, None] * x * n


class GRNNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.grn = GlobalResponseNorm(6)
        self.conv2 = nn.Conv2d(6, 2, 1)

    def forward(self, x):
        return self.conv2(self.grn(F.relu(self.conv1(x)))).mean((2, 3))


def test_a_response_norm_cut_scales_gamma_and_eps_by_c_over_c_prime():
    model = GRNNet().eval()
    plan = plan_channels(model, X, ratio=0.5)
    kept = [c for c in range(6) if c not in plan.removed["conv1"]]
    assert len(kept) == 3 and not plan.retraced
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    pruned = prune_channels(copy.deepcopy(model), X, plan=plan)
    torch.testing.assert_close(pruned.grn.weight.detach(), model.grn.weight.detach()[kept] * 2)  # C/C' = 6/3
    torch.testing.assert_close(pruned.grn.bias.detach(), model.grn.bias.detach()[kept])
    assert pruned.grn.eps == 0.5
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), twin(X))
    rebuilt = apply_channel_config(GRNNet(), channel_config(pruned))
    assert rebuilt.grn.eps == 0.5
    rebuilt.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(X), pruned(X))


def test_a_module_named_like_a_response_norm_that_computes_something_else_is_kept():
    class GlobalResponseNorm(nn.Module):  # same name and parameters, but a mean over positions only
        def __init__(self, dim):
            super().__init__()
            self.weight, self.bias, self.eps = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.ones(dim)), 1e-6

        def forward(self, x):
            return x * self.weight[:, None, None] + x.mean() + self.bias[:, None, None]

    model = GRNNet()
    model.grn = GlobalResponseNorm(6)
    plan = plan_channels(model.eval(), X, ratio=0.5)
    assert plan.retraced and "conv1" not in plan.removed
    assert any("global response norm" in why for why in plan.blocked.values())


class PaddedStandardised(Standardised):
    """Pads its input in forward ('same' padding computed there), then a standardised conv without padding."""

    def forward(self, x):
        return super().forward(F.pad(x, (1, 1, 1, 1)))


class PaddedStdNet(StdNet):
    def __init__(self):
        super().__init__()
        self.conv3 = PaddedStandardised(4, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.conv3(F.relu(self.conv2(F.relu(self.conv1(x))))).mean((2, 3)))


def test_a_standardised_conv_that_pads_in_forward_is_kept_and_the_others_still_prune():
    model = PaddedStdNet().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced and len(plan.removed["conv1"]) == 3
    assert "conv2" not in plan.removed and "conv3" not in plan.removed  # conv3 reads conv2's channels
    assert any("'same' padding" in why for why in plan.blocked.values())
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    pruned = prune_channels(copy.deepcopy(model), X, plan=plan)
    assert type(pruned.conv1) is nn.Conv2d and type(pruned.conv3) is PaddedStandardised
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), twin(X))
