"""Runtimes: how a model is executed when it is timed or deployed, one registry for all of them.

A :class:`Runtime` turns a PyTorch model into a callable that computes the same function in that runtime
(eager PyTorch, ONNX Runtime, sparse kernels, ...). ``compare``, the report and the benchmarks time every
model through the runtimes named by the user, so a speed-up always compares two models *in the same runtime*.

Extension point: write a ``prepare`` function and call :func:`register_runtime` in the module that defines
it; add its name and module to :data:`_BUILTIN` so it registers on first use. Importing this package is cheap: a
runtime's heavy dependencies are imported inside its ``prepare``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from prunekit.errors import PrunekitError

#: ``prepare(model, example_input, device, threads) -> runnable``: ``runnable(x)`` returns the model's output
#: for a batch ``x`` shaped like ``example_input`` (any batch size); it has ``eval()`` and ``to(device)`` like an
#: ``nn.Module``. ``model`` is a deployable float model in eval mode (masks already permanent); ``prepare``
#: never changes it.
Prepare = Callable[[nn.Module, torch.Tensor, str, "int | None"], object]


NO_GPU = "no GPU"  # why a CUDA column stays empty on a machine without one


@dataclass(frozen=True)
class Runtime:
    """One way to run a model. ``missing()`` returns ``None`` when the runtime can run here, else the
    one-line reason and fix (e.g. a package to install); ``devices`` lists the device types it runs on.
    ``per_batch_size``: what ``prepare`` builds depends on the example's batch size (e.g. kernels chosen by
    timing that batch), so a caller timing several batch sizes prepares once per size."""

    name: str
    description: str
    prepare: Prepare
    missing: Callable[[], "str | None"] = lambda: None
    devices: tuple[str, ...] = ("cpu", "cuda")
    per_batch_size: bool = False

    def unavailable(self, device: str) -> "str | None":
        """Why this runtime cannot run on ``device`` here (not for that device type, no GPU, something
        missing: :attr:`missing`), or None when it can."""
        if device not in self.devices:
            return f"{self.name} runs on {', '.join(self.devices)} only"
        if device == "cuda" and not torch.cuda.is_available():
            return NO_GPU
        return self.missing()


RUNTIMES: dict[str, Runtime] = {}
#: Built-in runtimes: name -> the module whose import registers it (imported on first use; this order is
#: the listed order, see :func:`runtime_names`).
_BUILTIN = {"eager": "prunekit.runtime.eager", "onnxruntime": "prunekit.runtime.onnxruntime",
            "sparse": "prunekit.runtime.sparse"}


def register_runtime(runtime: Runtime) -> Runtime:
    """Add ``runtime`` to :data:`RUNTIMES` under its name (replacing one of the same name). Returns it."""
    RUNTIMES[runtime.name] = runtime
    return runtime


def _load_builtin() -> None:
    for module in _BUILTIN.values():
        importlib.import_module(module)


def runtime_names() -> list[str]:
    """Names of every registered runtime: the built-in ones in :data:`_BUILTIN` order (whatever imported them
    first), then the others in registration order."""
    _load_builtin()
    builtin = list(_BUILTIN)
    return sorted(RUNTIMES, key=lambda name: builtin.index(name) if name in builtin else len(builtin))


def get_runtime(name: str) -> Runtime:
    """The registered runtime called ``name``; an unknown name raises a one-line error listing the valid ones."""
    _load_builtin()
    try:
        return RUNTIMES[name]
    except KeyError:
        raise PrunekitError(f"unknown runtime {name!r}; choose one of: {', '.join(runtime_names())}") from None


def parse_runtimes(text: str) -> list[str]:
    """``"eager,onnxruntime"`` -> ``["eager", "onnxruntime"]``, each checked against the registry."""
    names = [n.strip() for n in text.split(",") if n.strip()] or ["eager"]
    for name in names:
        get_runtime(name)
    return names


__all__ = ["RUNTIMES", "Prepare", "Runtime", "get_runtime", "parse_runtimes", "register_runtime", "runtime_names"]
