"""A zoo of small CIFAR CNNs written in the many styles users write them, for the channel-pruning engine.

The models were written for prunekit's tests to mimic common CIFAR code styles (modules built in
forward, Python on tensor sizes, grouped convs, gates, splits, shuffles, padded shortcuts, transposed
and scripted convs, literal-size heads, ...) and, in ``norms`` and ``channels_last``, the styles of the
model libraries people download (norm layers calling ``F.batch_norm``/``F.group_norm`` themselves,
channels-last MLP blocks with layer scale; in ``kernels``, selective kernels and weight-standardised convs). No
third-party code is copied. Each ``Case`` names one
model, the style ``pattern`` it exercises, and a ``build`` callable returning a fresh model.

Every model takes ``input_shape`` (default ``(2, 3, 32, 32)``) and returns ``(N, 10)`` logits, except
where ``notes`` says the forward returns a tuple (then the logits come first).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from . import (channels_last, gates, grouped, inline_modules, kernels, misc, norms, pad_shortcut, shape_python, shuffle,
               splits, transpose_script, views)

PATTERNS = (
    "inline_modules",
    "shape_python",
    "grouped",
    "gates",
    "splits",
    "shuffle",
    "pad_shortcut",
    "transpose_script",
    "views",
    "misc",
    "norms",
    "channels_last",
    "kernels",
)


@dataclass(frozen=True)
class Case:
    name: str
    pattern: str
    build: Callable[[], nn.Module]
    input_shape: tuple = (2, 3, 32, 32)
    notes: str = ""


CASES: list[Case] = [
    # ------------------------------------------------------------------ inline_modules
    Case("inline_vgg_relu_maxpool", "inline_modules", inline_modules.InlineVGG,
         notes="nn.ReLU(inplace=True)(x), nn.MaxPool2d(2, 2)(out), nn.Flatten()(out) created in forward"),
    Case("inline_resnet18ish", "inline_modules", inline_modules.InlineResNet18ish,
         notes="ResNet-18 layout (2-2-2-2, 1/8 width), BasicBlock with 1x1-conv shortcut when shapes change; inline ReLU and nn.AvgPool2d(4)(out)"),
    Case("inline_avgpool_down", "inline_modules", inline_modules.AvgDownNet,
         notes="nn.AvgPool2d(2)(x) downsampling, nn.AdaptiveAvgPool2d((1, 1))(x) and nn.Flatten()(x) in forward"),
    Case("inline_pool_in_loop", "inline_modules", inline_modules.PairsNet,
         notes="zip over ModuleLists of conv/BN; nn.MaxPool2d(2, 2)(nn.ReLU()(...)) made on every loop step"),
    # ------------------------------------------------------------------ shape_python
    Case("shape_int_half_slice", "shape_python", shape_python.HalfMixNet,
         notes="half = int(x.size(1) * 0.5); cat(conv(x[:, :half]), x[:, half:]); F.avg_pool2d(x, x.size(3))"),
    Case("shape_if_size_mismatch", "shape_python", shape_python.SizeCheckResNet,
         notes="shortcut chosen at run time: if x.size(2) != y.size(2) pool, if x.size(1) != y.size(1) 1x1 conv"),
    Case("shape_unpack_shape2", "shape_python", shape_python.ShapeIndexNet,
         notes="n, c, h, w = x.size(); assert on (h, w); F.avg_pool2d(out, kernel_size=out.shape[2:]); reshape(n, out.shape[1])"),
    Case("shape_last_dim_pool_halves", "shape_python", shape_python.DynamicWidthHead,
         notes="k = out.shape[1] // 2; avg-pool first k channels, max-pool the rest, both with out.shape[-1]; cat"),
    Case("netslim_channel_selection", "shape_python", shape_python.SlimPreResNet,
         notes="pre-act ResNet, BN -> ChannelSelection (x[:, np.squeeze(np.argwhere(indexes.numpy()))]) -> ReLU -> conv"),
    # ------------------------------------------------------------------ grouped
    Case("resnext_c4w4", "grouped", grouped.TinyResNeXt,
         notes="ResNeXt bottleneck, cardinality 4, bottleneck width 4 (groups=4 on 16..64 channels)"),
    Case("resnext_c8w8", "grouped", lambda: grouped.TinyResNeXt(cardinality=8, width=8, stages=2),
         notes="ResNeXt bottleneck, cardinality 8, bottleneck width 8 (groups=8 on 64/128 channels)"),
    Case("regnet_gw8", "grouped", grouped.TinyRegNet,
         notes="RegNetX-like blocks, group width 8: groups = width // 8 (3, 6, 12 groups)"),
    Case("sepconv_multiplier2", "grouped", grouped.MultiplierNet,
         notes="depthwise with channel multiplier: Conv2d(c, 2c, 3, groups=c) then 1x1 pointwise"),
    Case("mobilenetv1_dwsep", "grouped", grouped.MobileNetV1Tiny,
         notes="plain depthwise-separable (groups=in=out) blocks; head x.view(-1, 256)"),
    Case("two_tower_groups2", "grouped", grouped.TwoTowerNet,
         notes="two consecutive groups=2 convs (towers stay separate) then a full conv merges them"),
    # ------------------------------------------------------------------ gates
    Case("se_linear_view", "gates", gates.se_linear_view_net,
         notes="SE: AdaptiveAvgPool -> Linear -> ReLU -> Linear -> Sigmoid -> view(b, c, 1, 1); x * y"),
    Case("se_conv1x1", "gates", gates.se_conv_net,
         notes="SE with 1x1 convs (with bias) on F.adaptive_avg_pool2d(x, (1, 1)); x * w"),
    Case("se_linear_expand_as", "gates", gates.se_expand_as_net,
         notes="SE squeeze by x.mean((2, 3)), unsqueeze twice, x * s.expand_as(x)"),
    Case("se_torch_mul", "gates", gates.se_torch_mul_net,
         notes="SE built via a lambda factory; torch.mul(x, z[:, :, None, None])"),
    Case("se_hardsigmoid", "gates", gates.se_hard_net,
         notes="MobileNetV3-ish SE: x.mean(keepdim=True), 1x1 convs, nn.Hardsigmoid gate, s * x (gate on the left)"),
    Case("se_inline_sigmoid_vgg", "gates", gates.InlineSigmoidVGG,
         notes="gate inline in forward: x * torch.sigmoid(fc2(relu(fc1(pooled))))[..., None, None]"),
    Case("mbconv_se_swish", "gates", gates.EffNetTiny,
         notes="EfficientNet-ish MBConv: expand, depthwise, SE on the expanded width, Swish module, projection, residual"),
    Case("residual_attention_mask", "gates", gates.ResidualAttentionTiny,
         notes="trunk * (1 + sigmoid(mask branch)), mask branch of the same width, upsampled by F.interpolate"),
    # ------------------------------------------------------------------ splits
    Case("shufflev2_split", "splits", splits.SplitNetV2,
         notes="ShuffleNetV2-like unit without shuffle: torch.split(x, half, 1), branch on one half, cat back"),
    Case("dpn_dual_path", "splits", splits.TinyDPN,
         notes="DPN-like: out[:, :d] added to residual x[:, :d], cat(x[:, d:], out[:, d:]) grows the dense path"),
    Case("csp_half_split", "splits", splits.TinyCSPNet,
         notes="CSP: x.chunk(2, dim=1), one half through residual units, cat, 1x1 transition conv"),
    Case("split_uneven_cat", "splits", splits.UnevenSplitNet,
         notes="torch.split(x, [8, 24], dim=1) into a 5x5 and a 3x3 branch, then cat"),
    Case("slice_fold_add_glu", "splits", splits.SliceAddGLUNet,
         notes="x[:, :c] + x[:, c:] folds a 2c conv output; later a, b = x.chunk(2, 1); a * torch.sigmoid(b) (GLU)"),
    Case("partial_residual_slices", "splits", splits.PartialResidualNet,
         notes="ReXNet-like: cat([y[:, 0:self.in_channels] + x, y[:, self.in_channels:]]) on widths 16/22/28/36"),
    Case("hierarchical_split_width", "splits", splits.HierarchicalSplitNet,
         notes="Res2Net-like: split(x, self.width, 1), piece i + output of piece i-1 into a 3x3 conv, cat"),
    # ------------------------------------------------------------------ shuffle
    Case("shufflev1_g2_view_transpose", "shuffle", shuffle.shufflev1_g2_view_transpose,
         notes="ShuffleNet v1 units, grouped 1x1 convs (g=2), shuffle by view/transpose(1, 2)/contiguous/view; cat with avg-pooled input at stride 2"),
    Case("shufflev1_g4_reshape_permute", "shuffle", shuffle.shufflev1_g4_reshape_permute,
         notes="ShuffleNet v1 units with g=4; shuffle by reshape/permute(0, 2, 1, 3, 4)/reshape"),
    Case("shufflev2_chunk_shuffle", "shuffle", shuffle.ShuffleV2Tiny,
         notes="ShuffleNet v2: x.chunk(2) + cat, then a ShuffleLayer module (view/transpose/flatten(1, 2))"),
    Case("shuffle_identity_g1", "shuffle", shuffle.ShuffleG1Net,
         notes="channel shuffle with groups=1 (a no-op) in both spellings between plain convs"),
    # ------------------------------------------------------------------ pad_shortcut
    Case("resnet_lambda_pad", "pad_shortcut", pad_shortcut.resnet_lambda_pad,
         notes="option A: LambdaLayer(lambda x: F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, planes // 4, planes // 4)))"),
    Case("resnet_zeros_like_cat", "pad_shortcut", pad_shortcut.resnet_zeros_like_cat,
         notes="shortcut x[:, :, ::s, ::s] then torch.cat([x, torch.zeros_like(x)], 1)"),
    Case("resnet_pad_asymmetric", "pad_shortcut", pad_shortcut.resnet_pad_asymmetric,
         notes="F.pad(F.avg_pool2d(x, 1, stride), [0, 0, 0, 0, 0, extra]): all new channels at the end"),
    Case("pyramid_runtime_pad", "pad_shortcut", pad_shortcut.TinyPyramidNet,
         notes="PyramidNet-like growing widths; pad amount computed in forward from out.size(1) - shortcut.size(1)"),
    # ------------------------------------------------------------------ transpose_script
    Case("convtranspose_encdec", "transpose_script", transpose_script.EncDecClassifier,
         notes="conv down x2, nn.ConvTranspose2d(64, 32, 2, stride=2) up + BN, conv, pool, linear"),
    Case("convtranspose_unet_skip", "transpose_script", transpose_script.UNetSkipClassifier,
         notes="ConvTranspose2d (with bias, output_padding) output added to an encoder skip, another cat with a skip"),
    Case("jit_script_block", "transpose_script", transpose_script.ScriptedBlockNet,
         notes="torch.jit.script(ConvBNReLU(...)) submodules (RecursiveScriptModule) used inside an eager module"),
    Case("jit_script_function", "transpose_script", transpose_script.ScriptedFnNet,
         notes="@torch.jit.script hard-swish function applied after each conv-BN"),
    # ------------------------------------------------------------------ views
    Case("view_literal_1024", "views", views.LiteralViewNet,
         notes="x.view(-1, 1024) with a literal int for 64 * 4 * 4, then a two-layer MLP"),
    Case("lenet_view_16x5x5", "views", views.LeNetBN,
         notes="LeNet-5 with BN, valid 5x5 convs, x.view(-1, 16 * 5 * 5)"),
    Case("torch_flatten_mlp", "views", views.TorchFlattenNet,
         notes="AdaptiveAvgPool2d((2, 2)) then torch.flatten(x, 1) into Dropout/Linear(48 * 2 * 2, 64)"),
    Case("reshape_shape0", "views", views.ReshapeHeadNet,
         notes="x.reshape(x.shape[0], -1) after F.avg_pool2d(x, 4)"),
    Case("sequential_flatten_linear", "views", views.flatten_sequential_net,
         notes="whole model is one nn.Sequential; nn.Flatten() then nn.Linear(64 * 2 * 2, 10)"),
    # ------------------------------------------------------------------ misc
    Case("densenet_loop_cat", "misc", misc.DenseLoopNet,
         notes="dense growth: x = torch.cat([x, layer(x)], 1) in a Python loop over nested ModuleLists"),
    Case("modulelist_moduledict_iter", "misc", misc.ModuleListDictNet,
         notes="self.convs[idx] from a ModuleList and self.norms['bn' + str(idx)] from a ModuleDict in forward"),
    Case("wrn_dropout_empty_seq_shortcut", "misc", misc.TinyWideResNet,
         notes="pre-act wide blocks, dropout between convs, out + self.shortcut(x) with shortcut = nn.Sequential()"),
    Case("tuple_logits_features", "misc", misc.LogitsAndFeatures,
         notes="forward returns a tuple (logits, features); logits first"),
    Case("act_mish_hardswish_silu", "misc", misc.ActZooNet,
         notes="nn.Mish, nn.Hardswish(inplace), nn.SiLU, F.silu(...) + F.relu6(x) * 0.5 residual, F.mish"),
    Case("ceil_mode_maxpool", "misc", misc.CeilPoolNet,
         notes="MaxPool2d(2, 2, ceil_mode=True) on 15x15, F.max_pool2d(x, 3, 2, ceil_mode=True), F.adaptive_avg_pool2d(x, 1)"),
    Case("inception_branch_cat", "misc", misc.TinyGoogLeNet,
         notes="GoogLeNet-like: four branches (1x1, 3x3, double 3x3, pool-proj) concatenated"),
    Case("shared_conv_twice", "misc", misc.SharedConvNet,
         notes="one conv module called twice (weight sharing) with different BNs, residual add"),
    # ------------------------------------------------------------------ norms
    Case("bnact_preact_resnet", "norms", norms.BNActResNet,
         notes="pre-act ResNet; every norm a BatchNorm2d subclass whose forward calls F.batch_norm then ReLU"),
    Case("bnact_mbconv_se", "norms", norms.BNActEffNet,
         notes="EfficientNet-like MBConv + SE with BatchNormAct norms (no act after the projection)"),
    Case("groupnorm_resnet", "norms", norms.GroupNormResNet,
         notes="ResNet with nn.GroupNorm(8, C) and a GroupNorm subclass calling F.group_norm + SiLU"),
    Case("instancenorm_vgg", "norms", norms.InstanceNormNet,
         notes="affine nn.InstanceNorm2d, and F.instance_norm on the model's own scale/shift parameters"),
    # ------------------------------------------------------------------ channels_last
    Case("convnext_linear_mlp", "channels_last", channels_last.TinyConvNeXt,
         notes="permute(0, 2, 3, 1), nn.LayerNorm, Linear 4x MLP, gamma * x, permute back; LayerNorm2d downsampling"),
    Case("layer_scale_conv_mlp", "channels_last", channels_last.LayerScaleConvNet,
         notes="1x1-conv MLP with a learned (1, C, 1, 1) hidden bias; x + y.mul(gamma.reshape(1, -1, 1, 1))"),
    Case("tokens_flatten_transpose", "channels_last", channels_last.TokenMixerNet,
         notes="tokens by x.flatten(2).transpose(1, 2), Linear MLP with ls[None, None, :], back by reshape"),
    Case("convnextv2_grn_mlp", "channels_last", channels_last.TinyConvNeXtV2,
         notes="ConvNeXt-like blocks, a global response norm (L2 over positions / its mean over channels) in the MLP"),
    # ------------------------------------------------------------------ kernels
    Case("selective_kernel_split", "kernels", kernels.SKNet,
         notes="SK blocks: split(x, self.in_channels // k, 1), stack(paths, 1), softmax over axis 1 of a k*C view"),
    Case("selective_kernel_whole_input", "kernels", kernels.sk_whole_input_net,
         notes="SK blocks whose paths all read the whole input"),
    Case("weight_standardised_gain", "kernels", kernels.NormFreeNet,
         notes="norm-free ResNet of Conv2d subclasses standardising each filter in forward, times a learned gain"),
    Case("weight_standardised_plain", "kernels", kernels.standardised_no_gain_net,
         notes="the same with plain weight standardisation (no gain)"),
]


def logits(output) -> torch.Tensor:
    """A zoo model's logits: its output, or the first entry where it returns a tuple."""
    return output[0] if isinstance(output, tuple) else output


def relative_error(expected: torch.Tensor, actual: torch.Tensor) -> float:
    """max |expected - actual| over max |expected|."""
    return ((expected - actual).abs().max() / expected.abs().max()).item()
