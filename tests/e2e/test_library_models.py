"""``--model timm:NAME`` / ``torchvision:NAME``: a library's model by name through every command that takes
``--model`` (and the YAML ``model:``), the library and its version recorded, weights from a local file
(``--weights``) or the library's own loader (one-line error offline), asked vs achieved printed, ``--strict``
failing on a shortfall, and a one-line error naming the extra when the library is not installed.

The plumbing runs against a stand-in ``timm`` module (its ``create_model`` builds a small network in the
library's style: a BatchNorm2d subclass calling ``F.batch_norm`` itself), so it is tested where timm is not
installed; the real libraries run when they import, and skip with the reason otherwise.
"""

from __future__ import annotations

import importlib
import json
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunekit.checkpoint import load_checkpoint
from conftest import run_cli


class NormAct(nn.BatchNorm2d):
    def forward(self, x):
        return F.relu(F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0,
                                   self.eps))


class CumSum(nn.Module):
    def forward(self, x):
        return torch.cumsum(x, 1)  # no handler: pins every channel it reads


class LibraryNet(nn.Module):
    def __init__(self, num_classes=1000, blocked=False):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.Conv2d(16, 32, 3, 2, 1, bias=False)])
        self.norms = nn.ModuleList([NormAct(16), NormAct(32)])
        self.mix = CumSum() if blocked else nn.Identity()
        self.head = nn.Linear(32, num_classes)

    def forward(self, x):
        for conv, norm in zip(self.convs, self.norms):
            x = self.mix(norm(conv(x)))
        return self.head(x.mean((2, 3)))


def create_model(name, pretrained=False, **kwargs):
    """timm's create_model offline: the architecture builds, pretrained weights cannot be fetched."""
    if pretrained:
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files.\nCheck your connection")
    return LibraryNet(blocked=name.endswith("blocked"), **kwargs)


@pytest.fixture
def fake_timm(monkeypatch):
    module = types.ModuleType("timm")
    module.__version__ = "9.9.9"
    module.list_models = lambda: ["librarynet", "librarynet_blocked"]
    module.is_model = lambda name: name in module.list_models()
    module.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", module)
    return module


