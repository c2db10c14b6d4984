"""Shipping a compressed model: a compact sparse checkpoint, int8 quantization, ONNX.

* :mod:`prunekit.export.compact`   file size that scales with the non-zero weights (``prunekit-compact``)
* :mod:`prunekit.export.quantize`  int8 post-training static quantization for CPU (``prunekit-int8``)
* :mod:`prunekit.export.onnx`      ONNX export and an ONNX Runtime model (optional extra ``onnx``)

Both file formats load back through :func:`prunekit.checkpoint.load_checkpoint`, so every command that
takes a checkpoint takes them. Importing this package does not import onnx or onnxruntime.
"""

from prunekit.export.compact import decode, encode, encoded_size, save_compact
from prunekit.export.onnx import OnnxRuntimeModel, export_onnx
from prunekit.export.common import inference_copy, is_quantized
from prunekit.export.quantize import int8_dict, load_quantized, quantize_model, save_quantized

__all__ = [
    "OnnxRuntimeModel",
    "decode",
    "encode",
    "encoded_size",
    "export_onnx",
    "inference_copy",
    "int8_dict",
    "is_quantized",
    "load_quantized",
    "quantize_model",
    "save_compact",
    "save_quantized",
]
