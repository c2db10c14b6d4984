"""Removing a residual branch whole: which groups may go, that the pruned model computes exactly what the
masked twin computes (the branch's BN constant included), that the plan and the widths agree, that the
model saves and loads, and that the latency allocation takes width 0 when it pays."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import randomise_norms
from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.masking import apply_masks, make_permanent, permanent_copy
from prunekit.models import ZeroWidthLayer
from prunekit.prune import plan_channels, prune_channels
from prunekit.prune.allocate import whole_removable_groups
from prunekit.prune.channels import _cut_and_check, channel_masks
from prunekit.prune.graph import trace_channels
from prunekit.prune.latency import pruned_widths


class Block(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)); ``stride`` 2 subsamples the shortcut."""

    def __init__(self, width: int, stride: int = 1):
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x):
        branch = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(branch + x[:, :, ::self.stride, ::self.stride])


class TinyResNet(nn.Module):
    """stem → two residual blocks (the second one subsampling) → pool → fc."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.block1, self.block2 = Block(4), Block(4, stride=2)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.block2(self.block1(F.relu(self.bn(self.stem(x)))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def tiny_resnet() -> TinyResNet:
    """Seeded conv weights; random BN statistics and affine parameters, so every BN adds a non-zero constant."""
    torch.manual_seed(0)
    return randomise_norms(TinyResNet())


INPUT = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))


def branch_group(graph, conv: str) -> int:
    return graph.producer_group()[conv]


def test_only_the_branch_inner_groups_may_go_whole():
    model = tiny_resnet()
    graph = trace_channels(model, INPUT)
    whole = whole_removable_groups(model, graph)
    assert whole == {branch_group(graph, "block1.conv1"), branch_group(graph, "block2.conv1")}
    assert branch_group(graph, "stem") not in whole  # the residual stream reaches the output


@pytest.mark.parametrize("conv", ["block1.conv1", "block2.conv1"])
def test_a_removed_branch_computes_exactly_what_the_masked_twin_computes(conv):
    model = tiny_resnet()
    graph = trace_channels(model, INPUT)
    removed = set(graph.groups[branch_group(graph, conv)].channels)
    pruned = _cut_and_check(model, graph, removed, (INPUT,))  # raises unless equal to the masked twin in float64
    twin = make_permanent(apply_masks(permanent_copy(model), channel_masks(model, graph, removed)))
    block = conv.split(".")[0]
    assert isinstance(pruned.get_submodule(conv), ZeroWidthLayer)
    assert isinstance(pruned.get_submodule(f"{block}.bn1"), ZeroWidthLayer)
    assert isinstance(pruned.get_submodule(f"{block}.conv2"), ZeroWidthLayer)
    with torch.no_grad():
        assert torch.allclose(pruned(INPUT), twin(INPUT), atol=1e-6)
        # by hand: the block adds its bn2's constant β − mean·γ/√(var+ε) to its (subsampled) input
        bn2 = model.get_submodule(f"{block}.bn2")
        constant = bn2.bias - bn2.running_mean * bn2.weight / torch.sqrt(bn2.running_var + bn2.eps)
        x = F.relu(model.bn(model.stem(INPUT)))
        if block == "block2":
            x = model.block1(x)
        stride = model.get_submodule(block).stride
        expected = F.relu(x[:, :, ::stride, ::stride] + constant.view(1, -1, 1, 1))
        assert torch.allclose(pruned.get_submodule(block)(x), expected, atol=1e-6)


class OneMsPerBranchChannel:
    """A hand-built latency table: 1 ms for the rest, plus 1 ms per inner channel of each branch and 0.5 ms
    for a branch that is there at all (its per-op cost): removing a branch saves 0.5 ms more than its width."""

    full = {"stem": (3, 4), "block1.conv1": (4, 4), "block1.conv2": (4, 4), "block2.conv1": (4, 4),
            "block2.conv2": (4, 4), "fc": (4, 3)}
    dense_ms = 1.0 + 2 * (4 + 0.5)

    def predict(self, widths=None):
        widths = widths or {}
        ms = 1.0
        for block in ("block1", "block2"):
            inner = widths.get(f"{block}.conv1", (4, 4))[1]
            ms += inner + (0.5 if inner else 0.0)
        return ms

    def grid_for(self, full):
        return list(range(1, full + 1))


def test_the_latency_allocation_removes_a_branch_when_only_that_fits_and_the_plan_says_so():
    model = tiny_resnet()
    # 0.3 × 10 ms = 3 ms: one branch must go (two at width 1 cost 1 + 1.5 + 1.5 = 4 ms)
    plan = plan_channels(model, INPUT, latency_target=0.3, latency=OneMsPerBranchChannel())
    pruned = prune_channels(model, INPUT, plan=plan)
    widths = pruned_widths(pruned)
    gone = [conv for conv in ("block1.conv1", "block2.conv1") if widths[conv][1] == 0]
    assert len(gone) == 1
    assert OneMsPerBranchChannel().predict(widths) <= 0.3 * OneMsPerBranchChannel.dense_ms
    for conv, indices in plan.removed.items():  # the plan's removed filters are exactly what the model lost
        assert widths[conv][1] == OneMsPerBranchChannel.full[conv][1] - len(indices)
    assert plan.removed[gone[0]] == [0, 1, 2, 3]


def test_a_model_with_a_removed_branch_saves_loads_and_prunes_again(tmp_path):
    pruned = prune_channels(tiny_resnet(), INPUT, latency_target=0.3, latency=OneMsPerBranchChannel())
    with torch.no_grad():
        expected = pruned(INPUT)
    path = save_checkpoint(pruned, tmp_path / "pruned.pt")
    loaded = load_checkpoint(path).model.eval()
    assert [type(m) for m in loaded.modules()] == [type(m) for m in pruned.modules()]
    with torch.no_grad():
        assert torch.allclose(loaded(INPUT), expected, atol=1e-6)
    again = prune_channels(loaded, INPUT, ratio=0.25)  # the zero-width layers trace and cut like the rest
    gone = next(m for m in again.modules() if isinstance(m, ZeroWidthLayer) and m.out_channels == 0)
    assert again.stem.out_channels == 3 and gone.in_channels == 3  # the stream lost one, everywhere
    with torch.no_grad():
        assert again(INPUT).shape == expected.shape


def test_shrink_removes_a_fully_masked_branch_whole():
    from prunekit.prune.channels import shrink

    model = tiny_resnet()
    graph = trace_channels(model, INPUT)
    masked = apply_masks(permanent_copy(model), channel_masks(model, graph, set(
        graph.groups[branch_group(graph, "block1.conv1")].channels)))
    with torch.no_grad():
        expected = masked(INPUT)
    small = shrink(masked, INPUT)
    assert isinstance(small.block1.conv1, ZeroWidthLayer) and isinstance(small.block1.conv2, ZeroWidthLayer)
    with torch.no_grad():
        assert torch.allclose(small(INPUT), expected, atol=1e-6)


class PlainChain(nn.Module):
    """conv → BN → ReLU → conv → pool → fc: no residual addition, so no group may go whole."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1, self.conv2 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.conv2(F.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def test_a_plain_chain_has_no_group_that_may_go_whole():
    model = PlainChain().eval()
    assert whole_removable_groups(model, trace_channels(model, INPUT)) == frozenset()


