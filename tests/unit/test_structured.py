"""Structured pruning maths on tiny hand-made models: scores, groups, surgery, masks, refusals."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.config import PruneConfig
from prunekit.errors import PrunekitError
from prunekit.measure import count_macs
from prunekit.models import ZeroPadShortcut
from prunekit.prune.allocate import estimate_macs, select_channels
from prunekit.prune.channels import channel_target, filter_masks, filter_sparsity, plan_channels, prune_channels, shrink
from prunekit.prune.graph import Slot, trace_channels
from prunekit.prune.importance import channel_scores
from prunekit.prune.mask import apply_masks
from prunekit.prune.surgery import remove_channels
from conftest import ConvMiddleConv, randomise_norms

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


def channel_with(graph, module, role, index):
    return next(c.id for c in graph.channels.values() if Slot(module, role, index) in c.slots)


def masked_and_physical(model, removed_slots, x=X):
    """(output with the channels zeroed by masks, output after physical removal) for the given slots."""
    graph = trace_channels(model, x[:1])
    removed = {channel_with(graph, *slot) for slot in removed_slots}
    from prunekit.prune.channels import channel_masks

    masked = apply_masks(copy.deepcopy(model), channel_masks(model, graph, removed))
    physical = remove_channels(copy.deepcopy(model), graph, removed)
    with torch.no_grad():
        return masked(x), physical(x), physical


# --------------------------------------------------------------------------- tiny models


class ConvBnConv(nn.Module):
    """conv1 (2->3, 1x1) -> bn1 -> relu -> conv2 (3->2) -> relu -> pool -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 2, 1, bias=False)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2, 2)
        with torch.no_grad():  # L1 = [7, 6, 2], L2 = [5, 6, 1.414]
            self.conv1.weight.copy_(torch.tensor([[3.0, 4.0], [0.0, 6.0], [1.0, 1.0]]).view(3, 2, 1, 1))
            self.bn1.weight.copy_(torch.tensor([0.1, 2.0, -0.5]))

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(F.relu(self.conv2(F.relu(self.bn1(self.conv1(x)))))), 1))


class Residual(nn.Module):
    """h = relu(bn_a(conv_a x)); y = relu(h + bn_b(conv_b h)); mean of conv_c y (conv_c reaches the output)."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.bn_a = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_b, self.bn_b = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv_c = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        h = F.relu(self.bn_a(self.conv_a(x)))
        y = F.relu(h + self.bn_b(self.conv_b(h)))
        return self.conv_c(y).mean((2, 3))


class Concat(nn.Module):
    """z = cat(conv_a x (3 ch), conv_b x (2 ch)); pre-activation bn on z; conv_c; pool; fc."""

    def __init__(self):
        super().__init__()
        self.conv_a, self.conv_b = nn.Conv2d(3, 3, 1), nn.Conv2d(3, 2, 1)
        self.bn = nn.BatchNorm2d(5)
        self.conv_c = nn.Conv2d(5, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 4 * 4, 3)  # 4 channels x 4 x 4 positions for 8x8 inputs

    def forward(self, x):
        z = torch.cat([self.conv_a(x), self.conv_b(x)], 1)
        out = F.max_pool2d(self.conv_c(F.relu(self.bn(z))), 2)
        return self.fc(out.view(out.size(0), -1))


class OptionA(nn.Module):
    """conv1 (4 ch) -> stride-2 block whose option-A shortcut copies conv1's channels into outputs 1..4."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv2, self.bn2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(6)
        self.shortcut = ZeroPadShortcut(4, 6, stride=2, source_index=[-1, 0, 1, 2, 3, -1])
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 3)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(h)) + self.shortcut(h))
        return self.fc(torch.flatten(self.pool(y), 1))


def concat_model():
    torch.manual_seed(0)
    return randomise_norms(Concat())


# --------------------------------------------------------------------------- scores


