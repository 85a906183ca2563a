"""Conv2D: against PyTorch and Keras on random configurations, loops against fast kernels,
finite differences, float32, initialisation, and the error messages for bad input."""
import math

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

import minicnn as mc
from minicnn import kernels
from minicnn.kernels import conv_fast, conv_loops
from test_pool import normal
from twins import assert_close, compare, check_finite_differences, requires_keras, requires_torch


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny convolutions: torch's thread pool costs ~50x the work on a busy 2-core machine."""
    try:
        import torch
    except ImportError:
        yield
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Keras builds a layer per example (slow): a fifth of the profile's examples
KERAS_EXAMPLES = max(10, settings.default.max_examples // 5)


# ----------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------
def int_or_pair(lo, hi):
    return st.one_of(st.integers(lo, hi), st.tuples(st.integers(lo, hi), st.integers(lo, hi)))


@st.composite
def conv_configs(draw, paddings=("int", "pair", "pairs", "same", "valid"), strided_dilation=True):
    """(constructor kwargs, input shape) for a small convolution.

    strided_dilation=False never combines a stride > 1 with a dilation > 1 (TensorFlow cannot).
    """
    shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
             draw(st.integers(1, 12)), draw(st.integers(1, 12)))
    stride = draw(int_or_pair(1, 4))
    dilation = draw(int_or_pair(1, 3))
    if not strided_dilation and max(np.atleast_1d(stride)) > 1:
        dilation = 1
    kind = draw(st.sampled_from(paddings))
    padding = {"int": st.integers(0, 3),
               "pair": st.tuples(st.integers(0, 3), st.integers(0, 3)),
               "pairs": st.tuples(st.tuples(st.integers(0, 3), st.integers(0, 3)),
                                  st.tuples(st.integers(0, 3), st.integers(0, 3))),
               "same": st.just("same"), "valid": st.just("valid")}[kind]
    cfg = dict(in_channels=shape[1], out_channels=draw(st.integers(1, 4)),
               kernel_size=draw(int_or_pair(1, 5)), stride=stride, padding=draw(padding),
               dilation=dilation, bias=draw(st.booleans()))
    return cfg, shape


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def window_fits(cfg, shape):
    """Whether the window fits, worked out here from the configuration (not by minicnn)."""
    padding = cfg["padding"]
    if padding == "same":
        return True
    if padding == "valid":
        pads = ((0, 0), (0, 0))
    elif isinstance(padding, tuple) and isinstance(padding[0], tuple):
        pads = padding
    else:
        pads = tuple((p, p) for p in as_pair(padding))
    k, d = as_pair(cfg["kernel_size"]), as_pair(cfg["dilation"])
    return all(shape[2 + a] + sum(pads[a]) >= d[a] * (k[a] - 1) + 1 for a in (0, 1))


def make(cfg, shape, dtype=np.float64, seed=0):
    """The layer and an input for it, both of ``dtype``."""
    rng = np.random.default_rng(seed)
    layer = mc.Conv2D(**cfg, dtype=dtype, rng=rng)
    return layer, rng.standard_normal(shape).astype(dtype)


# ----------------------------------------------------------------------------------------
# against PyTorch and Keras
# ----------------------------------------------------------------------------------------
@requires_torch
@given(conv_configs())
@example(({"in_channels": 2, "out_channels": 3, "kernel_size": (5, 4), "stride": 1, "padding": 0,
           "dilation": 1, "bias": True}, (2, 2, 5, 4)))  # kernel as large as the input
@example(({"in_channels": 1, "out_channels": 2, "kernel_size": 1, "stride": 4, "padding": 0,
           "dilation": 1, "bias": False}, (1, 1, 9, 7)))  # 1x1, stride larger than the kernel
def test_matches_torch(config):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    layer, x = make(cfg, shape)
    compare(layer, x, "torch", config=f"{cfg}")
    # the shape arithmetic agrees with what forward produced (compare checked it against torch)
    y = layer.forward(x)
    assert layer.output_shape(x.shape) == y.shape
    assert [int(line.rsplit("= ", 1)[1]) for line in layer.explain(x.shape)] == list(y.shape[2:])