@pytest.mark.parametrize("silent", ["block1", "block2"])
def test_with_batches_the_branch_that_costs_no_loss_is_the_one_removed(silent):
    model = tiny_resnet()
    with torch.no_grad():
        branch = model.get_submodule(silent)
        branch.conv1.weight.mul_(100.0)  # large weights, but the branch adds nothing: its bn2 outputs 0
        branch.bn2.weight.zero_()
        branch.bn2.bias.zero_()
        other = model.get_submodule("block2" if silent == "block1" else "block1")
        other.bn2.weight.mul_(10.0)  # the other branch dominates the output: removing it costs loss
        images = torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(2))
        labels = model(images).argmax(1)  # the model's own answers: any real change costs loss
    # 0.6 × 10 ms: one branch must go; measured values keep a branch whole or remove it
    pruned = prune_channels(model, INPUT, latency_target=0.6, latency=OneMsPerBranchChannel(),
                            batches=[(images, labels)])
    assert isinstance(pruned.get_submodule(f"{silent}.conv1"), ZeroWidthLayer)
    assert pruned.get_submodule("block2" if silent == "block1" else "block1").conv1.out_channels == 4


def test_measured_values_never_reward_removing_more():
    from prunekit.prune.allocate import GroupChoices, measured_values

    class FallingLoss:  # a loss that drops the more is removed: noise, or a randomly initialised model
        def loss(self, graph, removed):
            return 1.0 - 0.1 * len(list(removed))

    choice = GroupChoices(0, order=[0, 1, 2, 3], counts=[0, 1, 2, 3], values=[4.0, 3.0, 2.0, 1.0], ports={})
    measured_values(None, [choice], FallingLoss())
    assert choice.values == sorted(choice.values, reverse=True) and choice.values[0] > choice.values[-1]
    assert all(v <= 4.0 * 1e-4 for v in choice.values)  # no gain beyond the criterion's tie-break
