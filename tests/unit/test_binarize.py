"""Binarization: sign/scale maths on hand tensors, the STE gradient, latent weights, composition with masks,
checkpoints and the packed 1-bit compact format."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prunekit.binarize import (binarization_spec, binarize_model, binarize_ste, binary_weight, latent_weights,
                               select_layers, sign_activation)
from prunekit.checkpoint import checkpoint_dict, load_checkpoint, save_checkpoint
from prunekit.config import TrainConfig
from prunekit.errors import PrunekitError
from prunekit.export.compact import binary_payload, decode, encode, save_compact
from prunekit.masking import apply_masks, permanent_copy
from prunekit.measure import count_nonzero_parameters, count_parameters
from prunekit.train import fit

W = torch.tensor([[0.5, -1.5, 0.0, -0.2],
                  [-0.1, 0.3, -0.3, 0.1]])
MASK = torch.tensor([[True, True, False, False],
                     [False, True, True, True]])


def bits_of(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def binarized_linear(weight: torch.Tensor = W, mask: torch.Tensor | None = None, method: str = "bwn") -> nn.Linear:
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
    if mask is not None:
        apply_masks(layer, {"weight": mask})
    return binarize_model(layer, [""], method)


def test_bwn_is_alpha_times_sign_per_output_channel():
    # α_0 = (0.5 + 1.5 + 0 + 0.2) / 4 = 0.55, α_1 = (0.1 + 0.3 + 0.3 + 0.1) / 4 = 0.2; sign(0) = +1
    expected = torch.tensor([[0.55, -0.55, 0.55, -0.55],
                             [-0.2, 0.2, -0.2, 0.2]])
    assert torch.allclose(binary_weight(W, "bwn"), expected, atol=1e-7)


def test_binaryconnect_is_plus_minus_one():
    assert torch.equal(binary_weight(W, "binaryconnect"), torch.tensor([[1.0, -1, 1, -1], [-1, 1, -1, 1]]))


def test_masked_bwn_scale_over_kept_weights_and_exact_zeros():
    # α_0 = (0.5 + 1.5) / 2 = 1.0, α_1 = (0.3 + 0.3 + 0.1) / 3
    out = binary_weight(W, "bwn", MASK)
    a1 = (0.3 + 0.3 + 0.1) / 3
    assert torch.allclose(out, torch.tensor([[1.0, -1.0, 0, 0], [0, a1, -a1, a1]]), atol=1e-7)
    assert not torch.signbit(out[~MASK]).any()  # pruned entries are +0.0


def test_binarization_is_idempotent_bit_for_bit():
    torch.manual_seed(0)
    weight = torch.randn(32, 16, 3, 3) * 0.1
    mask = torch.rand(weight.shape) > 0.3
    for m in (None, mask):
        once = binary_weight(weight, "bwn", m)
        assert torch.equal(bits_of(binary_weight(once, "bwn", m)), bits_of(once))


def test_ste_gradient_passes_only_where_abs_w_at_most_one():
    weight = torch.tensor([[0.5, -1.5, 1.0, -1.0, 2.0, 0.0]], requires_grad=True)
    upstream = torch.tensor([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])
    binarize_ste(weight, "bwn").backward(upstream)
    assert torch.equal(weight.grad, torch.tensor([[1.0, 0.0, 3.0, 4.0, 0.0, 6.0]]))


def test_sign_activation_values_and_ste():
    x = torch.tensor([-2.0, -0.5, 0.0, 0.5, 2.0], requires_grad=True)
    y = sign_activation(x)
    assert torch.equal(y, torch.tensor([-1.0, -1.0, -1.0, 1.0, 1.0]))
    y.backward(torch.ones(5))
    assert torch.equal(x.grad, torch.tensor([0.0, 1.0, 1.0, 1.0, 0.0]))


def test_optimizer_updates_the_latent_weight_and_forward_uses_the_binarized_one():
    layer = binarized_linear()
    names = [n for n, _ in layer.named_parameters()]
    assert "weight_latent" in names and "weight" not in names
    x = torch.randn(8, 4)
    assert torch.allclose(layer(x), x @ binary_weight(W, "bwn").T + layer.bias)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    layer(x).pow(2).sum().backward()
    latent_grad = layer.weight_latent.grad.clone()
    assert latent_grad[0, 1] == 0 and latent_grad.abs().sum() > 0  # |−1.5| > 1: no gradient there
    optimizer.step()
    assert not torch.equal(layer.weight_latent.detach(), W)  # the latent fp32 weight moved
    assert layer.weight_latent[0, 1] == -1.5
    layer(x)
    assert torch.equal(layer.weight, binary_weight(layer.weight_latent.detach(), "bwn"))


def test_masked_layer_gets_no_gradient_at_pruned_entries():
    layer = binarized_linear(mask=MASK)
    layer(torch.randn(8, 4)).sum().backward()
    assert torch.all(layer.weight_orig.grad[~MASK] == 0) and layer.weight_orig.grad[MASK].abs().sum() > 0


def test_select_layers_keeps_first_conv_and_classifier(tiny_vgg):
    assert select_layers(tiny_vgg) == ["features.4", "features.8", "features.11"]
    assert select_layers(tiny_vgg, keep_first_last=False) == ["features.0", "features.4", "features.8",
                                                              "features.11", "classifier"]
    assert select_layers(tiny_vgg, ["features.1*"]) == ["features.11"]
    with pytest.raises(PrunekitError, match="matches no conv/linear"):
        select_layers(tiny_vgg, ["layer9.*"])
    with pytest.raises(PrunekitError, match="no-keep-first-last"):
        select_layers(tiny_vgg, ["features.0", "classifier"])


def test_masks_come_first():
    layer = binarized_linear()
    with pytest.raises(PrunekitError, match="prune, then binarize"):
        apply_masks(layer, {"weight": MASK})


def ternary_values_ok(model, masks) -> None:
    """Every binarized layer: exactly 0 where pruned, ±α_c (one magnitude per output channel) where kept."""
    modules = dict(model.named_modules())
    for name in binarization_spec(model)["layers"]:
        module = modules[name]
        weight = module.weight.detach()
        mask = masks.get(f"{name}.weight", torch.ones_like(weight, dtype=torch.bool))
        assert torch.all(weight[~mask] == 0), name
        magnitude = torch.where(mask, weight.abs(), 0.0).flatten(1)
        per_channel = magnitude.amax(dim=1, keepdim=True)
        kept = mask.flatten(1)
        assert torch.equal(magnitude[kept], per_channel.expand_as(magnitude)[kept]), name


@pytest.mark.long
def test_binarized_masked_model_stays_ternary_through_training_and_save_load(tmp_path, tiny_vgg, tiny_data):
    torch.manual_seed(1)
    masks = {name: torch.rand(m.weight.shape) > 0.5 for name, m in
             [("features.4.weight", tiny_vgg.features[4]), ("features.8.weight", tiny_vgg.features[8])]}
    apply_masks(tiny_vgg, masks)
    binarize_model(tiny_vgg, select_layers(tiny_vgg), "bwn")
    before = latent_weights(tiny_vgg)
    fit(tiny_vgg, tiny_data, TrainConfig(epochs=1, batch_size=64, lr=0.05, device="cpu"), progress=False)
    after = latent_weights(tiny_vgg)
    assert all(not torch.equal(before[k], after[k]) for k in before)  # latent weights were trained
    tiny_vgg(torch.zeros(1, 3, 32, 32))
    ternary_values_ok(tiny_vgg, masks)
    assert count_parameters(tiny_vgg) == 6258
    path = save_checkpoint(tiny_vgg, tmp_path / "bin.pt")
    loaded = load_checkpoint(path)
    assert binarization_spec(loaded.model) == binarization_spec(tiny_vgg)
    assert all(torch.equal(latent_weights(loaded.model)[k], after[k]) for k in after)
    ternary_values_ok(loaded.model, loaded.masks)
    x = torch.randn(4, 3, 32, 32)
    assert torch.equal(loaded.model.eval()(x), tiny_vgg.eval()(x))
    baked = permanent_copy(tiny_vgg)
    assert not binarization_spec(baked) and torch.equal(baked.eval()(x), tiny_vgg(x))
    assert count_nonzero_parameters(baked) == count_nonzero_parameters(tiny_vgg)


def test_packed_binary_round_trip_is_bit_exact(tmp_path, tiny_vgg):
    apply_masks(tiny_vgg, {"features.8.weight": torch.rand(16, 16, 3, 3) > 0.5})
    with torch.no_grad():
        tiny_vgg.features[11].weight[3] = 0.0  # an all-zero channel: α = 0, some entries -0.0
        tiny_vgg.features[11].weight[3, :2] = -0.0
    binarize_model(tiny_vgg, select_layers(tiny_vgg), "bwn", activations="sign")
    source = checkpoint_dict(tiny_vgg)
    compact = encode(source, "binary")
    back = decode(compact)
    assert back["binarized"] == source["binarized"] and set(back["state_dict"]) == set(source["state_dict"])
    for key, value in source["state_dict"].items():
        if value.is_floating_point():
            assert torch.equal(bits_of(back["state_dict"][key].float()), bits_of(value.float())), key
        else:
            assert torch.equal(back["state_dict"][key], value), key
    rows = binary_payload(compact)
    assert rows["features.11.weight"] == {"sign_bytes": 288, "mask_bytes": 0, "scale_bytes": 64, "fp32_bytes": 9216,
                                          "payload_bytes": 352}
    assert rows["features.8.weight"]["mask_bytes"] == 288
    path = save_compact(tiny_vgg, tmp_path / "binary.pt", "binary")
    loaded = load_checkpoint(path)
    x = torch.randn(4, 3, 32, 32)
    assert binarization_spec(loaded.model)["activations"] == "sign"
    assert torch.equal(loaded.model.eval()(x), tiny_vgg.eval()(x))


def test_binary_values_need_a_binarized_checkpoint(tiny_vgg):
    with pytest.raises(PrunekitError, match="prunekit binarize"):
        encode(tiny_vgg, "binary")


def test_binary_values_refuse_weights_that_are_not_binary(tiny_vgg):
    binarize_model(tiny_vgg, select_layers(tiny_vgg), "bwn")
    source = checkpoint_dict(tiny_vgg)
    source["state_dict"]["features.4.weight"][0, 0, 0, 0] *= 1.5
    with pytest.raises(PrunekitError, match="not binary"):
        encode(source, "binary")
