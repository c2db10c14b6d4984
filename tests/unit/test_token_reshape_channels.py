"""Channels through channels-last token reshapes ((B, H·W, C) <-> (B, H, W, C)) and through a Linear on tokens whose
input features prunekit does not trace (a positional or attention branch): tiny models written for these tests."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from prunekit.prune.channels import plan_channels, prune_channels
from prunekit.prune.mask import apply_masks

X = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))


pytestmark = pytest.mark.usefixtures("one_thread")


class TokenGrid(nn.Module):
    """stem conv (3 -> 8); tokens (B, H·W, C) by reshape + permute; a token Linear; back to a grid with
    ``reshape(B, H, W, C)`` (C read from the input's shape); a channels-last Linear; NCHW; head conv (8 -> 2)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.mix = nn.Linear(8, 8)
        self.fc = nn.Linear(8, 8)
        self.head = nn.Conv2d(8, 2, 1)

    def grid(self, tokens, height, width):
        return tokens.reshape(tokens.shape[0], height, width, tokens.shape[2])

    def forward(self, x):
        x = self.stem(x)
        b, c, h, w = x.shape
        tokens = x.reshape(b, c, h * w).permute(0, 2, 1)
        tokens = tokens + self.mix(tokens)
        y = self.grid(tokens, h, w)
        y = y + self.fc(torch.relu(y))
        return self.head(y.permute(0, 3, 1, 2)).mean((2, 3))


def _assert_exact(model, plan):
    twin = apply_masks(copy.deepcopy(model), plan.masks)
    pruned = prune_channels(copy.deepcopy(model), X, plan=plan)
    with torch.no_grad():
        torch.testing.assert_close(pruned(X), twin(X))
    return pruned


def test_tokens_back_to_a_grid_keep_the_channel_axis_whole_so_the_stream_prunes():
    model = TokenGrid().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced and not plan.blocked.keys() - {"model output"}
    # one residual stream: the stem, the token Linear and the grid Linear lose the same 4 channels
    assert plan.removed["stem"] == plan.removed["mix"] == plan.removed["fc"] and len(plan.removed["stem"]) == 4
    pruned = _assert_exact(model, plan)
    assert pruned.stem.out_channels == 4 and pruned.fc.in_features == pruned.fc.out_features == 4
    assert pruned.head.in_channels == 4


def test_a_literal_grid_width_is_found_by_the_self_check_and_kept():
    class LiteralGrid(TokenGrid):
        def grid(self, tokens, height, width):
            return tokens.reshape(tokens.shape[0], height, width, 8)  # 8 is written, so it cannot follow a cut

    model = LiteralGrid().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert plan.retraced and "stem" not in plan.removed
    assert any("mixes the channel axis" in why for why in plan.blocked.values())
    _assert_exact(model, plan)


def test_an_axis_of_size_one_around_a_width_one_axis_is_ambiguous_and_pins():
    from prunekit.prune.op_handlers import _whole_axis_in

    assert _whole_axis_in((2, 64, 48), (2, 8, 8, 48), 2) == 3
    assert _whole_axis_in((2, 8, 8, 48), (2, 64, 48), 3) == 2
    assert _whole_axis_in((2, 64, 48), (2, 64, 3, 16), 2) is None  # the channel axis is split: no whole axis
    assert _whole_axis_in((2, 4, 1), (2, 4, 1, 1), 2) is None  # two candidates for the width-1 axis


class UntracedTokenBranch(nn.Module):
    """A residual token stream (12 channels) plus an attention-like branch: ``qkv`` (C -> 2C) reshaped into (B, N, 2, heads, -1)
    (that split of its outputs is kept), a product and a softmax over the head axis, then ``proj`` (C -> C) reads
    features prunekit does not trace; ``gamma`` scales it per channel. ``proj``'s outputs are still filters of the
    stream, its inputs stay whole."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.qkv = nn.Linear(12, 24)
        self.proj = nn.Linear(12, 12)
        self.gamma = nn.Parameter(torch.linspace(0.5, 1.5, 12))
        self.head = nn.Linear(12, 2)

    def width(self, c):
        return -1

    def forward(self, x):
        tokens = self.stem(x).flatten(2).transpose(1, 2)
        b, n, c = tokens.shape
        q, k = self.qkv(tokens).reshape(b, n, 2, 2, -1).unbind(2)
        mixed = ((q * k).softmax(-1)).reshape(b, n, self.width(c))
        tokens = tokens + self.gamma * self.proj(mixed)
        return self.head(tokens.mean(1))


def test_a_token_linear_on_untraced_features_cuts_its_filters_with_the_stream():
    model = UntracedTokenBranch().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced
    assert plan.removed["proj"] == plan.removed["stem"] and len(plan.removed["stem"]) == 6
    assert "qkv" not in plan.removed  # its outputs are split into (2, heads, -1) by the reshape
    assert any("to (2, 64, 2, 2, 6) mixes the channel axis" in why for why in plan.blocked.values())
    pruned = _assert_exact(model, plan)
    assert pruned.proj.in_features == 12 and pruned.proj.out_features == 6 and pruned.gamma.shape == (6,)
    assert pruned.qkv.in_features == 6 and pruned.qkv.out_features == 24
    assert pruned.head.in_features == 6  # tokens.mean(1): the channel axis is axis 1 once the token axis is gone


def test_a_width_read_from_the_stream_that_reshapes_the_branch_keeps_the_stream():
    class HeadsBackToStreamWidth(UntracedTokenBranch):
        def width(self, c):
            return c  # (B, N, heads, head_dim) -> (B, N, C): C read from the stream, so it must stay its width

    model = HeadsBackToStreamWidth().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced and "stem" not in plan.removed and "proj" not in plan.removed
    assert any("its width 12 sets axis 2 of reshape(2, 64, 12)" in why for why in plan.blocked.values())
    _assert_exact(model, plan)


class GridEncoding(nn.Module):
    """A positional encoding: a 1x1 conv (2 -> C) on a coordinate grid made in forward, added to the stream."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.encode = nn.Conv2d(2, 8, 1)
        self.head = nn.Conv2d(8, 2, 1)

    def forward(self, x):
        x = self.stem(x)
        b, _, h, w = x.shape
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, dtype=x.dtype), torch.linspace(-1, 1, w, dtype=x.dtype),
                                indexing="ij")
        grid = torch.stack([ys, xs]).expand(b, 2, h, w)
        return self.head(torch.relu(x + self.encode(grid))).mean((2, 3))


def test_a_conv_on_a_constant_grid_cuts_its_filters_with_the_stream_it_is_added_to():
    model = GridEncoding().eval()
    plan = plan_channels(model, X, ratio=0.5)
    assert not plan.retraced and plan.removed["encode"] == plan.removed["stem"] and len(plan.removed["stem"]) == 4
    pruned = _assert_exact(model, plan)
    assert pruned.encode.in_channels == 2 and pruned.encode.out_channels == 4
