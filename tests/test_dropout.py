"""Dropout: values, drop rate, seeding, eval mode, backward with the forward's mask, dtype, and
the distribution of out/x against PyTorch's nn.Dropout."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minicnn as mc
from minicnn.core.errors import ShapeError
from twins import check_finite_differences, requires_torch, torch

SIGMAS = 5  # a correct implementation fails a 5-sigma binomial bound with probability < 1e-6


def _nonzero_input(shape, seed=0, dtype=np.float64):
    """Entries bounded away from 0, so that out/x and 'was it dropped' are unambiguous."""
    x = np.random.default_rng(seed).uniform(0.5, 2.0, shape)
    signs = np.random.default_rng(seed + 1).choice([-1.0, 1.0], shape)
    return (x * signs).astype(dtype)


@given(p=st.floats(0.0, 0.95), seed=st.integers(0, 2**32 - 1),
       shape=st.sampled_from([(3, 4), (2, 3, 4, 5), (1, 7)]))
def test_training_outputs_are_zero_or_scaled_input(p, seed, shape):
    x = _nonzero_input(shape, seed % 1000)
    y = mc.Dropout(p, seed=seed).forward(x)
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / (1 - p), rtol=1e-15)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_drop_fraction_is_p_within_5_sigma(p):
    n = 200_000
    y = mc.Dropout(p, seed=1).forward(np.ones(n))
    dropped = np.mean(y == 0)
    assert abs(dropped - p) <= SIGMAS * math.sqrt(p * (1 - p) / n)


def test_same_seed_same_mask_and_global_seed():
    x = np.ones((10, 20))
    def mask(seed):
        return mc.Dropout(0.5, seed=seed).forward(x)
    np.testing.assert_array_equal(mask(3), mask(3))
    assert not np.array_equal(mask(3), mask(4))
    mc.manual_seed(11)
    a = mc.Dropout(0.5).forward(x)
    mc.manual_seed(11)
    b = mc.Dropout(0.5).forward(x)
    np.testing.assert_array_equal(a, b)
    layer = mc.Dropout(0.5, seed=3)  # a new mask on every forward
    assert not np.array_equal(layer.forward(x), layer.forward(x))


def test_eval_mode_and_p_zero_are_the_identity():
    x = _nonzero_input((4, 5))
    layer = mc.Dropout(0.7, seed=0).eval()
    np.testing.assert_array_equal(layer.forward(x), x)
    dy = _nonzero_input((4, 5), seed=9)
    np.testing.assert_array_equal(layer.backward(dy), dy)
    layer.train()
    assert np.any(layer.forward(x) == 0)
    zero = mc.Dropout(0.0, seed=0)
    np.testing.assert_array_equal(zero.forward(x), x)
    np.testing.assert_array_equal(zero.backward(dy), dy)


@pytest.mark.parametrize("p", [0.2, 0.5])
def test_backward_uses_the_forward_mask(p):
    layer = mc.Dropout(p, seed=5)
    x = _nonzero_input((50, 40))
    y = layer.forward(x)
    dy = _nonzero_input((50, 40), seed=2)
    dx = layer.backward(dy)
    np.testing.assert_array_equal(dx == 0, y == 0)
    np.testing.assert_allclose(dx, dy * (y / x), rtol=1e-15)


def test_float32_is_preserved():
    layer = mc.Dropout(0.3, seed=0)
    x = _nonzero_input((6, 7), dtype=np.float32)
    y = layer.forward(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones((6, 7), np.float32)).dtype == np.float32
    kept = y != 0
    np.testing.assert_allclose(y[kept], x[kept] / np.float32(0.7), rtol=1e-6)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_finite_differences_with_the_mask_fixed(p):
    layer = mc.Dropout(p, seed=0)

    def same_mask():
        layer.rng = np.random.default_rng(42)
    check_finite_differences(layer, _nonzero_input((5, 6)), before_forward=same_mask)


@requires_torch
@pytest.mark.parametrize("p", [0.2, 0.5, 0.9])
def test_ratio_distribution_matches_torch(p):
    """out/x is 0 or the same factor 1/(1 − p) in both, with drop rates that agree within
    5 sigma of the difference of two independent binomial proportions."""
    n = 100_000
    x = _nonzero_input(n, seed=3)
    ours = mc.Dropout(p, seed=0).forward(x) / x
    torch.manual_seed(0)
    theirs = torch.nn.Dropout(p).train()(torch.from_numpy(x)).numpy() / x
    # Kept entries: the same factor in both (up to the rounding of x·s/x), 1/(1 − p).
    kept_theirs = theirs[theirs != 0]
    np.testing.assert_allclose(ours[ours != 0], kept_theirs[0], rtol=1e-14)
    np.testing.assert_allclose(kept_theirs, kept_theirs[0], rtol=1e-14)
    np.testing.assert_allclose(kept_theirs[0], 1 / (1 - p), rtol=1e-14)
    rate_ours, rate_theirs = np.mean(ours == 0), np.mean(theirs == 0)
    assert abs(rate_ours - rate_theirs) <= SIGMAS * math.sqrt(2 * p * (1 - p) / n)


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", True])
def test_bad_p_is_rejected(p):
    with pytest.raises(ValueError, match="drop probability"):
        mc.Dropout(p)


def test_backward_checks_dy():
    layer = mc.Dropout(0.5, seed=0)
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones(3))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"\(2, 3\), got \(3, 2\)"):
        layer.backward(np.ones((3, 2)))
    assert repr(layer) == "Dropout(p=0.5)" and layer.parameters() == []
