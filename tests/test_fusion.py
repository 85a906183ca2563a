"""Fusion (minicnn.layers.fusion): a Conv2D -> ReLU writes its output clipped (training too),
under no_grad in evaluation mode Conv2D -> BatchNorm2D -> ReLU runs as one convolution with the
BatchNorm folded into it, and a ReLU clips a fresh output in place. What must hold:

* the kernels' ``relu=True`` is the ReLU of their output, ``pool=True`` the 2×2 max-pool of it,
  and ``clip=x`` in the backward pass the gradient of the ReLU before the layer, bit for bit,
  NaN included, for every backend and algorithm; in training a fused Conv2D -> ReLU gives the unfused forward and
  backward passes bit for bit, and the ReLU layer does not run;
* a fused chain computes the layers' function: within the rounding of both ways (bound below);
* a whole network under no_grad computes, bit for bit, the plain forward pass of its folded
  twin (``folding.folded``): the network a prediction really runs;
* only the exact classes fuse, and BatchNorm folds only under no_grad in eval mode; a BatchNorm
  that uses its batch's statistics and a subclass of ReLU run as themselves.
"""
import contextlib

import numpy as np
import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from test_conv import conv_configs, window_fits
from test_pool import kernel_configs, pool_pass

import minicnn as mc
from minicnn import kernels
from minicnn.core.errors import ShapeError
from minicnn.kernels import conv_loops
from minicnn.layers import folding, fusion, no_grad
from minicnn.layers.activations import _APPLIED_LATER
from minicnn.layers.pool import _SPREAD_BY_CONV
from minicnn.layers.residual import Bottleneck


def chain(cfg, dtype, seed, relu=True):
    """Sequential(Conv2D, BatchNorm2D in eval mode with running statistics and an affine map
    far from the identity, ReLU)."""
    rng = np.random.default_rng(seed)
    conv = mc.Conv2D(**cfg, dtype=dtype, rng=seed)
    bn = mc.BatchNorm2D(cfg["out_channels"], dtype=dtype)
    O = cfg["out_channels"]
    bn.running_mean[...] = rng.standard_normal(O)
    bn.running_var[...] = rng.uniform(0.05, 4, O)
    bn.weight.data[...] = rng.standard_normal(O)
    bn.bias.data[...] = rng.standard_normal(O)
    model = mc.Sequential([conv, bn] + ([mc.ReLU()] if relu else []))
    model.eval()
    return model


# Both ways compute z = s·(Σ w·x + b − m) + β per output entry, s = γ/√(v + ε), m and v the
# running statistics. Layer by layer: the convolution's sum of K + 1 terms (K = C·KH·KW, the
# bias as one more), then BatchNorm's 1/√(v + ε) (computed in float64, rounded once), x − m,
# ·inv_std, ·γ, + β: 5 roundings. Fused: s rounded once, s·w, s·b + t (t rounded once from
# float64, then ·, +: 3), then the sum of K + 1 terms. A sum of n terms in precision u errs by
# at most γ_n·Σ|terms| (γ_n = n·u/(1 − n·u), Higham §3.1), and each later rounding adds u of
# a value at most Z = |s|·(Σ|w|·|x| + |b| + |m|) + |β|; so each way is within γ_(K+6)·Z of z,
# and the two within 2·γ_(K+6)·Z. ReLU is exact and moves no two values further apart.
def fusion_bound(model, x):
    conv, bn = model[0], model[1]
    dtype = conv.weight.data.dtype
    pads = conv.padding_for(*x.shape[2:])
    b = conv.bias.data if conv.bias is not None else np.zeros(conv.out_channels)
    sums, _ = conv_loops.forward(np.abs(x.astype(np.float64)),
                                 np.abs(conv.weight.data.astype(np.float64)),
                                 np.abs(b.astype(np.float64)), conv.stride, pads, conv.dilation)
    s = np.abs(bn.weight.data.astype(np.float64)) / np.sqrt(
        bn.running_var.astype(np.float64) + bn.eps)
    per_channel = lambda v: np.asarray(v, np.float64)[None, :, None, None]   # noqa: E731
    Z = per_channel(s) * (sums + per_channel(np.abs(bn.running_mean))) + per_channel(
        np.abs(bn.bias.data))
    K = conv.weight.data[0].size
    u = np.finfo(dtype).eps / 2
    n = K + 6
    return 2 * n * u / (1 - n * u) * Z


