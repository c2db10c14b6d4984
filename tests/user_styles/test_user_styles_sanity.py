"""Sanity checks for the user-style model zoo: every case builds, runs, backprops, and is self-contained."""

from __future__ import annotations

import copy
from collections import Counter

import pytest
import torch

from . import CASES, PATTERNS, Case

NUM_CLASSES = 10
MAX_PARAMS = 320_000
# Patterns that deserve at least three differently written models; the rest need two.
BIG_PATTERNS = {"inline_modules", "shape_python", "grouped", "gates", "splits", "shuffle", "pad_shortcut", "views", "misc"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _logits(out, case: Case) -> torch.Tensor:
    if isinstance(out, tuple):
        assert "tuple" in case.notes, f"{case.name} returns a tuple but its notes do not say so"
        out = out[0]
    assert isinstance(out, torch.Tensor)
    return out


def _eval_out(model, x, case):
    with torch.no_grad():
        return _logits(model(x), case)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_forward_backward(case: Case):
    torch.manual_seed(0)
    model = case.build()
    n_params = sum(p.numel() for p in model.parameters())
    assert 0 < n_params <= MAX_PARAMS, f"{case.name}: {n_params} parameters"

    x = torch.randn(case.input_shape)
    n = case.input_shape[0]

    model.train()
    out = _logits(model(x), case)
    assert out.shape == (n, NUM_CLASSES)
    assert torch.isfinite(out).all()
    loss = torch.nn.functional.cross_entropy(out, torch.arange(n) % NUM_CLASSES)
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None and not name.endswith("indexes")]
    assert not missing, f"{case.name}: no gradient for {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    model.eval()
    y = _eval_out(model, x, case)
    assert y.shape == (n, NUM_CLASSES)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_self_contained(case: Case):
    """build() gives a fresh model each call, and its forward reads no global state (RNG, shared modules)."""
    m1, m2 = case.build(), case.build()
    assert m1 is not m2
    assert {id(p) for p in m1.parameters()}.isdisjoint(id(p) for p in m2.parameters()), "builds share parameters"
    m2.load_state_dict(m1.state_dict())
    m1.eval()
    m2.eval()
    x = torch.randn(case.input_shape)

    torch.manual_seed(1)
    ref = _eval_out(m1, x, case)
    rng_after = torch.get_rng_state()
    torch.manual_seed(1)
    torch.randn(3)  # advance the RNG: eval forward must not depend on it
    assert torch.equal(_eval_out(m1, x, case), ref)
    torch.manual_seed(1)
    _eval_out(m1, x, case)
    assert torch.equal(torch.get_rng_state(), rng_after), "eval forward consumed the global RNG"

    # Same weights, separate instance: same function. Training the other instance must not leak back.
    assert torch.allclose(_eval_out(m2, x, case), ref, rtol=1e-5, atol=1e-6)
    m2.train()
    with torch.no_grad():
        m2(torch.randn(case.input_shape) * 3 + 1)
    assert torch.equal(_eval_out(m1, x, case), ref), "training another build changed this model"

    # Pruning engines deep-copy models: a copy must compute the same thing.
    m3 = copy.deepcopy(m1)
    assert torch.allclose(_eval_out(m3, x, case), ref, rtol=1e-5, atol=1e-6)


def test_catalogue():
    names = [c.name for c in CASES]
    assert len(names) == len(set(names)), "case names must be unique"
    unknown = {c.pattern for c in CASES} - set(PATTERNS)
    assert not unknown, f"unknown pattern tags {unknown}"
    counts = Counter(c.pattern for c in CASES)
    for tag in PATTERNS:
        need = 3 if tag in BIG_PATTERNS else 2
        assert counts[tag] >= need, f"pattern {tag!r} has {counts[tag]} cases, want >= {need}"
    for c in CASES:
        assert c.notes, f"{c.name} has no notes"
        assert len(c.input_shape) == 4 and tuple(c.input_shape[1:]) == (3, 32, 32)
