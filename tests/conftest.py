"""Shared fixtures: where ../shared is, tiny models and data for fast CPU tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PRUNEKIT_SHARED", ROOT.parent / "shared"))
REAL_DATA = SHARED / "data" / "cifar10-subset"
PRETRAINED = SHARED / "pretrained"



class ConvMiddleConv(torch.nn.Module):
    """conv1 (3 -> ``width``, 1x1) -> ``middle`` -> conv2 (``width`` -> 2, 1x1) -> spatial mean: the smallest
    network around one layer under test."""

    def __init__(self, middle: torch.nn.Module, width: int = 4):
        super().__init__()
        self.conv1, self.middle = torch.nn.Conv2d(3, width, 1), middle
        self.conv2 = torch.nn.Conv2d(width, 2, 1)

    def forward(self, x):
        return self.conv2(self.middle(self.conv1(x))).mean((2, 3))


def randomise_norms(model: torch.nn.Module) -> torch.nn.Module:
    """Non-trivial BN statistics and affine parameters (and LayerNorm affine ones), seeded, so a zeroed channel
    is not zero by accident and a fold or cut that ignores any of them changes the output. Returns ``model`` in
    eval mode (changed in place)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) - 0.5)
            elif isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:  # a LayerNorm over channels
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                if m.bias is not None:
                    m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)
    return model.eval()


needs_shared = pytest.mark.skipif(
    not (REAL_DATA / "cifar-10-batches-py").is_dir(),
    reason=f"real CIFAR-10 subset not found at {REAL_DATA} (../shared is only beside CI's and developers' clones)",
)


@pytest.fixture(autouse=True)
def _fixed_threads(monkeypatch):
    """Two torch threads in every test, also in commands run through ``main``: OMP_NUM_THREADS is the user's
    explicit count, which :func:`prunekit.measure.threads.fit_threads` never lowers (a test beside another
    xdist worker would otherwise run with one thread, and repeat-exactly tests compare runs)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    yield


@pytest.fixture
def one_thread():
    """One torch thread (after :func:`_fixed_threads`): the channel-engine tests run tiny tensors that gain nothing
    from two threads and lose a lot when the cores are shared. Modules use it with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    torch.set_num_threads(1)
    yield


@pytest.fixture(autouse=True)
def _own_cache(monkeypatch, tmp_path_factory):
    """Every test caches latency tables and sparse-kernel decisions in a fresh folder, never in ~/.cache."""
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def tiny_vgg():
    """A 4-conv VGG that trains in a second on CPU."""
    from prunekit.models import create_model

    torch.manual_seed(0)
    return create_model("vgg11", num_classes=10, cfg=[8, "M", 16, "M", 16, 16])


@pytest.fixture
def tiny_data():
    """Synthetic data: 512 training and 256 test images, 10 classes."""
    from prunekit.data import get_data

    return get_data("synthetic", limit_train=512, limit_test=256)


def run_cli(capsys, argv: list) -> tuple[int, str, str]:
    """``prunekit.cli.main(argv)`` in-process (arguments made strings) → (exit status, stdout, stderr); argparse's
    own exits count as statuses too. Side effect: drains ``capsys`` before running."""
    from prunekit.cli import main

    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


#: Data flags of a fast CLI run on synthetic data (prune, finetune, binarize tests).
SYNTHETIC_CLI = ["--dataset", "synthetic", "--limit-train", "256", "--batch-size", "64", "--device", "cpu",
                 "--no-progress"]


@pytest.fixture
def base(tmp_path, tiny_vgg, tiny_data):
    """``tmp_path/base.pt``: the tiny VGG saved as a synthetic-data checkpoint (the start of CLI pruning tests)."""
    from prunekit.checkpoint import save_checkpoint

    meta = {"dataset": "synthetic", "num_classes": 10, "mean": list(tiny_data.info.mean),
            "std": list(tiny_data.info.std)}
    return save_checkpoint(tiny_vgg, tmp_path / "base.pt", meta)
