"""A model prepared for inference (prunekit.inference, what the eager runtime runs): BatchNorm folded into
convolutions, a removed residual branch reduced to one addition of its constant, identities dropped — and the
prepared copy always computes the model's function, or the model runs as it is."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from prunekit.models import ZeroWidthLayer
from conftest import randomise_norms
from prunekit.inference import PREPARED_AS, prepare_for_inference


class Block(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)) with an ``nn.Identity`` shortcut."""

    def __init__(self, width: int = 4, inplace_add: bool = False):
        super().__init__()
        self.inplace_add = inplace_add
        self.conv1, self.bn1 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.shortcut = nn.Identity()

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        if self.inplace_add:
            out += self.shortcut(x)
            return F.relu(out)
        return F.relu(out + self.shortcut(x))


class Net(nn.Module):
    def __init__(self, inplace_add: bool = False):
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.blocks = nn.Sequential(Block(inplace_add=inplace_add), Block(inplace_add=inplace_add))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        out = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def called(prepared: fx.GraphModule, kind: type) -> list[str]:
    """Names of the modules of type ``kind`` that the prepared graph still calls."""
    return [n.target for n in prepared.graph.nodes
            if n.op == "call_module" and isinstance(prepared.get_submodule(n.target), kind)]


def assert_same_function(prepared, model, batch: int = 3):
    x = torch.randn(batch, 3, 8, 8, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        torch.testing.assert_close(prepared(x), model(x), atol=1e-5, rtol=1e-4)


def test_every_conv_batchnorm_pair_is_folded_and_the_identities_dropped():
    model = randomise_norms(Net())
    before = copy.deepcopy(model.state_dict())
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "graph"
    assert called(prepared, nn.BatchNorm2d) == [] and called(prepared, nn.Identity) == []
    assert called(prepared, nn.Conv2d) == ["stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1",
                                           "blocks.1.conv2"]
    for batch in (1, 5):
        assert_same_function(prepared, model, batch)
    # the model itself is untouched: its BNs are still there with the same numbers
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert isinstance(model.bn, nn.BatchNorm2d)


def remove_first_branch(model: Net, bias: bool = True) -> Net:
    """What surgery leaves when the first block's branch is removed whole: ZeroWidthLayers and its bn2."""
    block = model.blocks[0]
    block.conv1 = ZeroWidthLayer.replacing(block.conv1, 4, 0)
    block.bn1 = ZeroWidthLayer.replacing(block.bn1, 0, 0)
    block.conv2 = ZeroWidthLayer.replacing(block.conv2, 0, 4, bias=torch.randn(4) if bias else None)
    return model.eval()


@pytest.mark.parametrize("bias", [True, False])
def test_a_removed_branch_runs_as_one_addition_of_its_constant(bias):
    model = remove_first_branch(randomise_norms(Net()), bias)
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "graph"
    assert called(prepared, ZeroWidthLayer) == [] and called(prepared, nn.BatchNorm2d) == []
    constants = [n for n in prepared.graph.nodes if n.op == "get_attr"]
    assert len(constants) == 1
    # by hand: the branch adds bn2(its conv's constant) = (b − mean)·γ/√(var+ε) + β
    block = model.blocks[0]
    b = block.conv2.bias if bias else torch.zeros(4)
    bn = block.bn2
    expected = (b - bn.running_mean) * bn.weight / torch.sqrt(bn.running_var + bn.eps) + bn.bias
    torch.testing.assert_close(getattr(prepared, constants[0].target).flatten(), expected.detach())
    for batch in (1, 4):
        assert_same_function(prepared, model, batch)


def test_an_in_place_residual_addition_keeps_its_meaning():
    model = remove_first_branch(randomise_norms(Net(inplace_add=True)))
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "graph"
    assert_same_function(prepared, model)


class ReadTwice(nn.Module):
    """The conv's output feeds its BN and, unnormalised, the addition: folding the BN would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(F.adaptive_avg_pool2d(self.bn(y) + y, 1).flatten(1))


class SharedConv(nn.Module):
    """One conv module called twice, a BN after only one call: folding would change the other call."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3), nn.Linear(3, 2)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.conv(self.bn(self.conv(x))), 1).flatten(1))


@pytest.mark.parametrize("model_class", [ReadTwice, SharedConv])
def test_a_batchnorm_that_cannot_be_folded_exactly_stays(model_class):
    model = randomise_norms(model_class())
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "graph"
    assert called(prepared, nn.BatchNorm2d) == ["bn"]
    assert_same_function(prepared, model)


class ValueBranch(nn.Module):
    """Python control flow on a tensor's value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        y = self.bn(self.conv(x))
        if y.mean() > 0:
            y = -y
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def test_a_model_that_cannot_be_traced_runs_as_it_is():
    model = randomise_norms(ValueBranch())
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "module" and isinstance(prepared.bn, nn.BatchNorm2d)
    assert prepared is not model
    assert_same_function(prepared, model)


def test_a_prepared_copy_that_computes_something_else_is_not_used(monkeypatch):
    import prunekit.inference as eager

    def wrong_fold(graph_module):  # a fold that forgets the BN's shift
        with torch.no_grad():
            graph_module.get_submodule("bn").bias.add_(1.0)
        return 0

    monkeypatch.setattr(eager, "fold_batchnorms", wrong_fold)
    model = randomise_norms(ReadTwice())
    prepared = prepare_for_inference(model, torch.zeros(1, 3, 8, 8))
    assert getattr(prepared, PREPARED_AS) == "module"
    assert_same_function(prepared, model)


def test_the_public_api_names_it():
    import prunekit

    assert prunekit.prepare_for_inference is prepare_for_inference and "prepare_for_inference" in prunekit.__all__
