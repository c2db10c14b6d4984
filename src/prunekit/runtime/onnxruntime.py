"""The ONNX Runtime runtime (CPU): the model exported with :func:`prunekit.export.onnx.export_onnx` and run by
:class:`prunekit.export.onnx.OnnxRuntimeModel`.

ONNX Runtime applies its default graph optimisations to every model it loads (constant folding, BatchNorm
folded into the preceding convolution, Conv+ReLU fusion), so a dense and a pruned model timed here get the
same inference optimisations and their ratio measures the pruning, not the packaging.
"""

from __future__ import annotations

import importlib.util
import tempfile
from pathlib import Path

import torch
from torch import nn

from prunekit.runtime import Runtime, register_runtime

#: Packages the runtime needs (the ``onnx`` extra).
PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def missing_onnxruntime() -> str | None:
    """None when the ``onnx`` extra is installed, else the one-line reason and fix."""
    absent = [name for name in PACKAGES if importlib.util.find_spec(name) is None]
    if not absent:
        return None
    from prunekit.export.onnx import INSTALL_HINT

    return f"the onnxruntime runtime needs {', '.join(absent)}: {INSTALL_HINT}"


def prepare_onnxruntime(model: nn.Module, example_input: torch.Tensor, device: str = "cpu",
                        threads: int | None = None):
    """``model`` exported to ONNX (checked against PyTorch) in a temporary folder and loaded into an ONNX
    Runtime session with ``threads`` intra-op threads; the file is deleted once the session holds the graph.
    Raises PrunekitError for an int8 model, a failed export or a device other than the CPU. ``model`` is not
    changed."""
    from prunekit.errors import PrunekitError
    from prunekit.export.onnx import OnnxRuntimeModel, export_onnx

    if torch.device(device).type != "cpu":
        raise PrunekitError(f"the onnxruntime runtime runs on the CPU only, not on {device}")
    with tempfile.TemporaryDirectory(prefix="prunekit-ort-") as folder:
        path = Path(folder) / "model.onnx"
        export_onnx(model, path, input_size=(1, *example_input.shape[1:]))
        return OnnxRuntimeModel(path, threads=threads)


ONNXRUNTIME = register_runtime(Runtime("onnxruntime", "ONNX Runtime, CPU execution provider (default graph "
                                       "optimisations: BatchNorm folded, Conv+ReLU fused)", prepare_onnxruntime,
                                       missing_onnxruntime, devices=("cpu",)))
