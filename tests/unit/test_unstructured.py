"""Unstructured magnitude pruning: exact counts, ties, scopes, ratio files, schedules, zeros that stay zero."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.config import TrainConfig
from prunekit.errors import PrunekitError
from prunekit.models import create_model, prunable_layers
from prunekit.prune import (apply_masks, compute_masks, extract_masks, make_permanent, prune_unstructured,
                            sparsity_of, sparsity_report, unstructured_masks)
from prunekit.prune.allocate import round_fraction, target_count
from prunekit.prune.mask import effective_state_dict
from prunekit.prune.sparsity import effective_weight
from prunekit.config import make_prune_config


class Toy(nn.Module):
    """Two hand-set layers and a classifier ``head``."""

    classifier_name = "head"

    def __init__(self):
        super().__init__()
        self.first = nn.Linear(4, 2, bias=False)
        self.second = nn.Linear(2, 2, bias=False)
        self.head = nn.Linear(2, 2)
        with torch.no_grad():
            self.first.weight.copy_(torch.tensor([[1.0, -2.0, 3.0, -4.0], [5.0, -6.0, 7.0, -8.0]]))
            self.second.weight.copy_(torch.tensor([[0.5, -10.0], [9.0, 20.0]]))
            self.head.weight.fill_(0.01)

    def forward(self, x):
        return self.head(self.second(self.first(x)))


def kept(masks, name):
    return masks[f"{name}.weight"].int().tolist()


def test_global_scope_one_threshold_over_layers():
    masks = unstructured_masks(Toy(), make_prune_config(sparsity=0.5))
    # 12 weights, 6 smallest |w|: 0.5, 1, 2, 3, 4, 5
    assert kept(masks, "first") == [[0, 0, 0, 0], [0, 1, 1, 1]]
    assert kept(masks, "second") == [[0, 1], [1, 1]]
    assert "head.weight" not in masks  # the classifier is spared


def test_layer_scope_same_ratio_per_layer():
    masks = unstructured_masks(Toy(), make_prune_config(sparsity=0.5, scope="layer"))
    assert kept(masks, "first") == [[0, 0, 0, 0], [1, 1, 1, 1]]
    assert kept(masks, "second") == [[0, 1], [0, 1]]


@pytest.mark.parametrize("sparsity,expected", [(0.3, 4), (0.25, 3), (0.0, 0), (0.99, 12)])
def test_exactly_round_s_times_total_pruned(sparsity, expected):
    masks = unstructured_masks(Toy(), make_prune_config(sparsity=sparsity))
    assert sum(int((~m).sum()) for m in masks.values()) == expected == target_count(sparsity, 12)


def test_ties_give_exactly_k_and_match_torch():
    layer = nn.Linear(10, 10, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([1.0, -1.0, 2.0, -2.0]).repeat(25).view(10, 10))
    model = nn.Sequential(layer, nn.Linear(10, 2))
    masks = unstructured_masks(model, make_prune_config(sparsity=0.37, scope="layer"))
    assert int((~masks["0.weight"]).sum()) == 37
    assert bool((layer.weight.abs()[~masks["0.weight"]] <= 2).all())
    reference = copy.deepcopy(layer)
    torch_prune.l1_unstructured(reference, "weight", amount=37)
    assert torch.equal(masks["0.weight"], reference.weight_mask.bool())


def torch_global(model, names, amount):
    modules = dict(model.named_modules())
    torch_prune.global_unstructured([(modules[n], "weight") for n in names],
                                    pruning_method=torch_prune.L1Unstructured, amount=amount)
    return {f"{n}.weight": modules[n].weight_mask.bool() for n in names}


def test_global_selection_equals_torch_global_unstructured_on_resnet20():
    torch.manual_seed(0)
    model = create_model("resnet20")
    reference = copy.deepcopy(model)
    names = [n for n in prunable_layers(model) if n != "linear"]
    total = sum(prunable_layers(model)[n].weight.numel() for n in names)
    first, second = target_count(0.6, total), target_count(0.9, total)
    ours = unstructured_masks(model, make_prune_config(sparsity=0.6))
    assert sorted(ours) == sorted(f"{n}.weight" for n in names)
    theirs = torch_global(reference, names, first)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    # on an already-masked model the masked weights count as pruned: torch prunes the remaining count
    apply_masks(model, ours)
    ours = unstructured_masks(model, make_prune_config(sparsity=0.9))
    theirs = torch_global(reference, names, second - first)
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)
    assert sum(int((~m).sum()) for m in ours.values()) == second


def test_ratio_file_unknown_name_lists_valid_names_and_closest(tmp_path):
    path = tmp_path / "ratios.yaml"
    path.write_text("featres.0: 0.5\n")
    with pytest.raises(PrunekitError) as err:
        prune_unstructured(create_model("vgg11", cfg=[8, "M", 16]), ratios=path)
    message = str(err.value)
    assert "featres.0" in message and "Did you mean 'features.0'" in message and "features.4" in message


@pytest.mark.parametrize("ratio", [1.0, -0.1, 1.5])
def test_ratio_outside_unit_interval_is_an_error(ratio):
    with pytest.raises(PrunekitError, match=r"\[0, 1\)"):
        prune_unstructured(Toy(), ratios={"first": ratio})


def test_sparsity_of_one_is_an_error():
    with pytest.raises(PrunekitError, match=r"\[0, 1\)"):
        prune_unstructured(Toy(), sparsity=1.0)


def test_classifier_pruned_only_when_named():
    by_default = unstructured_masks(Toy(), make_prune_config(ratios={"default": 0.5}))
    assert sorted(by_default) == ["first.weight", "second.weight"]
    named = unstructured_masks(Toy(), make_prune_config(ratios={"default": 0.5, "head": 0.25}))
    assert int((~named["head.weight"]).sum()) == 1
    assert kept(named, "second") == [[0, 1], [0, 1]]
    included = unstructured_masks(Toy(), make_prune_config(sparsity=0.5, include_classifier=True))
    assert "head.weight" in included


def test_imp_masks_only_shrink_and_land_on_target():
    torch.manual_seed(0)
    model = create_model("vgg11", cfg=[8, "M", 16, "M", 16, 16])
    config = make_prune_config(sparsity=0.8, schedule="iterative", iterations=4)
    total = sum(m.weight.numel() for n, m in prunable_layers(model).items() if n != "classifier")
    previous = None
    for k in range(1, 5):
        masks = compute_masks(model, config, progress=k / 4)
        assert sum(int((~m).sum()) for m in masks.values()) == target_count(round_fraction(0.8, k / 4), total)
        if previous is not None:
            assert all(bool((masks[n] <= previous[n]).all()) for n in masks)  # kept ⊆ previously kept
        apply_masks(model, masks)
        previous = extract_masks(model)
        with torch.no_grad():  # "training" between rounds reshuffles magnitudes, masked entries included
            for name, module in prunable_layers(model).items():
                if hasattr(module, "weight_orig"):
                    module.weight_orig.add_(torch.randn_like(module.weight_orig))
    assert sum(int((~m).sum()) for m in previous.values()) == target_count(0.8, total)
    assert sparsity_of(previous) == target_count(0.8, total) / total


def test_round_fraction_prunes_the_same_share_of_the_remainder():
    fractions = [round_fraction(0.8, k / 3) for k in range(4)]
    remaining = [1 - f for f in fractions]
    assert fractions[-1] == 0.8
    assert remaining[1] / remaining[0] == pytest.approx(remaining[3] / remaining[2])


def test_prune_unstructured_masks_any_module_and_make_permanent_keeps_zeros():
    model = Toy()
    masks = prune_unstructured(model, sparsity=0.5)
    assert hasattr(model.first, "weight_orig") and torch.equal(model.first.weight != 0, masks["first.weight"])
    report = sparsity_report(model)
    assert report["zeros"] == 6 and report["params"] == 16 and report["overall_without_classifier"] == 0.5
    make_permanent(model)
    assert not hasattr(model.first, "weight_orig") and int((model.first.weight == 0).sum()) == 5


def assert_pruned_zero(model, masks):
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        weight = effective_weight(modules[name.rsplit(".", 1)[0]]).detach().cpu()
        assert bool((weight[~mask] == 0).all()), name
        assert int((weight[mask] != 0).sum()) > 0, name


def test_pruned_weights_stay_zero_through_sgd_momentum_weight_decay_and_save_load(tmp_path, tiny_vgg):
    masks = prune_unstructured(tiny_vgg, sparsity=0.7)
    optimizer = torch.optim.SGD(tiny_vgg.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(tiny_vgg(x), y).backward()
        optimizer.step()
    assert_pruned_zero(tiny_vgg, masks)
    save_checkpoint(tiny_vgg, tmp_path / "p.pt")
    loaded = load_checkpoint(tmp_path / "p.pt")
    assert all(torch.equal(loaded.masks[k], masks[k].cpu()) for k in masks)
    assert_pruned_zero(loaded.model, masks)


@pytest.fixture
def small_data():
    """128 synthetic training images (two steps per epoch at batch 64) and 64 test images."""
    from prunekit.data import get_data

    return get_data("synthetic", limit_train=128, limit_test=64)


def test_pruned_weights_stay_zero_through_fit_and_resume(tmp_path, tiny_vgg, small_data):
    from prunekit.train import fit

    masks = prune_unstructured(tiny_vgg, sparsity=0.6, scope="layer")
    config = TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu", weight_decay=5e-3)
    fit(tiny_vgg, small_data, config, run_dir=tmp_path, progress=False)
    assert_pruned_zero(tiny_vgg, masks)
    saved = load_checkpoint(tmp_path / "last.pt")
    fit(saved.model, small_data, config.model_copy(update={"epochs": 2}), run_dir=tmp_path,
        resume=saved.train_state, progress=False)
    assert_pruned_zero(saved.model, masks)
    assert_pruned_zero(load_checkpoint(tmp_path / "last.pt").model, masks)
    assert sparsity_report(saved.model)["overall_without_classifier"] == pytest.approx(0.6, abs=1e-3)


def test_config_errors_are_prunekit_errors():
    with pytest.raises(PrunekitError, match="exactly one"):
        unstructured_masks(Toy(), make_prune_config(sparsity=0.5, ratios={"first": 0.5}))
    with pytest.raises(PrunekitError, match="granularity"):
        unstructured_masks(Toy(), make_prune_config(granularity="filter", sparsity=0.5))
    with pytest.raises(PrunekitError, match="scope"):
        make_prune_config(sparsity=0.5, scope="everywhere")


class StopAfterFirstEpoch:
    def after_backward(self, model):
        pass

    def on_epoch_end(self, epoch, record):
        raise KeyboardInterrupt


@pytest.mark.long
def test_pipeline_resumes_an_interrupted_round_exactly(tmp_path, small_data, monkeypatch):
    """IMP with retraining, interrupted inside round 2 and run again, ends where an uninterrupted run does."""
    import prunekit.pipeline.pruning as pipeline

    def tiny():
        torch.manual_seed(0)
        return create_model("vgg11", cfg=[8, "M", 16, "M", 16, 16])

    config = make_prune_config(sparsity=0.6, schedule="iterative", iterations=2, finetune_epochs=2)
    train = TrainConfig(batch_size=64, lr=0.05, device="cpu")
    straight = pipeline.run_pruning(tiny(), small_data, config, train, tmp_path / "straight", progress=False)
    assert [r["round"] for r in straight.rounds] == [1, 2]
    assert straight.rounds[-1]["masked_sparsity"] == target_count(0.6, 5976) / 5976

    real_fit, calls = pipeline.fit, []

    def interrupted_fit(*args, **kwargs):
        calls.append(kwargs["run_dir"])
        if len(calls) == 2:  # round 2, after its first epoch
            kwargs["callbacks"] = [StopAfterFirstEpoch()]
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(pipeline, "fit", interrupted_fit)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_pruning(tiny(), small_data, config, train, tmp_path / "cut", progress=False)
    resumed = pipeline.run_pruning(tiny(), small_data, config, train, tmp_path / "cut", progress=False)
    assert len(calls) == 3  # round 1 was not retrained again
    assert resumed.path.name == straight.path.name and resumed.rounds == straight.rounds
    # the effective weights (what checkpoints hold; `weight_orig` under a mask is not kept) match exactly
    resumed_state = effective_state_dict(resumed.model)
    for key, value in effective_state_dict(straight.model).items():
        assert torch.equal(value, resumed_state[key]), key

    other = make_prune_config(sparsity=0.7, schedule="iterative", iterations=2, finetune_epochs=2)
    with pytest.raises(PrunekitError, match="other settings"):
        pipeline.run_pruning(tiny(), small_data, other, train, tmp_path / "cut", name="Imp_unstructured_0.60",
                             progress=False)
    quick = other.model_copy(update={"finetune_epochs": 0})
    named = pipeline.run_pruning(tiny(), small_data, quick, train, tmp_path / "named", name="ticket_0.70",
                                 progress=False)
    assert named.path == tmp_path / "named" / "ticket_0.70.pt" and named.path.exists()
    assert named.meta["sparsity"] == sparsity_report(named.model)["overall"] and named.meta["method"] == "IMP"
