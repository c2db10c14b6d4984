"""`prunekit latency` builds and caches a table; `prune-channels --latency-target` records asked / predicted /
measured latency in the checkpoint; an impossible target is one line naming what is reachable."""

from __future__ import annotations

import pytest
from conftest import SYNTHETIC_CLI

from prunekit.checkpoint import load_checkpoint
from prunekit.cli import main


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path / "cache"))


def test_latency_table_is_printed_then_read_from_the_cache(base, capsys, tmp_path):
    assert main(["latency", str(base)]) == 0
    first = capsys.readouterr().out
    assert "| features.0 | 1 | conv 3→8 3x3 @32x32 |" in first and "0 from the cache" in first
    assert list((tmp_path / "cache" / "latency").glob("*.json"))
    assert main(["latency", str(base)]) == 0
    shapes = first.split(" layer shapes")[0].rsplit(" ", 1)[-1]
    assert f"{shapes} from the cache" in capsys.readouterr().out


def test_prune_channels_to_a_latency_target_records_asked_predicted_measured(base, tmp_path, capsys):
    out = tmp_path / "fast.pt"
    assert main(["prune-channels", str(base), "--latency-target", "0.8", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "latency (eager runtime, batch 1, 1 thread(s), cpu): asked 0.80, predicted" in printed
    record = load_checkpoint(out).meta["prune_channels"]["latency"]
    assert record["asked"] == 0.8 and record["predicted"] <= 0.8 + 1e-9 and record["measured"] > 0
    assert 1 <= len(record["attempts"]) <= 3 and record["reason"]


def test_an_impossible_latency_target_is_one_line(base, tmp_path, capsys):
    assert main(["prune-channels", str(base), "--latency-target", "0.01", "--out", str(tmp_path / "x.pt")]) != 0
    err = capsys.readouterr().err
    assert "latency target 0.010 cannot be reached" in err and "ask for at least" in err and "Traceback" not in err


def test_prune_with_filter_granularity_takes_a_latency_target(base, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["prune", str(base), "--granularity", "filter", "--latency-target", "0.7", "--round-to", "2",
                 "--schedule", "oneshot", "--finetune-epochs", "0", "--out", str(out), *SYNTHETIC_CLI]) == 0
    (path,) = out.glob("*.pt")
    meta = load_checkpoint(path).meta
    assert meta["prune_config"]["latency_target"] == 0.7 and meta["macs"] < meta["dense_macs"]
    model = load_checkpoint(path).model
    assert all(m.out_channels % 2 == 0 for m in model.modules() if hasattr(m, "out_channels"))
