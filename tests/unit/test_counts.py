"""Count conventions: hand-computed rules, the VGG-11 write-up numbers, and the real thop/torchprofile packages."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.measure import CONVENTIONS, count_macs, count_ops
from prunekit.models import create_model

PRUNED_VGG11 = [64, "M", 128, "M", 256, 256, "M", 256, 256, "M", 256, 256]


def test_conventions_registry_names():
    assert list(CONVENTIONS) == ["macs", "flops", "thop", "torchprofile"]
    with pytest.raises(PrunekitError, match="use one of macs, flops, thop, torchprofile"):
        count_ops(nn.Linear(2, 2), "fvcore")


def test_hand_computed_rules_on_a_small_net():
    # conv 3->4 3x3 on 4x4 (bias): 16·4·27 = 1,728 MACs; BN on 64 elements; adaptive pool 4x4->1: 4 outputs;
    # linear 4->2: 8 MACs
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(4, 2))
    size = (1, 3, 4, 4)
    assert count_ops(net, "macs", size) == 1728 + 8
    assert count_ops(net, "flops", size) == 2 * (1728 + 8)
    assert count_ops(net, "thop", size) == 1728 + 4 * 64 + (16 + 1) * 4 + 8  # bias not counted; BN 4/element
    assert count_ops(net, "torchprofile", size) == 1728 + 64 + 4 + 8  # affine BN 1/element, pool 1/output


def test_vgg11_write_up_numbers():
    dense, pruned = create_model("vgg11"), create_model("vgg11", cfg=PRUNED_VGG11)
    assert count_macs(dense) == 152_769_536 and count_macs(pruned) == 100_862_464
    bn_elements = 151_552  # 64·32² + 128·16² + 2·256·8² + 2·512·4² + 2·512·2²
    assert count_ops(dense, "thop") == 153_375_744 == 152_769_536 + 4 * bn_elements
    assert count_ops(pruned, "thop") == 101_427_712
    assert count_ops(dense, "torchprofile") == 152_769_536 + bn_elements + 512  # + the 512 pooled outputs


@pytest.mark.long
@pytest.mark.parametrize("name", ["vgg11", "resnet20", "densenet40", "mobilenetv2", "googlenet_cifar100"])
def test_thop_and_torchprofile_conventions_equal_the_real_packages(name):
    thop = pytest.importorskip("thop", reason="thop not installed (pip install thop --no-deps)")
    torchprofile = pytest.importorskip("torchprofile", reason="torchprofile not installed (pip install torchprofile)")
    model = create_model(name, num_classes=100).eval()
    x = torch.zeros(1, 3, 32, 32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference_thop = int(thop.profile(model, (x,), verbose=False)[0])
        reference_torchprofile = torchprofile.profile_macs(model, x)
    assert count_ops(model, "thop") == reference_thop
    assert count_ops(model, "torchprofile") == reference_torchprofile


def test_profile_json_has_count_and_ops(capsys):
    import json

    from prunekit.cli import main

    assert main(["profile", "--model", "vgg11", "--model-cfg", ",".join(map(str, PRUNED_VGG11)), "--count", "thop",
                 "--no-timing", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["count"] == "thop" and result["ops"] == 101_427_712 and result["params"] == 3_325_514