@settings(deadline=None, max_examples=30)
@given(config=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16), relu=st.booleans())
def test_a_fused_chain_computes_the_layers_within_rounding(config, dtype, seed, relu):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    model = chain(cfg, dtype, seed, relu)
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    expected = model(x)                       # layer by layer: no_grad is off
    with no_grad():
        assert fusion.chain_length(model.layers, 0) == (3 if relu else 2)
        got = model(x)
    assert got.dtype == dtype and got.shape == expected.shape
    err = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    bound = fusion_bound(model, x)
    worst = np.unravel_index(int((err - bound).argmax()), err.shape)
    assert err[worst] <= bound[worst], (f"{cfg} on {shape} {np.dtype(dtype)}: error "
                                        f"{err[worst]:.3e} > 2·γ·Z = {bound[worst]:.3e}")


def test_the_bound_is_sharp_enough_to_catch_a_wrong_fold():
    """Folding with β − m instead of β − s·m (a wrong shift) breaks the bound by far."""
    cfg = dict(in_channels=3, out_channels=4, kernel_size=3, padding=1)
    model = chain(cfg, np.float64, 3, relu=False)
    x = np.random.default_rng(4).standard_normal((2, 3, 6, 5))
    expected = model(x)
    bn = model[1]
    wrong = model[0].forward_with(x, *fusion.fold(model[0], bn)) - (
        bn.running_mean * (1 - bn.eval_affine()[0]))[None, :, None, None]
    assert np.any(np.abs(wrong - expected) > 1e6 * fusion_bound(model, x))


def trained_resnet_small():
    """resnet_small whose BatchNorms have moved away from their initial statistics."""
    model = mc.zoo.resnet_small(rng=0)
    rng = np.random.default_rng(0)
    for _ in range(2):
        model(rng.standard_normal((4, 3, 64, 64)).astype(np.float32))
    model.eval()
    return model


def test_no_grad_computes_the_folded_network_bit_for_bit():
    model = trained_resnet_small()
    x = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    twin = folding.folded(model)
    with no_grad():
        got = model(x)
    np.testing.assert_array_equal(got, twin(x))
    # the twin: every BatchNorm after a convolution is an Identity, its convolution has a bias
    kinds = [type(m).__name__ for _, m in twin.named_modules()]
    assert "BatchNorm2D" not in kinds and kinds.count("Identity") == sum(
        isinstance(m, mc.BatchNorm2D) for _, m in model.named_modules())
    assert all(m.bias is not None for _, m in twin.named_modules() if isinstance(m, mc.Conv2D))
    # and the model itself is untouched
    assert any(isinstance(m, mc.BatchNorm2D) for _, m in model.named_modules())
    assert all(m.bias is None for _, m in model.named_modules() if isinstance(m, mc.Conv2D))


def test_relu_in_place_gives_the_same_bits():
    """Without a BatchNorm nothing is folded: Conv2D -> ReLU (mnist_cnn) and a residual
    block's Add -> ReLU are the layer-by-layer numbers exactly."""
    model = mc.zoo.get("mnist_cnn", rng=0)
    model.eval()
    x = np.random.default_rng(2).standard_normal((5, 1, 28, 28)).astype(np.float32)
    expected = model(x)
    with no_grad():
        np.testing.assert_array_equal(model(x), expected)
    block = mc.layers.residual.Residual(mc.Conv2D(3, 3, 3, padding=1, rng=1), activation="relu")
    block.eval()
    x = np.random.default_rng(3).standard_normal((2, 3, 7, 7)).astype(np.float32)
    expected = block(x)
    with no_grad():
        np.testing.assert_array_equal(block(x), expected)


class ClippedReLU(mc.ReLU):
    """A subclass computing something else: it must run as itself."""

    def forward(self, x):
        return np.minimum(super().forward(x), 0.5)


