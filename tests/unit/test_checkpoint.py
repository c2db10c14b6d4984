"""Checkpoint format: round trip, masks, atomic writes, clear errors."""

from __future__ import annotations

import torch
import pytest

from prunekit.checkpoint import load_checkpoint, save_checkpoint
from prunekit.foreign import load_weights
from prunekit.errors import PrunekitError
from prunekit.models import create_model
from prunekit.prune.mask import apply_masks, extract_masks


def test_round_trip_same_outputs_and_meta(tmp_path, tiny_vgg):
    tiny_vgg.eval()
    x = torch.randn(4, 3, 32, 32)
    path = save_checkpoint(tiny_vgg, tmp_path / "m.pt", meta={"dataset": "synthetic", "test_top1": 12.5})
    loaded = load_checkpoint(path)
    loaded.model.eval()
    assert torch.equal(loaded.model(x), tiny_vgg(x))
    assert loaded.arch["kwargs"]["cfg"] == [8, "M", 16, "M", 16, 16]
    assert loaded.meta["test_top1"] == 12.5 and loaded.meta["prunekit_version"]


def test_masks_survive_save_load_and_weights_stay_zero(tmp_path, tiny_vgg):
    weight = tiny_vgg.features[0].weight
    mask = torch.rand_like(weight) > 0.5
    apply_masks(tiny_vgg, {"features.0.weight": mask})
    path = save_checkpoint(tiny_vgg, tmp_path / "m.pt")
    loaded = load_checkpoint(path)
    assert torch.equal(extract_masks(loaded.model)["features.0.weight"], mask)
    assert torch.all(loaded.model.features[0].weight[~mask] == 0)
    raw = torch.load(path, weights_only=True)
    assert "features.0.weight_orig" not in raw["state_dict"]
    assert torch.all(raw["state_dict"]["features.0.weight"][~mask] == 0)


def test_failed_write_keeps_the_good_file(tmp_path, tiny_vgg, monkeypatch):
    path = save_checkpoint(tiny_vgg, tmp_path / "m.pt", meta={"good": True})
    before = path.read_bytes()

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_checkpoint(tiny_vgg, path, meta={"good": False})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]


def test_corrupt_and_missing_files_give_clear_errors(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(PrunekitError, match="corrupt"):
        load_checkpoint(bad)
    with pytest.raises(PrunekitError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save({"state_dict": create_model("resnet32").state_dict()}, tmp_path / "r32.th")
    with pytest.raises(PrunekitError, match="another architecture than resnet20"):
        load_weights(create_model("resnet20"), tmp_path / "r32.th")


def test_foreign_wrapper_and_module_prefix(tmp_path):
    source = create_model("resnet20")
    wrapped = {"best_prec1": 1.0, "state_dict": {f"module.{k}": v for k, v in source.state_dict().items()}}
    torch.save(wrapped, tmp_path / "r20.th")
    target = load_weights(create_model("resnet20"), tmp_path / "r20.th")
    for (k, a), b in zip(source.state_dict().items(), target.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_registered_format_is_read_by_load_checkpoint(tmp_path, tiny_vgg):
    from prunekit import checkpoint

    def read_wrapped(raw, path):
        return raw["inner"]

    checkpoint.register_format("test-wrapped", read_wrapped)
    try:
        inner = checkpoint.checkpoint_dict(tiny_vgg, meta={"wrapped": True})
        path = checkpoint.atomic_save({"format": "test-wrapped", "inner": inner}, tmp_path / "w.pt")
        loaded = load_checkpoint(path)
        assert loaded.meta["wrapped"] is True
        assert torch.equal(loaded.model.features[0].weight, tiny_vgg.features[0].weight)
    finally:
        checkpoint.READERS.pop("test-wrapped")


@pytest.mark.long
def test_a_compact_file_loads_in_a_process_that_never_imported_export(tmp_path, tiny_vgg):
    import subprocess
    import sys

    from prunekit.export import save_compact

    path = save_compact(tiny_vgg, tmp_path / "m.compact.pt")
    expected = tiny_vgg.features[0].weight.detach().clone()
    torch.save(expected, tmp_path / "expected.pt")
    code = f"""
import sys, torch
import prunekit.checkpoint as c
assert not [m for m in sys.modules if m.startswith('prunekit.export')]
loaded = c.load_checkpoint({str(path)!r})
assert torch.equal(loaded.model.features[0].weight, torch.load({str(tmp_path / 'expected.pt')!r}))
assert loaded.meta['compact_values'] == 'fp32'
"""
    subprocess.run([sys.executable, "-c", code], check=True)


def test_atomic_writer_uses_unique_temporary_names_and_leaves_nothing_behind(tmp_path, monkeypatch):
    import tempfile

    from prunekit.atomic import atomic_write_text

    names = []
    real = tempfile.mkstemp

    def recording(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        names.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", recording)
    atomic_write_text(tmp_path / "a.csv", "x\n")
    atomic_write_text(tmp_path / "a.csv", "y\n")
    assert len(set(names)) == 2 and all(n.startswith(str(tmp_path / ".a.csv.")) for n in names)
    assert (tmp_path / "a.csv").read_text() == "y\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.csv"]


def test_a_registered_section_is_written_first_and_restored_on_load(tmp_path, tiny_vgg, monkeypatch):
    import prunekit.checkpoint as checkpoint

    def save(model):
        return {"tag": torch.tensor([7, 8])} if hasattr(model, "tag") else None

    def restore(model, raw):
        if "tag" in raw:
            model.tag = raw["tag"]

    monkeypatch.setitem(checkpoint.SECTIONS, "tag", checkpoint.Section(save, restore))
    plain = checkpoint.read_checkpoint_file(save_checkpoint(tiny_vgg, tmp_path / "plain.pt"))
    assert "tag" not in plain and "binarized" not in plain  # a model without the re-parametrisation: no entries
    tiny_vgg.tag = torch.tensor([7, 8])
    raw = checkpoint.read_checkpoint_file(save_checkpoint(tiny_vgg, tmp_path / "tagged.pt"))
    assert next(iter(raw)) == "tag" and torch.equal(raw["tag"], torch.tensor([7, 8]))
    assert torch.equal(load_checkpoint(tmp_path / "tagged.pt").model.tag, torch.tensor([7, 8]))