@requires_keras
@settings(max_examples=KERAS_EXAMPLES)
@given(conv_configs(strided_dilation=False))
def test_matches_keras(config):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    layer, x = make(cfg, shape)
    compare(layer, x, "keras", config=f"{cfg}")


# "same" with stride 2 on even sizes: the total padding is odd, the extra row/column goes
# at the bottom/right (TensorFlow), unlike PyTorch's symmetric padding
SAME_STRIDE_2 = [((1, 2, 8, 8), 3, 1), ((2, 1, 6, 10), (5, 3), 1), ((1, 3, 4, 6), (3, 4), 2),
                 ((2, 2, 10, 8), 5, 4), ((1, 1, 2, 4), (1, 3), 1)]


@pytest.mark.parametrize("shape, kernel, out_channels", SAME_STRIDE_2)
@pytest.mark.parametrize("framework", [pytest.param("torch", marks=requires_torch),
                                       pytest.param("keras", marks=requires_keras)])
def test_same_stride_2_asymmetric_padding(shape, kernel, out_channels, framework):
    cfg = dict(in_channels=shape[1], out_channels=out_channels, kernel_size=kernel, stride=2,
               padding="same")
    layer, x = make(cfg, shape)
    (top, bottom), (left, right) = layer.padding_for(*shape[2:])
    assert bottom - top in (0, 1) and right - left in (0, 1)
    assert (bottom, right) != (top, left), "these cases are meant to pad asymmetrically"
    assert layer.forward(x).shape[2:] == (math.ceil(shape[2] / 2), math.ceil(shape[3] / 2))
    compare(layer, x, framework)


# ----------------------------------------------------------------------------------------
# teaching loops against the fast kernels
# ----------------------------------------------------------------------------------------
@given(conv_configs(), st.sampled_from([np.float64, np.float32]), st.integers(0, 2**16))
@example(({"in_channels": 1, "out_channels": 1, "kernel_size": 1, "stride": 1, "padding": 3,
           "dilation": 1, "bias": True}, (3, 1, 9, 2)), np.float32, 0)
def test_loops_equal_fast(config, dtype, seed):
    """Every output of the two kernel modules within the derived bound below. (Its example:
    a weight gradient whose 360 terms cancel, where a fixed 1e-5 of the largest entry failed.)"""
    cfg, shape = config
    assume(window_fits(cfg, shape))
    cfg["out_channels"] = min(cfg["out_channels"], 3)  # the loops are slow: keep them small
    args = conv_arguments(cfg, shape, dtype, seed)
    loops = conv_outputs(conv_loops, *args, dout_seed=seed + 2)
    fast = conv_outputs(conv_fast, *args, dout_seed=seed + 2)
    assert_same_outputs(fast, loops, dtype, f"{cfg} on {shape} {np.dtype(dtype)}",
                        conv_bounds(args, seed + 2, dtype))


def conv_outputs(module, x, w, b, stride, pads, dilation, dout_seed, need_dx=True):
    """[out, dx, dw, db] of one forward and one backward pass of a kernel module."""
    out, cache = module.forward(x, w, b, stride, pads, dilation)
    dout = normal(out.shape, dout_seed, x.dtype)
    return [out, *module.backward(dout, cache, need_dx=need_dx)]


def conv_arguments(cfg, shape, dtype, seed):
    layer = mc.Conv2D(**cfg, dtype=dtype, rng=seed)
    x = normal(shape, seed + 1, dtype)
    bias = layer.bias.data if layer.bias is not None else None
    return x, layer.weight.data, bias, layer.stride, layer.padding_for(*shape[2:]), layer.dilation


# Every entry of the four outputs is a sum of products: the output Σ x·w (+ b), dx Σ dout·w,
# dw Σ dout·x, db Σ dout. Two kernels sum the same n terms in different orders (SIMD width,
# threads, blocking, FMA or not: whatever the CPU). For any order, the computed sum s of
# n products in precision u (unit roundoff: 2^-24 in float32, 2^-53 in float64) obeys
# |s − exact| <= γ_n · Σ|terms|, γ_n = n·u / (1 − n·u) (Higham, Accuracy and Stability of
# Numerical Algorithms, §3.1), so two such sums differ by at most 2·γ_n·Σ|terms|. Σ|terms| of
# each entry is the same computation on |x|, |w|, |b|, |dout| (every product then positive),
# done in float64. A bound on max|reference| alone fails where the terms cancel (a weight
# gradient of 8e-3 from 330 terms of size ~1 moved 2e-6 with two threads on an AMD EPYC).
# float64 keeps the comparisons sharp: a wrong index or a missing term moves an entry by a
# whole term, far above 2·γ_n·Σ|terms| ≈ 1e-13 of the sum.
NAMES = ("output", "input gradient", "weight gradient", "bias gradient")


