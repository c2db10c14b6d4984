"""Shipping: compact sparse files, int8 quantization, ONNX export — round trips, sizes, agreement, errors."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import PRETRAINED, REAL_DATA, needs_shared
from prunekit.checkpoint import checkpoint_dict, load_checkpoint, save_checkpoint
from prunekit.cli import main
from prunekit.data import DeviceLoader, get_data
from prunekit.errors import PrunekitError
from prunekit.export import (OnnxRuntimeModel, decode, encode, encoded_size, export_onnx, quantize_model,
                             save_compact, save_quantized)
from prunekit.export.onnx import has_onnxruntime
from prunekit.models import create_model
from prunekit.prune import prune_unstructured
from prunekit.prune.mask import extract_masks

TINY_CFG = [8, "M", 16, "M", 16, 16]
# torch.save's container costs beyond the payload: one 64-byte-aligned zip record (~200 B with its
# central-directory entry) per stored tensor, plus the pickled keys, shapes and meta. 16 KiB covers the
# ~60 records of the models below.
OVERHEAD_BYTES = 16 * 1024
needs_onnxruntime = pytest.mark.skipif(not has_onnxruntime(), reason="onnxruntime not installed (extra 'onnx')")


pytestmark = pytest.mark.usefixtures("one_thread")


def masked_vgg(cfg=TINY_CFG, sparsity=0.5, seed=0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("vgg11", cfg=cfg).eval()
    prune_unstructured(model, sparsity=sparsity)
    return model


def batches(split, data, batch_size=64):
    return list(DeviceLoader(*split, batch_size, mean=data.info.mean, std=data.info.std, train=False))


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny VGG trained 6 epochs on synthetic data (~50% test accuracy: the class pairs), saved as a checkpoint."""
    torch.set_num_threads(1)
    data = get_data("synthetic", limit_train=512, limit_test=256)
    torch.manual_seed(0)
    model = create_model("vgg11", cfg=TINY_CFG)
    train = batches(data.train, data)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(6):
        for x, y in train:
            optimizer.zero_grad()
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
    model.eval()
    meta = {"dataset": "synthetic", "mean": list(data.info.mean), "std": list(data.info.std), "limit_train": 512}
    path = save_checkpoint(model, tmp_path_factory.mktemp("run") / "trained.pt", meta=meta)
    return model, data, train, path


# --- compact ------------------------------------------------------------------------------------------


def test_compact_fp32_round_trip_is_lossless():
    model = masked_vgg()
    raw = encode(model)
    original = checkpoint_dict(model)
    decoded = decode(raw)
    assert decoded["state_dict"].keys() == original["state_dict"].keys()
    for key, tensor in original["state_dict"].items():
        restored = decoded["state_dict"][key]
        assert restored.dtype == tensor.dtype and torch.equal(restored, tensor), key
        if tensor.is_floating_point():  # bitwise, once -0.0 (a pruned orig × 0) is read as +0.0
            assert torch.equal((restored + 0.0).view(torch.int32), (tensor + 0.0).view(torch.int32)), key
    assert decoded["masks"].keys() == original["masks"].keys() and len(original["masks"]) == 4
    for name, mask in original["masks"].items():
        assert torch.equal(decoded["masks"][name], mask), name


@pytest.mark.parametrize("values,tolerance", [("fp16", 1e-3), ("int8", None)])
def test_compact_lossy_modes_stay_close(values, tolerance):
    model = masked_vgg()
    original = checkpoint_dict(model)
    decoded = decode(encode(model, values))
    for key, tensor in original["state_dict"].items():
        restored = decoded["state_dict"][key]
        assert restored.dtype == tensor.dtype and restored.shape == tensor.shape, key
        if not tensor.is_floating_point():
            assert torch.equal(restored, tensor)
            continue
        mask = original["masks"].get(key)
        if mask is not None:  # pruned entries stay exactly zero in every mode
            assert torch.all(restored[~mask] == 0), key
        if values == "int8" and tensor.dim() >= 2:  # half a quantization step of the channel's value range
            flat = tensor.reshape(tensor.shape[0], -1)
            step = (flat.max(1).values - flat.min(1).values) / 255
            assert torch.all((restored - tensor).abs().reshape(len(flat), -1) <= step[:, None] / 2 + 1e-7), key
        else:
            assert torch.allclose(restored, tensor, rtol=tolerance or 0, atol=1e-6), key
    assert all(torch.equal(decoded["masks"][k], m) for k, m in original["masks"].items())