def test_only_the_exact_layers_fuse_and_batchnorm_folds_only_for_prediction(monkeypatch):
    cfg = dict(in_channels=2, out_channels=3, kernel_size=3, padding=1)
    plain = mc.Sequential([mc.Conv2D(**cfg, rng=0), mc.ReLU()])
    assert fusion.chain_length(plain.layers, 0) == 2           # training: Conv2D -> ReLU
    plain[1] = ClippedReLU()
    assert fusion.chain_length(plain.layers, 0) == 1
    plain[1] = mc.ReLU()
    with fusion.disabled():
        assert fusion.chain_length(plain.layers, 0) == 1
    with monkeypatch.context() as patch:                       # every call watched (trace)
        patch.setattr(mc.layers.base.Layer, "__call__", lambda self, x: self.forward(x))
        assert fusion.chain_length(plain.layers, 0) == 1
        with no_grad():
            plain.eval()
            assert fusion.chain_length(plain.layers, 0) == 1
            assert fusion.relu_in_place(plain[1], np.ones(3)) is None
    model = chain(cfg, np.float32, 5)
    x = np.random.default_rng(6).standard_normal((2, 2, 5, 5)).astype(np.float32)
    assert fusion.chain_length(model.layers, 0) == 1           # caches kept: no fusion
    with no_grad():
        assert fusion.chain_length(model.layers, 0) == 3
        model.train()                                          # BatchNorm on the batch
        assert fusion.chain_length(model.layers, 0) == 1
        model.eval()
        model[1].train()                                       # only the BatchNorm
        assert fusion.chain_length(model.layers, 0) == 1       # the Conv2D alone
        model[1].eval()
        model[2] = ClippedReLU()
        assert fusion.chain_length(model.layers, 0) == 2       # the subclass runs as itself
        assert model(x).max() <= 0.5
    assert fusion.relu_in_place(ClippedReLU(), np.ones(3)) is None


@pytest.mark.parametrize("pool", [mc.MaxPool2D, mc.AvgPool2D, mc.SumPool2D])
def test_only_a_2x2_pool_fuses(pool):
    cfg = dict(in_channels=2, out_channels=3, kernel_size=3, padding=1)
    model = mc.Sequential([mc.Conv2D(**cfg, rng=0), mc.ReLU(), pool(2)])
    model.eval()
    assert fusion.chain_length(model.layers, 0) == 3           # caches kept (training) too
    with no_grad():
        assert fusion.chain_length(model.layers, 0) == 3
        subclass = type("SubPool", (pool,), {})     # it may compute something else
        for other in (pool(3), pool(2, stride=1), pool(2, padding=1), pool(2, padding="same"),
                      subclass(2), mc.GlobalAvgPool2D()):
            model[2] = other.eval()
            assert fusion.chain_length(model.layers, 0) == 2, other
        model[2] = pool(2, padding="valid").eval()
        assert fusion.chain_length(model.layers, 0) == 3
        del model.layers[1]                                    # Conv2D -> the pool
        assert fusion.chain_length(model.layers, 0) == 2
        x = np.random.default_rng(1).standard_normal((2, 2, 7, 7)).astype(np.float32)
        got = model(x)
    np.testing.assert_array_equal(got, model(x))               # layer by layer
    assert fusion.chain_length(model.layers, 0) == 1           # training: only after a ReLU


def conv_chain_then_pool():
    return mc.Sequential([mc.Conv2D(2, 3, 3, rng=7), mc.ReLU(), mc.MaxPool2D(2)]).eval()


@pytest.mark.parametrize("make,shape,fused_layers", [
    (lambda: chain(dict(in_channels=2, out_channels=3, kernel_size=3), np.float32, 7),
     (1, 4, 5, 5), 3),                                  # the convolution's: 4 channels, not 2
    (conv_chain_then_pool, (1, 2, 3, 4), 3),            # the pool's: a 1×2 output
    (lambda: mc.Sequential([mc.Conv2D(2, 3, 3, rng=7), mc.ReLU(), mc.MaxPool2D(2),
                            mc.Conv2D(5, 4, 1, rng=8)]).eval(),
     (1, 2, 8, 8), 3),              # the next layer's: its context shows the pool's shapes
])
def test_a_shape_error_reads_the_same_fused_or_not(make, shape, fused_layers):
    model = make()
    x = np.zeros(shape, np.float32)
    with fusion.disabled(), pytest.raises(ShapeError) as plain:
        model(x)
    with no_grad():
        assert fusion.chain_length(model.layers, 0) == fused_layers
        with pytest.raises(ShapeError) as fused:
            model(x)
    assert str(fused.value) == str(plain.value)


CONV_KERNELS = [("loops", None), ("fast", None), ("numba", "gemm"), ("numba", "direct"),
                ("numba", "winograd")]


@contextlib.contextmanager
def conv_kernels(backend, algorithm):
    """The convolution kernel module of ``backend``, with ``algorithm`` forced (numba)."""
    with kernels.using(backend):
        module = kernels.conv()
        if algorithm:
            module.force(algorithm)
        try:
            yield module
        finally:
            if algorithm:
                module.force(None)


