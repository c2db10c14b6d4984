"""The sparse runtime: sparse modules (both kernels) equal dense ones, the autotune keeps dense where sparse is
slower and picks the fastest kernel (fake timer), decisions are cached, accelerate works on masked, permanent
and compact-file models, and a machine that cannot build the native kernel still gets the CSR one."""

import json

import pytest
import torch
from torch import nn

from prunekit import accelerate, make_permanent, prune_unstructured
from prunekit.checkpoint import load_checkpoint
from prunekit.errors import PrunekitError
from prunekit.export import save_compact
from prunekit.masking import apply_masks, has_masks
from prunekit.measure.timing import peak_inference_memory, static_bytes
from prunekit.runtime import get_runtime
from prunekit.runtime import native
from prunekit.runtime.autotune import DecisionCache, cache_path, choose
from prunekit.runtime.sparse import describe_choices
from prunekit.runtime.sparse_modules import DirectSparseConv2d, SparseConv2d, SparseLinear, sparse_twin, sparse_twins

needs_native = pytest.mark.skipif(native.native_unavailable() is not None,
                                  reason=f"native sparse kernel unavailable: {native.native_unavailable()}")


def randomly_masked(layer: nn.Module, sparsity: float = 0.8) -> nn.Module:
    with torch.no_grad():
        layer.weight.mul_(torch.rand_like(layer.weight) >= sparsity)
    return layer.eval()


def assert_same_function(expected: torch.Tensor, actual: torch.Tensor) -> None:
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5)


CONVS = [  # (in, out, kernel, stride, padding, dilation, bias, input size)
    (3, 8, 3, 1, 1, 1, True, 9),
    (6, 5, 3, 2, 1, 1, False, 9),
    (4, 7, 3, 1, 2, 2, True, 8),
    (5, 4, (3, 1), (2, 1), (0, 1), 1, True, 7),
    (8, 6, 1, 1, 0, 1, False, 5),
    (8, 6, 1, 2, 0, 1, True, 6),
    (3, 4, 5, 1, 0, (1, 2), True, 11),
    (3, 4, 5, 1, (2, 1), (1, 2), False, 16),  # wide columns with dilation and uneven padding
    (5, 4, 3, 1, 1, 1, True, 3),  # narrow: F.unfold
]


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("spec", CONVS)
def test_sparse_conv_equals_dense_conv(spec, batch):
    cin, cout, kernel, stride, padding, dilation, bias, size = spec
    torch.manual_seed(batch)
    conv = randomly_masked(nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bias))
    x = torch.randn(batch, cin, size, size + 1)
    sparse = sparse_twin(conv)
    assert isinstance(sparse, SparseConv2d)
    assert_same_function(conv(x), sparse(x))


@needs_native
@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("spec", CONVS + [(6, 5, 3, 3, 2, 2, True, 12), (4, 6, 2, 1, 3, 1, False, 5),
                                          (3, 4, 3, (1, 2), (2, 0), (2, 1), True, 9), (4, 4, 3, 4, 1, 1, False, 6)])
def test_direct_sparse_conv_equals_dense_conv(spec, batch):
    cin, cout, kernel, stride, padding, dilation, bias, size = spec
    torch.manual_seed(batch)
    conv = randomly_masked(nn.Conv2d(cin, cout, kernel, stride, padding, dilation, bias=bias))
    x = torch.randn(batch, cin, size, size + 1)
    direct = sparse_twins(conv)["direct"]
    assert isinstance(direct, DirectSparseConv2d)
    with torch.inference_mode():
        assert_same_function(conv(x), direct(x))


@needs_native
def test_direct_sparse_conv_on_hand_computed_tensors_and_odd_layouts():
    conv = nn.Conv2d(2, 1, 3, padding=1, bias=True)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 1, 0, 2] = 2.0  # output(i, j) reads input channel 1 at (i - 1, j + 1)
        conv.bias.fill_(0.5)
    x = torch.arange(2 * 3 * 3, dtype=torch.float32).reshape(1, 2, 3, 3)
    expected = torch.full((1, 1, 3, 3), 0.5)
    expected[0, 0, 1:, :2] += 2.0 * x[0, 1, :2, 1:]
    direct = sparse_twins(conv)["direct"]
    assert torch.equal(direct(x), expected)
    wide = torch.randn(3, 2, 5, 7).to(memory_format=torch.channels_last)  # a layout the kernel must copy
    with torch.inference_mode():
        assert_same_function(conv(wide), direct(wide))
        assert_same_function(conv(wide[:, :, 1:, ::2]), direct(wide[:, :, 1:, ::2]))


