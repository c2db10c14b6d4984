"""Channels through what downloaded model libraries write: norm layers calling ``F.batch_norm`` /
``F.group_norm`` themselves, per-channel parameters used elementwise (layer scale), channels-last blocks
(permute, Linear on the last axis, LayerNorm over channels: see also test_norm_over_channels.py), and the asked-vs-achieved outcome of a plan."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.measure import count_macs
from prunekit.models import apply_channel_config, channel_config
from prunekit.prune.allocate import estimate_macs
from prunekit.prune.channels import blockers_of, channel_masks, plan_channels, prune_channels
from prunekit.prune.graph import Slot, trace_channels
from prunekit.prune.mask import apply_masks
from prunekit.prune.surgery import remove_channels
from conftest import ConvMiddleConv

X = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


class NormAct(nn.BatchNorm2d):
    def forward(self, x):
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                   self.eps))


def randomise(module: nn.Module) -> nn.Module:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in (*module.named_parameters(), *module.named_buffers()):
            if tensor.is_floating_point() and tensor.dim() == 1:
                tensor.copy_(torch.rand(tensor.shape, generator=g) + 0.5)
    return module.eval()


def cut(model: nn.Module, slot: tuple) -> tuple[torch.Tensor, torch.Tensor, nn.Module, set]:
    """(masked twin's output, physical output, physical model, removed ids) for removing the channel of ``slot``."""
    graph = trace_channels(model, X[:1])
    removed = {graph.ports[slot[:2]][slot[2]]}
    twin = apply_masks(copy.deepcopy(model), channel_masks(model, graph, removed))
    physical = remove_channels(copy.deepcopy(model), graph, removed)
    with torch.no_grad():
        return twin(X), physical(X), physical, removed


def test_norm_layer_calling_batch_norm_is_cut_with_its_channel():
    model = randomise(ConvMiddleConv(NormAct(4)))
    graph = trace_channels(model, X[:1])
    channel = graph.channels[graph.ports[("conv1", "conv_out")][1]]
    assert channel.prunable
    assert {Slot("middle", "affine:weight:0", 1), Slot("middle", "param:running_var:0", 1)} <= set(channel.slots)
    stats = model.middle.running_mean.clone()
    twin, physical, small, _ = cut(model, ("conv1", "conv_out", 1))
    torch.testing.assert_close(physical, twin)
    assert type(small.middle) is NormAct and small.middle.num_features == 3
    assert torch.equal(small.middle.running_mean, stats[[0, 2, 3]])


def test_group_norm_removes_whole_groups_and_updates_its_group_count():
    model = randomise(ConvMiddleConv(nn.GroupNorm(2, 4)))
    graph = trace_channels(model, X[:1])
    ports = graph.ports[("conv1", "conv_out")]
    assert ports[0] == ports[1] != ports[2] == ports[3]  # a group of 2 channels is one unit of removal
    twin, physical, small, _ = cut(model, ("conv1", "conv_out", 2))
    torch.testing.assert_close(physical, twin)
    assert (small.middle.num_groups, small.middle.num_channels, small.conv1.out_channels) == (1, 2, 2)


def test_group_norm_with_one_group_keeps_every_channel_and_says_why():
    graph = trace_channels(randomise(ConvMiddleConv(nn.GroupNorm(1, 4))), X[:1])
    assert not any(graph.channels[c].prunable for c in graph.ports[("conv1", "conv_out")].values())
    assert any("one group" in why for why in graph.blocked.values())


class LayerScale(nn.Module):
    """``x * gamma`` with gamma (C, 1, 1), then a learned (1, C, 1, 1) bias on a second branch."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.gamma = nn.Parameter(torch.tensor([1.0, 2.0, 3.0, 4.0])[:, None, None])
        self.bias = nn.Parameter(torch.full((1, width, 1, 1), 0.5))

    def forward(self, x):
        return F.relu(x * self.gamma + self.bias)


def test_layer_scale_and_learned_bias_are_cut_and_zeroed_in_the_twin():
    model = randomise(ConvMiddleConv(LayerScale()))
    graph = trace_channels(model, X[:1])
    masks = channel_masks(model, graph, {graph.ports[("conv1", "conv_out")][1]})
    assert masks["middle.gamma"].flatten().tolist() == [True, False, True, True]
    assert masks["middle.bias"].flatten().tolist() == [True, False, True, True]
    twin, physical, small, _ = cut(model, ("conv1", "conv_out", 1))
    torch.testing.assert_close(physical, twin)
    assert small.middle.gamma.flatten().tolist() == [1.0, 3.0, 4.0] and small.middle.bias.shape == (1, 3, 1, 1)


class ChannelsLastMlp(nn.Module):
    """permute to NHWC, LayerNorm over channels, Linear 4 -> 6 -> 4, layer scale, permute back, residual."""

    def __init__(self):
        super().__init__()
        self.norm, self.fc1, self.fc2 = nn.LayerNorm(4), nn.Linear(4, 6), nn.Linear(6, 4)
        self.gamma = nn.Parameter(torch.full((4,), 0.5))

    def forward(self, x):
        y = self.fc2(F.gelu(self.fc1(self.norm(x.permute(0, 2, 3, 1)))))
        return x + (self.gamma * y).permute(0, 3, 1, 2)


def test_linear_on_channels_last_is_a_filter_and_layer_norm_over_channels_runs_at_full_width():
    model = randomise(ConvMiddleConv(ChannelsLastMlp()))
    graph = trace_channels(model, X[:1])
    hidden = [graph.channels[c] for c in graph.ports[("middle.fc1", "conv_out")].values()]
    assert len(hidden) == 6 and all(c.prunable for c in hidden)
    assert Slot("middle.fc2", "conv_in", 0) in hidden[0].slots
    stream = [graph.channels[c] for c in graph.ports[("conv1", "conv_out")].values()]
    assert all(c.prunable for c in stream) and Slot("middle.norm", "full_width:3:4", 1) in stream[1].slots
    twin, physical, small, removed = cut(model, ("middle.fc1", "conv_out", 4))
    torch.testing.assert_close(physical, twin)
    assert (small.middle.fc1.out_features, small.middle.fc2.in_features) == (5, 5)
    assert estimate_macs(graph, model, removed) == count_macs(small, (1, 3, 6, 6))
    twin, physical, small, _ = cut(model, ("conv1", "conv_out", 1))
    torch.testing.assert_close(physical, twin)
    assert small.middle.norm.kept_index.tolist() == [0, 2, 3] and small.middle.norm.inner is not model.middle.norm
    assert (small.middle.fc1.in_features, small.middle.gamma.shape, small.conv2.in_channels) == (3, (3,), 3)


def test_channel_axis_follows_transpose_and_movedim():
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            n, _, h, w = x.shape
            t = x.flatten(2).transpose(1, 2)  # (N, HW, C)
            t = torch.movedim(self.fc(t), 2, 1)  # back to (N, C, HW)
            return t.reshape(n, -1, h, w)

    model = randomise(ConvMiddleConv(Tokens()))
    graph = trace_channels(model, X[:1])
    assert graph.channels[graph.ports[("middle.fc", "conv_out")][0]].prunable
    twin, physical, small, _ = cut(model, ("middle.fc", "conv_out", 0))
    torch.testing.assert_close(physical, twin)
    assert small.middle.fc.weight.shape == (3, 4) and small.conv2.in_channels == 3


def test_group_norm_and_layer_scale_round_trip_through_channel_config():
    model = ConvMiddleConv(nn.Sequential(nn.GroupNorm(2, 4), LayerScale()))
    prune_channels(randomise(model), X[:1], ratio=0.5)
    config = channel_config(model)
    assert config["middle.0"] == {"kind": "GroupNorm", "num_groups": 1, "num_channels": 2}
    assert config["middle.1"] == {"kind": "Params", "shapes": {"gamma": [2, 1, 1], "bias": [1, 2, 1, 1]}}
    rebuilt = apply_channel_config(ConvMiddleConv(nn.Sequential(nn.GroupNorm(2, 4), LayerScale())), config)
    rebuilt.load_state_dict(model.state_dict())
    torch.testing.assert_close(rebuilt.eval()(X), model(X))


# --------------------------------------------------------------------------- asked vs achieved


def test_outcome_counts_filters_macs_and_coverage():
    model = randomise(ConvMiddleConv(NormAct(4)))  # 6 filters: conv1's 4 are free, conv2's 2 feed the output
    plan = plan_channels(model, X[:1], ratio=0.5)
    outcome = plan.outcome
    assert (outcome.filters, outcome.prunable_filters, outcome.filters_removed) == (6, 4, 2)
    assert plan.coverage == pytest.approx(4 / 6) and outcome.achieved_filters == pytest.approx(2 / 6)
    # MACs per image on a 6x6 input: conv1 36*3*4 + conv2 36*4*2 = 720 -> 36*3*2 + 36*2*2 = 360
    assert (outcome.macs_before, outcome.macs_after) == (720, 360) and outcome.achieved_macs == 0.5
    assert outcome.shortfall() is None  # 33% achieved of 50% asked: more than half


def test_shortfall_names_the_blocking_ops_with_counts():
    class CumSum(nn.Module):
        def forward(self, x):
            return torch.cumsum(x, 1)

    outcome = plan_channels(randomise(ConvMiddleConv(CumSum())), X[:1], ratio=0.5).outcome
    assert outcome.filters_removed == 0
    line = outcome.shortfall()
    assert line.startswith("shortfall: asked 50.0% of filters, achieved 0.0%")
    assert "1 × 'cumsum' in layer 'middle'" in line


def test_blockers_are_counted_by_layer_pattern():
    blocked = {"'batch_norm' in layer 'stages.0.blocks.1.norm1'": "a",
               "'batch_norm' in layer 'stages.2.blocks.0.norm1'": "b", "layer1.10": "c", "model output": "d"}
    assert blockers_of(blocked) == ((2, "'batch_norm' in layer 'stages.*.blocks.*.norm1'", "a"), (1, "layer1.*", "c"),
                                    (1, "model output", "d"))


def test_a_wrong_parameter_shape_in_a_channel_config_names_the_module():
    from prunekit.errors import PrunekitError

    model = ConvMiddleConv(LayerScale())
    with pytest.raises(PrunekitError, match="'middle'.*'shapes'"):
        apply_channel_config(model, {"middle": {"kind": "Params", "shapes": {"gamma": [2, 1]}}})


def test_bn_scale_reads_the_gamma_of_a_norm_layer_with_its_own_forward():
    from prunekit.prune.importance import channel_scores

    model = randomise(ConvMiddleConv(NormAct(4)))
    with torch.no_grad():
        model.middle.weight.copy_(torch.tensor([0.5, -3.0, 0.25, 2.0]))
    graph = trace_channels(model, X[:1])
    scores = channel_scores(model, graph, "bn_scale")
    assert [scores[graph.ports[("conv1", "conv_out")][i]] for i in range(4)] == [0.5, 3.0, 0.25, 2.0]


class MixedConv(nn.ModuleDict):
    """Uneven split sizes held by the layer (``torch.split(x, self.splits, 1)``), one conv per piece, cat."""

    def __init__(self):
        super().__init__({"0": nn.Conv2d(1, 2, 1), "1": nn.Conv2d(3, 2, 3, padding=1)})
        self.splits = [1, 3]

    def forward(self, x):
        pieces = torch.split(x, self.splits, 1)
        return torch.cat([conv(piece) for conv, piece in zip(self.values(), pieces)], 1)


def test_split_sizes_held_by_the_layer_follow_pruning_and_round_trip():
    model = randomise(ConvMiddleConv(MixedConv()))
    twin, physical, small, _ = cut(model, ("conv1", "conv_out", 2))  # a channel of the second piece
    torch.testing.assert_close(physical, twin)
    assert small.middle.splits == [1, 2] and small.middle["1"].in_channels == 2
    config = channel_config(small)
    assert config["middle"] == {"kind": "SplitSizes", "sizes": {"splits": [1, 2]}}
    rebuilt = apply_channel_config(ConvMiddleConv(MixedConv()), config)
    rebuilt.load_state_dict(small.state_dict())
    torch.testing.assert_close(rebuilt.eval()(X), small(X))


class RootSoftmax(nn.Module):
    """A softmax over the channels in the root module's own forward (no submodule around it)."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        x = self.conv(x)
        return self.head(x * torch.softmax(x, dim=1))


def test_a_blocker_in_the_root_modules_forward_is_named_so():
    graph = trace_channels(RootSoftmax(), X)
    places = {place: count for count, place, _ in blockers_of(graph.blocking or graph.blocked)}
    assert places["'softmax' in the model's own forward"] == 1
