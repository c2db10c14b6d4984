"""Recovery: distillation loss and its DDP run, BN recalibration, taylor/fpgm/LAMP scores, the global filter
ranking's normalisation and the suggestion that never loses to uniform."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from prunekit.config import PruneConfig, TrainConfig, make_prune_config
from prunekit.errors import PrunekitError
from prunekit.train.bn import recalibrate_bn
from prunekit.train.distill import KnowledgeDistillation, distillation_loss


# --- distillation ---------------------------------------------------------------------------------------


def test_distillation_loss_matches_hand_computed_kl():
    student = torch.tensor([[1.0, 2.0, 3.0]])
    teacher = torch.tensor([[3.0, 2.0, 1.0]])
    t = 2.0
    ps = [math.exp(v / t) for v in (1, 2, 3)]
    pt = [math.exp(v / t) for v in (3, 2, 1)]
    ps = [p / sum(ps) for p in ps]
    pt = [p / sum(pt) for p in pt]
    expected = t * t * sum(q * math.log(q / p) for q, p in zip(pt, ps))
    assert distillation_loss(student, teacher, t).item() == pytest.approx(expected, rel=1e-6)
    assert distillation_loss(teacher, teacher, t).item() == pytest.approx(0.0, abs=1e-7)
    # batchmean: the mean of the per-row terms
    pair = distillation_loss(torch.cat([student, teacher]), torch.cat([teacher, teacher]), t)
    assert pair.item() == pytest.approx(expected / 2, rel=1e-6)


def test_knowledge_distillation_mixes_label_and_soft_loss_and_freezes_teacher():
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    logits = torch.randn(5, 3, requires_grad=True)
    hook = KnowledgeDistillation(teacher, alpha=0.25, temperature=3.0)
    hook.on_fit_start(nn.Linear(4, 3), TrainConfig())
    assert not any(p.requires_grad for p in teacher.parameters()) and not teacher.training
    label = F.cross_entropy(logits, y)
    mixed = hook.training_loss(x, logits, y, label)
    soft = distillation_loss(logits, teacher(x).detach(), 3.0)
    assert mixed.item() == pytest.approx(0.75 * label.item() + 0.25 * soft.item(), rel=1e-6)
    mixed.backward()
    assert all(p.grad is None for p in teacher.parameters())
    unchanged = KnowledgeDistillation(teacher, alpha=0.0).training_loss(x, logits, y, label)
    assert unchanged.item() == pytest.approx(label.item())


def test_distill_without_teacher_is_a_clear_error():
    from prunekit.pipeline import distillation

    with pytest.raises(PrunekitError, match="teacher"):
        distillation(TrainConfig(distill=True), None)
    assert distillation(TrainConfig(), None) == []


DDP_CONFIG = TrainConfig(epochs=1, batch_size=32, lr=0.05, device="cpu", seed=1, augment=False, distill=True,
                         distill_alpha=0.5, distill_temperature=2.0)


def small_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 10))


def distill_rank(rank: int, world_size: int, port: int, out: str) -> None:
    from prunekit.data import get_data
    from prunekit.train import fit

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    model, teacher = small_net(0), small_net(7)
    data = get_data("synthetic", limit_train=128, limit_test=32)
    fit(model, data, DDP_CONFIG, callbacks=[KnowledgeDistillation(teacher, 0.5, 2.0)], progress=False)
    torch.save({"student": model.state_dict(), "teacher": teacher.state_dict()}, os.path.join(out, f"r{rank}.pt"))
    torch.distributed.destroy_process_group()


@pytest.mark.long
def test_distillation_under_two_gloo_ranks_matches_one_process(tmp_path):
    from prunekit.data import get_data
    from prunekit.train import fit
    from tests.unit.test_distributed import free_port

    mp.spawn(distill_rank, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"r{r}.pt", weights_only=True) for r in (0, 1)]
    single, teacher = small_net(0), small_net(7)
    fit(single, get_data("synthetic", limit_train=128, limit_test=32), DDP_CONFIG,
        callbacks=[KnowledgeDistillation(teacher, 0.5, 2.0)], progress=False)
    for key, value in single.state_dict().items():
        assert torch.equal(ranks[0]["student"][key], ranks[1]["student"][key]), key
        assert torch.allclose(value, ranks[0]["student"][key], atol=2e-4, rtol=1e-3), key
    for key, value in small_net(7).state_dict().items():  # the teacher never changes
        assert torch.equal(ranks[0]["teacher"][key], value) and torch.equal(teacher.state_dict()[key], value)
    assert not torch.equal(single[0].weight, small_net(0)[0].weight)  # the student did train


# --- BN recalibration -----------------------------------------------------------------------------------


def test_recalibrate_bn_changes_only_running_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=0.3))
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = [(torch.randn(8, 3, 2, 2) * 2 + 1, torch.zeros(8)) for _ in range(3)]
    assert recalibrate_bn(model, batches) == 3
    after = model.state_dict()
    stats = ("running_mean", "running_var", "num_batches_tracked")
    for key, value in before.items():
        if key.endswith(stats):
            assert not torch.equal(value, after[key]), key
        else:
            assert torch.equal(value, after[key]), key
    # BN on the input: the running mean is exactly the mean of the batch means (cumulative average)
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x, _ in batches]).mean(0)
    assert torch.allclose(model[0].running_mean, expected, atol=1e-6)
    unbiased = torch.stack([x.transpose(0, 1).reshape(3, -1).var(1) for x, _ in batches]).mean(0)
    assert torch.allclose(model[0].running_var, unbiased, atol=1e-5)
    assert model[0].momentum == 0.1 and model[2].momentum == 0.3 and not model.training
    assert recalibrate_bn(model, []) == 0


# --- criteria -------------------------------------------------------------------------------------------


def hand_model() -> nn.Module:
    """conv '0' (1 → 3 channels, 1×1, no bias) → pool → linear: the conv's 3 channels are prunable."""
    model = nn.Sequential(nn.Conv2d(1, 3, 1, bias=False), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 3))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1))
        model[3].weight.copy_(torch.eye(3))
        model[3].bias.zero_()
    return model