def conv_bounds(module_args, dout_seed, dtype):
    """[allowed |ours − reference| per entry] for conv_outputs(..., module_args, dout_seed)."""
    x, w, b, stride, pads, dilation = module_args
    absolute = [None if a is None else np.abs(np.asarray(a, np.float64)) for a in (x, w, b)]
    out, cache = conv_loops.forward(*absolute, stride, pads, dilation)
    dout = np.abs(normal(out.shape, dout_seed, x.dtype).astype(np.float64))
    magnitudes = [out, *conv_loops.backward(dout, cache, need_dx=True)]
    (N, C, _, _), (O, _, KH, KW), (_, _, H_out, W_out) = x.shape, w.shape, out.shape
    n = max(C * KH * KW + 1, O * KH * KW, N * H_out * W_out)
    u = np.finfo(dtype).eps / 2
    gamma = n * u / (1 - n * u)
    return [None if m is None else 2 * gamma * m for m in magnitudes]


def assert_same_outputs(ours, reference, dtype, config, bounds):
    for name, a, r, bound in zip(NAMES, ours, reference, bounds):
        if r is None:
            assert a is None, f"{name}: expected None [{config}]"
            continue
        assert a.dtype == dtype and a.shape == r.shape, f"{name}: {a.dtype} {a.shape} [{config}]"
        assert np.all(np.isfinite(a)), f"{name}: non-finite values [{config}]"
        err = np.abs(a.astype(np.float64) - r.astype(np.float64))
        over = err - bound
        worst = np.unravel_index(int(over.argmax()), over.shape)
        assert over[worst] <= 0, (f"{name} differs [{config}]: error {err[worst]:.3e} at {worst} "
                                  f"> 2·γ_n·Σ|terms| = {bound[worst]:.3e}")


def test_kernels_take_the_documented_arguments():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    dout = rng.standard_normal((2, 4, 4, 3))
    args = ((2, 2), ((1, 2), (0, 1)), (1, 2))
    for module in (conv_loops, conv_fast):
        out, cache = module.forward(x, w, None, *args)
        assert out.shape == (2, 4, 4, 3)
        dx, dw, db = module.backward(dout, cache)
        assert dx.shape == x.shape and dw.shape == w.shape and db is None
    ref = conv_loops.backward(dout, conv_loops.forward(x, w, None, *args)[1])
    assert_close("dx", dx, ref[0], rtol=1e-12)
    assert_close("dw", dw, ref[1], rtol=1e-12)


def test_backward_uses_the_kernels_of_forward():
    layer, x = make(dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding=1),
                    (2, 2, 7, 7))
    dy = np.random.default_rng(1).standard_normal(layer.output_shape(x.shape))
    y_fast, dx_fast = layer.forward(x), layer.backward(dy)
    with kernels.using("loops"):
        y_loops = layer.forward(x)
    dx_loops = layer.backward(dy)  # outside the block: still the loops' backward
    assert layer._kernels is conv_loops
    assert_close("output", y_loops, y_fast, rtol=1e-12)
    assert_close("input gradient", dx_loops, dx_fast, rtol=1e-12)