def test_l1_l2_bn_scale_scores_by_hand():
    model = ConvBnConv()
    graph = trace_channels(model, X[:1, :2])
    conv1 = [channel_with(graph, "conv1", "conv_out", i) for i in range(3)]
    l1, l2 = channel_scores(model, graph, "l1"), channel_scores(model, graph, "l2")
    bn = channel_scores(model, graph, "bn_scale")
    assert [l1[c] for c in conv1] == pytest.approx([7.0, 6.0, 2.0])
    assert [l2[c] for c in conv1] == pytest.approx([5.0, 6.0, 2 ** 0.5])
    assert [bn[c] for c in conv1] == pytest.approx([0.1, 2.0, 0.5])
    random_a, random_b = channel_scores(model, graph, "random", 3), channel_scores(model, graph, "random", 3)
    assert random_a == random_b and random_a != channel_scores(model, graph, "random", 4)


def test_coupled_channel_score_sums_producers():
    model = Residual()
    graph = trace_channels(model, X[:1])
    scores = channel_scores(model, graph, "l1")
    cid = channel_with(graph, "conv_a", "conv_out", 2)
    expected = model.conv_a.weight[2].abs().sum() + model.conv_b.weight[2].abs().sum()
    assert scores[cid] == pytest.approx(expected.item(), rel=1e-6)


@pytest.mark.parametrize("criterion, kept_row", [("l1", 0), ("l2", 1), ("bn_scale", 1)])
def test_prune_keeps_best_filter_and_matches_hand_computation(criterion, kept_row):
    torch.manual_seed(0)
    model = randomise_norms(ConvBnConv())
    model.bn1.weight.data = torch.tensor([0.1, 2.0, -0.5])
    original = copy.deepcopy(model)
    x = X[:, :2]
    prune_channels(model, x[:1], ratios={"conv1": 0.67}, criterion=criterion)
    assert model.conv1.weight.shape == (1, 2, 1, 1) and model.conv1.out_channels == 1
    assert model.bn1.num_features == 1 and model.bn1.running_var.shape == (1,)
    assert model.conv2.weight.shape == (2, 1, 1, 1) and model.conv2.in_channels == 1
    assert model.fc.in_features == 2  # conv2 had no ratio: untouched
    o, k = original, [kept_row]
    h = F.relu(F.batch_norm(F.conv2d(x, o.conv1.weight[k]), o.bn1.running_mean[k], o.bn1.running_var[k],
                            o.bn1.weight[k], o.bn1.bias[k], eps=o.bn1.eps))
    expected = o.fc(F.relu(F.conv2d(h, o.conv2.weight[:, k])).mean((2, 3)))
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected)


def test_unknown_criterion_lists_valid_ones():
    with pytest.raises(PrunekitError) as info:
        prune_channels(ConvBnConv(), X[:1, :2], ratio=0.5, criterion="l3")
    assert all(name in str(info.value) for name in ("l1", "l2", "bn_scale", "random"))


# --------------------------------------------------------------------------- groups


def test_residual_add_couples_both_convs():
    model = randomise_norms(Residual())
    graph = trace_channels(model, X[:1])
    group = graph.groups[graph.producer_group()["conv_a"]]
    assert group.producers == ("conv_a", "conv_b") and len(graph.prunable(group)) == 4
    assert set(group.consumers) == {"conv_b", "conv_c"}
    assert set(group.slots_by_role["bn"]) == {"bn_a", "bn_b"}
    output_group = graph.groups[graph.producer_group()["conv_c"]]
    assert graph.prunable(output_group) == []  # conv_c's channels are the model output
    masked, physical, small = masked_and_physical(model, [("conv_a", "conv_out", 1), ("conv_b", "conv_out", 3)])
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    assert small.conv_a.out_channels == small.conv_b.out_channels == small.conv_b.in_channels == 2
    assert small.bn_a.num_features == small.bn_b.num_features == small.conv_c.in_channels == 2


def test_concat_offsets_and_preactivation_bn():
    model = concat_model()
    graph = trace_channels(model, X[:1])
    channel = graph.channels[channel_with(graph, "conv_b", "conv_out", 1)]
    assert set(channel.slots) == {Slot("conv_b", "conv_out", 1), Slot("bn", "bn", 4), Slot("conv_c", "conv_in", 4)}
    original = copy.deepcopy(model)
    masked, physical, small = masked_and_physical(model, [("conv_a", "conv_out", 2), ("conv_b", "conv_out", 0)])
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    assert small.bn.num_features == 3 and small.conv_c.in_channels == 3
    torch.testing.assert_close(small.conv_c.weight, original.conv_c.weight[:, [0, 1, 4]])
    torch.testing.assert_close(small.bn.running_mean, original.bn.running_mean[[0, 1, 4]])


