"""The native direct sparse convolution (``sparse_conv.cpp``), built on first use with torch's JIT C++ extension
loader, or the one-line reason why it cannot be.

The kernel is optional: without a C++ compiler (or ninja) the sparse runtime still has its torch-CSR kernel,
and the autotune simply has one candidate fewer. :func:`native_kernel` prints that reason once per process to
stderr and returns None; it never raises.

Build: ``-O3 -march=native`` (auto-vectorised for the CPU it is built on, which is where a JIT build runs), in
``$TORCH_EXTENSIONS_DIR`` (default: torch's extensions folder, ``~/.cache/torch_extensions``) under a name keyed
by the source, the flags, the torch version and the CPU, so an edited kernel, another torch or another CPU
builds anew and everything else loads the cached library (no compiler run). The first build takes about 25 s
on a 2-core machine; the extension folder is outside ``$PRUNEKIT_CACHE`` on purpose: the test suite gives every
test its own ``PRUNEKIT_CACHE`` and must not rebuild the kernel for each.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("sparse_conv.cpp")
FLAGS = ("-O3", "-march=native")
#: torch's build lock older than this is left over from an interrupted build (a build takes well under a
#: minute); torch would wait for it forever, so it is removed.
STALE_LOCK_S = 600


def _cpu_signature() -> str:
    """The CPU's model and instruction-set flags (what ``-march=native`` compiles for), or the platform's
    processor name where ``/proc/cpuinfo`` is not available."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or platform.machine()
    wanted = [line for line in lines if line.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(wanted))  # one copy of each distinct line (every core repeats them)


def build_name(source: str) -> str:
    """The extension's module name: ``prunekit_sparse_conv_<hash>``, the hash covering everything that makes
    a built library unusable here (source, flags, torch version, CPU)."""
    key = "\n".join([source, *FLAGS, torch.__version__, platform.machine(), _cpu_signature()])
    return f"prunekit_sparse_conv_{hashlib.sha256(key.encode()).hexdigest()[:16]}"


def build_root() -> Path:
    """``$TORCH_EXTENSIONS_DIR`` or torch's default extensions folder."""
    from torch.utils.cpp_extension import get_default_build_root

    return Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())


def missing_toolchain() -> str | None:
    """Why a build cannot start here (no C++ compiler, no ninja), or None."""
    from torch.utils.cpp_extension import is_ninja_available

    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None:
        return f"no C++ compiler ({compiler!r} not found; install g++ or set CXX)"
    if not is_ninja_available():
        return "ninja not found (pip install ninja, or install it with the system's package manager)"
    return None


def build():
    """Compile (or load the cached) native kernel module; raises whatever the toolchain raises."""
    from torch.utils.cpp_extension import load_inline

    reason = missing_toolchain()
    if reason:
        raise RuntimeError(reason)
    source = SOURCE.read_text()
    name = build_name(source)
    directory = build_root() / name
    directory.mkdir(parents=True, exist_ok=True)
    remove_stale_lock(directory)
    if not any(directory.glob(f"{name}*.so")) and not any(directory.glob(f"{name}*.pyd")):
        print("prunekit: building the native sparse convolution kernel (once per machine, about 25 s)",
              file=sys.stderr, flush=True)
    return load_inline(name, source, functions=["sparse_conv2d"], extra_cflags=list(FLAGS),
                       build_directory=str(directory), verbose=False)


def remove_stale_lock(directory: Path, now: float | None = None) -> bool:
    """Remove ``directory/lock`` when it is older than :data:`STALE_LOCK_S` (a build interrupted by Ctrl-C
    leaves it, and torch's loader then waits on it forever). True when one was removed."""
    lock = directory / "lock"
    try:
        stale = (now or time.time()) - lock.stat().st_mtime > STALE_LOCK_S
        if stale:
            lock.unlink()
        return stale
    except FileNotFoundError:
        return False


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


#: What :func:`native_kernel` found: ``{"kernel": module or None, "reason": str}`` once tried (tests replace it).
_LOADED: dict = {}


def native_kernel():
    """The built kernel module (its ``sparse_conv2d``), or None when it cannot be built here. Tried once per
    process; on failure the reason is printed once (stderr) and kept for :func:`native_unavailable`."""
    if "kernel" not in _LOADED:
        try:
            _LOADED["kernel"] = build()
        except Exception as error:  # any build failure only removes one candidate kernel: say why, carry on
            _LOADED.update(kernel=None, reason=_one_line(error))
            print(f"prunekit: native sparse kernel unavailable ({_LOADED['reason']}); the sparse runtime uses "
                  "torch CSR only", file=sys.stderr)  # one line, no traceback: nothing is wrong with the model
    return _LOADED["kernel"]


def native_unavailable() -> str | None:
    """Why the native kernel cannot be used here (trying to build it first if not tried yet), or None."""
    return None if native_kernel() is not None else _LOADED["reason"]