def per_conv_channel(model, scores) -> list[float]:
    """Scores in the conv's output-channel order."""
    from prunekit.prune.graph import trace_channels

    graph = trace_channels(model, torch.zeros(1, 1, 1, 1))
    by_index = {}
    for cid, score in scores.items():
        for slot in graph.channels[cid].producers:
            if slot.module == "0":
                by_index[slot.index] = score
    return [by_index[i] for i in sorted(by_index)]


def scores_of(model, criterion, **kw):
    from prunekit.prune.graph import trace_channels
    from prunekit.prune.importance import channel_scores

    return per_conv_channel(model, channel_scores(model, trace_channels(model, torch.zeros(1, 1, 1, 1)),
                                                  criterion, **kw))


def test_fpgm_scores_are_summed_distances_to_the_other_filters():
    model = hand_model()
    assert scores_of(model, "fpgm") == pytest.approx([1 + 3, 1 + 2, 3 + 2])
    with torch.no_grad():
        model[0].weight[0] = 0  # an all-zero filter scores 0
    assert scores_of(model, "fpgm")[0] == 0.0


def test_taylor_scores_are_activation_times_gradient_and_touch_no_grad():
    model = hand_model()
    x, y = torch.ones(1, 1, 1, 1), torch.tensor([0])
    # activations a = w·x = (1, 2, 4) = logits; dCE/da = softmax(a) − onehot(0)
    p = torch.softmax(torch.tensor([1.0, 2.0, 4.0]), 0)
    g = p - torch.tensor([1.0, 0.0, 0.0])
    expected = (torch.tensor([1.0, 2.0, 4.0]) * g).abs().tolist()
    assert scores_of(model, "taylor", batches=[(x, y)]) == pytest.approx(expected, rel=1e-5)
    assert all(p.grad is None for p in model.parameters())
    # summed over images: the same batch twice doubles every score
    doubled = scores_of(model, "taylor", batches=[(x, y), (x, y)])
    assert doubled == pytest.approx([2 * v for v in expected], rel=1e-5)
    with pytest.raises(PrunekitError, match="batches"):
        scores_of(model, "taylor")


def test_criteria_are_registered_and_listed():
    from prunekit.prune.importance import CRITERIA, get_criterion, needs_batches

    assert {"l1", "l2", "bn_scale", "random", "taylor", "fpgm"} <= set(CRITERIA)
    assert needs_batches("taylor") and not needs_batches("fpgm")
    with pytest.raises(PrunekitError, match="taylor"):
        get_criterion("tailor")


def test_taylor_through_pipeline_prune_step_prunes_and_recalibrates(tiny_vgg, tiny_data):
    from prunekit.pipeline import prune_step

    config = PruneConfig(granularity="filter", sparsity=0.5, criterion="taylor", recalibrate_bn=2)
    record = prune_step(tiny_vgg, tiny_data, config, 1, 1, None, torch.device("cpu"))
    assert record["bn_recalibration_batches"] == 2
    assert record["filter_sparsity"] == pytest.approx(0.5, abs=0.05)


# --- LAMP -----------------------------------------------------------------------------------------------


def test_lamp_scores_follow_the_papers_definition():
    from prunekit.prune.unstructured import lamp_scores

    w = torch.tensor([[1.0, -3.0], [2.0, 0.5]])
    # sorted squares 0.25, 1, 4, 9; score = w_u² / Σ_{v ≥ u} w_v²
    expected = [1 / 14, 9 / 9, 4 / 13, 0.25 / 14.25]
    assert lamp_scores(w).tolist() == pytest.approx(expected, rel=1e-6)
    assert lamp_scores(torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]


