"""User models in Python: references, save_checkpoint without `arch`, transposed and grouped convs as data."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.errors import PrunekitError
from prunekit.models import (apply_channel_config, arch_of, build_model, channel_config, parse_model_kwargs,
                             resolve_model, saved_arch)

SOURCE = textwrap.dedent('''
    from torch import nn


    class UpNet(nn.Module):
        def __init__(self, width=8):
            super().__init__()
            self.conv = nn.Conv2d(3, width, 3, padding=1)
            self.group = nn.Conv2d(width, width, 3, padding=1, groups=4)
            self.up = nn.ConvTranspose2d(width, width, 2, stride=2, groups=2, output_padding=0)
            self.bn = nn.BatchNorm2d(width)
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            x = self.bn(self.up(self.group(self.conv(x))))
            return self.head(x.mean((2, 3)))
''')


@pytest.fixture
def package(tmp_path, monkeypatch):
    """``usermods.nets`` importable from tmp_path; removed from sys.modules afterwards."""
    folder = tmp_path / "usermods"
    folder.mkdir()
    (folder / "__init__.py").write_text("")
    (folder / "nets.py").write_text(SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield folder
    for name in ("usermods", "usermods.nets"):
        sys.modules.pop(name, None)


def test_conv_transpose_and_grouped_conv_described_and_rebuilt(package):
    model = resolve_model("usermods.nets:UpNet", kwargs={"width": 8})
    config = channel_config(model)
    assert config["up"] == {"kind": "ConvTranspose2d", "in_channels": 8, "out_channels": 8, "groups": 2}
    assert config["group"]["groups"] == 4
    config.update(up={"kind": "ConvTranspose2d", "in_channels": 8, "out_channels": 4, "groups": 2},
                  bn={"kind": "BatchNorm2d", "num_features": 4}, head={"kind": "Linear", "in_features": 4,
                                                                      "out_features": 10})
    apply_channel_config(model, config)
    assert model.up.weight.shape == (8, 2, 2, 2)  # (in, out / groups, kH, kW)
    assert model.up.stride == (2, 2) and model(torch.zeros(1, 3, 8, 8)).shape == (1, 10)
    rebuilt = build_model(arch_of(model))
    assert channel_config(rebuilt) == config and rebuilt.arch == model.arch
    rebuilt.load_state_dict(model.state_dict())


def test_python_model_without_arch_saves_its_class(package, tmp_path):
    from usermods.nets import UpNet

    model = UpNet(width=8)
    path = save_checkpoint(model, tmp_path / "m.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["arch"]["ref"] == "usermods.nets:UpNet" and raw["arch"]["kwargs"] == {}
    loaded = load_checkpoint(path)
    assert isinstance(loaded.model, UpNet)
    torch.testing.assert_close(loaded.model(torch.ones(1, 3, 8, 8)), model(torch.ones(1, 3, 8, 8)))


def test_arch_ref_and_kwargs_override(package, tmp_path):
    from usermods.nets import UpNet

    path = save_checkpoint(UpNet(width=4), tmp_path / "m.pt", arch_ref="usermods.nets:UpNet", kwargs={"width": 4})
    assert torch.load(path, weights_only=True)["arch"]["kwargs"] == {"width": 4}
    assert load_checkpoint(path).model.conv.out_channels == 4


def test_class_gone_later_says_so(package, tmp_path):
    from usermods.nets import UpNet

    path = save_checkpoint(UpNet(), tmp_path / "m.pt")
    (package / "nets.py").unlink()
    for name in ("usermods", "usermods.nets"):
        sys.modules.pop(name, None)
    with pytest.raises(PrunekitError, match="m.pt holds user model usermods.nets:UpNet: cannot import module"):
        load_checkpoint(path)


def test_file_class_saved_by_path(tmp_path):
    file = tmp_path / "upnet.py"
    file.write_text(SOURCE)
    model = resolve_model(f"{file}:UpNet")
    plain = type(model)(width=8)  # same class, built in Python without `arch`
    assert saved_arch(plain)["ref"] == f"{file}:UpNet"


def test_unnameable_classes_keep_arch_none(tmp_path):
    class Local(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)

    assert saved_arch(Local()) is None and saved_arch(nn.Sequential(nn.Linear(2, 2))) is None
    path = save_checkpoint(Local(), tmp_path / "local.pt")
    with pytest.raises(PrunekitError, match="could not be recorded"):
        load_checkpoint(path)
    assert load_checkpoint(path, model=Local()).arch is None


def test_parse_model_kwargs():
    assert parse_model_kwargs(None) == {} and parse_model_kwargs('{"width": 8}') == {"width": 8}
    with pytest.raises(PrunekitError, match="not valid JSON"):
        parse_model_kwargs("{width: 8}")
    with pytest.raises(PrunekitError, match="JSON object"):
        parse_model_kwargs("8")


def test_registry_name_through_resolve_model():
    model = resolve_model("vgg11", 100, {"cfg": [8, "M", 16]})
    assert model.arch == {"name": "vgg11", "kwargs": {"num_classes": 100, "cfg": [8, "M", 16]}}


def test_experiment_baseline_accepts_reference():
    from prunekit.experiment.config import load_experiment

    experiment = load_experiment({"name": "x", "baseline": {"model": "nets/net.py:Net",
                                                            "model_kwargs": {"width": 8}}})
    assert experiment.baseline.model == "nets/net.py:Net"