def test_compact_size_scales_with_non_zeros_at_80_percent_sparsity():
    model = masked_vgg(cfg=[32, "M", 64, "M", 128, 128], sparsity=0.8)
    state = checkpoint_dict(model)["state_dict"]
    floats = [t for t in state.values() if t.is_floating_point()]
    nonzeros, weights = sum(int(t.count_nonzero()) for t in floats), sum(t.numel() for t in floats)
    assert nonzeros < 0.25 * weights  # the model really is ~80% sparse (the classifier and BN are spared)
    for values, value_bytes in (("fp32", 4), ("fp16", 2)):
        size = encoded_size(encode(model, values))
        assert size <= (nonzeros * value_bytes + weights / 8) * 1.05 + OVERHEAD_BYTES, values


def test_compact_file_holds_packed_bits_and_loads_weights_only(tmp_path):
    model = masked_vgg()
    path = save_compact(model, tmp_path / "m.compact.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "prunekit-compact" and raw["values"] == "fp32"
    for name, entry in raw["masks"].items():
        assert entry["bits"].dtype == torch.uint8 and entry["bits"].numel() == -(-model.get_submodule(
            name.rsplit(".", 1)[0]).weight.numel() // 8)
    assert not any(t.dtype == torch.bool for t in tensors_in(raw))


def tensors_in(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (dict, tuple, list)):
        for value in obj.values() if isinstance(obj, dict) else obj:
            yield from tensors_in(value)


def test_load_checkpoint_reads_a_compact_file_as_the_same_masked_model(tmp_path):
    model = masked_vgg()
    dense = save_checkpoint(model, tmp_path / "dense.pt", meta={"dataset": "synthetic"})
    compact = save_compact(dense, tmp_path / "compact.pt")
    loaded, reference = load_checkpoint(compact), load_checkpoint(dense)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(loaded.model.eval()(x), reference.model.eval()(x))
    assert loaded.arch == reference.arch and loaded.meta["dataset"] == "synthetic"
    masks, expected = extract_masks(loaded.model), extract_masks(model)
    assert masks.keys() == expected.keys() and all(torch.equal(masks[k], expected[k]) for k in masks)


def test_export_and_evaluate_cli_take_compact_files(tmp_path, capsys, synthetic_run):
    _, _, _, path = synthetic_run
    out = tmp_path / "trained.compact.pt"
    capsys.readouterr()
    assert main(["export", str(path), "--format", "compact", "--values", "fp16", "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["compact_bytes"] == out.stat().st_size and report["ratio"] < 0.8  # fp16, unpruned: ~half the payload plus the container
    results = []
    for source in (path, out):
        assert main(["evaluate", str(source), "--device", "cpu", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert results[1]["images"] == 500 and results[1]["dataset"] == "synthetic"
    assert abs(results[1]["top1"] - results[0]["top1"]) <= 1.0  # fp16 values


# --- int8 ---------------------------------------------------------------------------------------------


def agreement(reference: nn.Module, quantized: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((reference.eval()(x).argmax(1) == quantized(x).argmax(1)).float().mean())


def test_int8_agrees_with_fp32_on_a_trained_tiny_vgg(synthetic_run):
    model, data, train, _ = synthetic_run
    quantized = quantize_model(model, train, max_batches=4)
    x, y = next(iter(DeviceLoader(*data.test, 256, mean=data.info.mean, std=data.info.std, train=False)))
    with torch.no_grad():
        assert float((model(x).argmax(1) == y).float().mean()) > 0.4  # trained (chance: 0.1; the class pairs alone give 0.5): agreement means something
    # the synthetic class pairs differ in faint textures, so a tiny model is close to a tie on many images:
    # int8 must agree on the half where fp32 is most decided (largest top-2 logit margin)
    with torch.no_grad():
        top2 = model(x).topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    assert agreement(model, quantized, x[margin >= margin.median()]) >= 0.97
    assert type(quantized.get_submodule("features.0")).__module__.startswith("torch.ao.nn.intrinsic.quantized")


def test_int8_file_round_trips_with_identical_outputs(tmp_path, synthetic_run):
    model, _, train, _ = synthetic_run
    quantized = quantize_model(model, train, max_batches=2)
    path = save_quantized(quantized, tmp_path / "m.int8.pt", meta={"dataset": "synthetic"})
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "prunekit-int8" and not any(t.is_quantized for t in tensors_in(raw))
    loaded = load_checkpoint(path)
    x = torch.randn(5, 3, 32, 32)
    assert torch.equal(loaded.model(x), quantized(x))
    assert loaded.meta["quantized"] == "int8" and loaded.arch["name"] == "vgg11"


def test_int8_of_masked_and_physically_pruned_models_keeps_zeros(tmp_path):
    masked = masked_vgg(sparsity=0.7)
    slim = masked_vgg(cfg=[4, "M", 8, "M", 8, 8], sparsity=0.0)
    x = torch.randn(8, 3, 32, 32)
    for model in (masked, slim):
        quantized = quantize_model(model, [x])
        weight = quantized.get_submodule("features.0").weight()
        assert weight.shape[0] == model.get_submodule("features.0").weight.shape[0]
    assert extract_masks(masked)  # the source model is left masked (a copy was made permanent)
    zeros = masked.get_submodule("features.4").weight == 0
    quantized_weight = quantize_model(masked, [x]).get_submodule("features.4").weight().int_repr()
    assert torch.all(quantized_weight[zeros] == 0)  # pruned weights quantize to exact zeros


def test_quantize_cli_writes_a_file_evaluate_reads(tmp_path, capsys, synthetic_run):
    _, _, _, path = synthetic_run
    out = tmp_path / "trained.int8.pt"
    capsys.readouterr()
    assert main(["quantize", str(path), "--calib-batches", "2", "--batch-size", "32", "--out", str(out),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["calibration"] == {"dataset": "synthetic", "synthetic": True, "batches": 2, "batch_size": 32,
                                     "images": 64}
    results = []
    for source in (path, out):
        assert main(["evaluate", str(source), "--device", "cpu", "--json"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    assert abs(results[1]["top1"] - results[0]["top1"]) <= 3.0
    assert main(["quantize", str(path), "--calib-batches", "0", "--out", str(tmp_path / "x.pt")]) == 2
    assert "calibration" in capsys.readouterr().err and not (tmp_path / "x.pt").exists()


@pytest.mark.long
@needs_shared
def test_int8_pretrained_resnet20_agrees_on_real_test_images():
    from prunekit.foreign import load_weights
    from prunekit.data.normalisation import NORMALISATIONS

    data = get_data("cifar10", root=REAL_DATA)
    mean, std = NORMALISATIONS["imagenet"]
    model = load_weights(create_model("resnet20"), PRETRAINED / "resnet20-12fca82f.th").eval()
    calibration = DeviceLoader(*data.train, 64, mean=mean, std=std, train=False)
    quantized = quantize_model(model, calibration, max_batches=2)
    x, y = next(iter(DeviceLoader(*data.test, 509, mean=mean, std=std, train=False)))
    assert len(y) == 509 and agreement(model, quantized, x) >= 0.97
    with torch.no_grad():
        fp32_top1, int8_top1 = ((m(x).argmax(1) == y).float().mean().item() for m in (model, quantized))
    assert fp32_top1 == pytest.approx(0.912, abs=0.002) and int8_top1 >= fp32_top1 - 0.02


def test_quantize_errors_are_clear():
    model = masked_vgg()
    with pytest.raises(PrunekitError, match="no calibration data"):
        quantize_model(model, [])

    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    with pytest.raises(PrunekitError, match="cannot be quantized: torch.fx could not trace"):
        quantize_model(DataDependent(), [torch.randn(1, 3, 32, 32)])


# --- ONNX ---------------------------------------------------------------------------------------------


@pytest.mark.long
@needs_onnxruntime
@pytest.mark.parametrize("kind", ["dense", "pruned"])
def test_onnx_matches_pytorch(tmp_path, kind):
    if kind == "dense":
        torch.manual_seed(0)
        model = create_model("vgg11", cfg=TINY_CFG).eval()
    else:  # physically smaller layers, and masked on top: the export must use the effective weights
        model = masked_vgg(cfg=[4, "M", 8, "M", 8, 6], sparsity=0.6)
    diff = export_onnx(model, tmp_path / "m.onnx")
    assert diff is not None and diff <= 1e-4
    runtime = OnnxRuntimeModel(tmp_path / "m.onnx", threads=1)
    x = torch.randn(3, 3, 32, 32)  # another batch size than the export's: the batch axis is dynamic
    with torch.no_grad():
        assert (runtime.eval()(x) - model(x)).abs().max() <= 1e-4
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]  # one file, no external data, no temp left


def test_onnx_errors_are_clear(tmp_path, monkeypatch):
    model = masked_vgg()
    quantized = quantize_model(model, [torch.randn(2, 3, 32, 32)])
    with pytest.raises(PrunekitError, match="int8"):
        export_onnx(quantized, tmp_path / "q.onnx")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(PrunekitError, match=r'pip install "prunekit\[onnx\]"'):
        export_onnx(model, tmp_path / "m.onnx")
    with pytest.raises(PrunekitError, match=r'pip install "prunekit\[onnx\]"'):
        OnnxRuntimeModel(tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_depthwise_widths_the_int8_kernel_runs_slowly_are_named():
    from prunekit.export.quantize import slow_int8_widths

    model = torch.nn.Sequential(torch.nn.Conv2d(101, 101, 3, groups=101), torch.nn.Conv2d(104, 104, 3, groups=104),
                                torch.nn.Conv2d(67, 67, 3, groups=67), torch.nn.Conv2d(101, 101, 3))
    assert slow_int8_widths(model) == ["0 (101)"]  # 104 is a multiple of 8, 67 is small, the last is not depthwise
