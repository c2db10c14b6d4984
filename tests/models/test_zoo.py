"""The model zoo: every registered model builds, runs, traces, has its published size, and rebuilds from data."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.fx
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models import (
    ZeroPadShortcut,
    apply_channel_config,
    arch_of,
    build_model,
    channel_config,
    classifier_name,
    create_model,
    list_models,
    model_spec,
    prunable_layers,
)

SHARED = Path(os.environ.get("PRUNEKIT_SHARED", Path(__file__).resolve().parents[2].parent / "shared"))
PRETRAINED = SHARED / "pretrained"

# ---------------------------------------------------------------- analytic parameter counts
# Written from the architecture descriptions only, never from the module objects.


def conv(cin, cout, k, groups=1, bias=False):
    return k * k * cin * cout // groups + (cout if bias else 0)


def bn(c):
    return 2 * c


def linear(fin, fout):
    return fin * fout + fout


VGG_CFGS = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512],
}
INCEPTIONS = [  # (in, n1x1, n3x3red, n3x3, n5x5red, n5x5, pool_planes)
    (192, 64, 96, 128, 16, 32, 32),
    (256, 128, 128, 192, 32, 96, 64),
    (480, 192, 96, 208, 16, 48, 64),
    (512, 160, 112, 224, 24, 64, 64),
    (512, 128, 128, 256, 24, 64, 64),
    (512, 112, 144, 288, 32, 64, 64),
    (528, 256, 160, 320, 32, 128, 128),
    (832, 256, 160, 320, 32, 128, 128),
    (832, 384, 192, 384, 48, 128, 128),
]
MBV2_CFG = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


def vgg_count(cfg, nc):
    total, cin = 0, 3
    for v in cfg:
        if v != "M":
            total, cin = total + conv(cin, v, 3) + bn(v), v
    return total + linear(cin, nc)


def resnet_count(depth, nc):
    n = (depth - 2) // 6
    total, cin = conv(3, 16, 3) + bn(16), 16
    for width in (16, 32, 64):
        for _ in range(n):  # option A shortcuts have no parameters
            total += conv(cin, width, 3) + bn(width) + conv(width, width, 3) + bn(width)
            cin = width
    return total + linear(64, nc)


def densenet_count(depth, k, nc):
    n, c = (depth - 4) // 3, 2 * k
    total = conv(3, c, 3)
    for stage in range(3):
        for _ in range(n):
            total, c = total + bn(c) + conv(c, k, 3), c + k
        if stage < 2:
            total += bn(c) + conv(c, c, 1)
    return total + bn(c) + linear(c, nc)


def googlenet_count(nc):
    def cbr(i, o, k):
        return conv(i, o, k, bias=True) + bn(o)

    total = cbr(3, 192, 3)
    for (cin, n1, r3, n3, r5, n5, pp), nxt in zip(INCEPTIONS, [i[0] for i in INCEPTIONS[1:]] + [1024]):
        assert n1 + n3 + n5 + pp == nxt  # the table itself is consistent
        total += cbr(cin, n1, 1) + cbr(cin, r3, 1) + cbr(r3, n3, 3)
        total += cbr(cin, r5, 1) + cbr(r5, n5, 3) + cbr(n5, n5, 3) + cbr(cin, pp, 1)
    return total + linear(1024, nc)


def googlenet_cifar100_count(nc):
    stem = conv(3, 64, 3) + bn(64) + conv(64, 64, 3) + bn(64) + conv(64, 192, 3) + bn(192)  # bias-free convs
    return googlenet_count(nc) - (conv(3, 192, 3, bias=True) + bn(192)) + stem


def mobilenetv2_count(nc):
    total, cin = conv(3, 32, 3) + bn(32), 32
    for t, c, blocks, s in MBV2_CFG:
        for i in range(blocks):
            p = t * cin
            total += conv(cin, p, 1) + bn(p) + conv(p, p, 3, groups=p) + bn(p) + conv(p, c, 1) + bn(c)
            if (s if i == 0 else 1) == 1 and cin != c:
                total += conv(cin, c, 1) + bn(c)
            cin = c
    return total + conv(320, 1280, 1) + bn(1280) + linear(1280, nc)


EXPECTED_PARAMS = {
    **{name: vgg_count(cfg, 10) for name, cfg in VGG_CFGS.items()},
    **{f"resnet{d}": resnet_count(d, 10) for d in (20, 32, 44, 56, 110)},
    "densenet40": densenet_count(40, 12, 10),
    "googlenet": googlenet_count(10),
    "googlenet_cifar100": googlenet_cifar100_count(10),
    "mobilenetv2": mobilenetv2_count(10),
}


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def batch(n=2):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# ---------------------------------------------------------------- every model


def test_registry_lists_every_family():
    assert set(list_models()) == set(EXPECTED_PARAMS)
    assert {model_spec(n).family for n in list_models()} == {"vgg", "resnet", "densenet", "googlenet", "mobilenetv2"}


@pytest.mark.parametrize("num_classes", [10, 100])
@pytest.mark.parametrize("name", list_models())
def test_forward_shape_and_arch(name, num_classes):
    model = create_model(name, num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(batch())
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()
    assert model.arch == {"name": name, "kwargs": {"num_classes": num_classes}}
    assert json.loads(json.dumps(model.arch)) == model.arch


@pytest.mark.parametrize("name", list_models())
def test_fx_trace_matches_eager(name):
    model = create_model(name).eval()
    traced = torch.fx.symbolic_trace(model)
    x = batch()
    with torch.no_grad():
        torch.testing.assert_close(traced(x), model(x))


@pytest.mark.parametrize("name", list_models())
def test_prunable_layers_and_classifier(name):
    model = create_model(name)
    layers = prunable_layers(model)
    expected = [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert list(layers) == expected and expected
    head = classifier_name(model)
    assert head == model.classifier_name
    assert head in layers and isinstance(layers[head], nn.Linear)
    assert layers[head].out_features == 10


@pytest.mark.parametrize("name", list_models())
def test_param_count_matches_analytic_formula(name):
    assert n_params(create_model(name)) == EXPECTED_PARAMS[name]


@pytest.mark.parametrize("name, published", [("vgg11", 9_228_362), ("resnet20", 269_722), ("resnet56", 853_018)])
def test_published_param_counts(name, published):
    assert EXPECTED_PARAMS[name] == published
    assert n_params(create_model(name)) == published


def test_cifar100_googlenet_has_the_students_counts():
    from prunekit.measure import count_macs

    model = create_model("googlenet_cifar100", num_classes=100)
    assert googlenet_cifar100_count(100) == n_params(model) == 6_402_564
    assert count_macs(model) == 531_976_192  # ~532 M: the stem at 32x32, every inception block after a pool
    assert [m.eps for m in model.modules() if isinstance(m, nn.BatchNorm2d) and m.eps != 1e-5][:2] == [32.0, 96.0]
    assert list(model.state_dict())[:4] == ["prelayer.0.weight", "prelayer.1.weight", "prelayer.1.bias",
                                            "prelayer.1.running_mean"]


# ---------------------------------------------------------------- registry errors


def test_unknown_model_lists_valid_names_and_closest():
    with pytest.raises(PrunekitError) as info:
        create_model("resnt20")
    message = str(info.value)
    assert "resnt20" in message and "did you mean 'resnet20'" in message.lower()
    assert all(name in message for name in list_models())


def test_bad_arguments_raise_prunekit_error():
    with pytest.raises(PrunekitError, match="depth"):
        create_model("resnet20", depth=3)
    with pytest.raises(PrunekitError, match="num_classes"):
        create_model("vgg11", num_classes=0)
    with pytest.raises(PrunekitError, match="cfg"):
        create_model("vgg11", cfg=[64, "X"])


def test_vgg_cfg_override_is_recorded():
    assert "cfg" not in create_model("vgg11").arch["kwargs"]
    model = create_model("vgg11", cfg=(32, "M", 48))
    assert model.arch["kwargs"] == {"num_classes": 10, "cfg": [32, "M", 48]}
    assert model.classifier.in_features == 48
    assert n_params(model) == vgg_count([32, "M", 48], 10)


def test_classifier_name_of_user_models():
    assert classifier_name(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))) == "2"
    with pytest.raises(PrunekitError, match="classifier_name"):
        classifier_name(nn.Sequential(nn.Conv2d(3, 4, 3)))


# ---------------------------------------------------------------- ZeroPadShortcut


def test_zero_pad_default_layout_by_hand():
    x = torch.tensor([[[[1.0]], [[2.0]]]])  # (1, 2, 1, 1)
    out = ZeroPadShortcut(2, 5, stride=1)(x)
    assert out.flatten().tolist() == [0.0, 1.0, 2.0, 0.0, 0.0]  # (5-2)//2 = 1 before, 2 after


def test_zero_pad_matches_akamaster_option_a():
    x = torch.randn(2, 16, 8, 8)
    planes = 32
    expected = F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4), "constant", 0)
    torch.testing.assert_close(ZeroPadShortcut(16, 32, stride=2)(x), expected)


def test_zero_pad_custom_source_index_and_stride():
    x = torch.arange(32.0).view(1, 2, 4, 4)
    out = ZeroPadShortcut(2, 3, stride=2, source_index=[1, -1, 0])(x)
    assert out.shape == (1, 3, 2, 2)
    assert out[0, 0].tolist() == [[16.0, 18.0], [24.0, 26.0]]
    assert out[0, 1].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert out[0, 2].tolist() == [[0.0, 2.0], [8.0, 10.0]]


def test_zero_pad_index_is_not_in_state_dict_and_is_validated():
    module = ZeroPadShortcut(16, 32, stride=2)
    assert module.state_dict() == {} and len(list(module.buffers())) == 1
    with pytest.raises(PrunekitError, match="source_index"):
        ZeroPadShortcut(2, 3, source_index=[0, 1])
    with pytest.raises(PrunekitError, match="outside"):
        ZeroPadShortcut(2, 2, source_index=[0, 2])


# ---------------------------------------------------------------- architecture as data


def shrink_vgg11_first_conv(config, width=40):
    config["features.0"]["out_channels"] = width
    config["features.1"]["num_features"] = width
    config["features.4"]["in_channels"] = width
    return config


def test_channel_config_round_trip_vgg11():
    original = create_model("vgg11")
    config = shrink_vgg11_first_conv(json.loads(json.dumps(channel_config(original))))
    assert config["features.0"] == {"kind": "Conv2d", "in_channels": 3, "out_channels": 40, "groups": 1}

    model = create_model("vgg11")
    untouched = model.features[8]
    assert apply_channel_config(model, config) is model
    assert model.features[0].weight.shape == (40, 3, 3, 3) and model.features[0].bias is None
    assert model.features[0].padding == (1, 1)
    assert model.features[1].weight.shape == (40,) and model.features[1].running_mean.shape == (40,)
    assert model.features[4].weight.shape == (128, 40, 3, 3)
    assert model.features[8] is untouched
    assert channel_config(model) == config
    assert model.eval()(batch()).shape == (2, 10)

    # A "pruned" state dict (sliced from the original) loads strictly into the rebuilt model.
    state = original.state_dict()
    for key in ("features.0.weight", "features.1.weight", "features.1.bias",
                "features.1.running_mean", "features.1.running_var"):
        state[key] = state[key][:40]
    state["features.4.weight"] = state["features.4.weight"][:, :40]
    arch = json.loads(json.dumps(arch_of(model)))
    rebuilt = build_model(arch)
    assert rebuilt.arch == {"name": "vgg11", "kwargs": {"num_classes": 10}}
    assert channel_config(rebuilt) == config
    rebuilt.load_state_dict(state, strict=True)


def test_apply_channel_config_errors_name_the_module():
    model = create_model("vgg11")
    config = channel_config(model)
    with pytest.raises(PrunekitError, match="features.99"):
        apply_channel_config(model, {**config, "features.99": config["features.0"]})
    with pytest.raises(PrunekitError, match="features.1"):
        apply_channel_config(model, {"features.1": config["features.0"]})
    with pytest.raises(PrunekitError, match="features.0"):
        apply_channel_config(model, {"features.0": {**config["features.0"], "out_channels": -3}})


def test_mobilenetv2_depthwise_groups_change():
    model = create_model("mobilenetv2")
    config = channel_config(model)
    assert config["layers.1.conv2"] == {"kind": "Conv2d", "in_channels": 96, "out_channels": 96, "groups": 96}
    config["layers.1.conv1"]["out_channels"] = 64
    config["layers.1.bn1"]["num_features"] = 64
    config["layers.1.conv2"].update(in_channels=64, out_channels=64, groups=64)
    config["layers.1.bn2"]["num_features"] = 64
    config["layers.1.conv3"]["in_channels"] = 64
    rebuilt = build_model({"name": "mobilenetv2", "kwargs": {"num_classes": 10}, "channels": config})
    conv2 = rebuilt.layers[1].conv2
    assert conv2.groups == 64 and conv2.weight.shape == (64, 1, 3, 3) and conv2.stride == (1, 1)
    assert rebuilt.layers[1].conv3.weight.shape == (24, 64, 1, 1)
    assert rebuilt.eval()(batch()).shape == (2, 10)
    with pytest.raises(PrunekitError, match="layers.1.conv2"):
        apply_channel_config(create_model("mobilenetv2"), {"layers.1.conv2": {**config["layers.1.conv2"], "groups": 5}})


def test_resnet_shortcut_and_block_config():
    model = create_model("resnet20")
    config = channel_config(model)
    assert config["layer2.0.shortcut"] == {
        "kind": "ZeroPadShortcut", "in_channels": 16, "out_channels": 32, "source_index": [-1] * 8 + list(range(16)) + [-1] * 8,
    }
    config["layer2.0.shortcut"]["source_index"] = list(range(16)) + [-1] * 16
    config["layer1.0.conv1"]["out_channels"] = 8
    config["layer1.0.bn1"]["num_features"] = 8
    config["layer1.0.conv2"]["in_channels"] = 8
    rebuilt = build_model({"name": "resnet20", "kwargs": {"num_classes": 10}, "channels": config})
    assert rebuilt.layer2[0].shortcut.source_index == list(range(16)) + [-1] * 16
    assert rebuilt.layer2[0].shortcut.stride == 2
    assert rebuilt.layer1[0].conv2.weight.shape == (16, 8, 3, 3)
    assert channel_config(rebuilt) == config
    x = torch.randn(1, 16, 4, 4)
    torch.testing.assert_close(rebuilt.layer2[0].shortcut(x)[:, :16], x[:, :, ::2, ::2])
    assert rebuilt.eval()(batch()).shape == (2, 10)


def test_densenet_kwargs_round_trip():
    model = create_model("densenet40", depth=22, growth_rate=6)
    assert n_params(model) == densenet_count(22, 6, 10)
    arch = json.loads(json.dumps(arch_of(model)))
    assert arch["kwargs"] == {"num_classes": 10, "depth": 22, "growth_rate": 6}
    assert channel_config(build_model(arch)) == arch["channels"]


def test_arch_of_user_model_asks_for_arch():
    with pytest.raises(PrunekitError, match="arch"):
        arch_of(nn.Sequential(nn.Linear(2, 2)))


# ---------------------------------------------------------------- public checkpoints (akamaster)


def load_pretrained(filename):
    path = PRETRAINED / filename
    if not path.exists():
        pytest.skip(f"{path} absent: set PRUNEKIT_SHARED to the shared/ folder to run checkpoint checks")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {key.removeprefix("module."): value for key, value in checkpoint["state_dict"].items()}


@pytest.mark.parametrize("name, filename", [("resnet20", "resnet20-12fca82f.th"), ("resnet56", "resnet56-4bfd9763.th")])
def test_pretrained_keys_and_shapes_match(name, filename):
    state = load_pretrained(filename)
    model = create_model(name)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert ours == {k: tuple(v.shape) for k, v in state.items()}
    model.load_state_dict(state, strict=True)


def test_pretrained_resnet20_accuracy_on_shared_test_images():
    state = load_pretrained("resnet20-12fca82f.th")
    test_batch = SHARED / "data" / "cifar10-subset" / "cifar-10-batches-py" / "test_batch"
    if not test_batch.exists():
        pytest.skip(f"{test_batch} absent")
    with open(test_batch, "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    images = torch.from_numpy(np.asarray(raw["data"], dtype=np.uint8)).view(-1, 3, 32, 32).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model = create_model("resnet20").eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        predictions = model((images - mean) / std).argmax(1)
    accuracy = (predictions == torch.tensor(raw["labels"])).float().mean().item()
    assert accuracy > 0.88  # shared/README: 91.2% on these 509 images; a wrong shortcut layout gives ~10%
