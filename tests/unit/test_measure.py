"""Measurement: counts against hand-computed numbers, memory and timing sanity."""

from __future__ import annotations

import torch
from torch import nn

from prunekit.measure import (count_macs, count_nonzero_parameters, count_parameters, peak_inference_memory,
                              profile, time_inference)
from prunekit.prune.mask import apply_masks


def small_net():
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 10))


def test_macs_match_hand_count():
    # conv: 4 out × 3 in × 3×3 kernel × 32×32 positions; linear: 4 × 10
    assert count_macs(small_net()) == 4 * 3 * 9 * 32 * 32 + 4 * 10
    assert count_macs(small_net(), (8, 3, 32, 32)) == 4 * 3 * 9 * 32 * 32 + 4 * 10  # per image


def test_depthwise_macs():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False))
    assert count_macs(net, (1, 8, 32, 32)) == 8 * 9 * 32 * 32


def test_parameter_counts_with_masks():
    net = small_net()
    assert count_parameters(net) == 3 * 4 * 9 + 4 * 10 + 10
    mask = torch.ones(4, 3, 3, 3, dtype=torch.bool)
    mask[0] = False
    apply_masks(net, {"0.weight": mask})
    assert count_parameters(net) == 3 * 4 * 9 + 4 * 10 + 10  # masked tensors count at full size
    with torch.no_grad():
        net[4].weight.fill_(1.0)
        net[4].bias.fill_(1.0)
    assert count_nonzero_parameters(net) == 3 * 4 * 9 - 27 + 50


def test_peak_memory_grows_with_batch_and_covers_weights():
    net = small_net()
    weights = sum(p.numel() * 4 for p in net.parameters())
    one = peak_inference_memory(net, 1)
    eight = peak_inference_memory(net, 8)
    activation = 4 * 32 * 32 * 4  # the conv output at batch 1, fp32
    assert one >= weights + activation
    assert eight - one >= 7 * activation


def test_timing_and_profile_record():
    net = small_net()
    timing = time_inference(net, 4, repeats=5, warmup=1)
    assert timing.repeats == 5 and timing.q1_ms <= timing.median_ms <= timing.q3_ms
    result = profile(net, repeats=5, batch_size=8)
    assert result.macs == count_macs(net) and result.params == count_parameters(net)
    assert result.latency_ms > 0 and result.throughput_ips > 0 and result.file_bytes > result.params * 4


def test_int8_model_counts_its_packed_weights(tiny_vgg):
    from prunekit.export.quantize import quantize_model

    tiny_vgg.eval()
    with torch.no_grad():
        tiny_vgg.features[4].weight[:2] = 0  # two zero filters must stay zero in int8
    quantized = quantize_model(tiny_vgg, [torch.randn(8, 3, 32, 32) for _ in range(2)])
    bn = sum(m.num_features for m in tiny_vgg.modules() if isinstance(m, nn.BatchNorm2d))
    # BN folded: its scale and shift (2 per channel) become one conv bias per channel
    assert count_parameters(quantized) == count_parameters(tiny_vgg) - bn
    zeros = 2 * tiny_vgg.features[4].weight[0].numel()
    assert count_parameters(quantized) - count_nonzero_parameters(quantized) >= zeros
    int8_weights = sum(m.weight.numel() for m in tiny_vgg.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert peak_inference_memory(quantized) >= int8_weights  # one byte per weight at least
    assert count_macs(quantized) == count_macs(tiny_vgg)


def test_masked_model_is_profiled_as_deployed():
    dense, masked = small_net(), small_net()
    masked.load_state_dict(dense.state_dict())
    apply_masks(masked, {"0.weight": torch.rand(4, 3, 3, 3) > 0.5})
    a, b = profile(dense, timing=False), profile(masked, timing=False)
    assert b.peak_memory_bytes == a.peak_memory_bytes  # no second weight copy, no mask buffers
    assert b.nonzero_params < a.nonzero_params and hasattr(masked[0], "weight_mask")  # the model itself untouched


def test_eager_profile_times_the_model_as_compare_and_latency_targets_do(monkeypatch):
    """``profile`` (runtime None, and the CLI's ``--runtime eager``) times the eager runtime's prepared copy:
    BatchNorm folded, as :func:`prunekit.inference.prepare_for_inference` makes it."""
    import importlib

    profile_module = importlib.import_module("prunekit.measure.profile")  # the attribute is the function

    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    timed, real = [], profile_module.time_inference

    def recording(model, *args, **kwargs):
        timed.append(model)
        return real(model, *args, **kwargs)

    monkeypatch.setattr(profile_module, "time_inference", recording)
    profile(net, repeats=2, batch_size=2)
    assert len(timed) == 2 and all(m is not net for m in timed)
    assert not any(isinstance(m, nn.BatchNorm2d) for model in timed for m in model.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())  # the model itself untouched
