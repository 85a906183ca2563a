"""Prediction fused (minicnn.layers.fusion): under no_grad in evaluation mode Conv2D ->
BatchNorm2D -> ReLU runs as one convolution with the BatchNorm folded into it, and a ReLU
clips a fresh output in place. What must hold:

* a fused chain computes the layers' function: within the rounding of both ways (bound below);
* a whole network under no_grad computes, bit for bit, the plain forward pass of its folded
  twin (``folding.folded``): the network a prediction really runs;
* only the exact classes fuse, only under no_grad in eval mode; training, a BatchNorm that uses
  its batch's statistics, and a subclass of ReLU run as themselves.
"""
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from test_conv import conv_configs, window_fits

import minicnn as mc
from minicnn import kernels
from minicnn.core.errors import ShapeError
from minicnn.kernels import conv_loops
from minicnn.layers import folding, fusion, no_grad


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


def test_only_the_exact_layers_fuse_and_only_for_prediction():
    cfg = dict(in_channels=2, out_channels=3, kernel_size=3, padding=1)
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


def test_a_shape_error_reads_the_same_fused_or_not():
    model = chain(dict(in_channels=2, out_channels=3, kernel_size=3), np.float32, 7)
    x = np.zeros((1, 4, 5, 5), np.float32)
    with pytest.raises(ShapeError) as plain:
        model(x)
    with no_grad(), pytest.raises(ShapeError) as fused:
        model(x)
    assert str(fused.value) == str(plain.value)


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