def layer_and_arguments(cfg, shape, dtype, seed, x):
    """A Conv2D of ``cfg`` and the arguments of its kernels' forward pass on x."""
    layer = mc.Conv2D(**cfg, dtype=dtype, rng=seed)
    bias = layer.bias.data if layer.bias is not None else None
    pads = layer.padding_for(*shape[2:])
    return layer, (x, layer.weight.data, bias, layer.stride, pads, layer.dilation)


#: rows wider than winograd_lanes.LANES (16) tiles: 35 and 34 tiles, an odd last column
WIDE = ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "stride": 1, "padding": 1,
         "dilation": 1, "bias": True}, (2, 2, 5, 69))


@pytest.mark.parametrize("backend,algorithm", CONV_KERNELS)
@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(config=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
@example(config=WIDE, dtype=np.float32, seed=0)
def test_relu_in_the_kernel_is_the_relu_of_its_output(backend, algorithm, config, dtype, seed):
    cfg, shape = config
    assume(window_fits(cfg, shape))
    if algorithm == "winograd":                  # the shapes Winograd computes: 3×3, stride 1
        cfg.update(kernel_size=3, stride=1, dilation=1)
        assume(window_fits(cfg, shape))
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    x.flat[::7] = np.nan                           # NaN passes through, as with np.maximum
    _, args = layer_and_arguments(cfg, shape, dtype, seed, x)
    with conv_kernels(backend, algorithm) as module:
        plain, _ = module.forward(*args)
        clipped, _ = module.forward(*args, relu=True)
    np.testing.assert_array_equal(clipped, np.maximum(plain, dtype(0)))


@pytest.mark.parametrize("backend,algorithm", CONV_KERNELS)
@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(config=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16), relu=st.booleans())
@example(config=WIDE, dtype=np.float32, seed=0, relu=True)
@example(config=WIDE, dtype=np.float64, seed=1, relu=False)
def test_pool_in_the_kernel_is_the_max_pool_of_its_output(backend, algorithm, config, dtype,
                                                         seed, relu):
    """``pool=True`` is what MaxPool2D(2) computes from the (clipped) output, with the same
    backend: ties and NaN go the same way, odd rows and columns are dropped; the pool's cache
    sends a gradient back to the same places."""
    cfg, shape = config
    if algorithm == "winograd":
        cfg.update(kernel_size=3, stride=1, dilation=1)
    assume(window_fits(cfg, shape))
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    x.flat[::11] = np.nan
    x.flat[1::5] = 0                    # ties: zeros through the ReLU
    layer, args = layer_and_arguments(cfg, shape, dtype, seed, x)
    assume(min(layer.output_shape(shape)[2:]) >= 2)
    with conv_kernels(backend, algorithm) as module:
        plain, _ = module.forward(*args, relu=relu)
        predicted, none = module.forward(*args, relu=relu, pool=True, need_cache=False)
        pooled, (_, pool_cache) = module.forward(*args, relu=relu, pool=True)
        layer = mc.MaxPool2D(2)
        expected = layer(plain)
        dy = np.random.default_rng(seed + 2).standard_normal(expected.shape).astype(dtype)
        spread = kernels.pool().max_backward(dy, pool_cache)
        expected_spread = layer.backward(dy)
    assert none is None
    np.testing.assert_array_equal(predicted, expected)
    np.testing.assert_array_equal(pooled, expected)
    np.testing.assert_array_equal(spread, expected_spread)


@pytest.mark.parametrize("backend,algorithm", CONV_KERNELS)
@pytest.mark.parametrize("kind", ["mean", "sum"])
@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(config=conv_configs(), images=st.integers(1, 9),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16),
       relu=st.booleans())
