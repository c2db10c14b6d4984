"""Sparse twins of ``nn.Conv2d`` and ``nn.Linear``: the same function, computed from a CSR weight.

A sparse module stores only the kept weights: ``values`` (the non-zero weights, the layer's dtype) and the
CSR index vectors ``crow_indices``/``col_indices`` (int32), all three as buffers, so ``state_dict``,
``.to(device)`` and :func:`prunekit.measure.timing.static_bytes` see them. No dense copy of the weight is
kept: that is what makes a 90%-sparse VGG-11 use a fraction of the dense model's memory at batch 1, where
the weights dominate.

Two kernels (the autotune, :mod:`prunekit.runtime.autotune`, measures which is faster for each layer):

* ``"csr"`` (:class:`SparseConv2d`, :class:`SparseLinear`): ``torch.sparse.mm`` of the CSR weight matrix
  ``(out, in·kh·kw)`` with the unfolded input (im2col: :func:`wide_columns` or ``F.unfold``) of one image at
  a time. It ships with every torch build and wins on layers with many channels and small feature maps
  (VGG's 512 channels at 4×4 and 2×2), where one long sparse product beats a loop over short rows. One
  image at a time keeps the unfolded input small and measured faster at batch 64 than one product with the
  whole batch's columns side by side.
* ``"direct"`` (:class:`DirectSparseConv2d`): a direct sparse convolution in C++ (``sparse_conv.cpp``, built
  on first use, see :mod:`prunekit.runtime.native`): for each output channel, each kept weight adds its
  shifted input plane to the output plane; the unfolded input is never built. It wins on layers with few
  channels and large feature maps (ResNet-56's 16–64 channels at 32×32 … 8×8), where building the im2col
  columns costs more than the sparse product saves. It needs a C++ compiler; without one the autotune has
  only the CSR kernel.

Both are exact (a sum of the same products, only in another order). Grouped and depthwise convolutions,
non-zero padding modes and ``padding="same"`` are not converted (:func:`sparse_twins` returns nothing for
them).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from prunekit.errors import PrunekitError
from prunekit.models.layers import conv_output_size
from prunekit.runtime.native import native_kernel


@contextmanager
def _beta_warning_silenced():
    """torch warns that sparse CSR support "is in beta" on a CSR tensor's creation; we use its stable core."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta", category=UserWarning)
        yield


class _CsrWeight(nn.Module):
    """Holds a 2-D weight matrix as CSR buffers; :meth:`weight_csr` assembles the sparse tensor from them
    (no copy: the tensor shares the buffers' memory)."""

    #: Identifies the kernel's code where it is not torch's own (the autotune caches timings per version).
    kernel_version = ""

    def __init__(self, matrix: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        with _beta_warning_silenced():
            csr = matrix.detach().to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().to(torch.int32))
        self.register_buffer("col_indices", csr.col_indices().to(torch.int32))
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self.matrix_shape = tuple(matrix.shape)

    def weight_csr(self) -> torch.Tensor:
        with _beta_warning_silenced():
            return torch.sparse_csr_tensor(self.crow_indices, self.col_indices, self.values, self.matrix_shape,
                                           check_invariants=False)

    @property
    def nnz(self) -> int:
        return self.values.numel()

    @property
    def sparsity(self) -> float:
        """Fraction of the weight matrix's entries that are zero (not stored)."""
        total = self.matrix_shape[0] * self.matrix_shape[1]
        return 1.0 - self.nnz / total if total else 0.0

    def dense_weight(self) -> torch.Tensor:
        """The weight matrix as a dense tensor (for tests and conversions back; not used by forward)."""
        return self.weight_csr().to_dense()


class SparseLinear(_CsrWeight):
    """``nn.Linear`` with a CSR weight: ``y = x Wᵀ + b`` for inputs of shape ``(..., in_features)``."""

    def __init__(self, linear: nn.Linear):
        super().__init__(linear.weight, linear.bias)
        self.out_features, self.in_features = self.matrix_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        y = torch.sparse.mm(self.weight_csr(), flat.t()).t()
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, sparsity={self.sparsity:.3f}"


def wide_columns(image: torch.Tensor, kernel: tuple, dilation: tuple, padding: tuple) -> tuple[torch.Tensor, int]:
    """im2col of one image ``(C, H, W)`` for a stride-1 convolution, on a *wide* output grid: returns the
    columns ``(C·kh·kw, H_out·W_padded)`` and ``W_padded``; the product with the weight is the output with
    ``W_padded − W_out`` extra columns per row, to be cropped.

    Why: in the flattened zero-padded image, the inputs that one kernel tap reads for a whole row-major wide
    output are one contiguous run, so the columns are one copy of long contiguous runs (2–10× faster than
    ``F.unfold`` on CIFAR's feature maps). One extra zero row at the bottom keeps the last tap's run inside
    the image (it only feeds cropped columns)."""
    channels = image.shape[0]
    padded = F.pad(image, (padding[1], padding[1], padding[0], padding[0] + (kernel[1] > 1)))
    padded_w = padded.shape[2]
    out_h = padded.shape[1] - (kernel[1] > 1) - dilation[0] * (kernel[0] - 1)
    flat = padded.reshape(channels, -1)
    taps = flat.as_strided((channels, kernel[0], kernel[1], out_h * padded_w),
                           (flat.stride(0), dilation[0] * padded_w, dilation[1], 1))
    return taps.reshape(channels * kernel[0] * kernel[1], out_h * padded_w), padded_w


