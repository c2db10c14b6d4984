"""ONNX export of float models (dense, masked, physically pruned) and an ONNX Runtime model for timing.

:func:`export_onnx` exports with ``torch.onnx.export(dynamo=True)`` (the maintained exporter; it needs the
``onnx`` and ``onnxscript`` packages), one input ``input`` of shape ``(batch, 3, 32, 32)`` with a dynamic
batch axis and one output ``logits``, weights inside the single ``.onnx`` file. A masked model is exported
with its effective weights (a copy with the masks made permanent); a physically pruned model simply has
smaller layers. When ``onnxruntime`` is importable the file is checked against PyTorch on a random batch
(max abs difference ≤ :data:`TOLERANCE`, else PrunekitError).

:class:`OnnxRuntimeModel` runs an ``.onnx`` file through ONNX Runtime (CPU) behind a ``torch.Tensor →
torch.Tensor`` call, so :func:`prunekit.measure.time_inference` can time it like a PyTorch model.

The optional dependencies are the extra ``onnx``: ``pip install "prunekit[onnx]"``.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from prunekit.atomic import atomic_path
from prunekit.errors import PrunekitError
from prunekit.export.common import inference_copy, is_quantized
from prunekit.images import EXAMPLE_INPUT_SIZE

TOLERANCE = 1e-4  # max abs difference between ONNX Runtime and PyTorch logits
CHECK_BATCH = 4  # images in the export check (≠ the export's example batch, so the dynamic axis is exercised)
INSTALL_HINT = 'pip install "prunekit[onnx]"'


def require(*modules: str) -> None:
    """Import ``modules`` or raise PrunekitError naming the extra that provides them."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError:
            raise PrunekitError(f"ONNX support needs the optional package {name!r}: {INSTALL_HINT}") from None


def has_onnxruntime() -> bool:
    try:
        importlib.import_module("onnxruntime")
    except ImportError:
        return False
    return True


def export_onnx(model: nn.Module, path: str | Path, input_size=EXAMPLE_INPUT_SIZE, check: bool = True,
                opset: int | None = None) -> float | None:
    """Write ``model`` as ONNX to ``path`` (atomically). Returns the max abs difference to PyTorch, or None
    when the check was skipped (``check=False`` or onnxruntime missing).

    Does not modify ``model`` (a CPU float copy with masks made permanent is exported). An int8 model
    (:mod:`prunekit.export.quantize`) is refused: this exporter takes float models only.
    """
    if is_quantized(model):
        raise PrunekitError("ONNX export takes float models only, and this one is int8 (a quantized "
                            "GraphModule): export the fp32 checkpoint it was quantized from instead")
    require("onnx", "onnxscript")
    fp32 = inference_copy(model)
    path = Path(path)
    with atomic_path(path, suffix=".tmp.onnx") as tmp:
        _export(fp32, tmp, torch.randn(input_size), opset)
        diff = max_difference(fp32, tmp, input_size) if check and has_onnxruntime() else None
        if diff is not None and not diff <= TOLERANCE:
            raise PrunekitError(f"the ONNX export of this model differs from PyTorch by {diff:.3g} "
                                f"(> {TOLERANCE}); nothing was written")
    return diff


def max_difference(model: nn.Module, path: str | Path, input_size=EXAMPLE_INPUT_SIZE,
                   batch: int = CHECK_BATCH) -> float:
    """Max abs difference of ONNX Runtime's and PyTorch's outputs on a seeded random batch of ``batch``."""
    x = torch.randn((batch, *input_size[1:]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model.eval()(x)
    return float((OnnxRuntimeModel(path)(x) - expected).abs().max())


class OnnxRuntimeModel:
    """An ``.onnx`` file run by ONNX Runtime on the CPU, called like a model: ``model(x) -> logits``.

    ``threads`` fixes ONNX Runtime's intra-op threads (default: torch's current count, so a timing with
    ``time_inference(threads=N)``, which sets torch's count while it runs, should pass ``threads=N`` here).
    ``eval()`` and ``to("cpu")`` are no-ops that return the model, for code written for nn.Module.
    """

    def __init__(self, path: str | Path, threads: int | None = None):
        require("onnxruntime")
        import onnxruntime as ort

        self.path = Path(path)
        self.threads = threads or torch.get_num_threads()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        return torch.from_numpy(self.session.run(None, {self.input_name: array})[0])

    def eval(self) -> "OnnxRuntimeModel":
        return self

    def to(self, device) -> "OnnxRuntimeModel":
        if torch.device(device).type != "cpu":
            raise PrunekitError("OnnxRuntimeModel runs on the CPU only")
        return self


def _export(model: nn.Module, path: Path, example: torch.Tensor, opset: int | None) -> None:
    try:
        with _quiet():
            torch.onnx.export(model, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True,
                              external_data=False, opset_version=opset, verbose=False)
    except Exception as exc:
        raise PrunekitError(f"ONNX export failed ({type(exc).__name__}: {str(exc)[:300]})") from None


@contextmanager
def _quiet():
    # The exporter logs one warning per torchvision op it cannot register (torchvision is not a dependency)
    # and emits deprecation warnings from its own internals; none concern the user's model.
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