def test_flatten_maps_each_channel_to_its_positions():
    model = concat_model()
    graph = trace_channels(model, X[:1])
    channel = graph.channels[channel_with(graph, "conv_c", "conv_out", 1)]
    assert sorted(s.index for s in channel.slots if s.role == "linear_in") == list(range(16, 32))
    original = copy.deepcopy(model)
    masked, physical, small = masked_and_physical(model, [("conv_c", "conv_out", 1)])
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    keep = list(range(16)) + list(range(32, 64))
    torch.testing.assert_close(small.fc.weight, original.fc.weight[:, keep])


# --------------------------------------------------------------------------- ZeroPadShortcut


def test_zero_pad_shortcut_is_a_map_not_a_coupling():
    model = randomise_norms(OptionA())
    graph = trace_channels(model, X[:1])
    groups = graph.producer_group()
    assert groups["conv1"] != groups["conv2"]  # stages are not coupled
    copy_of_0 = graph.channels[channel_with(graph, "conv2", "conv_out", 1)]
    assert copy_of_0.depends_on == {channel_with(graph, "conv1", "conv_out", 0)}
    assert not graph.channels[channel_with(graph, "conv2", "conv_out", 0)].depends_on  # zero padding


def test_removing_a_shortcut_input_remaps_to_minus_one():
    masked, physical, small = masked_and_physical(randomise_norms(OptionA()), [("conv1", "conv_out", 1)])
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    assert small.shortcut.in_channels == 3 and small.shortcut.out_channels == 6
    assert small.shortcut.source_index == [-1, 0, -1, 1, 2, -1]


def test_removing_shortcut_outputs_drops_entries():
    model = randomise_norms(OptionA())
    slots = [("conv2", "conv_out", 0), ("conv2", "conv_out", 5), ("conv1", "conv_out", 2), ("conv2", "conv_out", 3)]
    masked, physical, small = masked_and_physical(model, slots)
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    assert small.shortcut.source_index == [0, 1, 2]
    assert small.conv2.out_channels == small.bn2.num_features == small.fc.in_features == 3


def test_a_copy_of_a_live_channel_is_never_removed():
    model = randomise_norms(OptionA())
    prune_channels(model, X[:1], ratios={"conv2": 0.9}, criterion="random")
    assert model.shortcut.source_index == [0, 1, 2, 3]  # only the two zero-padded channels could go
    model = randomise_norms(OptionA())
    with torch.no_grad():  # zero output channel 1 (a copy of conv1's channel 0, which stays alive)
        model.conv2.weight[1] = 0
        model.bn2.weight[1] = model.bn2.bias[1] = 0
    reference = model(X)
    shrink(model, X[:1])
    assert model.conv2.out_channels == 6
    torch.testing.assert_close(model(X), reference)


def test_shrink_removes_source_and_copy_together():
    model = randomise_norms(OptionA())
    with torch.no_grad():
        for conv, bn, row in ((model.conv1, model.bn1, 0), (model.conv2, model.bn2, 1)):
            conv.weight[row] = 0
            bn.weight[row] = bn.bias[row] = 0
    reference = model(X)
    shrink(model, X[:1])
    assert model.conv1.out_channels == 3 and model.conv2.out_channels == 5
    assert model.shortcut.source_index == [-1, 0, 1, 2, -1]
    torch.testing.assert_close(model(X), reference, atol=1e-6, rtol=1e-5)


# --------------------------------------------------------------------------- refusals


class ChannelShuffle(nn.Module):
    def forward(self, x):  # 4 channels in 2 groups
        n, h, w = x.size(0), x.size(2), x.size(3)
        return x.view(n, 2, 2, h, w).transpose(1, 2).contiguous().view(n, 4, h, w)


class ShuffleNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.shuffle, self.conv2 = nn.Conv2d(3, 4, 1), ChannelShuffle(), nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.conv2(self.shuffle(self.conv1(x))).mean((2, 3))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        gate = torch.sigmoid(self.fc(x.mean((2, 3))))
        return x * gate.view(x.size(0), -1, 1, 1)