def test_a_mean_or_sum_pool_in_the_kernel_is_the_pool_and_spreads_its_gradient(
        backend, algorithm, kind, config, images, dtype, seed, relu):
    """``pool="mean"`` (``"sum"``) is what AvgPool2D(2) (SumPool2D(2)) computes from the
    (clipped) output, and ``backward(spread=...)`` takes that pool's gradient: the same bits as
    the pool's backward pass (with the ReLU's gradient, which the pool applies in training
    unfused) and then the convolution's; NaN and zeros included, an odd last row and column
    (they get no gradient), up to 9 images (several per product on "gemm")."""
    cfg, shape = config
    shape = (images,) + shape[1:]
    if algorithm == "winograd":
        cfg.update(kernel_size=3, stride=1, dilation=1)
    assume(window_fits(cfg, shape))
    x = np.random.default_rng(seed + 1).standard_normal(shape).astype(dtype)
    x.flat[::11] = np.nan
    x.flat[1::5] = 0
    layer, args = layer_and_arguments(cfg, shape, dtype, seed, x)
    assume(min(layer.output_shape(shape)[2:]) >= 2)
    pool = {"mean": mc.AvgPool2D, "sum": mc.SumPool2D}[kind](2)
    with conv_kernels(backend, algorithm) as module:
        plain, cache = module.forward(*args, relu=relu)
        expected = pool(plain)
        if relu:
            pool.clips_input_gradient(plain)
        predicted, none = module.forward(*args, relu=relu, pool=kind, need_cache=False)
        pooled, (fused_cache, spread) = module.forward(*args, relu=relu, pool=kind)
        dy = np.random.default_rng(seed + 2).standard_normal(expected.shape).astype(dtype)
        expected_gradients = module.backward(pool.backward(dy), cache)
        gradients = module.backward(dy, fused_cache, spread=spread)
    assert none is None
    np.testing.assert_array_equal(predicted, expected)
    np.testing.assert_array_equal(pooled, expected)
    for got, want in zip(gradients, expected_gradients):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend,algorithm", CONV_KERNELS)
def test_an_unknown_pool_in_the_kernel_is_refused(backend, algorithm):
    x = np.ones((1, 2, 6, 6), np.float32)
    _, args = layer_and_arguments(dict(in_channels=2, out_channels=3, kernel_size=3), x.shape,
                                  np.float32, 0, x)
    with conv_kernels(backend, algorithm) as module, pytest.raises(ValueError, match="'avg'"):
        module.forward(*args, relu=True, pool="avg")


@pytest.mark.parametrize("backend,algorithm", CONV_KERNELS)
@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(config=conv_configs(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2**16))
def test_clip_in_the_backward_pass_is_the_relu_gradient(backend, algorithm, config, dtype, seed):
    """``clip=x`` (the layer's input, a ReLU's output) gives dx where x > 0, else 0: what the
    ReLU's backward pass does to dx, bit for bit, NaN and zeros included."""
    cfg, shape = config
    if algorithm == "winograd":
        cfg.update(kernel_size=3, stride=1, dilation=1)
    assume(window_fits(cfg, shape))
    x = np.maximum(np.random.default_rng(seed + 1).standard_normal(shape), 0).astype(dtype)
    x.flat[::13] = np.nan
    _, args = layer_and_arguments(cfg, shape, dtype, seed, x)
    with conv_kernels(backend, algorithm) as module:
        out, cache = module.forward(*args)
        dout = np.random.default_rng(seed + 2).standard_normal(out.shape).astype(dtype)
        plain = module.backward(dout, cache)
        clipped = module.backward(dout, cache, clip=x)
        expected = kernels.elementwise().relu_backward(plain[0], x)
    np.testing.assert_array_equal(clipped[0], expected)
    for a, b in zip(clipped[1:], plain[1:]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["loops", "fast", "numba"])
