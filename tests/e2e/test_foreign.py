"""Checkpoints of other code bases load through the CLI with no Python: rethinking-network-pruning (Liu et al.
2019) files, a foreign ``cfg`` entry, ``--model-cfg``, ``--rename``, and the mismatch hint."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from prunekit.cli import main
from tests.conftest import REAL_DATA, needs_shared

VGG11 = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512]
PRUNED = [32, "M", 64, "M", 128, 96, "M", 200, 180, "M", 150, 100]


class SlimmingVGG(nn.Module):
    """Written for this test with the key names of rethinking-network-pruning's cifar/network-slimming VGG:
    ``feature`` (Conv-BN-ReLU, MaxPool for 'M'), an average pool built in forward, ``classifier``."""

    def __init__(self, cfg):
        super().__init__()
        layers, channels = [], 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU(True)]
                channels = v
        self.feature = nn.Sequential(*layers)
        self.classifier = nn.Linear(cfg[-1], 10)

    def forward(self, x):
        x = nn.AvgPool2d(2)(self.feature(x))
        return self.classifier(x.view(x.size(0), -1))


def _randomised(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial statistics, so a wrong mapping changes the outputs
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def _outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


def _loaded_outputs(path, x):
    from prunekit.checkpoint import load_checkpoint

    return _outputs(load_checkpoint(path).model, x)


def test_model_best_and_vggprune_files_convert_with_their_cfg(tmp_path, capsys):
    x = torch.randn(2, 3, 32, 32)
    dense = _randomised(SlimmingVGG(VGG11))
    optimizer = torch.optim.SGD(dense.parameters(), lr=0.1, momentum=0.9)
    dense(x).sum().backward()
    optimizer.step()
    dense.eval()
    torch.save({"epoch": 160, "state_dict": {f"module.{k}": v for k, v in dense.state_dict().items()},
                "best_prec1": 93.5, "optimizer": optimizer.state_dict(), "cfg": VGG11}, tmp_path / "model_best.pth.tar")
    pruned = _randomised(SlimmingVGG(PRUNED))
    torch.save({"cfg": PRUNED, "state_dict": pruned.state_dict()}, tmp_path / "pruned.pth.tar")

    assert main(["convert", "--model", "vgg11", "--weights", str(tmp_path / "model_best.pth.tar"),
                 "--normalize", "cifar10-common", "--out", str(tmp_path / "dense.pt")]) == 0
    assert "layout rethinking-vgg" in capsys.readouterr().err
    assert torch.allclose(_loaded_outputs(tmp_path / "dense.pt", x), _outputs(dense, x), atol=1e-5)

    assert main(["convert", "--model", "vgg11", "--weights", str(tmp_path / "pruned.pth.tar"),
                 "--out", str(tmp_path / "pruned.pt")]) == 0
    err = capsys.readouterr().err
    assert "cfg 32,M,64,M,128,96,M,200,180,M,150,100" in err
    from prunekit.checkpoint import load_checkpoint

    loaded = load_checkpoint(tmp_path / "pruned.pt")
    assert loaded.arch["kwargs"]["cfg"] == PRUNED and loaded.meta["std"] == [0.247, 0.2435, 0.2616]
    assert torch.allclose(_outputs(loaded.model, x), _outputs(pruned, x), atol=1e-5)


def test_evaluate_and_profile_read_the_files_cfg(tmp_path, capsys):
    pruned = _randomised(SlimmingVGG(PRUNED))
    torch.save({"cfg": PRUNED, "state_dict": pruned.state_dict()}, tmp_path / "pruned.pth.tar")
    assert main(["evaluate", "--model", "vgg11", "--weights", str(tmp_path / "pruned.pth.tar"),
                 "--dataset", "synthetic", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] > 0
    assert main(["profile", "--model", "vgg11", "--weights", str(tmp_path / "pruned.pth.tar"), "--no-timing",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == sum(p.numel() for p in pruned.parameters())


@needs_shared
def test_evaluate_foreign_file_on_real_data(tmp_path, capsys):
    torch.save({"cfg": PRUNED, "state_dict": _randomised(SlimmingVGG(PRUNED)).state_dict()}, tmp_path / "p.pth.tar")
    assert main(["evaluate", "--model", "vgg11", "--weights", str(tmp_path / "p.pth.tar"), "--data", str(REAL_DATA),
                 "--normalize", "cifar10-common", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["images"] == 509


def test_model_cfg_wins_over_the_files_cfg_and_a_wrong_one_is_a_clear_error(tmp_path, capsys):
    torch.save({"cfg": VGG11, "state_dict": SlimmingVGG(PRUNED).state_dict()}, tmp_path / "p.pth.tar")
    argv = ["profile", "--model", "vgg11", "--weights", str(tmp_path / "p.pth.tar"), "--no-timing", "--json"]
    assert main(argv + ["--model-cfg", ",".join(map(str, PRUNED))]) == 0
    assert json.loads(capsys.readouterr().out)["params"] == sum(p.numel() for p in SlimmingVGG(PRUNED).parameters())
    assert main(argv) == 2  # the file's own (wrong) cfg is used and never silently resized
    err = capsys.readouterr().err
    assert "shape mismatches (e.g. features.0.weight (32, 3, 3, 3) vs (64, 3, 3, 3)" in err and "Traceback" not in err


@pytest.mark.slow
@needs_shared
def test_convert_evaluate_warns_when_another_normalisation_scores_clearly_higher(tmp_path, capsys):
    from tests.conftest import PRETRAINED

    assert main(["convert", "--model", "resnet20", "--weights", str(PRETRAINED / "resnet20-12fca82f.th"),
                 "--normalize", "cifar10", "--evaluate", "--data", str(REAL_DATA), "--out", str(tmp_path / "r.pt")]) == 0
    assert "warning" not in capsys.readouterr().err  # every preset lands within 2 points on these weights
    assert main(["convert", "--model", "resnet20", "--weights", str(PRETRAINED / "resnet20-12fca82f.th"),
                 "--normalize", "0.5,0.5,0.5,0.05,0.05,0.05", "--evaluate", "--data", str(REAL_DATA),
                 "--out", str(tmp_path / "r.pt")]) == 0
    err = capsys.readouterr().err
    assert "warning: --normalize cifar10 scores" in err and "convert again with --normalize cifar10" in err


class L1NormResNetBlock(nn.Module):
    def __init__(self, planes, inner):
        super().__init__()
        self.conv1 = nn.Conv2d(planes, inner, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(inner)
        self.conv2 = nn.Conv2d(inner, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)


def test_l1_norm_pruning_resnet_layout_and_pruned_widths_load(tmp_path, capsys):
    from prunekit.models import create_model

    reference = create_model("resnet20")
    state = {("fc." + k[len("linear."):] if k.startswith("linear.") else k): v
             for k, v in reference.state_dict().items()}
    # res56prune-style: block 0 of layer1 keeps 9 of its 16 inner channels
    block = L1NormResNetBlock(16, 9).state_dict()
    state.update({f"layer1.0.{k}": v for k, v in block.items()})
    torch.save({"cfg": [9] + [16] * 8, "state_dict": state}, tmp_path / "pruned.pth.tar")
    assert main(["convert", "--model", "resnet20", "--weights", str(tmp_path / "pruned.pth.tar"),
                 "--out", str(tmp_path / "r.pt")]) == 0
    err = capsys.readouterr().err
    assert "layout rethinking-resnet" in err and "layer widths from the file" in err
    from prunekit.checkpoint import load_checkpoint

    model = load_checkpoint(tmp_path / "r.pt").model
    assert model.layer1[0].conv1.out_channels == 9 and torch.equal(model.linear.weight, reference.linear.weight)


def test_slimming_densenet_selection_layers_are_dropped_when_they_keep_every_channel(tmp_path, capsys):
    from prunekit.models import create_model

    state = dict(create_model("densenet40").state_dict())
    state["dense1.0.select.indexes"] = torch.ones(24)
    torch.save({"state_dict": state}, tmp_path / "d.pth.tar")
    assert main(["profile", "--model", "densenet40", "--weights", str(tmp_path / "d.pth.tar"), "--no-timing"]) == 0
    assert "rethinking-densenet" in capsys.readouterr().err
    state["dense1.0.select.indexes"][3] = 0
    torch.save({"state_dict": state}, tmp_path / "d.pth.tar")
    assert main(["profile", "--model", "densenet40", "--weights", str(tmp_path / "d.pth.tar"), "--no-timing"]) == 2
    assert "unexpected keys (e.g. dense1.0.select.indexes)" in capsys.readouterr().err


def test_rename_and_the_mismatch_hint(tmp_path, capsys):
    from prunekit.models import create_model

    state = {k.replace("features.", "body.layers."): v
             for k, v in create_model("vgg11", cfg=[8, "M", 16]).state_dict().items()}
    torch.save(state, tmp_path / "w.pt")
    argv = ["profile", "--model", "vgg11", "--model-cfg", "8,M,16", "--weights", str(tmp_path / "w.pt"),
            "--no-timing", "--json"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Closest key mapping: --rename body.layers.=features. fits 12 of 12 unexpected keys." in err
    assert "Traceback" not in err
    assert main(argv + ["--rename", "body.layers.=features."]) == 0
    capsys.readouterr()
    assert main(argv + ["--rename", "nonsense"]) == 2
    assert "write OLD=NEW" in capsys.readouterr().err


def test_closest_renames_ranks_the_prefix_that_fits_most_keys():
    from prunekit.checkpoint import closest_renames

    missing = ["features.0.weight", "features.1.weight", "features.1.bias", "classifier.weight"]
    unexpected = ["feature.0.weight", "feature.1.weight", "feature.1.bias", "fc.weight"]
    ranked = closest_renames(missing, unexpected)
    assert ranked[0] == ("feature.", "features.", 3)
    assert ("fc.", "classifier.", 1) in ranked


@pytest.mark.parametrize("text", ["cifar10-common", "0.4914,0.4822,0.4465,0.2023,0.1994,0.2010"])
def test_cifar10_common_preset_is_the_copied_constants(text):
    from prunekit.data import DATASETS
    from prunekit.data.normalisation import normalisation_name, parse_normalisation

    mean, std = parse_normalisation(text, DATASETS["cifar10"])
    assert mean == (0.4914, 0.4822, 0.4465) and std == (0.2023, 0.1994, 0.2010)
    assert normalisation_name(mean, std) == "cifar10-common"
    assert parse_normalisation("cifar100", DATASETS["cifar10"]) == (DATASETS["cifar100"].mean, DATASETS["cifar100"].std)


def test_better_normalisation_needs_a_clear_margin():
    from prunekit.data.normalisation import better_normalisation

    assert better_normalisation({"cifar10": 80.0, "cifar10-common": 81.5, "imagenet": 60.0}, "cifar10") is None
    assert better_normalisation({"cifar10": 70.0, "cifar10-common": 91.0, "imagenet": 60.0}, "cifar10") == (
        "cifar10-common")