class ComputedShuffle(nn.Module):
    def forward(self, x):  # the usual spelling: sizes computed from the tensor
        n, c, h, w = x.size()
        return x.view(n, 2, c // 2, h, w).transpose(1, 2).contiguous().view(n, c, h, w)


def test_literal_channel_shuffle_is_retraced_with_its_channels_kept():
    model = ShuffleNet()  # view(n, 2, 2, h, w): literal sizes, which cannot follow pruning
    plan = plan_channels(model, X[:1], ratio=0.5)
    assert plan.retraced and "conv1" not in plan.removed
    assert any("view" in where or "view" in why for where, why in plan.blocked.items())
    reference = model(X)
    prune_channels(model, X[:1], plan=plan)
    assert model.conv1.out_channels == 4
    torch.testing.assert_close(model(X), reference)


def test_computed_channel_shuffle_prunes_positions_of_every_group_together():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), ComputedShuffle(), nn.Conv2d(4, 2, 1))
    graph = trace_channels(model, X[:1])
    pairs = {frozenset(s.index for s in graph.channels[cid].slots if s.module == "0" and s.role == "conv_out")
             for cid in graph.ports[("0", "conv_out")].values()}
    assert pairs == {frozenset({0, 2}), frozenset({1, 3})}  # position p of group 0 and of group 1
    masked, physical, small = masked_and_physical(model, [("0", "conv_out", 1)])
    assert small[0].out_channels == 2
    torch.testing.assert_close(physical, masked, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("middle", [nn.Conv2d(4, 4, 3, padding=1, groups=2), SqueezeExcite()],
                         ids=["grouped", "squeeze-excite"])
def test_grouped_convs_and_gates_prune_exactly(middle):
    model = randomise_norms(ConvMiddleConv(middle))
    masked, physical, small = masked_and_physical(model, [("conv1", "conv_out", 1)])
    assert small.conv1.out_channels < 4
    torch.testing.assert_close(physical, masked, atol=1e-6, rtol=1e-5)


class CumulativeSum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)  # mixes channels in an order: no handler


def test_an_op_without_handler_keeps_its_channels_and_says_where():
    model = ConvMiddleConv(CumulativeSum())
    graph = trace_channels(model, X[:1])
    conv1_channels = {graph.ports[("conv1", "conv_out")][i] for i in range(4)}
    assert not any(graph.channels[c].prunable for c in conv1_channels)
    assert any("cumsum" in where and "middle" in where for where in graph.blocked)
    plan = plan_channels(model, X[:1], ratio=0.5)
    assert "conv1" not in plan.removed


def test_depthwise_conv_passes_channels_through():
    model = ConvMiddleConv(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU()))
    model.conv2 = nn.Conv2d(4, 6, 1)
    model = nn.Sequential(model)  # model output: mean of conv2 -> conv2 is not prunable
    randomise_norms(model)
    masked, physical, small = masked_and_physical(model, [("0.conv1", "conv_out", 2)])
    torch.testing.assert_close(physical, masked, atol=1e-5, rtol=1e-5)
    depthwise = small[0].middle[0]
    assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == 3
    assert depthwise.weight.shape == (3, 1, 3, 3) and small[0].conv2.in_channels == 3


# --------------------------------------------------------------------------- masks, shrink, allocation


def filter_config(**kwargs):
    return PruneConfig(granularity="filter", **kwargs)


def test_filter_masks_zero_rows_and_every_bn_then_shrink_is_exact():
    model = concat_model()
    masks = filter_masks(model, X[:1], filter_config(sparsity=0.5, scope="layer", criterion="random"))
    assert {"conv_a.weight", "conv_a.bias", "bn.weight", "bn.bias"} <= set(masks)
    before = copy.deepcopy(model)  # (a masked module cannot be deep-copied: its weight is computed)
    apply_masks(model, masks)
    assert filter_sparsity(model, model) == pytest.approx(5 / 9)  # 2 of 3, 1 of 2, 2 of 4 filters (rounded)
    reference = model(X)
    shrink(model, X[:1])
    torch.testing.assert_close(model(X), reference, atol=1e-5, rtol=1e-5)
    assert filter_sparsity(before, model) == pytest.approx(5 / 9)
    assert not any(name.endswith("_mask") for name, _ in model.named_buffers())


