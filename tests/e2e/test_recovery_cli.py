"""End-to-end: prune with taylor + BN recalibration + distillation, then finetune --distill, through the CLI."""

from __future__ import annotations

from conftest import SYNTHETIC_CLI
from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main

DATA = SYNTHETIC_CLI


def test_prune_with_recovery_flags_then_finetune_with_distillation(tmp_path, base, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(base), "--granularity", "filter", "--sparsity", "0.5", "--criterion", "taylor",
                 "--recalibrate-bn", "2", "--distill", "--distill-alpha", "0.7", "--distill-temperature", "3",
                 "--finetune-epochs", "1", "--name", "pruned", "--out", str(out), *DATA]) == 0
    meta = load_checkpoint(out / "pruned.pt").meta
    assert meta["rounds"][0]["bn_recalibration_batches"] == 2
    assert meta["prune_config"]["criterion"] == "taylor" and meta["prune_config"]["recalibrate_bn"] == 2
    train = meta["train_config"]
    assert train["distill"] is True and train["distill_alpha"] == 0.7 and train["distill_temperature"] == 3.0

    ft = tmp_path / "ft"  # the teacher defaults to the checkpoint the model was pruned from (meta "source")
    assert main(["finetune", str(out / "pruned.pt"), "--epochs", "1", "--distill", "--save", str(ft), *DATA]) == 0
    assert load_checkpoint(ft / "last.pt").meta["test_top1"] >= 0


def test_recovery_flags_refuse_bad_input(tmp_path, base, capsys):
    common = ["--out", str(tmp_path / "o"), *DATA]
    assert main(["prune", str(base), "--granularity", "filter", "--sparsity", "0.5", "--criterion", "fpgn",
                 *common]) == 2
    assert "Did you mean 'fpgm'" in capsys.readouterr().err
    assert main(["prune", str(base), "--granularity", "filter", "--sparsity", "0.5", "--scope", "lamp", *common]) == 2
    assert "lamp" in capsys.readouterr().err
    assert main(["prune", str(base), "--sparsity", "0.5", "--recalibrate-bn", "-1", *common]) == 2
    capsys.readouterr()
    # argparse: a usage line and exit status 2 (main returns argparse's status)
    assert main(["prune", str(base), "--sparsity", "0.5", "--distill-alpha", "2", *common]) == 2
    assert "not a weight in [0, 1]" in capsys.readouterr().err
