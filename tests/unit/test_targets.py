"""Targets are met, never rounded down: ratio-file forms, per-layer counts, the VGG-13 recipe, file names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from prunekit.config import make_prune_config
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.prune.allocate import load_ratio_file, target_count, validate_ratios
from prunekit.prune.channels import filter_masks, filter_sparsity

ROOT = Path(__file__).resolve().parents[2]
X = torch.zeros(1, 3, 32, 32)


def _masked_filter_fraction(model, masks) -> float:
    from prunekit.masking import apply_masks

    apply_masks(model, masks)
    return filter_sparsity(model, model)


@pytest.mark.parametrize("fraction, n, expected", [(0.25, 64, 16), (0.3, 64, 20), (0.42, 512, 216),
                                                   (0.2, 64, 13), (0.0, 10, 0), (0.29, 100, 29)])
def test_target_count_is_the_fewest_that_reach_the_fraction(fraction, n, expected):
    assert target_count(fraction, n) == expected
    assert target_count(fraction, n) / n >= fraction - 1e-12


def test_vgg13_filter_recipe_reaches_forty_percent_of_filters():
    torch.manual_seed(0)
    model = create_model("vgg13")
    ratios = load_ratio_file(ROOT / "experiments" / "ratios" / "vgg13_filter_40.yaml")
    config = make_prune_config(granularity="filter", criterion="l1", scope="layer", ratios=ratios)
    masks = filter_masks(model, X, config)
    removed = sum(int((m.flatten(1) if m.dim() > 1 else m.view(-1, 1)).logical_not().all(1).sum())
                  for k, m in masks.items() if k.startswith("features.") and m.dim() == 4)
    # per layer ceil(r × n): 13 + 20 + 39 + 39 + 103 + 103 + 4 × 216 of 2,944 filters
    assert removed == 1181
    assert _masked_filter_fraction(model, masks) == pytest.approx(1181 / 2944) and 1181 / 2944 >= 0.40


def test_uniform_filter_sparsity_removes_at_least_the_target():
    model = create_model("vgg13")
    masks = filter_masks(model, X, make_prune_config(granularity="filter", sparsity=0.4, scope="layer"))
    assert _masked_filter_fraction(model, masks) >= 0.40


def test_homework_ratio_file_format_prunes_vgg13(tmp_path):
    (tmp_path / "hw.yaml").write_text("prune_ratios:\n  features.0.weight: 0.2\n  features.3.weight: 0.5\n"
                                      "  classifier.weight: 0.1\n")
    ratios = load_ratio_file(tmp_path / "hw.yaml")
    assert ratios == {"features.0.weight": 0.2, "features.3.weight": 0.5, "classifier.weight": 0.1}
    model = create_model("vgg13")
    layers = [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    assert validate_ratios(ratios, layers) == {"features.0": 0.2, "features.3": 0.5, "classifier": 0.1}
    masks = filter_masks(model, X, make_prune_config(granularity="filter", ratios={
        k: v for k, v in ratios.items() if k.startswith("features")}))
    weight = masks["features.3.weight"]
    assert int(weight.flatten(1).logical_not().all(1).sum()) == 32  # half of 64 filters


def test_homework_ratio_file_through_prune_cli(tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint, save_checkpoint
    from prunekit.cli import main

    save_checkpoint(create_model("vgg13", cfg=[8, 8, "M", 16, 16]), tmp_path / "in.pt", {"dataset": "synthetic"})
    (tmp_path / "hw.yaml").write_text("prune_ratios:\n  features.0.weight: 0.5\n  features.3.weight: 0.25\n")
    assert main(["prune", str(tmp_path / "in.pt"), "--ratios", str(tmp_path / "hw.yaml"), "--out",
                 str(tmp_path / "out"), "--dataset", "synthetic"]) == 0
    (saved,) = (tmp_path / "out").glob("Omp_unstructured_*.pt")
    masks = load_checkpoint(saved).masks
    assert int((~masks["features.0.weight"]).sum()) == 108  # 0.5 of 8·3·3·3 = 216 weights
    assert int((~masks["features.3.weight"]).sum()) == 144  # 0.25 of 8·8·3·3 = 576 weights


@pytest.mark.parametrize("text, message", [
    ("prune_ratios: 0.5\n", "the `prune_ratios:` key must hold"),
    ("prune_ratios:\n  features.0.weight: high\n", "entry 'features.0.weight' is 'high', not a ratio"),
    ("features.0: [0.5]\n", "expected `layer: ratio` entries"),
])
def test_ratio_file_errors_name_the_expected_forms(tmp_path, text, message):
    (tmp_path / "r.yaml").write_text(text)
    with pytest.raises(PrunekitError) as info:
        load_ratio_file(tmp_path / "r.yaml")
    assert message in str(info.value)


def test_unknown_parameter_name_says_which_forms_are_expected():
    with pytest.raises(PrunekitError) as info:
        validate_ratios({"features.9.weight": 0.5}, ["features.0", "features.3"])
    assert "unknown layer 'features.9.weight'" in str(info.value) and "features.0.weight: 0.2" in str(info.value)


@pytest.mark.parametrize("achieved, text", [(0.3981, "0.39"), (0.4012, "0.40"), (0.29, "0.29"), (0.7999, "0.79")])
def test_result_name_truncates_the_achieved_sparsity(achieved, text):
    from prunekit.pipeline import result_name

    config = make_prune_config(granularity="filter", sparsity=0.4)
    assert result_name(config, achieved, 91.526) == f"Omp_filter_{text}_acc_91.53"


def test_next_l2_scores_are_the_next_layers_input_column_norms():
    from prunekit.prune.graph import trace_channels
    from prunekit.prune.importance import channel_scores

    model = create_model("vgg11", cfg=[4, "M", 3]).eval()
    graph = trace_channels(model, X)
    scores = channel_scores(model, graph, "next-l2")
    by_slot = {(s.module, s.role, s.index): cid for cid, ch in graph.channels.items() for s in ch.slots}
    next_conv = model.features[4].weight.detach()  # 3 x 4 x 3 x 3: column c is weight[:, c]
    for c in range(4):
        assert scores[by_slot[("features.0", "conv_out", c)]] == pytest.approx(float(next_conv[:, c].norm()))
    classifier = model.classifier.weight.detach()  # the last conv's channels are read by the classifier
    for c in range(3):
        assert scores[by_slot[("features.4", "conv_out", c)]] == pytest.approx(float(classifier[:, c].norm()))


def test_next_l2_keeps_the_channels_the_next_layer_reads_most():
    model = create_model("vgg11", cfg=[4, "M", 3]).eval()
    with torch.no_grad():
        model.features[4].weight.zero_()
        model.features[4].weight[:, 2] = 1.0  # only input channel 2 matters downstream
        model.features[4].weight[:, 0] = 0.5
    masks = filter_masks(model, X, make_prune_config(granularity="filter", sparsity=0.5, criterion="next-l2",
                                                     exclude=["features.4"]))
    removed = masks["features.0.weight"].flatten(1).logical_not().all(1)
    assert removed.tolist() == [False, True, False, True]
    assert "features.4.weight" not in masks  # excluded: the last conv keeps every filter


@pytest.mark.long
def test_exclude_keeps_the_last_conv_whole_in_unstructured_and_filter_pruning():
    from prunekit.prune.unstructured import unstructured_masks

    model = create_model("vgg13")
    for scope in ("layer", "global"):
        masks = unstructured_masks(model, make_prune_config(sparsity=0.5, scope=scope, exclude=["features.31"]))
        assert "features.31.weight" not in masks and "features.28.weight" in masks
    masks = filter_masks(model, X, make_prune_config(granularity="filter", sparsity=0.4, exclude=["features.31"]))
    assert "features.31.weight" not in masks and "features.28.weight" in masks
    with pytest.raises(PrunekitError, match="--exclude 'features.99' matches no layer"):
        unstructured_masks(model, make_prune_config(sparsity=0.5, exclude=["features.99"]))
    with pytest.raises(PrunekitError, match="use scope layer"):
        filter_masks(model, X, make_prune_config(granularity="filter", sparsity=0.4, scope="global", exclude=["x"]))
    with pytest.raises(PrunekitError, match="a ratio file or cfg names its layers itself"):
        make_prune_config(ratios={"default": 0.5}, exclude=["features.31"]).check_target()


def test_exclude_and_next_l2_from_the_cli(tmp_path, capsys):
    from prunekit.checkpoint import load_checkpoint, save_checkpoint
    from prunekit.cli import main

    save_checkpoint(create_model("vgg11", cfg=[8, "M", 16, 16]), tmp_path / "in.pt", {"dataset": "synthetic"})
    assert main(["prune-channels", str(tmp_path / "in.pt"), "--ratio", "0.5", "--criterion", "next-l2",
                 "--exclude", "features.7", "--out", str(tmp_path / "out.pt")]) == 0
    model = load_checkpoint(tmp_path / "out.pt").model
    assert [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)] == [4, 8, 16]
    assert main(["prune", str(tmp_path / "in.pt"), "--sparsity", "0.5", "--exclude", "features.7", "--out",
                 str(tmp_path / "u"), "--dataset", "synthetic"]) == 0
    (saved,) = (tmp_path / "u").glob("*.pt")
    masks = load_checkpoint(saved).masks
    assert "features.7.weight" not in masks and "features.4.weight" in masks
