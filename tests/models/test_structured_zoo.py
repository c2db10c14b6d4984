"""Every zoo family x seeded random channel allocations: masked == physically pruned, trainable, checkpointable.

The equivalence test is the contract of filter pruning: zeroing a channel group with ``filter_masks``
and removing it with ``shrink`` give the same function. BN statistics are calibrated on random data and
γ/β randomised first, so a BN on a removed channel would *not* output zero by accident.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.config import PruneConfig
from prunekit.measure import count_macs, count_parameters
from prunekit.models import channel_config, create_model, list_models
from prunekit.prune.allocate import estimate_macs
from prunekit.prune.channels import filter_masks, filter_sparsity, prune_channels, shrink
from prunekit.prune.graph import trace_channels
from prunekit.prune.mask import apply_masks

CORE = ["vgg11", "vgg16", "resnet20", "resnet56", "densenet40", "googlenet", "mobilenetv2"]  # every family
ALLOCATIONS = {
    "layer50-random": PruneConfig(granularity="filter", sparsity=0.5, scope="layer", criterion="random", seed=1),
    "global30-random": PruneConfig(granularity="filter", sparsity=0.3, scope="global", criterion="random", seed=2),
    "layer40-l1": PruneConfig(granularity="filter", sparsity=0.4, scope="layer", criterion="l1"),
}
CASES = [(name, key) for name in CORE for key in ("layer50-random", "global30-random")]
CASES += [(name, "layer40-l1") for name in list_models() if name not in CORE]


pytestmark = pytest.mark.usefixtures("one_thread")


def side(name: str) -> int:
    """Equivalence does not depend on resolution: the smallest input every pooling stage accepts (speed)."""
    return 16 if name.startswith("vgg") else 8


def batch(n=2, seed=0, size=8):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def randomise_bn(model: nn.Module, seed: int, size: int) -> nn.Module:
    """Random γ/β, running statistics calibrated on one random batch, then jittered; eval mode."""
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.weight.data.copy_(torch.rand(bn.num_features, generator=g) + 0.5)
        bn.bias.data.copy_(torch.rand(bn.num_features, generator=g) * 0.4 - 0.2)
        bn.reset_running_stats()
        bn.momentum = None  # cumulative average: the stats of the calibration batch
    model.train()
    with torch.no_grad():
        model(batch(4, seed=seed + 100, size=size))
    for bn in bns:
        bn.momentum = 0.1
        bn.running_mean.add_(0.1 * torch.randn(bn.num_features, generator=g) * bn.running_var.sqrt())
        bn.running_var.mul_(torch.rand(bn.num_features, generator=g) * 0.45 + 0.8)
    return model.eval()


@pytest.mark.parametrize("name, allocation", CASES)
def test_masked_equals_physical_then_trains_and_checkpoints(name, allocation, tmp_path):
    torch.manual_seed(0)
    model = randomise_bn(create_model(name, num_classes=7), seed=len(name), size=side(name))
    x = batch(size=side(name))
    masks = filter_masks(model, x[:1], ALLOCATIONS[allocation])
    original = copy.deepcopy(model)
    apply_masks(model, masks)
    expected_sparsity = filter_sparsity(model, model)
    assert expected_sparsity > 0.2
    with torch.no_grad():
        masked = model(x)
    small = shrink(model, x[:1])
    with torch.no_grad():
        physical = small(x)
    assert physical.shape == (2, 7)
    assert (physical - masked).abs().max() <= 1e-4
    assert filter_sparsity(original, small) == pytest.approx(expected_sparsity)

    small.train()  # one training step: shapes, gradients and the optimizer agree (tiny lr: BN on 1x1 maps)
    optimizer = torch.optim.SGD(small.parameters(), lr=1e-4)
    small(batch(4, seed=1, size=side(name))).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in small.parameters())
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in small.parameters())

    small.eval()
    save_checkpoint(small, tmp_path / "pruned.pt")
    loaded = load_checkpoint(tmp_path / "pruned.pt").model.eval()
    assert channel_config(loaded) == channel_config(small)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), small(x))


# --------------------------------------------------------------------------- analytic counts


def conv(cin, cout, k=3):
    return k * k * cin * cout


def vgg_counts(cfg, num_classes, side=32):
    """(params, MACs) of a bias-free conv3x3+BN VGG with a global-pool linear classifier, by formula."""
    params = macs = 0
    cin = 3
    for v in cfg:
        if v == "M":
            side //= 2
            continue
        params += conv(cin, v) + 2 * v
        macs += side * side * conv(cin, v)
        cin = v
    return params + cin * num_classes + num_classes, macs + cin * num_classes


def resnet20_counts(stream, inner, num_classes):
    """(params, MACs) of a CIFAR ResNet-20 with stage widths ``stream`` and block widths ``inner``."""
    params = conv(3, stream[0]) + 2 * stream[0]
    macs = 32 * 32 * conv(3, stream[0])
    cin = stream[0]
    for block, width in enumerate(inner):
        stage = block // 3
        side = 32 >> stage
        out = stream[stage]
        params += conv(cin, width) + 2 * width + conv(width, out) + 2 * out  # option A: no shortcut params
        macs += side * side * (conv(cin, width) + conv(width, out))
        cin = out
    return params + cin * num_classes + num_classes, macs + cin * num_classes


def test_vgg_cfg_counts_match_formula():
    cfg = [32, "M", 64, "M", 100, 96, "M", 200, 128, "M", 256, 50]
    model = create_model("vgg11", num_classes=10)
    prune_channels(model, torch.zeros(1, 3, 32, 32), cfg=cfg, criterion="l2")
    params, macs = vgg_counts(cfg, 10)
    assert count_parameters(model) == params
    assert count_macs(model) == macs == estimate_macs(trace_channels(model), model)
    assert create_model("vgg11", num_classes=10, cfg=cfg).state_dict().keys() == model.state_dict().keys()


def test_resnet20_block_widths_match_formula():
    inner_ratios = [0.5, 0.25, 0.75, 0.5, 0.0, 0.25, 0.125, 0.5, 0.75]
    names = [f"layer{s + 1}.{b}.conv1" for s in range(3) for b in range(3)]
    ratios = dict(zip(names, inner_ratios))
    ratios.update({"conv1": 0.5, "layer2.0.conv2": 0.5, "layer3.0.conv2": 0.25})  # the three residual streams
    model = create_model("resnet20", num_classes=10)
    prune_channels(model, torch.zeros(1, 3, 32, 32), ratios=ratios, criterion="l1")
    stream = [8, 16, 48]
    inner = [round(w * (1 - r)) for w, r in zip([16] * 3 + [32] * 3 + [64] * 3, inner_ratios)]
    assert [model.get_submodule(n).out_channels for n in names] == inner
    assert model.linear.in_features == 48 and model.conv1.out_channels == 8
    params, macs = resnet20_counts(stream, inner, 10)
    assert count_parameters(model) == params
    assert count_macs(model) == macs == estimate_macs(trace_channels(model), model)
