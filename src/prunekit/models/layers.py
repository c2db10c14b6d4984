"""Layers shared by the model families (ZeroPadShortcut) or made by channel surgery (ZeroWidthLayer where
every channel on one side of a conv or BatchNorm went, FullWidthChannels), and which layers of any nn.Module can
be pruned, which one is the classifier, on which device a module lives and what size a conv outputs."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.errors import PrunekitError


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every nn.Conv2d and nn.Linear of ``model`` by qualified name, in registration order.

    The classifier is included; callers that must spare it exclude ``classifier_name(model)``.
    Works for any nn.Module; does not modify it.
    """
    return {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


def classifier_name(model: nn.Module) -> str:
    """Qualified name of the output layer: ``model.classifier_name`` if set, else the last nn.Linear.

    Raises PrunekitError when the declared name is not a submodule, or when the
    model declares nothing and has no nn.Linear.
    """
    declared = getattr(model, "classifier_name", None)
    if isinstance(declared, str):
        try:
            model.get_submodule(declared)
        except AttributeError:
            raise PrunekitError(
                f"model.classifier_name is '{declared}' but the model has no such submodule; "
                "set it to the qualified name of the output layer"
            ) from None
        return declared
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise PrunekitError(
            "the model has no nn.Linear to use as classifier; set model.classifier_name to its output layer's name"
        )
    return linears[-1]


def module_tensor(module: nn.Module) -> torch.Tensor | None:
    """``module``'s first parameter, else its first buffer, else None: the tensor that says on which device (and
    in which dtype) a module lives."""
    tensor = next(iter(module.parameters()), None)
    return next(iter(module.buffers()), None) if tensor is None else tensor


def module_device(module: nn.Module) -> torch.device | None:
    """The device of :func:`module_tensor` (None for a module that holds no tensor)."""
    tensor = module_tensor(module)
    return None if tensor is None else tensor.device


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride``, then pick or zero each output channel.

    ``source_index[j]`` is the input channel copied into output channel j, or -1
    for an all-zero channel. The default pads ``(out - in) // 2`` zero channels
    before the input and the rest after, exactly akamaster's
    ``F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4))``.
    The index is a non-persistent buffer: state dicts stay identical to
    akamaster's, and channel surgery edits it through ``channel_config``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, source_index: list[int] | None = None):
        super().__init__()
        if source_index is None:
            source_index = _default_source_index(in_channels, out_channels)
        source_index = [int(i) for i in source_index]
        _check_source_index(in_channels, out_channels, stride, source_index)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.source_index = source_index
        # The zero channel is appended at position in_channels, so -1 maps there.
        gather = [in_channels if i < 0 else i for i in source_index]
        self.register_buffer("gather_index", torch.tensor(gather, dtype=torch.long), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gather_with_zero(x[:, :, :: self.stride, :: self.stride], 1, self.gather_index)

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def gather_with_zero(x: torch.Tensor, axis: int, index: torch.Tensor) -> torch.Tensor:
    """``x`` along ``axis`` rearranged by ``index``, where index ``x.shape[axis]`` picks a zero channel: a zero
    channel is appended, then ``index_select`` (cat and index_select only, so the model exports as plainly as it
    runs)."""
    padded = torch.cat([x, torch.zeros_like(x.narrow(axis, 0, 1))], axis)
    return padded.index_select(axis, index)


def _default_source_index(in_channels: int, out_channels: int) -> list[int]:
    if out_channels < in_channels:
        raise PrunekitError(
            f"ZeroPadShortcut({in_channels}, {out_channels}) cannot zero-pad to fewer channels; "
            "pass source_index to choose which input channels to keep"
        )
    before = (out_channels - in_channels) // 2
    after = out_channels - in_channels - before
    return [-1] * before + list(range(in_channels)) + [-1] * after


def _check_source_index(in_channels: int, out_channels: int, stride: int, source_index: list[int]) -> None:
    if not isinstance(stride, int) or stride < 1:
        raise PrunekitError(f"ZeroPadShortcut stride must be a positive int, got {stride!r}")
    if len(source_index) != out_channels:
        raise PrunekitError(
            f"ZeroPadShortcut source_index has {len(source_index)} entries but out_channels is {out_channels}; "
            "give one entry per output channel"
        )
    bad = [i for i in source_index if not -1 <= i < in_channels]
    if bad:
        raise PrunekitError(
            f"ZeroPadShortcut source_index entries {bad} are outside [-1, {in_channels - 1}] "
            f"for in_channels={in_channels}"
        )


class ZeroWidthLayer(nn.Module):
    """What a Conv2d (or BatchNorm2d) computes once every channel on one side of it is removed.

    With no output channel (``out_channels == 0``) it returns an empty ``(N, 0, H', W')`` tensor, its input
    ignored; with no input channel it returns its ``bias`` (zero without one) at every output position, as a
    conv reading only zeros does. ``H'``/``W'`` follow the replaced conv's ``kernel_size``, ``stride``,
    ``padding`` and ``dilation`` (a BatchNorm2d: 1, 1, 0, 1, so the size is kept). Structured pruning puts it
    where a residual branch is removed whole (see :mod:`prunekit.prune.surgery`); it has no weight, so it
    costs (almost) no time. A float ``bias`` Parameter of ``out_channels`` entries, or None; ``weight`` is an
    empty (zero-element) buffer of the conv's shape, so filter norms read 0.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size=(1, 1), stride=(1, 1), padding=(0, 0),
                 dilation=(1, 1), bias: bool = False):
        super().__init__()
        if in_channels and out_channels:
            raise PrunekitError(f"ZeroWidthLayer({in_channels}, {out_channels}) needs zero input or zero output "
                                "channels; a layer with both is an ordinary Conv2d")
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.kernel_size, self.stride, self.dilation = _pair(kernel_size), _pair(stride), _pair(dilation)
        self.padding = padding if isinstance(padding, str) else _pair(padding)
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias and out_channels else None
        self.register_buffer("weight", torch.zeros(0), persistent=False)
        self.resize(self.in_channels, self.out_channels)

    def resize(self, in_channels: int, out_channels: int) -> None:
        """Set the widths (the caller cuts ``bias``) and the empty ``weight`` of shape (out, in, kH, kW) that
        stands for the removed filters (zero elements: every filter's norm is 0)."""
        self.in_channels, self.out_channels = in_channels, out_channels
        self.weight = self.weight.new_zeros((out_channels, in_channels, *self.kernel_size))

    @classmethod
    def replacing(cls, layer: nn.Module, in_channels: int, out_channels: int,
                  bias: torch.Tensor | None = None) -> "ZeroWidthLayer":
        """The ZeroWidthLayer standing for ``layer`` (a Conv2d, a BatchNorm2d or a ZeroWidthLayer) at these
        widths, with ``bias`` (``out_channels`` entries) when given; on ``layer``'s device and mode."""
        geometry = {} if not hasattr(layer, "kernel_size") else {
            "kernel_size": layer.kernel_size, "stride": layer.stride, "padding": layer.padding,
            "dilation": layer.dilation}
        new = cls(in_channels, out_channels, bias=bias is not None, **geometry)
        if new.bias is not None:
            new.bias = nn.Parameter(bias.detach().clone(), requires_grad=bias.requires_grad)
        device = module_device(layer)
        return (new if device is None else new.to(device)).train(layer.training)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(H', W') of a conv of this geometry on an input of (``height``, ``width``)."""
        return conv_output_size(height, width, self.kernel_size, self.stride, self.padding, self.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = self.output_size(x.shape[-2], x.shape[-1])
        shape = (x.shape[0], self.out_channels, height, width)
        if self.bias is None:
            return x.new_zeros(shape)
        return self.bias.to(x.dtype).view(1, -1, 1, 1).expand(shape).contiguous()

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"bias={self.bias is not None}")


def conv_output_size(height: int, width: int, kernel_size: tuple[int, int], stride: tuple[int, int],
                     padding: tuple[int, int] | str, dilation: tuple[int, int]) -> tuple[int, int]:
    """(H', W') of a 2-d convolution of this geometry (pairs; ``padding`` may also be ``"same"`` or ``"valid"``)
    on an input of (``height``, ``width``), as ``nn.Conv2d`` computes it."""
    if padding == "same":
        return height, width
    padding = (0, 0) if padding == "valid" else padding
    return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in
                 zip((height, width), padding, dilation, kernel_size, stride))


def _pair(value) -> tuple[int, int]:
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


class FullWidthChannels(nn.Module):
    """Runs ``inner`` at its original width on a tensor that lost channels: the kept channels are scattered into
    zeros of width ``width`` along ``axis``, ``inner`` runs, and the kept channels of its output are gathered back.

    This is how channel pruning cuts a norm whose statistics span the channel axis (a LayerNorm over channels,
    channels-last or LayerNorm2d-style) or an ECA gate (a conv1d over the channel axis): in the masked twin a
    removed channel is zero at the module's input (and a norm's γ and β are zero), so the twin computes exactly
    this (its removed outputs are zero, and dropped here). ``inner`` is left untouched (original parameters).
    ``kept_index`` is a buffer, saved with the state dict; the module is recorded in the channel config so a pruned
    checkpoint rebuilds it.
    """

    def __init__(self, inner: nn.Module, kept_index: list[int], width: int, axis: int):
        super().__init__()
        kept_index = [int(i) for i in kept_index]
        if not isinstance(axis, int) or axis < 1:
            raise PrunekitError(f"FullWidthChannels axis must be a positive int (not the batch axis), got {axis!r}")
        if not kept_index or sorted(set(kept_index)) != kept_index or not 0 <= kept_index[0] <= kept_index[-1] < width:
            raise PrunekitError(f"FullWidthChannels kept_index must be increasing indices in [0, {width - 1}], "
                                f"got {kept_index!r:.200}")
        self.inner = inner
        self.width = width
        self.axis = axis
        self.register_buffer("kept_index", torch.tensor(kept_index, dtype=torch.long))
        # Full-width channel j is input channel scatter_index[j], or the zero channel at len(kept_index)
        # (gather_with_zero, as in ZeroPadShortcut).
        position = {channel: i for i, channel in enumerate(kept_index)}
        scatter = [position.get(j, len(kept_index)) for j in range(width)]
        self.register_buffer("scatter_index", torch.tensor(scatter, dtype=torch.long), persistent=False)

    @classmethod
    def wrapping(cls, inner: nn.Module, kept_index: list[int], width: int, axis: int,
                 like: nn.Module | None = None) -> "FullWidthChannels":
        """``inner`` (untouched) wrapped at these indices, on the device of ``like`` (default ``inner``; see
        :func:`module_device`), or where it is built when that module holds no tensor."""
        device = module_device(inner if like is None else like)
        wrapper = cls(inner, kept_index, width, axis)
        return wrapper if device is None else wrapper.to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        full = gather_with_zero(x, self.axis, self.scatter_index)
        return self.inner(full).index_select(self.axis, self.kept_index)

    def extra_repr(self) -> str:
        return f"{len(self.kept_index)} of {self.width} channels on axis {self.axis}"