@needs_native
def test_direct_twin_has_the_csr_twin_s_state_and_memory():
    conv = randomly_masked(nn.Conv2d(8, 8, 3, padding=1), 0.9)
    twins = sparse_twins(conv)
    assert set(twins) == {"csr", "direct"}
    csr, direct = twins["csr"].state_dict(), twins["direct"].state_dict()
    assert csr.keys() == direct.keys() and all(torch.equal(csr[k], direct[k]) for k in csr)
    assert static_bytes(twins["direct"]) == static_bytes(twins["csr"])
    assert set(sparse_twins(nn.Linear(4, 4))) == {"csr"}  # the native kernel is for convolutions


@needs_native
def test_direct_kernel_of_an_all_zero_layer_returns_the_bias_and_takes_an_empty_batch():
    conv = randomly_masked(nn.Conv2d(3, 2, 3, stride=2, padding=1), sparsity=1.0)
    direct = sparse_twins(conv)["direct"]
    assert direct.values.numel() == 0
    y = direct(torch.randn(2, 3, 7, 7))
    assert y.shape == (2, 2, 4, 4) and torch.equal(y, conv.bias.detach()[None, :, None, None].expand(2, 2, 4, 4))
    assert direct(torch.randn(0, 3, 7, 7)).shape == (0, 2, 4, 4)


@needs_native
def test_direct_kernel_refuses_an_input_that_needs_a_gradient():
    direct = sparse_twins(randomly_masked(nn.Conv2d(2, 2, 3)))["direct"]
    x = torch.randn(1, 2, 5, 5, requires_grad=True)
    with pytest.raises(PrunekitError, match="computes no gradients"):
        direct(x)
    with torch.no_grad():
        assert direct(x).shape == (1, 2, 3, 3)


def test_without_a_compiler_the_csr_kernel_remains_and_one_line_says_why(monkeypatch, capsys):
    def no_compiler():
        raise RuntimeError("no C++ compiler ('c++' not found; install g++)\n(more lines of build output)")

    monkeypatch.setattr(native, "_LOADED", {})
    monkeypatch.setattr(native, "build", no_compiler)
    conv = randomly_masked(nn.Conv2d(4, 4, 3, padding=1), 0.9)
    assert set(sparse_twins(conv)) == {"csr"}
    assert set(sparse_twins(conv)) == {"csr"}
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines == ["prunekit: native sparse kernel unavailable (no C++ compiler ('c++' not found; install g++)); "
                     "the sparse runtime uses torch CSR only"]
    assert native.native_unavailable().startswith("no C++ compiler")


def test_missing_toolchain_names_the_compiler(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-xyz")
    assert native.missing_toolchain() == "no C++ compiler ('no-such-compiler-xyz' not found; install g++ or set CXX)"


def test_a_lock_left_by_an_interrupted_build_is_removed_a_fresh_one_kept(tmp_path):
    lock = tmp_path / "lock"
    assert native.remove_stale_lock(tmp_path) is False  # no lock: nothing to do
    lock.touch()
    assert native.remove_stale_lock(tmp_path) is False and lock.exists()  # another process is building now
    later = lock.stat().st_mtime + native.STALE_LOCK_S + 1
    assert native.remove_stale_lock(tmp_path, now=later) is True and not lock.exists()


def test_build_name_changes_with_the_source_and_torch_version(monkeypatch):
    name = native.build_name("int x;")
    assert name.startswith("prunekit_sparse_conv_") and name == native.build_name("int x;")
    assert native.build_name("int y;") != name
    monkeypatch.setattr(torch, "__version__", "0.0.0")
    assert native.build_name("int x;") != name


@pytest.mark.parametrize("batch", [1, 8])
@pytest.mark.parametrize("bias", [True, False])
def test_sparse_linear_equals_dense_linear(batch, bias):
    torch.manual_seed(0)
    linear = randomly_masked(nn.Linear(12, 5, bias=bias))
    sparse = sparse_twin(linear)
    assert isinstance(sparse, SparseLinear)
    for x in (torch.randn(batch, 12), torch.randn(batch, 3, 12)):
        assert_same_function(linear(x), sparse(x))


def test_sparse_module_stores_only_the_kept_weights():
    weight = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])
    linear = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        linear.weight.copy_(weight)
    sparse = sparse_twin(linear)
    assert sparse.values.tolist() == [2.0, 1.0, 3.0]
    assert sparse.col_indices.tolist() == [1, 0, 2]
    assert sparse.crow_indices.tolist() == [0, 1, 1, 3]
    assert sparse.sparsity == pytest.approx(6 / 9)
    assert static_bytes(sparse) == 3 * 4 + 3 * 4 + 4 * 4  # values fp32, col and row indices int32
    assert torch.equal(sparse.dense_weight(), weight)


