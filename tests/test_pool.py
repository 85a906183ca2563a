"""Pooling layers against PyTorch and Keras, the teaching loops against the fast kernels,
finite differences, gradient routing on ties, and the error messages for bad input."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import minicnn as mc
from minicnn import kernels
from minicnn.core.errors import ShapeError
from minicnn.kernels import pool_fast, pool_loops
from minicnn.core.shapes import window_output_size
from twins import HAVE_TORCH, Unsupported, assert_close, compare, check_finite_differences, \
    requires_keras, requires_torch

WINDOWED = {
    "max": lambda k, s, p: mc.MaxPool2D(k, s, p),
    "avg_include_pad": lambda k, s, p: mc.AvgPool2D(k, s, p, count_include_pad=True),
    "avg_exclude_pad": lambda k, s, p: mc.AvgPool2D(k, s, p, count_include_pad=False),
    "sum": lambda k, s, p: mc.SumPool2D(k, s, p),
}


# ----------------------------------------------------------------------------------------
# configurations
# ----------------------------------------------------------------------------------------
@st.composite
def pool_configs(draw, paddings=("number", "valid", "same"), max_batch=3, max_size=12):
    """(input shape, kernel_size, stride, padding), drawn so that the output has >= 1 pixel.

    Numeric padding is limited to kernel // 2 per axis, PyTorch's limit; kernel_size and
    stride come as an int or a pair, and sometimes the kernel is the whole input.
    """
    N, C = draw(st.integers(1, max_batch)), draw(st.integers(1, 3))
    H, W = draw(st.integers(1, max_size)), draw(st.integers(1, max_size))
    if draw(st.integers(0, 9)) == 0:
        kernel = (H, W)  # one window: the whole input
    else:
        kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    mode = draw(st.sampled_from(paddings))
    if mode == "number":
        padding = (draw(st.integers(0, kernel[0] // 2)), draw(st.integers(0, kernel[1] // 2)))
        if padding[0] == padding[1] and draw(st.booleans()):
            padding = padding[0]
    else:
        padding = mode
    kernel_arg = kernel[0] if kernel[0] == kernel[1] and draw(st.booleans()) else kernel
    stride_arg = stride[0] if stride[0] == stride[1] and draw(st.booleans()) else stride
    if stride == kernel and draw(st.booleans()):
        stride_arg = None  # the default: stride = kernel_size
    pads = mc.MaxPool2D(kernel, stride, padding).padding_for(H, W)
    assume(window_output_size(H, kernel[0], stride[0], pads[0]) >= 1)
    assume(window_output_size(W, kernel[1], stride[1], pads[1]) >= 1)
    return (N, C, H, W), kernel_arg, stride_arg, padding


def normal(shape, seed, dtype=np.float64):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def without_ties(shape, seed):
    """Distinct values at least 0.01 apart (a 1e-6 nudge cannot change any window's maximum)."""
    size = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(size).reshape(shape) * 0.01 - 0.005 * size


def with_ties(shape, seed):
    """Integers from {0, 1, 2}: most windows hold their maximum more than once."""
    return np.random.default_rng(seed).integers(0, 3, size=shape).astype(np.float64)


seeds = st.integers(0, 2**32 - 1)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny tensors: torch's thread pool costs more than it saves (20x on a busy 2-core box)."""
    if not HAVE_TORCH:
        yield
        return
    import torch
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ----------------------------------------------------------------------------------------
# against PyTorch
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("kind", WINDOWED)
@given(config=pool_configs(), seed=seeds)
def test_windowed_pool_matches_torch(kind, config, seed):
    shape, kernel, stride, padding = config
    layer = WINDOWED[kind](kernel, stride, padding)
    compare(layer, normal(shape, seed), "torch", seed=seed, rtol=1e-10,
            config=f"{layer!r} on {shape}")


@requires_torch
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@given(config=pool_configs(max_batch=2, max_size=8), seed=seeds)
def test_max_pool_ties_route_gradient_like_torch(backend, config, seed):
    """Repeated maxima: the gradient goes to the first maximum in row-major order, and an
    element that wins several overlapping windows collects all their gradients."""
    shape, kernel, stride, padding = config
    layer = mc.MaxPool2D(kernel, stride, padding)
    with kernels.using(backend):
        compare(layer, with_ties(shape, seed), "torch", seed=seed, rtol=1e-10)


@requires_torch
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("kernel, stride, padding", [
    (2, 2, 0), (3, 1, 1), (3, 2, 1), ((2, 3), (1, 2), (1, 0)), (3, 1, "same"), (2, 1, "same")])
def test_max_pool_all_equal_input_routes_gradient_like_torch(backend, kernel, stride, padding):
    x = np.full((2, 2, 7, 6), 1.5)
    with kernels.using(backend):
        compare(mc.MaxPool2D(kernel, stride, padding), x, "torch", rtol=1e-10)


@requires_torch
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 12),
                       st.integers(1, 12)), seed=seeds)
def test_global_avg_pool_matches_torch(shape, seed):
    compare(mc.GlobalAvgPool2D(), normal(shape, seed), "torch", seed=seed, rtol=1e-10)


