"""The runtime registry: lookup, unknown names, and the eager runtime's contract."""

import pytest
import torch

from prunekit.errors import PrunekitError
from prunekit.runtime import get_runtime, parse_runtimes, runtime_names


def test_eager_is_registered_and_computes_the_same_function(tiny_vgg):
    assert "eager" in runtime_names()
    x = torch.randn(2, 3, 32, 32)
    expected = tiny_vgg.eval()(x)
    runnable = get_runtime("eager").prepare(tiny_vgg, x[:1], "cpu", 1)
    torch.testing.assert_close(runnable(x), expected)
    assert get_runtime("eager").missing() is None


def test_unknown_runtime_lists_the_valid_ones():
    with pytest.raises(PrunekitError, match=r"unknown runtime 'tensorrtx'.*eager"):
        get_runtime("tensorrtx")
    with pytest.raises(PrunekitError, match="unknown runtime"):
        parse_runtimes("eager,nope")
    assert parse_runtimes(" eager ,") == ["eager"]


def test_onnxruntime_runtime_computes_the_same_function(tiny_vgg):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    runtime = get_runtime("onnxruntime")
    assert runtime.missing() is None and runtime.devices == ("cpu",)
    x = torch.randn(3, 3, 32, 32)
    runnable = runtime.prepare(tiny_vgg, x[:1], "cpu", 1)
    torch.testing.assert_close(runnable(x), tiny_vgg.eval()(x), atol=1e-4, rtol=1e-4)
    with pytest.raises(PrunekitError, match="CPU only"):
        runtime.prepare(tiny_vgg, x[:1], "cuda", 1)


def test_parse_runtimes_keeps_the_order_given():
    assert parse_runtimes("onnxruntime,eager") == ["onnxruntime", "eager"]