# ----------------------------------------------------------------------------------------
# finite differences
# ----------------------------------------------------------------------------------------
FD_CASES = [
    (dict(in_channels=2, out_channels=3, kernel_size=3), (2, 2, 5, 6)),
    (dict(in_channels=2, out_channels=2, kernel_size=3, stride=2, padding=1), (1, 2, 7, 6)),
    (dict(in_channels=1, out_channels=2, kernel_size=2, dilation=2, padding=(1, 2)), (2, 1, 6, 5)),
    (dict(in_channels=2, out_channels=3, kernel_size=3, stride=2, padding="same"), (1, 2, 6, 8)),
    (dict(in_channels=3, out_channels=2, kernel_size=(2, 4), stride=(3, 1), dilation=(1, 2),
          padding=((0, 2), (1, 0)), bias=False), (1, 3, 7, 8)),
    (dict(in_channels=3, out_channels=2, kernel_size=1, stride=2), (2, 3, 5, 5)),
]


@pytest.mark.parametrize("backend", ["fast", "loops"])
@pytest.mark.parametrize("cfg, shape", FD_CASES)
def test_finite_differences(cfg, shape, backend):
    layer, x = make(cfg, shape)
    with kernels.using(backend):
        check_finite_differences(layer, x, max_entries=30 if backend == "loops" else 60)


# ----------------------------------------------------------------------------------------
# float32, initialisation, construction
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("backend", ["fast", "loops"])
@pytest.mark.parametrize("cfg, shape", FD_CASES[:4])
def test_float32_matches_torch(cfg, shape, backend):
    layer, x = make(cfg, shape, np.float32)
    assert layer.weight.data.dtype == np.float32
    with kernels.using(backend):
        y = layer.forward(x.astype(np.float64))  # cast to the layer's dtype
        dx = layer.backward(np.ones(y.shape))
        assert y.dtype == dx.dtype == layer.weight.grad.dtype == np.float32
        compare(layer, x, "torch", rtol=1e-5, atol=1e-6)


@requires_torch
@pytest.mark.parametrize("in_channels, out_channels, kernel", [(64, 32, 3), (3, 16, (5, 2))])
def test_initialisation_like_torch(in_channels, out_channels, kernel):
    import torch
    ref = torch.nn.Conv2d(in_channels, out_channels, kernel)
    ours = mc.Conv2D(in_channels, out_channels, kernel, rng=0)
    assert ours.weight.shape == tuple(ref.weight.shape) and ours.bias.shape == tuple(ref.bias.shape)
    assert ours.weight.data.dtype == ours.bias.data.dtype == np.float32
    # torch's bound, from torch's own functions: kaiming_uniform_(a=√5) for the weight,
    # U(−1/√fan_in, 1/√fan_in) for the bias
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(ref.weight)
    gain = torch.nn.init.calculate_gain("leaky_relu", math.sqrt(5))
    bounds = {"weight": gain * math.sqrt(3 / fan_in),
              "bias": 1 / math.sqrt(fan_in)}
    for p, theirs in ((ours.weight, ref.weight), (ours.bias, ref.bias)):
        bound, mine = bounds[p.name], p.data.astype(np.float64)
        assert float(theirs.detach().abs().max()) <= bound * (1 + 1e-6)
        assert np.abs(mine).max() <= bound * (1 + 1e-6)
        if mine.size >= 1000:  # enough draws: the spread of a uniform on (−bound, bound)
            assert np.abs(mine).max() >= 0.99 * bound
            assert abs(np.mean(np.abs(mine)) - bound / 2) < 0.03 * bound
            assert abs(mine.mean()) < 0.03 * bound