def test_lamp_scope_prunes_lowest_lamp_scores_globally():
    from prunekit.prune.unstructured import unstructured_masks

    model = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 4, bias=False), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[10.0, 11.0], [12.0, 13.0]]))  # big, uniform: LAMP ≈ 1/k
        model[1].weight.copy_(torch.tensor([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]]))
    lamp = unstructured_masks(model, make_prune_config(sparsity=0.5, scope="lamp"))
    magnitude = unstructured_masks(model, make_prune_config(sparsity=0.5, scope="global"))
    assert int((~magnitude["1.weight"]).sum()) == 6  # a magnitude threshold empties the small layer …
    # … LAMP: layer 0 scores 100/534 = .187, 121/434, 144/313, 1; layer 1 .01/2.04 = .005, .04/2.03 = .020,
    # .09/1.99 = .045, .16/1.90 = .084, .25/1.74 = .144, .36/1.49 = .242, .49/1.13, 1: the six lowest are
    # five of layer 1 and the smallest of layer 0
    assert lamp["0.weight"].tolist() == [[False, True], [True, True]]
    assert lamp["1.weight"].tolist() == [[False, False], [False, False], [False, True], [True, True]]
    with pytest.raises(PrunekitError, match="lamp"):
        make_prune_config(granularity="filter", sparsity=0.5, scope="lamp")


# --- allocation -----------------------------------------------------------------------------------------


def test_global_filter_ranking_is_scale_free_per_group_and_keeps_each_groups_best():
    from prunekit.prune.allocate import _select_global, lamp_normalised
    from prunekit.prune.graph import trace_channels

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 16, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                          nn.Flatten(), nn.Linear(16, 10))
    graph = trace_channels(model, torch.zeros(1, 3, 4, 4))
    small, large = sorted(graph.groups, key=lambda g: len(g.channels))
    scores = {c: 1e-3 * (i + 1) for i, c in enumerate(small.channels)}  # tiny raw scores: starved by raw ranking
    scores.update({c: float(i + 1) for i, c in enumerate(large.channels)})
    removed = _select_global(graph, scores, 0.5, set())
    assert len(removed) == 10
    assert len(removed & set(small.channels)) <= 1  # the small group keeps its best channels
    rescaled = {c: v * (1e6 if c in small.channels else 1.0) for c, v in scores.items()}
    assert _select_global(graph, rescaled, 0.5, set()) == removed  # a group's score scale does not matter
    assert lamp_normalised({1: 1.0, 2: 3.0, 3: 2.0}) == pytest.approx({1: 1 / 14, 2: 1.0, 3: 4 / 13})


def trained_mlp():
    """A tiny classifier of synthetic images, trained to well above chance."""
    from prunekit.data import get_data
    from prunekit.train import fit

    data = get_data("synthetic", limit_train=512, limit_test=256)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                          nn.Linear(32, 10))
    fit(model, data, TrainConfig(epochs=3, batch_size=64, lr=0.05, device="cpu", augment=False), progress=False)
    return model, data


def test_suggestion_never_loses_to_uniform_when_single_layer_curves_mislead():
    from prunekit.analysis.points import Evaluator
    from prunekit.analysis.sensitivity import allocation_candidates, choose_allocation

    model, data = trained_mlp()
    evaluator = Evaluator(data, data.info.mean, data.info.std, torch.device("cpu"), "test")
    sizes = {"1": 3 * 32 * 32 * 32, "3": 32 * 32}
    # curves built to fool a per-layer threshold: the small hidden layer claims it can lose 99% for free (alone
    # it nearly can), the big input layer claims to be fragile, so the curve-shaped allocation strips the
    # hidden layer bare, which breaks the network together with 90% of the input layer
    rows = [{"layer": "dense", "sparsity": 0.0, "drop": 0.0, "layer_params": sum(sizes.values())}]
    rows += [{"layer": "1", "sparsity": s, "drop": 50.0 * s, "layer_params": sizes["1"]} for s in (0.5, 0.9, 0.99)]
    rows += [{"layer": "3", "sparsity": s, "drop": 0.0, "layer_params": sizes["3"]} for s in (0.5, 0.9, 0.99)]
    candidates = allocation_candidates(model, rows, 0.9)
    assert set(candidates) == {"uniform", "global", "lamp", "sensitivity"}
    assert candidates["sensitivity"]["3"] == pytest.approx(0.99) and candidates["sensitivity"]["1"] < 0.9
    chosen, results = choose_allocation(model, candidates, evaluator)
    top1 = {r["allocation"]: r["top1"] for r in results}
    assert top1[chosen] >= top1["uniform"]
    assert top1["uniform"] > top1["sensitivity"]  # the case does fool the per-layer threshold
    assert chosen != "sensitivity"


def test_experiment_yaml_accepts_the_recovery_settings():
    from prunekit.experiment.config import load_experiment

    experiment = load_experiment({
        "name": "recovery", "data": {"dataset": "synthetic"}, "baseline": {"model": "vgg11"},
        "variants": [{"name": "kd", "prune": {"granularity": "filter", "sparsity": 0.5, "criterion": "taylor",
                                              "recalibrate_bn": 4, "finetune_epochs": 1},
                      "retrain": {"distill": True, "distill_alpha": 0.8, "distill_temperature": 2.0}},
                     {"name": "ft", "source": "kd", "finetune": {"epochs": 1, "distill": True}}]})
    kd, ft = experiment.variants
    assert kd.prune.recalibrate_bn == 4 and kd.prune.criterion == "taylor" and kd.retrain["distill"] is True
    assert ft.finetune.distill and ft.finetune.distill_alpha == 0.9
