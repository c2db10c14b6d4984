"""`prunekit run` and `prunekit demo`, in-process on CPU with tiny budgets."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
from html.parser import HTMLParser
from pathlib import Path

import pytest
import torch
import yaml

from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main
from prunekit.experiment import load_experiment
from prunekit.models import create_model, prunable_layers
from prunekit.prune.allocate import load_ratio_file, validate_ratios

ROOT = Path(__file__).resolve().parents[2]
TINY_TRAIN = {"epochs": 1, "batch_size": 64, "lr": 0.05, "device": "cpu"}
TINY = {
    "name": "tiny",
    "data": {"dataset": "synthetic", "limit_train": 256, "limit_test": 128},
    "baseline": {"model": "vgg11", "model_kwargs": {"cfg": [8, "M", 16, "M", 16, 16]}, "train": TINY_TRAIN},
    "variants": [
        {"name": "filter", "prune": {"granularity": "filter", "sparsity": 0.5, "scope": "layer",
                                     "finetune_epochs": 1}, "mask_plots": ["features.4"]},
        {"name": "unstructured", "prune": {"granularity": "unstructured", "sparsity": 0.8},
         "finetune": {**TINY_TRAIN, "epochs": 2, "lr": 0.01}, "quantize": {"calib_batches": 2},
         "mask_plots": ["features.4"]},
    ],
    "sweeps": [{"start": 0.0, "stop": 0.9, "steps": 3}],
    "compare": {"timing": False},
}


def write(tmp_path: Path, experiment: dict, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(experiment))
    return path


class ImageCounter(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images = 0

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img"


def test_run_writes_every_stage_and_resumes(tmp_path, capsys):
    path = write(tmp_path, TINY)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = (tmp_path / "runs").iterdir()
    rows = json.loads((run / "compare.json").read_text())["rows"]
    names = [r["model"] for r in rows]
    assert names[0] == "00_baseline.pt" and names[1].startswith("Omp_filter_0.50_acc_")  # the pipeline's own name
    assert (run / "models" / "filter" / names[1]).is_file()  # the variant is the folder, not a name prefix
    assert names[2].startswith("unstructured_acc_")
    assert rows[3]["model"].endswith("_int8.pt")
    assert rows[1]["params"] < rows[0]["params"]  # filters physically removed
    assert rows[2]["nonzero_params"] < 0.35 * rows[0]["nonzero_params"]  # 80% of prunable weights zero
    unstructured = load_checkpoint(run / "models" / "unstructured" / names[2])  # not the _int8 file
    masks = unstructured.masks
    assert masks and all(torch.all(unstructured.model.get_submodule(k.rsplit(".", 1)[0]).weight[~m] == 0)
                         for k, m in masks.items())
    plots = sorted(p.name for p in (run / "plots").glob("*.png"))
    assert "accuracy_sparsity.png" in plots and len([p for p in plots if p.startswith("mask_")]) == 2
    assert any(p.startswith("baseline_sweep") for p in plots)
    parser = ImageCounter()
    parser.feed((run / "report.html").read_text())
    assert parser.images == len(list(run.rglob("*.png"))) - len(list((run / "work").rglob("*.png")))
    resolved = yaml.safe_load((run / "config.yaml").read_text())
    assert resolved["data"]["resolved"]["synthetic"] is True

    stamps = {p: p.stat().st_mtime_ns for p in (run / "models").rglob("*.pt")}
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "baseline: done" in out and "variant filter: done" in out
    assert not re.search(r"^epoch +\d+:", out, re.M)  # no epoch trained (stage labels may say "1 epoch")
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert table and max(len(line) for line in table) <= 100  # the terminal table fits; compare.md has it all
    full_header = (run / "compare.md").read_text().splitlines()[0]
    assert full_header.count("|") >= table[0].count("|") and "peak mem" in full_header
    assert len(stamps) == 5 and stamps == {p: p.stat().st_mtime_ns for p in (run / "models").rglob("*.pt")}


def test_invalid_experiment_names_the_field(tmp_path, capsys):
    bad = {**TINY, "baseline": {"model": "vgg11", "train": {"epochz": 3}}}
    assert main(["run", str(write(tmp_path, bad)), "--out", str(tmp_path)]) == 2
    assert "baseline.train.epochz" in capsys.readouterr().err
    bad = {**TINY, "variants": [{"name": "x", "source": "nowhere", "finetune": TINY_TRAIN}]}
    assert main(["run", str(write(tmp_path, bad)), "--out", str(tmp_path)]) == 2
    assert "nowhere" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_experiments_validate(path, monkeypatch):
    monkeypatch.chdir(ROOT)
    for quick in (False, True):
        experiment = load_experiment(path, quick=quick)
        model = create_model(experiment.baseline.model, **experiment.baseline.model_kwargs)
        layers = list(prunable_layers(model))
        for variant in experiment.variants:
            if variant.ratios_file:
                assert validate_ratios(load_ratio_file(variant.ratios_file), layers)
            if variant.prune and variant.prune.ratios:
                assert validate_ratios(variant.prune.ratios, layers)


def test_demo_falls_back_to_synthetic_when_offline(tmp_path, capsys, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    monkeypatch.setenv("HOME", str(tmp_path))  # an empty cache
    monkeypatch.delenv("PRUNEKIT_DATA", raising=False)
    tiny = ["--set", "baseline.train.epochs=1", "--set", "data.limit_train=256", "--set", "data.limit_test=128",
            "--set", "baseline.model_kwargs.cfg=[8, M, 16, M, 16, 16]", "--set", "compare.timing=false"]
    for name in ("l1-filter-50", "global-unstructured-80"):
        tiny += ["--set", f"variants.{name}.prune.finetune_epochs=1"]
    assert main(["demo", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "runs"), "--no-progress",
                 *tiny]) == 0
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "cifar-10-python.tar.gz" in out
    report = Path(out.strip().splitlines()[-1].split("Open the report: ")[1])
    assert report.exists() and "synthetic" in report.read_text().lower()


def test_seeds_give_mean_and_std(tmp_path, capsys):
    experiment = {**TINY, "variants": TINY["variants"][1:2], "sweeps": []}
    experiment["variants"] = [{**experiment["variants"][0], "quantize": None, "finetune": None,
                               "prune": {"granularity": "unstructured", "sparsity": 0.5}}]
    path = write(tmp_path, experiment)
    assert main(["run", str(path), "--out", str(tmp_path / "runs"), "--seeds", "1,2", "--no-progress"]) == 0
    summary = (tmp_path / "runs" / "tiny-seeds-1_2" / "plots" / "seeds_top1.csv").read_text().splitlines()
    assert summary[0].startswith("model,seeds,top1_mean,top1_std") and len(summary) == 3
    assert "±" in capsys.readouterr().out


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path):
    experiment = {**TINY, "sweeps": [], "variants": [
        {"name": "ft", "prune": {"granularity": "unstructured", "sparsity": 0.5},
         "finetune": {**TINY_TRAIN, "epochs": 3, "lr": 0.01}}]}
    path = write(tmp_path, experiment)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "prunekit", "run", str(path), "--out", str(tmp_path / "cut"), "--no-progress"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    seen_finetune, killed = False, False
    for line in process.stdout:
        seen_finetune |= "fine-tuning" in line
        if seen_finetune and line.startswith("epoch   1:"):  # the first fine-tuning epoch is saved
            process.send_signal(signal.SIGKILL)
            killed = True
            break
    process.wait(timeout=60)
    assert killed, "the run finished before it could be interrupted"
    assert main(["run", str(path), "--out", str(tmp_path / "cut"), "--no-progress"]) == 0
    assert main(["run", str(path), "--out", str(tmp_path / "straight"), "--no-progress"]) == 0
    (cut,) = (tmp_path / "cut").glob("*/models/ft/ft_acc_*.pt")
    (straight,) = (tmp_path / "straight").glob("*/models/ft/ft_acc_*.pt")
    assert cut.name == straight.name
    a, b = load_checkpoint(cut), load_checkpoint(straight)
    for key, value in a.model.state_dict().items():
        assert torch.equal(value, b.model.state_dict()[key]), key