@pytest.mark.parametrize("kind", ["avg", "avg_include_pad", "sum"])
@settings(max_examples=max(10, settings.default.max_examples // 4))
@given(config=kernel_configs(), two_by_two=st.booleans(),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2**16))
@example(config=((2, 2, 5, 70), (2, 2), (2, 2), ((0, 0), (0, 0))), two_by_two=True,
         dtype=np.float32, seed=0)    # rows of 35 windows: three turns of lanes_numba.spread_rows
def test_clip_in_an_average_pool_is_the_relu_gradient(backend, kind, config, two_by_two, dtype,
                                                      seed):
    """An average or sum pool's ``clip=x`` (its input, a ReLU's output) gives the spread
    gradient where x > 0, else 0: the ReLU's backward pass on it, bit for bit, NaN and zeros
    included; 2×2 windows (the compiled kernel's own path, odd sizes included) and any
    other window."""
    shape, kernel, stride, pads = config
    if two_by_two:
        shape = shape[:2] + (shape[2] + 1, shape[3] + 1)     # at least 2×2
        kernel, stride, pads = (2, 2), (2, 2), ((0, 0), (0, 0))
    x = np.maximum(np.random.default_rng(seed).standard_normal(shape), 0).astype(dtype)
    x.flat[::7] = np.nan
    with kernels.using(backend):
        out, cache, backward = pool_pass(kernels.pool(), kind, x, kernel, stride, pads)
        dout = np.random.default_rng(seed + 1).standard_normal(out.shape).astype(dtype)
        expected = kernels.elementwise().relu_backward(backward(dout, cache), x)
        clipped = backward(dout, cache, clip=x)
    assert clipped.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(clipped, expected)


def lenet_like(dtype):
    """(model, input shape, the layers that take the gradient of the ReLU before them, the
    pools that the convolution before them runs and spreads): LeNet-5's layers (Conv2D ->
    ReLU -> AvgPool2D(2), twice: "direct", then "gemm" one image per product); a network
    whose ReLUs come before an AvgPool2D of 3×3 windows with padding, a SumPool2D(2) on an odd
    size, and a MaxPool2D(2) after a convolution (which takes it at its maxima,
    ``MaxPool2D.computed``); and Conv2D -> ReLU -> SumPool2D(2) on "gemm" with two images per
    product (7×7 outputs, 9 images: the last product has one) and AvgPool2D(2) on "direct",
    both dropping an odd last row and column."""
    lenet = mc.Sequential([
        mc.Conv2D(1, 6, 5, padding=2, dtype=dtype, rng=0), mc.ReLU(), mc.AvgPool2D(2),
        mc.Conv2D(6, 16, 5, dtype=dtype, rng=1), mc.ReLU(), mc.AvgPool2D(2), mc.Flatten(),
        mc.Dense(400, 120, dtype=dtype, rng=2), mc.ReLU(), mc.Dense(120, 10, dtype=dtype, rng=3)])
    other = mc.Sequential([
        mc.Conv2D(2, 4, 3, dtype=dtype, rng=1), mc.ReLU(), mc.AvgPool2D(3, 2, 1), mc.ReLU(),
        mc.SumPool2D(2), mc.Conv2D(4, 3, 1, dtype=dtype, rng=2), mc.ReLU(), mc.MaxPool2D(2),
        mc.Flatten(), mc.Dense(3, 10, dtype=dtype, rng=3)])
    odd = mc.Sequential([
        mc.Conv2D(3, 12, 3, padding=1, dtype=dtype, rng=4), mc.ReLU(), mc.SumPool2D(2),
        mc.Conv2D(12, 5, 3, padding=1, dtype=dtype, rng=5), mc.ReLU(), mc.AvgPool2D(2),
        mc.Flatten(), mc.Dense(5, 10, dtype=dtype, rng=6)])
    return [(lenet, (5, 1, 28, 28), [lenet[2], lenet[5]], [lenet[2], lenet[5]]),
            (other, (3, 2, 11, 11), [other[2], other[4], other[7]], []),
            (odd, (9, 3, 7, 7), [odd[2], odd[5]], [odd[2], odd[5]])]


@pytest.mark.parametrize("backend", ["loops", "fast", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_hands_the_relu_gradient_to_an_average_pool_bit_for_bit(backend, dtype):
    """A ReLU before an AvgPool2D or SumPool2D passes its gradient on and the pool applies it,
    or, between a Conv2D and a 2×2 pool, the convolution runs the pool and spreads its
    gradient with the ReLU's: the forward pass, dx and every gradient of a training step are
    the same bits as unfused."""
    for model, shape, taking, spread in lenet_like(dtype):
        model.train()
        x = np.random.default_rng(9).standard_normal(shape).astype(dtype)
        dy = np.random.default_rng(10).standard_normal((shape[0], 10)).astype(dtype)
        runs = []
        for fused in (False, True):
            with kernels.using(backend), (contextlib.nullcontext() if fused
                                          else fusion.disabled()):
                y = model(x)
                handed = [after for before, after in zip(model.layers, model.layers[1:])
                          if type(before) is mc.ReLU and before._cache is _APPLIED_LATER]
                by_conv = [layer for layer in model.layers if isinstance(layer, mc.AvgPool2D)
                           or isinstance(layer, mc.SumPool2D)
                           if layer._cache[0] is _SPREAD_BY_CONV]
                dx = model.backward(dy)
            assert handed == (taking if fused else [])
            assert by_conv == (spread if fused else [])
            runs.append([y, dx] + [p.grad.copy() for p in model.parameters()])
        for a, b in zip(*runs):
            assert a.dtype == b.dtype == dtype
            np.testing.assert_array_equal(a, b)


def test_a_hooked_relu_or_pool_keeps_its_own_gradient():
    """A ReLU or pool whose backward is replaced on the layer (a hook recording gradients) sees
    the gradient it would see unfused: neither hands the ReLU's gradient over."""
    for hooked in (1, 2):
        model = mc.Sequential([mc.Conv2D(1, 2, 3, rng=0), mc.ReLU(), mc.AvgPool2D(2),
                               mc.Flatten(), mc.Dense(2 * 3 * 3, 2, rng=1)])
        seen = []
        layer = model[hooked]
        layer.backward = lambda dy, _f=layer.backward: seen.append(dy.copy()) or _f(dy)
        x = np.random.default_rng(2).standard_normal((2, 1, 8, 8)).astype(np.float32)
        dy = np.ones((2, 2), np.float32)
        model(x)
        dx_hooked = [seen, model.backward(dy)]
        assert model[2]._clip is None
        seen = []
        with fusion.disabled():
            model(x)
            expected = [seen, model.backward(dy)]
        np.testing.assert_array_equal(dx_hooked[0][0], expected[0][0])


def test_a_relu_of_another_dtype_keeps_its_own_gradient():
    """A float64 ReLU output into a float32 Conv2D: the convolution sees the output cast, so
    the ReLU keeps its backward pass; a float32 one hands it over."""
    for dtype, handed in ((np.float64, False), (np.float32, True)):
        model = mc.Sequential([mc.Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=1), mc.ReLU(),
                               mc.Conv2D(3, 2, 3, rng=2), mc.Flatten()])
        x = np.random.default_rng(3).standard_normal((2, 2, 6, 6)).astype(dtype)
        dy = np.random.default_rng(4).standard_normal((2, 2 * 4 * 4)).astype(np.float32)
        with fusion.disabled():
            expected = model(x), model.backward(dy)
        got = model(x), model.backward(dy)
        assert (model[2]._clip is not None) == handed
        for a, b in zip(got, expected):
            np.testing.assert_array_equal(a, b)


def mnist_and_stem():
    """mnist_cnn (Conv2D -> ReLU on gemm, then Conv2D -> ReLU -> MaxPool2D(2) on Winograd), a
    Conv2D -> ReLU on the direct algorithm (a 7×7, stride-2 layer with 8 output channels, as
    resnet_small's first) and one on gemm with a max-pool after it, then Winograd with a
    max-pool that drops the last row and column of a 15×15 output."""
    stem = mc.Sequential([mc.Conv2D(3, 8, 7, stride=2, padding=3, rng=4), mc.ReLU(),
                          mc.Flatten(), mc.Dense(8 * 8 * 8, 10, rng=5), mc.LogSoftmax()])
    odd = mc.Sequential([mc.Conv2D(2, 32, 3, padding=1, rng=6), mc.ReLU(), mc.MaxPool2D(2),
                         mc.Conv2D(32, 32, 3, padding=(1, 0), rng=7), mc.ReLU(),
                         mc.MaxPool2D(2), mc.Flatten(), mc.Dense(32 * 4 * 3, 10, rng=8)])
    return [(mc.zoo.get("mnist_cnn", rng=0), (6, 1, 28, 28)), (stem, (6, 3, 16, 16)),
            (odd, (3, 2, 17, 16))]


@pytest.mark.parametrize("backend", ["loops", "fast", "numba"])
def test_training_fuses_conv_relu_bit_for_bit(backend, monkeypatch):
    """The forward pass, dx and every gradient of a training step, fused and not; fused, only
    the ReLUs that follow no convolution run (mnist_cnn's after its first Dense), and no
    max-pool after a convolution's ReLU."""
    calls = []
    for cls in (mc.ReLU, mc.MaxPool2D):
        monkeypatch.setattr(cls, "forward", lambda self, x, _f=cls.forward: calls.append(self)
                            or _f(self, x))
    for model, shape in mnist_and_stem():
        if backend == "loops":
            shape = (2,) + shape[1:]
        model.train()
        after_dense = [layer for before, layer in zip(model.layers, model.layers[1:])
                       if type(layer) is mc.ReLU and type(before) is not mc.Conv2D]
        every = [layer for layer in model.layers if type(layer) in (mc.ReLU, mc.MaxPool2D)]
        x = np.random.default_rng(9).standard_normal(shape).astype(np.float32)
        dy = np.random.default_rng(10).standard_normal((shape[0], 10)).astype(np.float32)
        runs = []
        for fused in (False, True):
            for layer in model.layers:
                if isinstance(layer, mc.Dropout):
                    layer.rng = np.random.default_rng(11)       # the same masks both times
            calls.clear()
            with kernels.using(backend), (contextlib.nullcontext() if fused
                                          else fusion.disabled()):
                y = model(x)
                dx = model.backward(dy)
            assert calls == (after_dense if fused else every)
            runs.append([y, dx] + [p.grad.copy() for p in model.parameters()])
        for a, b in zip(*runs):
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("backend", ["loops", "fast", "numba"])
def test_every_kernel_backend_fuses(backend):
    if backend == "numba":
        pytest.importorskip("numba")
    model = trained_resnet_small()
    x = np.random.default_rng(8).standard_normal((2, 3, 64, 64)).astype(np.float32)
    with kernels.using(backend):
        twin = folding.folded(model)
        with no_grad():
            np.testing.assert_array_equal(model(x), twin(x))
    # mnist_cnn: Conv2D -> ReLU, then Conv2D -> ReLU -> MaxPool2D(2) (Winograd in numba)
    model = mc.zoo.get("mnist_cnn", rng=0).eval()
    x = np.random.default_rng(9).standard_normal((3, 1, 28, 28)).astype(np.float32)
    with kernels.using(backend):
        expected = model(x)
        with no_grad():
            assert fusion.chain_length(model.layers, 2) == 3
            np.testing.assert_array_equal(model(x), expected)


@pytest.mark.parametrize("backend", ["loops", "fast", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_training_fuses_batchnorm_relu_bit_for_bit(backend, dtype, monkeypatch):
    """resnet_small in training, BatchNorm2D -> ReLU fused and not: the output, dx, every
    gradient and the running statistics, bit for bit; fused, only the ReLUs after a sum run
    (each block's last), and the ReLUs still pass their gradient back. Then the same with
    frozen BatchNorms (their running statistics, caches kept): the fused clip of
    ``forward_eval``."""
    calls = []
    monkeypatch.setattr(mc.ReLU, "forward", lambda self, x, _f=mc.ReLU.forward:
                        calls.append(self) or _f(self, x))
    size = 16 if backend == "loops" else 32          # the loops are slow; 16: 1×1 at the end
    x = np.random.default_rng(3).standard_normal((2, 3, size, size)).astype(dtype)
    dy = np.random.default_rng(4).standard_normal((2, 3)).astype(dtype)
    for frozen in (False, True):
        runs = []
        for fused in (False, True):
            model = mc.zoo.resnet_small(rng=0, dtype=dtype)
            if frozen:
                for _, layer in model.named_modules():
                    if type(layer) is mc.BatchNorm2D:
                        layer.trainable = False
            relus = [layer for _, layer in model.named_modules() if type(layer) is mc.ReLU]
            last = [block.relu3 for _, block in model.named_modules()
                    if type(block) is Bottleneck]
            calls.clear()
            with kernels.using(backend), (contextlib.nullcontext() if fused
                                          else fusion.disabled()):
                y = model(x)
                dx = model.backward(dy)
            ran = last if fused else relus
            assert len(calls) == len(ran) and set(map(id, calls)) == set(map(id, ran))
            runs.append([y, dx] + [p.grad.copy() for p in model.parameters() if p.trainable]
                        + [b.copy() for b in model.buffers()])
        assert len(runs[0]) == len(runs[1])
        for a, b in zip(*runs):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)


def test_a_layer_hooked_on_itself_ends_the_chain():
    """A forward or backward replaced on the layer (a user's hook, as tests/test_resnet.py's
    rounding bound records each layer) is called as itself, never fused away."""
    cfg = dict(in_channels=2, out_channels=3, kernel_size=3, padding=1)
    model = mc.Sequential([mc.Conv2D(**cfg, rng=0), mc.ReLU(), mc.MaxPool2D(2),
                           mc.BatchNorm2D(3), mc.ReLU()])
    assert fusion.chain_length(model.layers, 0) == 3 and fusion.chain_length(model.layers, 3) == 2
    seen = []
    for layer in (model[2], model[4]):
        layer.forward = lambda x, _f=layer.forward, _l=layer: seen.append(_l) or _f(x)
    assert fusion.chain_length(model.layers, 0) == 2 and fusion.chain_length(model.layers, 3) == 1
    model(np.ones((2, 2, 6, 6), np.float32))
    assert seen == [model[2], model[4]]
    model[0].backward = model[0].backward
    assert fusion.chain_length(model.layers, 0) == 1