def test_iterative_masks_only_shrink():
    torch.manual_seed(1)
    model = randomise_norms(Residual())
    first = filter_masks(model, X[:1], filter_config(sparsity=0.75, scope="layer", criterion="l1"), progress=0.5)
    apply_masks(model, first)
    # round_fraction(0.75, 0.5) = 0.5: 2 of the 4 coupled channels = 4 of 10 filters (conv_c is the output)
    assert filter_sparsity(model, model) == pytest.approx(4 / 10)
    with torch.no_grad():  # retraining moves the weights; masked rows stay zero and stay removed
        model.conv_a.weight_orig.add_(10.0)
    later = filter_config(sparsity=0.75, scope="layer", criterion="random", seed=5)
    second = filter_masks(model, X[:1], later, progress=1.0)
    for key, mask in first.items():
        assert not (second[key] & ~mask).any()
    apply_masks(model, second)
    assert filter_sparsity(model, model) == pytest.approx(6 / 10)


def test_filter_masks_needs_filter_granularity_and_one_target():
    with pytest.raises(PrunekitError, match="granularity"):
        filter_masks(Residual(), X[:1], PruneConfig(sparsity=0.5))
    with pytest.raises(PrunekitError, match="exactly one"):
        filter_masks(Residual(), X[:1], filter_config(sparsity=0.5, macs_target=0.5))


def test_ratio_file_names_are_validated():
    with pytest.raises(PrunekitError) as info:
        prune_channels(Residual(), X[:1], ratios={"conv_x": 0.5})
    assert "conv_x" in str(info.value) and "conv_a" in str(info.value)


def test_global_scope_never_empties_a_group():
    model = randomise_norms(OptionA())
    prune_channels(model, X[:1], ratio=0.95, scope="global", criterion="l2")
    assert model.conv1.out_channels >= 1 and model.conv2.out_channels >= 1
    assert model(X).shape == (2, 3)


def test_macs_target_and_estimate_match_count_macs():
    model = randomise_norms(concat_model())
    graph = trace_channels(model, torch.zeros(1, 3, 8, 8))
    assert estimate_macs(graph, model) == count_macs(model, (1, 3, 8, 8))
    before = count_macs(model, (1, 3, 8, 8))
    prune_channels(model, torch.zeros(1, 3, 8, 8), macs_target=0.6)
    after = count_macs(model, (1, 3, 8, 8))
    assert after <= 0.6 * before and after == estimate_macs(trace_channels(model, X[:1]), model)


def test_vgg_cfg_keeps_top_filters(tiny_vgg):
    original = copy.deepcopy(tiny_vgg)
    prune_channels(tiny_vgg, torch.zeros(1, 3, 32, 32), cfg=[4, "M", 8, "M", 16, 5], criterion="l1")
    widths = [m.out_channels for m in tiny_vgg.features if isinstance(m, nn.Conv2d)]
    assert widths == [4, 8, 16, 5] and tiny_vgg.classifier.in_features == 5
    top = original.features[0].weight.abs().flatten(1).sum(1).topk(4).indices.sort().values
    torch.testing.assert_close(tiny_vgg.features[0].weight, original.features[0].weight[top])
    with pytest.raises(PrunekitError, match="layout"):
        prune_channels(tiny_vgg, torch.zeros(1, 3, 32, 32), cfg=[4, 8, "M", 8, 4])


def test_select_channels_is_deterministic():
    from prunekit.prune.importance import channel_scores

    model = randomise_norms(Residual())
    graph = trace_channels(model, X[:1])
    target = channel_target(ratio=0.5, criterion="random", seed=7)
    selected = select_channels(model, graph, target)
    # the one prunable group (conv_a + conv_b through the residual add) loses its two lowest-scored channels
    scores = channel_scores(model, graph, "random", seed=7)
    assert len(scores) == 4 and selected == set(sorted(scores, key=scores.get)[:2])
    assert select_channels(model, graph, target) == selected
    other = select_channels(model, graph, channel_target(ratio=0.5, criterion="random", seed=8))
    assert len(other) == 2 and other != selected


