"""Training loop: learning happens, resume is exact, files are written, schedules are right."""

from __future__ import annotations

import json
import math

import pytest
import torch

from prunekit.checkpoint import load_checkpoint
from prunekit.config import TrainConfig
from prunekit.models import create_model
from prunekit.evaluation import evaluate_split
from prunekit.train import Callback, fit
from prunekit.train.optim import lr_factor

FAST = dict(batch_size=32, lr=0.05, device="cpu", seed=3)


@pytest.mark.long
def test_training_learns_synthetic_data(tiny_vgg, tiny_data):
    before = evaluate_split(tiny_vgg, tiny_data).top1
    fit(tiny_vgg, tiny_data, TrainConfig(epochs=5, **FAST), progress=False)
    after = evaluate_split(tiny_vgg, tiny_data).top1
    assert after > max(before, 10.0) + 20


def _fresh():
    torch.manual_seed(0)
    return create_model("vgg11", cfg=[8, "M", 16, "M", 16, 16])


class StopAfterFirstEpoch(Callback):
    def on_epoch_end(self, epoch, record):
        if epoch == 0:
            raise KeyboardInterrupt


@pytest.mark.long
def test_resume_equals_uninterrupted(tmp_path, tiny_data):
    config = TrainConfig(epochs=2, **FAST)
    straight = _fresh()
    fit(straight, tiny_data, config, run_dir=tmp_path / "straight", progress=False)

    with pytest.raises(KeyboardInterrupt):
        fit(_fresh(), tiny_data, config, run_dir=tmp_path / "cut", callbacks=[StopAfterFirstEpoch()],
            progress=False)
    saved = load_checkpoint(tmp_path / "cut" / "last.pt")
    assert saved.train_state["epoch"] == 1
    result = fit(saved.model, tiny_data, TrainConfig(**saved.train_state["config"]), run_dir=tmp_path / "cut",
                 resume=saved.train_state, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2]
    for (name, a), b in zip(straight.state_dict().items(), saved.model.state_dict().values()):
        assert torch.equal(a, b), name


@pytest.mark.long
def test_run_folder_files(tmp_path, tiny_vgg, tiny_data):
    from prunekit.data import get_data

    data = get_data("synthetic", val_split=0.25, limit_train=256, limit_test=64)
    fit(tiny_vgg, data, TrainConfig(epochs=2, **FAST), run_dir=tmp_path, meta={"dataset": "synthetic"},
        progress=False)
    history = json.loads((tmp_path / "metrics.json").read_text())
    assert [h["epoch"] for h in history] == [1, 2] and "val_top1" in history[0]
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,")
    assert (tmp_path / "best.pt").exists()
    best = load_checkpoint(tmp_path / "best.pt")
    assert best.meta["best_val_top1"] == max(h["val_top1"] for h in history)
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 2


@pytest.mark.long
def test_no_best_checkpoint_without_validation_split(tmp_path, tiny_vgg, tiny_data):
    fit(tiny_vgg, tiny_data, TrainConfig(epochs=1, **FAST), run_dir=tmp_path, progress=False)
    assert (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_lr_schedules():
    cosine = TrainConfig(schedule="cosine")
    assert lr_factor(0, 100, 0, cosine) == 1.0
    assert math.isclose(lr_factor(50, 100, 0, cosine), 0.5)
    step = TrainConfig(schedule="step")
    assert [lr_factor(s, 100, 0, step) for s in (0, 49, 50, 74, 75)] == [1, 1, 0.1, 0.1, pytest.approx(0.01)]
    assert lr_factor(0, 100, 10, cosine) == 0.1 and lr_factor(9, 100, 10, cosine) == 1.0


@pytest.mark.long
def test_slimming_regulariser_shrinks_bn_scales(tiny_data):
    def scale_sum(strength):
        model = _fresh()
        fit(model, tiny_data, TrainConfig(epochs=1, sparsity_reg=strength, **FAST), progress=False)
        return sum(m.weight.abs().sum().item() for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))

    # 16 steps × lr 0.05 × λ 0.1 pull each of the 56 scales ≈0.08 towards 0 (≈4.5 in total)
    assert scale_sum(0.1) < scale_sum(0.0) - 2.0