def test_library_model_by_name_prunes_and_reloads(fake_timm, tmp_path, capsys):
    code, out, err = run_cli(capsys, ["prune-channels", "--model", "timm:librarynet", "--ratio", "0.5",
                                  "--out", str(tmp_path / "p.pt"), "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["asked_filters"] == 0.5 and result["achieved_filters"] == pytest.approx(0.5)
    assert result["achieved_macs"] > 0.4 and result["shortfall"] is None
    loaded = load_checkpoint(tmp_path / "p.pt")
    assert loaded.arch["ref"] == "timm:librarynet" and loaded.arch["library"] == "timm 9.9.9"
    model = loaded.model
    assert [n.num_features for n in model.norms] == [8, 16] and type(model.norms[0]) is NormAct
    assert model.head.out_features == 10  # the dataset's classes, passed to create_model


def test_shortfall_is_printed_and_strict_fails_with_the_blocking_op(fake_timm, tmp_path, capsys):
    argv = ["prune-channels", "--model", "timm:librarynet_blocked", "--ratio", "0.5", "--out", str(tmp_path / "p.pt")]
    code, out, _ = run_cli(capsys, argv)
    assert code == 0
    line = next(l for l in out.splitlines() if l.startswith("shortfall"))
    assert "asked 50.0% of filters, achieved 0.0%" in line and "1 × 'cumsum' in layer 'mix'" in line
    code, _, err = run_cli(capsys, argv[:-1] + [str(tmp_path / "q.pt"), "--strict"])
    assert code == 2 and "shortfall" in err and "'cumsum'" in err and not (tmp_path / "q.pt").exists()


def test_unknown_library_model_names_close_ones(fake_timm, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["prune-channels", "--model", "timm:librarynett", "--ratio", "0.5",
                                "--out", str(tmp_path / "p.pt")])
    assert code == 2 and "timm has no model 'librarynett'" in err and "librarynet" in err


def test_library_model_weights_from_a_local_file(fake_timm, tmp_path, capsys):
    torch.manual_seed(1)
    source = LibraryNet(num_classes=10)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "W.pt")
    code, _, err = run_cli(capsys, ["convert", "--model", "timm:librarynet", "--weights", str(tmp_path / "W.pt"),
                                "--dataset", "cifar10", "--out", str(tmp_path / "dense.pt")])
    assert code == 0, err
    loaded = load_checkpoint(tmp_path / "dense.pt")
    assert loaded.arch["ref"] == "timm:librarynet" and loaded.arch["library"] == "timm 9.9.9"
    assert all(torch.equal(v, source.state_dict()[k]) for k, v in loaded.model.state_dict().items())


def test_pretrained_weights_offline_fail_in_one_line_naming_the_local_way(fake_timm, tmp_path, capsys):
    code, _, err = run_cli(capsys, ["prune-channels", "--model", "timm:librarynet", "--model-kwargs", '{"pretrained": true}',
                                "--ratio", "0.5", "--out", str(tmp_path / "p.pt")])
    (line,) = err.strip().splitlines()
    assert code == 2 and not (tmp_path / "p.pt").exists()
    assert "timm:librarynet: loading its pretrained weights failed (OSError: We couldn't connect" in line
    assert "--weights FILE" in line


def importable(name: str) -> str | None:
    try:
        importlib.import_module(name)
    except Exception as exc:  # torchvision built for a CUDA torch fails here on torchvision::nms
        return f"{name} does not import here ({type(exc).__name__}: {str(exc)[:80]})"
    return None


@pytest.mark.parametrize("ref", ["timm:resnet18d", "torchvision:resnet18"])
def test_real_library_model_end_to_end(ref, tmp_path, capsys):
    reason = importable(ref.partition(":")[0])
    if reason:
        pytest.skip(reason)
    code, out, err = run_cli(capsys, ["prune-channels", "--model", ref, "--ratio", "0.5", "--out", str(tmp_path / "p.pt"),
                                  "--json"])
    assert code == 0, err
    result = json.loads(out)
    assert result["achieved_macs"] > 0.4 and result["shortfall"] is None
    assert load_checkpoint(tmp_path / "p.pt").arch["ref"] == ref


def test_cut_summary_names_the_blocking_ops_below_half_the_target(capsys):
    from prunekit.cli.common import print_cut
    from prunekit.prune.channels import plan_channels

    print_cut(plan_channels(LibraryNet(num_classes=10, blocked=True), ratio=0.5).outcome)
    (line,) = capsys.readouterr().out.strip().splitlines()  # the shortfall line holds the summary: printed once
    assert line.startswith("shortfall: asked 50.0% of filters, achieved 0.0% of filters (MACs -0.0%)")
    assert ". Channels kept by: 1 × 'cumsum' in layer 'mix' (" in line
    print_cut(plan_channels(LibraryNet(num_classes=10), ratio=0.5).outcome)
    (summary,) = capsys.readouterr().out.strip().splitlines()
    assert summary.startswith("asked 50.0% of filters, achieved 50.0% of filters")


def commands(tmp_path, ref: str) -> dict[str, list[str]]:
    """Every command that builds a model from ``--model``, with ``ref`` as the model (tiny budgets)."""
    experiment = tmp_path / "exp.yaml"
    experiment.write_text(json.dumps({
        "name": "library", "data": {"dataset": "synthetic", "limit_train": 128, "limit_test": 64},
        "baseline": {"model": ref, "train": {"epochs": 1, "batch_size": 64, "device": "cpu"}},
        "accuracy_sparsity_plot": False, "compare": {"timing": False}}))  # JSON is YAML
    synthetic = ["--dataset", "synthetic", "--limit-train", "128"]
    return {
        "train": ["train", "--model", ref, "--epochs", "1", "--batch-size", "64", "--device", "cpu",
                  "--save", str(tmp_path / "t"), "--no-progress", *synthetic],
        "evaluate": ["evaluate", "--model", ref, *synthetic],
        "profile": ["profile", "--model", ref, "--no-timing"],
        "latency": ["latency", "--model", ref],
        "prune-channels": ["prune-channels", "--model", ref, "--ratio", "0.5", "--out", str(tmp_path / "p.pt")],
        "run (YAML model:)": ["run", str(experiment), "--out", str(tmp_path / "runs"), "--no-progress"],
    }


@pytest.mark.parametrize("command", ["train", "evaluate", "profile", "latency", "prune-channels", "run (YAML model:)"])
def test_every_model_command_takes_a_library_model_and_names_the_missing_extra(command, fake_timm, tmp_path, capsys,
                                                                                monkeypatch):
    argv = commands(tmp_path, "timm:librarynet")[command]
    code, _, err = run_cli(capsys, argv)
    assert code == 0, err
    monkeypatch.setitem(sys.modules, "timm", None)  # timm not installed: its import fails
    code, _, err = run_cli(capsys, [a.replace(str(tmp_path / "t"), str(tmp_path / "t2")) for a in argv])
    (line,) = err.strip().splitlines()
    assert code == 2 and "--model timm:NAME needs timm: pip install 'prunekit[timm]'" in line


def test_compare_reads_library_checkpoints_and_names_the_missing_extra(fake_timm, tmp_path, capsys, monkeypatch):
    for name, ratio in (("dense.pt", "0"), ("half.pt", "0.5")):
        assert run_cli(capsys, ["prune-channels", "--model", "timm:librarynet", "--ratio", ratio,
                            "--out", str(tmp_path / name)])[0] == 0
    argv = ["compare", str(tmp_path / "dense.pt"), str(tmp_path / "half.pt"), "--no-timing", "--dataset", "synthetic",
            "--no-progress"]
    code, out, err = run_cli(capsys, argv)
    assert code == 0, err
    assert any(line.startswith("half.pt: cut asked 50.0% of filters, achieved 50.0%") for line in out.splitlines())
    monkeypatch.setitem(sys.modules, "timm", None)
    code, _, err = run_cli(capsys, argv)
    (line,) = err.strip().splitlines()
    assert code == 2 and "pip install 'prunekit[timm]'" in line