# ----------------------------------------------------------------------------------------
# against Keras
# ----------------------------------------------------------------------------------------
@requires_keras
@pytest.mark.parametrize("kind", WINDOWED)
@hsettings(max_examples=60)
@given(config=pool_configs(paddings=("valid", "same"), max_size=10), seed=seeds)
def test_windowed_pool_matches_keras(kind, config, seed):
    shape, kernel, stride, padding = config
    layer = WINDOWED[kind](kernel, stride, padding)
    try:
        compare(layer, normal(shape, seed), "keras", seed=seed, rtol=1e-10)
    except Unsupported:
        assume(False)


@requires_keras
@hsettings(max_examples=30)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 3), st.integers(1, 12),
                       st.integers(1, 12)), seed=seeds)
def test_global_avg_pool_matches_keras(shape, seed):
    compare(mc.GlobalAvgPool2D(), normal(shape, seed), "keras", seed=seed, rtol=1e-10)


# ----------------------------------------------------------------------------------------
# the teaching loops against the fast kernels
# ----------------------------------------------------------------------------------------
@st.composite
def kernel_configs(draw):
    """Arguments for the kernel functions directly: any padding up to kernel − 1 per side,
    asymmetric included."""
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)),
             draw(st.integers(1, 9)), draw(st.integers(1, 9)))
    kernel = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    stride = (draw(st.integers(1, 5)), draw(st.integers(1, 5)))
    pads = tuple((draw(st.integers(0, k - 1)), draw(st.integers(0, k - 1))) for k in kernel)
    assume(all(window_output_size(shape[2 + a], kernel[a], stride[a], pads[a]) >= 1
               for a in (0, 1)))
    return shape, kernel, stride, pads


def pool_pass(module, kind, x, kernel, stride, pads):
    """(out, cache, backward): the forward pass of a kernel module's pooling of ``kind`` ("max",
    "sum", "avg" or "avg_include_pad") on x, and the backward function that takes its cache."""
    if kind == "max":
        return module.max_forward(x, kernel, stride, pads) + (module.max_backward,)
    if kind == "sum":
        return module.sum_forward(x, kernel, stride, pads) + (module.sum_backward,)
    return module.avg_forward(x, kernel, stride, pads, kind == "avg_include_pad") + (
        module.avg_backward,)


def run_kernels(module, kind, x, dout_seed, kernel, stride, pads):
    out, cache, backward = pool_pass(module, kind, x, kernel, stride, pads)
    dout = normal(out.shape, dout_seed, x.dtype)
    return out, backward(dout, cache)


@pytest.mark.parametrize("kind", WINDOWED)
@given(config=kernel_configs(), seed=seeds, ties=st.booleans())
def test_loops_equal_fast(kind, config, seed, ties):
    shape, kernel, stride, pads = config
    x = with_ties(shape, seed) if ties else normal(shape, seed)
    out_loops, dx_loops = run_kernels(pool_loops, kind, x, seed + 1, kernel, stride, pads)
    out_fast, dx_fast = run_kernels(pool_fast, kind, x, seed + 1, kernel, stride, pads)
    where = f"{kind}, kernel {kernel}, stride {stride}, pads {pads}, x {shape}"
    # Only the order of the additions differs, hence a tolerance of a few rounding errors.
    assert_close("output", out_loops, out_fast, rtol=1e-13, atol=1e-14, config=where)
    assert_close("input gradient", dx_loops, dx_fast, rtol=1e-13, atol=1e-14, config=where)


@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("layer", [mc.MaxPool2D(3, 2, 1), mc.AvgPool2D(2, padding="same"),
                                   mc.SumPool2D((2, 3)), mc.GlobalAvgPool2D()], ids=repr)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_kept(backend, layer, dtype):
    x = normal((2, 3, 7, 6), 0, dtype)
    with kernels.using(backend):
        y = layer(x)
        dx = layer.backward(np.ones_like(y))
    assert y.dtype == dtype and dx.dtype == dtype
    assert dx.shape == x.shape


def test_backward_uses_the_kernels_of_its_forward():
    layer = mc.MaxPool2D(2)
    x = without_ties((1, 2, 4, 4), 0)
    with kernels.using("loops"):
        y = layer(x)
    with kernels.using("fast"):  # the loops' cache must still be read by the loops' backward
        dx = layer.backward(np.ones_like(y))
    with kernels.using("fast"):
        y_fast = layer(x)
        dx_fast = layer.backward(np.ones_like(y_fast))
    np.testing.assert_array_equal(dx, dx_fast)


# ----------------------------------------------------------------------------------------
# finite differences
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", kernels.BACKENDS)
@pytest.mark.parametrize("layer", [
    mc.MaxPool2D(2), mc.MaxPool2D(3, 1, 1), mc.MaxPool2D((3, 2), (2, 3), "same"),
    mc.AvgPool2D(3, 2, 1), mc.AvgPool2D(3, 2, 1, count_include_pad=False),
    mc.AvgPool2D((2, 3), 1, "same"), mc.SumPool2D(2), mc.SumPool2D(3, 2, "same"),
    mc.GlobalAvgPool2D()], ids=repr)
