"""One resizable-layer contract: every layer type prunekit resizes has a shape record, so a pruned model
rebuilds from its checkpoint (BatchNorm1d included)."""

from __future__ import annotations

import textwrap

import pytest
import torch
from torch import nn

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.errors import PrunekitError
from prunekit.models.shapes import channel_config, has_shape_record
from prunekit.prune.channels import prune_channels
from prunekit.prune.layer_handlers import LAYERS, LayerHandler, register_layer

BN1D_NET = textwrap.dedent('''
    import torch
    from torch import nn

    class Bn1dNet(nn.Module):
        """conv -> BN -> conv -> global pool -> BatchNorm1d -> Linear."""

        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
            self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
            self.bn1d = nn.BatchNorm1d(32)
            self.fc = nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.bn1(self.conv1(x)))
            x = self.conv2(x).mean(dim=(2, 3))
            return self.fc(torch.relu(self.bn1d(x)))
''')


def test_every_registered_layer_type_has_a_shape_record():
    for handler in LAYERS:
        for module_type in handler.types:
            assert has_shape_record(module_type), f"{type(handler).__name__}: {module_type.__name__}"


def test_register_layer_refuses_a_type_without_shape_record():
    class Odd(nn.Module):
        pass

    class OddHandler(LayerHandler):
        types = (Odd,)

    before = list(LAYERS)
    with pytest.raises(PrunekitError, match="Odd, which prunekit.models.shapes does not record"):
        register_layer(OddHandler())
    assert LAYERS == before


def test_pruned_batchnorm1d_round_trips_through_a_checkpoint(tmp_path):
    source = tmp_path / "bn1d_net.py"
    source.write_text(BN1D_NET)
    namespace: dict = {}
    exec(compile(BN1D_NET, str(source), "exec"), namespace)
    torch.manual_seed(0)
    model = namespace["Bn1dNet"]()
    with torch.no_grad():  # non-trivial BN statistics and affine terms
        for bn in (model.bn1, model.bn1d):
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.uniform_(0.5, 1.5)
    model.eval()
    prune_channels(model, torch.zeros(1, 3, 32, 32), ratio=0.5)
    assert model.bn1d.num_features == 16 and channel_config(model)["bn1d"]["num_features"] == 16
    path = save_checkpoint(model, tmp_path / "pruned.pt", arch_ref=f"{source}:Bn1dNet")
    loaded = load_checkpoint(path).model.eval()
    x = torch.randn(4, 3, 32, 32)
    assert loaded.bn1d.num_features == 16 and isinstance(loaded.bn1d, nn.BatchNorm1d)
    torch.testing.assert_close(loaded(x), model(x))