def test_one_target_type_with_one_set_of_defaults():
    """`prune --granularity filter` (PruneConfig) and `prune-channels` (channel_target) share the defaults:
    the same sparsity selects the same channels; unstructured defaults to one global threshold."""
    from prunekit.config import make_prune_config
    from prunekit.prune.granularity import get_granularity

    assert make_prune_config(sparsity=0.5).scope == "global"
    assert make_prune_config(granularity="filter", sparsity=0.5).scope == "layer" == channel_target(ratio=0.5).scope
    model = randomise_norms(Concat())
    masks = get_granularity("filter").masks(model, make_prune_config(granularity="filter", sparsity=0.5), 1.0, X[:1])
    plan = plan_channels(model, X[:1], ratio=0.5)
    assert set(masks) == set(plan.masks) and all(torch.equal(masks[k], plan.masks[k]) for k in masks)
    with pytest.raises(PrunekitError, match="unstructured pruning needs exactly one of sparsity, ratios; got cfg"):
        make_prune_config(cfg=[4, 8]).check_target()


# --------------------------------------------------------------------------- command line


def test_cli_prune_channels_then_shrink_masked_checkpoint(tiny_vgg, tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint, save_checkpoint
    from prunekit.cli import main

    save_checkpoint(tiny_vgg, tmp_path / "dense.pt", {"dataset": "synthetic", "test_top1": 50.0})
    assert main(["prune-channels", str(tmp_path / "dense.pt"), "--cfg", "4,M,8,M,8,8", "--out",
                 str(tmp_path / "small.pt")]) == 0
    assert "params" in capsys.readouterr().out
    small = load_checkpoint(tmp_path / "small.pt")
    assert [m.out_channels for m in small.model.features if isinstance(m, nn.Conv2d)] == [4, 8, 8, 8]
    assert small.meta["filter_sparsity"] == pytest.approx(28 / 56)
    # the source's 50.0 is not inherited: the data is known (synthetic), so BN was re-estimated and top-1 measured
    assert small.meta["prune_channels"]["bn_recalibration_batches"] > 0 and small.meta["test_images"] == 500

    apply_masks(tiny_vgg, filter_masks(tiny_vgg, torch.zeros(1, 3, 32, 32), filter_config(sparsity=0.5)))
    save_checkpoint(tiny_vgg, tmp_path / "masked.pt", {"dataset": "synthetic"})
    assert main(["shrink", str(tmp_path / "masked.pt"), "--out", str(tmp_path / "shrunk.pt"), "--json"]) == 0
    assert '"max_output_change"' in capsys.readouterr().out
    shrunk = load_checkpoint(tmp_path / "shrunk.pt")
    assert not shrunk.masks and shrunk.meta["filter_sparsity"] == pytest.approx(0.5, abs=0.05)
    assert sum(m.out_channels for m in shrunk.model.features if isinstance(m, nn.Conv2d)) == 28
    assert main(["prune-channels", str(tmp_path / "dense.pt"), "--ratio", "0.5", "--criterion", "l7",
                 "--out", str(tmp_path / "x.pt")]) == 2
    assert "bn_scale" in capsys.readouterr().err


def test_self_check_catches_a_corrupted_surgery_and_leaves_the_model_alone(monkeypatch):
    from prunekit.prune import layer_handlers

    model = randomise_norms(ConvBnConv())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    original = layer_handlers._BatchNorm.shrink

    def corrupted(self, bn, keep):  # keeps the right count of channels, but the wrong ones
        return original(self, bn, {"bn": sorted((i + 1) % bn.num_features for i in keep["bn"])})

    monkeypatch.setattr(layer_handlers._BatchNorm, "shrink", corrupted)
    with pytest.raises(PrunekitError, match="first at layer 'bn1'"):
        prune_channels(model, X[:1, :2], ratio=0.34)
    assert model.conv1.out_channels == 3 and model.bn1.num_features == 3
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_plan_and_prune_are_public_api():
    import prunekit

    assert prunekit.plan_channels is plan_channels and prunekit.prune_channels is prune_channels