#: Narrower outputs use ``F.unfold``: the wide grid's extra columns (2 of 4 at 2×2, 2 of 6 at 4×4) cost more
#: in the sparse product than its faster copy saves (measured on VGG-11's 512-channel layers).
WIDE_COLUMNS_MIN_WIDTH = 8


class SparseConv2d(_CsrWeight):
    """``nn.Conv2d`` (groups = 1, zero padding) with a CSR weight of shape ``(out, in·kh·kw)``.

    Forward, per image: the input as columns ``(in·kh·kw, H_out·W_out)`` (a 1×1, stride-1, unpadded
    convolution uses the image itself; a stride-1 one with outputs at least :data:`WIDE_COLUMNS_MIN_WIDTH`
    wide, :func:`wide_columns`; any other, ``F.unfold``), times the CSR weight, plus the bias."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv.weight.reshape(conv.out_channels, -1), conv.bias)
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = tuple(conv.kernel_size), tuple(conv.stride)
        self.padding, self.dilation = tuple(conv.padding), tuple(conv.dilation)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        return conv_output_size(height, width, self.kernel_size, self.stride, self.padding, self.dilation)

    def _columns(self, image: torch.Tensor, out_w: int) -> tuple[torch.Tensor, int]:
        """One image ``(C, H, W)`` as the columns the weight multiplies and the width of one output row in
        them (``out_w``, or more for :func:`wide_columns`, whose extra columns are cropped)."""
        if self.kernel_size == (1, 1) and self.stride == (1, 1) and self.padding == (0, 0):
            return image.reshape(self.in_channels, -1), image.shape[-1]
        if self.stride == (1, 1) and out_w >= WIDE_COLUMNS_MIN_WIDTH:
            return wide_columns(image, self.kernel_size, self.dilation, self.padding)
        columns = F.unfold(image[None], self.kernel_size, self.dilation, self.padding, self.stride)[0]
        return columns, out_w

    def _convolve(self, weight: torch.Tensor, image: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
        columns, row_width = self._columns(image, out_w)
        y = torch.sparse.mm(weight, columns)
        if self.bias is not None:
            y = y.add_(self.bias[:, None])
        return y.view(self.out_channels, out_h, row_width)[:, :, :out_w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out_h, out_w = self.output_size(x.shape[-2], x.shape[-1])
        weight = self.weight_csr()
        return torch.stack([self._convolve(weight, image, out_h, out_w) for image in x])

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}, sparsity={self.sparsity:.3f}")


class DirectSparseConv2d(SparseConv2d):
    """:class:`SparseConv2d` (same buffers and state dict) computed by the native direct sparse convolution
    (float32, CPU): one C++ call per forward, no im2col. Inference only: an input that requires a gradient
    (with grad mode on) is refused. Build it through :func:`sparse_twins`, which checks that the native
    kernel is available."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__(conv)
        self.geometry = [self.in_channels, *self.kernel_size, *self.stride, *self.padding, *self.dilation]

    @property
    def kernel_version(self) -> str:
        """The native kernel's build name (it changes with its source, flags, torch version and CPU)."""
        return native_kernel().__name__

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            raise PrunekitError("the direct sparse kernel computes no gradients: run the accelerated model under "
                                "torch.inference_mode() (or train the original model)")
        return native_kernel().sparse_conv2d(x, self.crow_indices, self.col_indices, self.values, self.bias,
                                             self.geometry)

    def extra_repr(self) -> str:
        return super().extra_repr() + ", kernel=direct"


def convertible(module: nn.Module) -> bool:
    """True for the layers a sparse twin computes exactly: ``nn.Linear``, and ``nn.Conv2d`` with groups = 1,
    zero padding given as numbers (not ``"same"``/``"valid"``) and a float weight."""
    if type(module) is nn.Linear:
        return module.weight.is_floating_point()
    if type(module) is nn.Conv2d:
        return (module.groups == 1 and module.padding_mode == "zeros" and not isinstance(module.padding, str)
                and module.weight.is_floating_point())
    return False


def sparse_twin(module: nn.Module) -> SparseConv2d | SparseLinear | None:
    """The CSR-kernel module computing the same function as ``module`` (from its current weight; a masked
    module must be made permanent first), or None when ``module`` is not :func:`convertible`."""
    if not convertible(module):
        return None
    return SparseLinear(module) if isinstance(module, nn.Linear) else SparseConv2d(module)


def sparse_twins(module: nn.Module, device: str = "cpu") -> dict[str, nn.Module]:
    """``{kernel name: sparse module}`` computing the same function as ``module``, one per kernel that can
    run it on ``device``: ``"csr"`` for every :func:`convertible` layer, ``"direct"`` too for a float32
    convolution on a CPU when the native kernel is available (:func:`prunekit.runtime.native.native_kernel`; building it is tried
    on the first call). Empty for a layer that is not convertible."""
    csr = sparse_twin(module)
    if csr is None:
        return {}
    twins = {"csr": csr}
    native = (isinstance(csr, SparseConv2d) and csr.values.dtype == torch.float32
              and torch.device(device).type == "cpu" and native_kernel() is not None)
    if native:
        twins["direct"] = DirectSparseConv2d(module)
    return twins


def zero_fraction(module: nn.Module) -> float:
    """Fraction of ``module.weight``'s entries that are exactly zero."""
    weight = module.weight
    return float((weight == 0).sum()) / weight.numel() if weight.numel() else 0.0
