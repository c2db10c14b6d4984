"""Stage numbers and time left of an experiment run, and the CPU time estimate printed before training."""

from __future__ import annotations

import pytest
import torch

from prunekit.config import TrainConfig
from prunekit.experiment.progress import (EVAL_COST, Sizes, Stage, StageClock, duration, plan_stages, time_left)
from prunekit.train import estimate


def test_an_epoch_costs_its_training_images_plus_a_third_per_evaluated_image():
    assert Sizes(train=300, evaluated=90, test=90).epochs(2) == pytest.approx(2 * (300 + 90 * EVAL_COST))


def test_the_time_left_is_the_remaining_work_at_the_measured_speed():
    lines = []
    clock = StageClock([Stage("a", 220), Stage("b", 110)], Sizes(train=100, evaluated=30, test=30), lines.append)
    clock.begin(0)
    assert lines[-1].startswith("stage 1/2 · a · ") and lines[-1].endswith("time left not measured yet")
    clock.epoch_done(5.5, "epoch 1/2")  # 110 units in 5.5 s: 0.05 s per unit; 220 units left → 11 s
    assert clock.seconds_left() == pytest.approx(11.0)
    assert " · epoch 1/2 · " in lines[-1] and lines[-1].endswith("~10 s left")
    clock.begin(1)  # the first stage is done whatever its epochs said: 110 units left
    assert clock.seconds_left() == pytest.approx(5.5)
    assert lines[-1].startswith("stage 2/2 · b · ")


def test_the_demo_plan_has_one_stage_per_step_and_counts_every_epoch():
    from prunekit.experiment.demo import demo_experiment

    experiment = demo_experiment([], quick=True)  # 5 baseline epochs, 1 retraining epoch per variant
    sizes = Sizes(train=1000, evaluated=500, test=500)
    stages = plan_stages(experiment, sizes)
    assert [s.label.split(":")[0] for s in stages] == ["training the baseline", "l1-filter-50",
                                                       "global-unstructured-80", "plots and comparison", "report"]
    assert stages[0].work == pytest.approx(sizes.epochs(5) + EVAL_COST * 500)
    assert stages[2].work == pytest.approx(sizes.epochs(1) + 2 * EVAL_COST * 500)  # evaluated before and after
    assert stages[1].label == "l1-filter-50: prune, retrain 1 epoch, int8"


@pytest.mark.parametrize("seconds, text", [(41, "0:41"), (725, "12:05"), (3729, "1:02:09")])
def test_durations(seconds, text):
    assert duration(seconds) == text


@pytest.mark.parametrize("seconds, text", [(12, "~10 s left"), (2, "~5 s left"), (180, "~3 min left"),
                                           (5760, "~1.6 h left")])
def test_time_left(seconds, text):
    assert time_left(seconds) == text


def test_the_training_estimate_scales_the_timed_step_to_every_epoch(monkeypatch, tiny_vgg, tiny_data):
    monkeypatch.setattr(estimate, "seconds_per_step", lambda *a, **k: 0.5)
    config = TrainConfig(epochs=4, batch_size=128)
    # 512 images: 4 steps; 256 test images evaluated: 2 batches' worth × 1/3
    per_epoch = 0.5 * (4 + EVAL_COST * 256 / 128)
    assert estimate.estimate_fit_seconds(tiny_vgg, tiny_data, config, torch.device("cpu")) == pytest.approx(4 * per_epoch)
    assert estimate.estimate_fit_seconds(tiny_vgg, tiny_data, config, torch.device("cpu"), start_epoch=3) == \
        pytest.approx(per_epoch)


def test_timing_a_step_leaves_the_model_untouched(tiny_vgg):
    before = {k: v.clone() for k, v in tiny_vgg.state_dict().items()}
    assert estimate.seconds_per_step(tiny_vgg, TrainConfig(batch_size=8), torch.device("cpu")) > 0
    assert all(torch.equal(before[k], v) for k, v in tiny_vgg.state_dict().items())


def test_a_many_hour_estimate_says_so():
    line = estimate.describe_estimate(160 * 36, 160, torch.device("cpu"))
    assert line.startswith("estimated time on this cpu: ~1.6 h (160 epochs × ~36 s")
    assert "--epochs" in line and "--resume" in line
    assert "long run" not in estimate.describe_estimate(120, 2, torch.device("cpu"))


def test_train_prints_the_estimate_before_the_first_epoch(tmp_path, capsys):
    from prunekit.cli import main

    assert main(["train", "--model", "vgg11", "--model-cfg", "8,M,16", "--dataset", "synthetic", "--limit-train",
                 "128", "--epochs", "1", "--device", "cpu", "--no-progress", "--save", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "estimated time on this cpu: ~" in out
    assert out.index("estimated time") < out.index("epoch   1:")