def test_finite_differences(backend, layer):
    with kernels.using(backend):
        check_finite_differences(layer, without_ties((2, 3, 7, 6), 1))


# ----------------------------------------------------------------------------------------
# construction, shapes, explanations, bad input
# ----------------------------------------------------------------------------------------
def test_constructor_defaults_and_attributes():
    layer = mc.MaxPool2D(3)
    assert layer.kernel_size == (3, 3) and layer.stride == (3, 3) and layer.padding == 0
    assert mc.SumPool2D((2, 3), padding=(1, 0)).padding_for(5, 5) == ((1, 1), (0, 0))
    assert mc.AvgPool2D(2).count_include_pad is True
    assert mc.AvgPool2D(2, padding=1).count_include_pad is True
    assert mc.AvgPool2D(2, padding="same").count_include_pad is False  # Keras' behaviour
    assert mc.AvgPool2D(2, padding="same", count_include_pad=True).count_include_pad is True
    assert mc.AvgPool2D(2, padding=1, count_include_pad=False).count_include_pad is False
    assert mc.MaxPool2D(2).parameters() == []
    assert repr(mc.MaxPool2D(2)) == "MaxPool2D(kernel_size=(2, 2), stride=(2, 2), padding=0)"


def test_same_padding_gives_ceil_of_size_over_stride():
    for H in range(1, 12):
        for stride in range(1, 5):
            shape = mc.MaxPool2D(3, stride, "same").output_shape((1, 1, H, H + 1))
            assert shape[2:] == (-(-H // stride), -(-(H + 1) // stride))


def test_explain_shows_the_arithmetic():
    lines = mc.MaxPool2D(2).explain((64, 1, 28, 28))
    assert "H: (28 + 2·0 − 2)/2 + 1 = 14" in lines
    assert "W: (28 + 2·0 − 2)/2 + 1 = 14" in lines
    assert any("(64, 1, 28, 28) -> (64, 1, 14, 14)" in line for line in lines)
    lines = mc.AvgPool2D(3, 2, "same").explain((1, 1, 7, 8))
    assert any("same" in line for line in lines)
    assert "W: (8 + 0 + 1 − 3)/2 + 1 = 4" in lines
    assert "mean over H·W = 4·5 = 20 positions per channel" in mc.GlobalAvgPool2D().explain(
        (2, 3, 4, 5))


@pytest.mark.parametrize("layer", [mc.MaxPool2D(2), mc.AvgPool2D(2), mc.SumPool2D(2),
                                   mc.GlobalAvgPool2D()], ids=repr)
@pytest.mark.parametrize("shape", [(3, 8, 8), (8, 8), (1, 1, 3, 8, 8)])
def test_wrong_rank_is_a_shape_error(layer, shape):
    with pytest.raises(ShapeError) as err:
        layer(np.zeros(shape))
    message = str(err.value)
    assert type(layer).__name__ in message and str(shape) in message
    assert "rank 4 (N, C, H, W)" in message and f"rank {len(shape)}" in message


@pytest.mark.parametrize("cls", [mc.MaxPool2D, mc.AvgPool2D, mc.SumPool2D])
def test_window_larger_than_input_is_a_shape_error(cls):
    layer = cls(5)
    for call in (lambda: layer(np.zeros((2, 1, 3, 8))), lambda: layer.output_shape((2, 1, 3, 8))):
        with pytest.raises(ShapeError) as err:
            call()
        message = str(err.value)
        assert cls.__name__ in message and "kernel_size=(5, 5)" in message
        assert "(2, 1, 3, 8)" in message
        assert "H_out = ⌊(3 + 2·0 − 5)/5⌋ + 1 = 0 < 1" in message


def test_global_avg_pool_output_shape():
    assert mc.GlobalAvgPool2D().output_shape((64, 128, 7, 7)) == (64, 128)
    with pytest.raises(ShapeError, match=r"H·W = 0·7 = 0"):
        mc.GlobalAvgPool2D().output_shape((64, 128, 0, 7))


@pytest.mark.parametrize("make", [
    lambda: mc.MaxPool2D(0), lambda: mc.MaxPool2D(2, stride=0), lambda: mc.MaxPool2D(2.5),
    lambda: mc.MaxPool2D(2, padding=2), lambda: mc.AvgPool2D((3, 2), padding=(1, 2)),
    lambda: mc.SumPool2D(2, padding=-1), lambda: mc.MaxPool2D(2, padding="full")])
def test_bad_arguments_are_value_errors(make):
    with pytest.raises(ValueError):
        make()


def test_backward_checks_its_input():
    layer = mc.AvgPool2D(2)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.zeros((1, 1, 2, 2)))
    layer(np.zeros((1, 1, 4, 4)))
    with pytest.raises(ShapeError, match=r"\(1, 1, 2, 2\)"):
        layer.backward(np.zeros((1, 1, 3, 3)))