def test_initialisation_is_seedable():
    a, b = mc.Conv2D(2, 3, 3, rng=7), mc.Conv2D(2, 3, 3, rng=7)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    mc.manual_seed(1)
    c = mc.Conv2D(2, 3, 3)
    mc.manual_seed(1)
    d = mc.Conv2D(2, 3, 3)
    np.testing.assert_array_equal(c.bias.data, d.bias.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


def test_attributes_and_repr():
    layer = mc.Conv2D(1, 32, 3)
    assert repr(layer) == "Conv2D(1, 32, kernel_size=(3, 3), stride=(1, 1))"
    layer = mc.Conv2D(3, 8, (5, 3), stride=(2, 1), padding="same", dilation=2, bias=False,
                      dtype=np.float64)
    assert (layer.kernel_size, layer.stride, layer.dilation) == ((5, 3), (2, 1), (2, 2))
    assert layer.padding == "same" and layer.bias is None and layer.parameters() == [layer.weight]
    assert layer.weight.shape == (8, 3, 5, 3) and layer.weight.name == "weight"
    assert "padding='same'" in repr(layer) and "bias=False" in repr(layer)
    assert mc.Conv2D(1, 6, 5, padding=2).padding == 2
    assert mc.Conv2D(1, 6, 5, padding=((1, 2), (0, 3))).padding_for(9, 9) == ((1, 2), (0, 3))


@pytest.mark.parametrize("kwargs, word", [
    (dict(kernel_size=0), "kernel_size"), (dict(kernel_size=(3, -1)), "kernel_size"),
    (dict(kernel_size=2.5), "kernel_size"), (dict(stride=0), "stride"),
    (dict(dilation=(1, 0)), "dilation"), (dict(padding=-1), "padding"),
    (dict(padding="full"), "padding"), (dict(padding=((1, 2), (0, -1))), "padding"),
    (dict(in_channels=0), "in_channels"), (dict(out_channels=-2), "out_channels"),
    (dict(dtype=np.int32), "dtype"),
])
def test_bad_constructor_arguments(kwargs, word):
    args = dict(in_channels=1, out_channels=2, kernel_size=3) | kwargs
    with pytest.raises(ValueError, match=word):
        mc.Conv2D(**args)


# ----------------------------------------------------------------------------------------
# shapes: explain, output_shape, errors
# ----------------------------------------------------------------------------------------
def test_explain_lenet_first_conv():
    layer = mc.Conv2D(1, 6, 5, padding=2)
    assert layer.explain((64, 1, 28, 28)) == ["H: (28 + 2·2 − 5)/1 + 1 = 28",
                                              "W: (28 + 2·2 − 5)/1 + 1 = 28"]
    assert layer.output_shape((64, 1, 28, 28)) == (64, 6, 28, 28)
    assert layer.forward(np.zeros((2, 1, 28, 28))).shape == layer.output_shape((2, 1, 28, 28))


def test_wrong_rank():
    layer = mc.Conv2D(3, 8, 3)
    for shape in [(64, 3, 28), (3, 28, 28, 1, 1)]:
        with pytest.raises(mc.ShapeError) as err:
            layer.forward(np.zeros(shape))
        msg = str(err.value)
        assert repr(layer) in msg and "(N, C, H, W)" in msg and str(shape) in msg
        assert f"rank {len(shape)}" in msg


def test_wrong_channel_count():
    layer = mc.Conv2D(3, 6, 5)
    with pytest.raises(mc.ShapeError) as err:
        layer.output_shape((64, 1, 28, 28))
    msg = str(err.value)
    assert repr(layer) in msg
    assert "expected 3 input channels: input (N, 3, H, W), got (64, 1, 28, 28)" in msg


@pytest.mark.parametrize("cfg, shape, arithmetic, expected", [
    (dict(kernel_size=5), (1, 1, 2, 2), "(2 + 2·0 − 5)/1 + 1 = -2", "H >= 5, W >= 5"),
    (dict(kernel_size=3, dilation=3, padding=1), (4, 1, 4, 9),
     "(4 + 2·1 − 3·(3 − 1) − 1)/1 + 1 = 0", "H >= 5, W >= 5"),
    (dict(kernel_size=(2, 6), stride=2, padding=(0, 1)), (1, 1, 9, 3),
     "⌊(3 + 2·1 − 6)/2⌋ + 1 = 0", "H >= 2, W >= 4"),
])
def test_window_larger_than_padded_input(cfg, shape, arithmetic, expected):
    layer = mc.Conv2D(1, 2, **cfg)
    with pytest.raises(mc.ShapeError) as err:
        layer.forward(np.zeros(shape))  # raised by the shape check, before any computation
    msg = str(err.value)
    assert repr(layer) in msg and arithmetic in msg and str(shape) in msg
    assert f"expected input (N, 1, {expected})" in msg


@requires_torch
def test_torch_also_rejects_the_window_that_does_not_fit():
    import torch
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(1, 2, 3, dilation=3, padding=1)(torch.zeros(4, 1, 4, 9))
    with pytest.raises(mc.ShapeError):
        mc.Conv2D(1, 2, 3, dilation=3, padding=1).output_shape((4, 1, 4, 9))