@pytest.mark.parametrize("layer", [nn.Conv2d(4, 4, 3, groups=4), nn.Conv2d(4, 8, 3, groups=2),
                                   nn.Conv2d(4, 4, 3, padding="same"), nn.Conv2d(4, 4, 3, padding_mode="reflect"),
                                   nn.BatchNorm2d(4)])
def test_grouped_depthwise_and_other_layers_stay_dense(layer):
    assert sparse_twin(layer) is None


# --- accelerate and the autotune ----------------------------------------------------------------------------

class FakeTimer:
    """Sparse (every kernel) is 4× faster on layers with 16 output channels, 2× slower elsewhere; counts its
    calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, modules, input_shape, threads):
        dense = modules[0]
        self.calls.append((tuple(dense.weight.shape), input_shape, threads))
        dense_ms, sparse_ms = (2.0, 0.5) if dense.weight.shape[0] == 16 else (1.0, 2.0)
        return [dense_ms] + [sparse_ms] * (len(modules) - 1)


def constant_timer(dense_ms: float, sparse_ms: float):
    return lambda modules, shape, threads: [dense_ms] + [sparse_ms] * (len(modules) - 1)


@pytest.fixture
def pruned_vgg(tiny_vgg):
    torch.manual_seed(1)
    prune_unstructured(tiny_vgg, sparsity=0.9, include_classifier=True)
    return tiny_vgg.eval()


def test_autotune_keeps_dense_where_sparse_measured_slower(pruned_vgg, tmp_path):
    timer = FakeTimer()
    x = torch.randn(1, 3, 32, 32)
    fast = accelerate(pruned_vgg, x, threads=1, timer=timer, cache=tmp_path / "cache.json")
    kinds = {name: type(module) for name, module in fast.named_modules()}
    # tiny_vgg: convolutions features.0 (3→8), .4 (8→16), .8 (16→16), .11 (16→16); classifier 16→10
    assert kinds["features.0"] is nn.Conv2d and kinds["classifier"] is nn.Linear
    assert all(issubclass(kinds[name], SparseConv2d) for name in ("features.4", "features.8", "features.11"))
    by_name = {c.name: c for c in fast.sparse_choices}
    assert by_name["features.0"].sparse is False and by_name["features.0"].speedup == 0.5
    chosen = by_name["features.4"]
    assert chosen.sparse is True and (chosen.dense_ms, chosen.sparse_ms, chosen.speedup) == (2.0, 0.5, 4.0)
    assert chosen.input_shape == [1, 8, 16, 16]
    assert {threads for *_, threads in timer.calls} == {1}
    assert "| features.0 |" in describe_choices(fast.sparse_choices)
    with torch.inference_mode():
        assert_same_function(pruned_vgg(x), fast(x))


def test_autotune_keeps_dense_on_a_tie_within_the_margin(pruned_vgg, tmp_path):
    fast = accelerate(pruned_vgg, torch.randn(1, 3, 32, 32), timer=constant_timer(1.0, 0.99),
                      cache=False)
    assert not any(isinstance(m, (SparseConv2d, SparseLinear)) for m in fast.modules())
    assert fast.sparse_choices and not any(c.sparse for c in fast.sparse_choices)


def test_autotune_picks_the_fastest_kernel_and_keeps_every_timing():
    conv = randomly_masked(nn.Conv2d(4, 4, 3), 0.9)
    twins = {"csr": SparseConv2d(conv), "direct": SparseConv2d(conv)}  # stand-ins: the choice is by timing only
    timings = {"csr": [3.0, 1.0, 2.0], "direct": [3.0, 2.0, 1.0]}  # dense, csr, direct
    for fastest, ms in timings.items():
        choice = choose("c", conv, twins, (1, 4, 8, 8), 1, "cpu", DecisionCache(None),
                        timer=lambda modules, shape, threads, ms=ms: ms)
        assert (choice.sparse, choice.kernel, choice.sparse_ms, choice.speedup) == (True, fastest, 1.0, 3.0)
        assert choice.kernel_ms == {"dense": 3.0, "csr": ms[1], "direct": ms[2]}
    slow = choose("c", conv, twins, (1, 4, 8, 8), 1, "cpu", DecisionCache(None),
                  timer=lambda modules, shape, threads: [1.0, 1.2, 1.1])
    assert (slow.sparse, slow.kernel) == (False, "direct")


def test_measured_kernel_times_are_paired_with_dense_round_by_round(monkeypatch):
    from prunekit.measure.timing import Timing
    from prunekit.runtime import autotune

    rounds = {"dense": [10.0, 10.0, 40.0, 40.0, 40.0], "sparse": [30.0, 30.0, 20.0, 20.0, 20.0]}

    def interleaved(modules, batch, device, warmup, repeats, threads, input_size):
        assert (batch, input_size, threads) == (2, (4, 8, 8), 1)
        return [Timing.from_samples(batch, rounds["dense"]), Timing.from_samples(batch, rounds["sparse"])]

    monkeypatch.setattr(autotune, "time_interleaved", interleaved)
    conv = randomly_masked(nn.Conv2d(4, 4, 3), 0.9)
    # medians 40 and 20 would say 2×; per round the ratios are 1/3, 1/3, 2, 2, 2: median 2, so 40 / 2 = 20
    assert autotune.measure_kernels([conv, sparse_twin(conv)], (2, 4, 8, 8), 1) == [40.0, 20.0]
    rounds["sparse"] = [20.0, 5.0, 80.0, 80.0, 5.0]  # medians 40 vs 20 again, but 2× slower in 3 of 5 rounds
    assert autotune.measure_kernels([conv, sparse_twin(conv)], (2, 4, 8, 8), 1) == [40.0, 80.0]


def test_a_cached_decision_without_a_kernel_available_now_is_measured_again(tmp_path):
    conv = randomly_masked(nn.Conv2d(4, 4, 3), 0.9)
    cache = DecisionCache(tmp_path / "c.json")
    csr_only = {"csr": SparseConv2d(conv)}
    choose("c", conv, csr_only, (1, 4, 8, 8), 1, "cpu", cache, timer=lambda modules, shape, threads: [2.0, 1.0])
    cache.save()
    calls = []

    def timer(modules, shape, threads):
        calls.append(len(modules))
        return [2.0, 1.0, 0.5]

    reread = DecisionCache(tmp_path / "c.json")
    assert choose("c", conv, csr_only, (1, 4, 8, 8), 1, "cpu", reread, timer).cached
    both = choose("c", conv, {**csr_only, "direct": SparseConv2d(conv)}, (1, 4, 8, 8), 1, "cpu", reread, timer)
    assert calls == [3] and not both.cached and both.kernel == "direct"

    class Rebuilt(SparseConv2d):
        kernel_version = "prunekit_sparse_conv_0123"

    rebuilt = choose("c", conv, {**csr_only, "direct": Rebuilt(conv)}, (1, 4, 8, 8), 1, "cpu", reread, timer)
    assert calls == [3, 3] and not rebuilt.cached, "another build of a kernel is measured anew"


@needs_native
def test_accelerate_uses_the_direct_kernel_where_it_measured_fastest(pruned_vgg):
    def direct_fastest(modules, shape, threads):
        return [2.0] + [0.5 if isinstance(m, DirectSparseConv2d) else 1.0 for m in modules[1:]]

    x = torch.randn(2, 3, 32, 32)
    fast = accelerate(pruned_vgg, x[:1], timer=direct_fastest, cache=False)
    assert isinstance(fast.features[0], DirectSparseConv2d) and type(fast.classifier) is SparseLinear
    assert {c.kernel for c in fast.sparse_choices} == {"direct", "csr"}
    assert "sparse (direct)" in describe_choices(fast.sparse_choices)
    assert not any(p.requires_grad for p in fast.parameters())  # so grad mode needs no inference_mode here
    with torch.inference_mode():
        expected = pruned_vgg(x)
    assert_same_function(expected, fast(x))


def test_decisions_are_cached_on_disk_and_not_measured_again(pruned_vgg, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    x = torch.randn(1, 3, 32, 32)
    first = FakeTimer()
    accelerate(pruned_vgg, x, threads=1, timer=first)
    assert cache_path() == tmp_path / "sparse_autotune.json"
    entries = json.loads(cache_path().read_text())
    assert len(entries) == len(first.calls) >= 4
    assert all("threads1|cpu|torch" in key for key in entries)

    def must_not_measure(*args):
        raise AssertionError("a cached decision was measured again")

    again = accelerate(pruned_vgg, x, threads=1, timer=must_not_measure)
    assert all(c.cached for c in again.sparse_choices)
    assert isinstance(again.features[4], SparseConv2d) and type(again.features[0]) is nn.Conv2d
    other_batch = FakeTimer()
    accelerate(pruned_vgg, torch.randn(4, 3, 32, 32), threads=1, timer=other_batch)
    assert other_batch.calls, "a different batch size is a different decision"


def test_accelerate_never_changes_the_model_and_works_on_masked_and_permanent_models(pruned_vgg):
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        expected = pruned_vgg(x)
    masked = accelerate(pruned_vgg, x[:1], timer=FakeTimer(), cache=False)
    assert has_masks(pruned_vgg) and not has_masks(masked)
    permanent = accelerate(make_permanent(pruned_vgg), x[:1], timer=FakeTimer(), cache=False)
    with torch.inference_mode():
        assert_same_function(expected, masked(x))
        assert_same_function(expected, permanent(x))
    assert isinstance(permanent.features[8], SparseConv2d)


def test_compact_file_round_trip_into_accelerate(pruned_vgg, tmp_path):
    path = save_compact(pruned_vgg, tmp_path / "m.compact.pt")
    loaded = load_checkpoint(path).model.eval()
    x = torch.randn(3, 3, 32, 32)
    fast = accelerate(loaded, x[:1], timer=FakeTimer(), cache=False)
    assert isinstance(fast.features[11], SparseConv2d)
    with torch.inference_mode():
        assert_same_function(pruned_vgg(x), fast(x))


def test_sparse_runtime_follows_the_runtime_contract(pruned_vgg, tmp_path, monkeypatch):
    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    deployable = make_permanent(pruned_vgg)
    before = {k: v.clone() for k, v in deployable.state_dict().items()}
    x = torch.randn(5, 3, 32, 32)
    runtime = get_runtime("sparse")
    assert runtime.missing() is None and "cpu" in runtime.devices
    runnable = runtime.prepare(deployable, x[:1], "cpu", 1)
    runnable.eval().to("cpu")
    with torch.inference_mode():
        assert_same_function(deployable(x), runnable(x))
    assert all(torch.equal(before[k], v) for k, v in deployable.state_dict().items())
    assert (tmp_path / "sparse_autotune.json").exists()


def test_peak_memory_of_a_sparse_model_counts_only_the_kept_weights():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 256, 3, padding=1, bias=False)).eval()  # weights dominate at 4×4
    apply_masks(model, {"0.weight": torch.rand(256, 64, 3, 3) >= 0.95})
    make_permanent(model)
    always_sparse = accelerate(model, torch.randn(1, 64, 4, 4), timer=constant_timer(2.0, 1.0),
                               cache=False)
    assert isinstance(always_sparse[0], SparseConv2d)
    dense_weight = 256 * 64 * 9 * 4
    sparse_peak = peak_inference_memory(always_sparse, input_size=(64, 4, 4))
    assert sparse_peak < 0.25 * peak_inference_memory(model, input_size=(64, 4, 4)) < 0.25 * 1.2 * dense_weight


def test_peak_memory_does_not_count_an_alias_of_the_input_twice():
    class FirstImage(nn.Module):
        def forward(self, x):
            return x[:1]

    image_bytes = 3 * 8 * 8 * 4
    assert peak_inference_memory(FirstImage(), batch_size=2, input_size=(3, 8, 8)) == 2 * image_bytes


# --- profile ------------------------------------------------------------------------------------------------

def test_profile_measures_the_runtime_s_model(monkeypatch):
    from prunekit.measure import profile
    from prunekit.runtime import Runtime

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(64, 256, 3, padding=1, bias=False)).eval()
    prune_unstructured(model, sparsity=0.95, include_classifier=True)
    always_sparse = Runtime("always-sparse", "test", lambda m, x, device, threads: accelerate(
        m, x, device, threads, timer=constant_timer(2.0, 1.0), cache=False))
    eager = profile(model, input_size=(1, 64, 4, 4), timing=False)
    sparse = profile(model, input_size=(1, 64, 4, 4), timing=False, runtime=always_sparse)
    assert (eager.runtime, sparse.runtime) == ("eager", "always-sparse")
    assert sparse.peak_memory_bytes < 0.25 * eager.peak_memory_bytes
    assert sparse.weights_bytes < 0.25 * eager.weights_bytes
    assert (sparse.params, sparse.nonzero_params, sparse.macs) == (eager.params, eager.nonzero_params, eager.macs)


def test_profile_cli_runtime_flag(base, tmp_path, monkeypatch, capsys):
    from prunekit.cli import main

    monkeypatch.setenv("PRUNEKIT_CACHE", str(tmp_path))
    capsys.readouterr()
    assert main(["profile", str(base), "--runtime", "sparse", "--no-timing", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"] == "sparse"
    assert main(["profile", str(base), "--runtime", "tensorrtx", "--no-timing"]) != 0
    assert "unknown runtime 'tensorrtx'" in capsys.readouterr().err
