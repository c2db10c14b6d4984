"""Every structured cut states asked vs achieved (filters and MACs) wherever it is made or reported: the API's
result objects, ``prune --granularity filter``, ``prune-channels``, the YAML runner's records and ``compare``; a
cut below half of its target names the blocking ops, and ``--strict`` (or the YAML ``strict: true``) turns it into
exit 2 with that one line and nothing written.

The pinned model is written in the style of the second zoo (``tests/user_styles``): timm-like blocks whose
attention takes a softmax over the channel axis, which mixes every channel into every other, so no channel of a
block's conv can go (a channel that no handler will ever free, so the test does not depend on which patterns
the handlers support).
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from conftest import SYNTHETIC_CLI, run_cli
from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.cli import main
from prunekit.prune.channels import PlanOutcome

PINNED_MODEL = textwrap.dedent('''
    import torch
    from torch import nn


    class ChannelSoftmaxGate(nn.Module):
        def forward(self, x):
            return x * x.softmax(dim=1)  # every channel weighs on every other: no channel can be cut


    class Block(nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.conv = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
            self.norm = nn.BatchNorm2d(channels)
            self.gate = ChannelSoftmaxGate()

        def forward(self, x):
            return self.gate(torch.relu(self.norm(self.conv(x))))


    class GatedNet(nn.Module):
        def __init__(self, num_classes=10, width=16):
            super().__init__()
            self.stem = nn.Conv2d(3, width, 3, padding=1)
            self.blocks = nn.ModuleList([Block(width) for _ in range(4)])
            self.head = nn.Linear(width, num_classes)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return self.head(x.mean((2, 3)))
''')
BLOCKER = "4 × 'softmax' in layer 'blocks.*.gate'"
FILTER_PRUNE = ["--granularity", "filter", "--sparsity", "0.5", "--finetune-epochs", "0", *SYNTHETIC_CLI]


@pytest.fixture
def pinned(tmp_path, monkeypatch) -> Path:
    """``tmp_path/pinned.pt``: a GatedNet checkpoint (synthetic data), its model file beside it."""
    from prunekit.models import resolve_model

    monkeypatch.chdir(tmp_path)
    (tmp_path / "gated.py").write_text(PINNED_MODEL)
    torch.manual_seed(0)
    model = resolve_model(f"{tmp_path / 'gated.py'}:GatedNet", 10, {})
    return save_checkpoint(model, tmp_path / "pinned.pt", {"dataset": "synthetic", "num_classes": 10})


def shortfall_line(text: str) -> str:
    return next(line for line in text.splitlines() if line.startswith("shortfall:"))


def test_outcome_require_raises_its_shortfall_line_and_records_plain_values():
    short = PlanOutcome(filters=100, filters_removed=10, prunable_filters=20, macs_before=1000, macs_after=860,
                        asked_filters=0.5, blockers=((4, "'softmax' in layer 'blocks.*.gate'", "mixes channels"),))
    with pytest.raises(Exception) as err:
        short.require("--strict")
    assert str(err.value) == f"{short.shortfall()} (--strict: nothing written)"
    assert short.shortfall().startswith("shortfall: asked 50.0% of filters, achieved 10.0% of filters (MACs -14.0%)")
    assert BLOCKER in short.shortfall()
    record = short.as_record()
    assert record["asked_filters"] == 0.5 and record["achieved_filters"] == pytest.approx(0.1)
    assert record["achieved_macs"] == pytest.approx(0.14) and record["coverage"] == pytest.approx(0.2)
    assert record["summary"] == short.summary() and record["shortfall"] == short.shortfall()
    whole = PlanOutcome(100, 50, 100, 1000, 300, asked_filters=0.5)
    whole.require("--strict")  # no shortfall: nothing raised
    assert whole.as_record()["shortfall"] is None


def test_prune_filter_states_asked_vs_achieved_and_the_api_result_carries_it(tmp_path, base, capsys):
    code, out, err = run_cli(capsys, ["prune", base, *FILTER_PRUNE, "--out", tmp_path / "out"])
    assert code == 0, err
    (path,) = (tmp_path / "out").glob("*.pt")
    cut = load_checkpoint(path).meta["cut"]
    assert cut["asked_filters"] == 0.5 and cut["shortfall"] is None
    assert 0.4 <= cut["achieved_filters"] <= 0.5 and cut["achieved_macs"] > 0.4
    assert cut["summary"] in out.splitlines() and "shortfall" not in out
    assert cut["summary"].startswith("asked 50.0% of filters, achieved") and "(MACs -" in cut["summary"]


def test_run_pruning_result_has_the_outcome(tiny_vgg, tiny_data, tmp_path):
    from prunekit.config import TrainConfig, make_prune_config
    from prunekit.pipeline import run_pruning

    config = make_prune_config(granularity="filter", sparsity=0.5, finetune_epochs=0)
    result = run_pruning(tiny_vgg, tiny_data, config, TrainConfig(device="cpu"), tmp_path, progress=False)
    dense_macs = result.meta["dense_macs"]
    assert result.outcome.asked_filters == 0.5 and result.outcome.shortfall() is None
    # the outcome's MACs are the trace's estimate (conv + linear): close to the measured reduction
    assert result.outcome.achieved_macs == pytest.approx(1 - result.meta["macs"] / dense_macs, abs=0.02)
    assert result.meta["cut"] == result.outcome.as_record()


def test_prune_filter_shortfall_names_the_blocking_op_and_strict_writes_nothing(pinned, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["prune", pinned, *FILTER_PRUNE, "--out", tmp_path / "out"])
    assert code == 0, err
    line = shortfall_line(out)
    assert line.startswith("shortfall: asked 50.0% of filters, achieved") and BLOCKER in line
    code, out, err = run_cli(capsys, ["prune", pinned, *FILTER_PRUNE, "--out", tmp_path / "strict", "--strict"])
    assert code == 2 and not (tmp_path / "strict").exists()
    (message,) = err.strip().splitlines()
    assert BLOCKER in message and "shortfall: asked 50.0% of filters" in message and "nothing written" in message


def test_prune_channels_strict_on_a_pinned_model_exits_2_without_a_file(pinned, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["prune-channels", pinned, "--ratio", "0.5", "--out", tmp_path / "p.pt",
                                  "--recalibrate-bn", "0"])
    assert code == 0, err
    assert BLOCKER in shortfall_line(out)
    assert load_checkpoint(tmp_path / "p.pt").meta["cut"]["shortfall"] == shortfall_line(out)
    code, _, err = run_cli(capsys, ["prune-channels", pinned, "--ratio", "0.5", "--out", tmp_path / "q.pt", "--strict"])
    assert code == 2 and BLOCKER in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "q.pt").exists()


def test_strict_needs_a_structured_cut(base, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["prune", base, "--sparsity", "0.5", "--strict", "--out", tmp_path / "o",
                                *SYNTHETIC_CLI])
    assert code == 2 and "--strict checks a structured cut" in err and not (tmp_path / "o").exists()


def test_compare_states_each_cut_and_warns_on_a_shortfall(pinned, base, tmp_path, capsys):
    assert run_cli(capsys, ["prune-channels", base, "--ratio", "0.5", "--out", tmp_path / "whole.pt"])[0] == 0
    assert run_cli(capsys, ["prune-channels", pinned, "--ratio", "0.5", "--out", tmp_path / "short.pt"])[0] == 0
    code, out, err = run_cli(capsys, ["compare", base, tmp_path / "whole.pt", tmp_path / "short.pt", "--no-timing",
                                  "--dataset", "synthetic", "--no-progress"])
    assert code == 0, err
    whole = load_checkpoint(tmp_path / "whole.pt").meta["cut"]
    assert f"whole.pt: cut {whole['summary']}" in out.splitlines()
    warning = next(line for line in out.splitlines() if line.startswith("WARNING short.pt: shortfall"))
    assert BLOCKER in warning
    capsys.readouterr()
    assert main(["compare", str(base), str(tmp_path / "whole.pt"), "--no-timing", "--dataset", "synthetic",
                 "--no-progress", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert rows[0]["cut"] is None and rows[1]["cut"] == whole["summary"] and rows[1]["cut_shortfall"] is None


def experiment(pinned: Path, strict: bool) -> dict:
    return {"name": "cut", "strict": strict, "data": {"dataset": "synthetic", "limit_train": 128, "limit_test": 64},
            "baseline": {"model": "unused", "checkpoint": str(pinned)},
            "variants": [{"name": "filters", "prune": {"granularity": "filter", "sparsity": 0.5,
                                                        "finetune_epochs": 0}}],
            "accuracy_sparsity_plot": False, "compare": {"timing": False}}


def test_yaml_runner_records_the_cut_and_strict_stops_before_the_variant(pinned, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(pinned, strict=True)))
    code, _, err = run_cli(capsys, ["run", path, "--out", tmp_path / "runs", "--no-progress"])
    assert code == 2 and BLOCKER in err and "nothing written" in err
    (folder,) = (tmp_path / "runs").iterdir()
    assert not (folder / "models" / "filters.json").exists() and not (folder / "models" / "filters").exists()

    path.write_text(yaml.safe_dump(experiment(pinned, strict=False)))  # strict changes no result: same folder
    code, out, err = run_cli(capsys, ["run", path, "--out", tmp_path / "runs", "--no-progress"])
    assert code == 0, err
    assert [p.name for p in (tmp_path / "runs").iterdir()] == [folder.name]
    record = json.loads((folder / "models" / "filters.json").read_text())
    assert record["cut"]["asked_filters"] == 0.5 and BLOCKER in record["cut"]["shortfall"]
    assert f"[cut] variant filters: {record['cut']['shortfall']}" in out.splitlines()
    assert BLOCKER in (folder / "compare.md").read_text() and BLOCKER in (folder / "report.md").read_text()

    code, _, err = run_cli(capsys, ["run", path, "--out", tmp_path / "runs", "--no-progress", "--strict"])
    assert code == 0, err  # the variant is done already: nothing is cut again


def test_seed_summary_states_each_models_cut(pinned, tmp_path, capsys):
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(experiment(pinned, strict=False)))
    code, out, err = run_cli(capsys, ["run", path, "--out", tmp_path / "runs", "--seeds", "1,2", "--no-progress"])
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith("  filters: top-1"))
    assert "; cut shortfall: asked 50.0% of filters" in line and BLOCKER in line
    summary = (tmp_path / "runs" / "cut-seeds-1_2" / "plots" / "seeds_top1.csv").read_text()
    assert BLOCKER in summary
