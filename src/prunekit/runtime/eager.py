"""The eager PyTorch runtime: the model run by PyTorch in eval mode, prepared for inference by
:func:`prunekit.inference.prepare_for_inference` (traced flat with ``torch.fx``, BatchNorm folded into the
convolutions, a removed residual branch reduced to one addition of its constant; the model as it is where it
does not trace), the same for a dense and a pruned model."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.inference import prepare_for_inference
from prunekit.runtime import Runtime, register_runtime


def prepare_eager(model: nn.Module, example_input: torch.Tensor, device: str = "cpu",
                  threads: int | None = None) -> nn.Module:
    """An inference copy of ``model`` on ``device`` (see :func:`prunekit.inference.prepare_for_inference`);
    ``model`` is not changed."""
    return prepare_for_inference(model, example_input, device)


EAGER = register_runtime(Runtime("eager", "PyTorch eager mode (traced flat, BatchNorm folded into the convolutions "
                                 "where the model traces)", prepare_eager))
