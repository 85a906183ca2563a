"""Flatten against PyTorch's nn.Flatten and Keras' Flatten (which orders NHWC as (H, W, C)),
finite differences, explain() and bad input."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import minicnn as mc
from minicnn.core.errors import ShapeError
from twins import compare, check_finite_differences, requires_keras, requires_torch

KERAS_EXAMPLES = min(40, hsettings.default.max_examples)


def _input(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@requires_torch
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5).map(tuple),
       seed=st.integers(0, 1000))
def test_matches_torch_any_rank(shape, seed):
    compare(mc.Flatten(), _input(shape, seed), "torch", seed=seed)


@requires_keras
@hsettings(max_examples=KERAS_EXAMPLES)
@given(shape=st.tuples(st.integers(1, 3), st.integers(1, 4), st.integers(1, 4), st.integers(1, 4)),
       seed=st.integers(0, 1000))
def test_matches_keras_up_to_its_hwc_order(shape, seed):
    compare(mc.Flatten(), _input(shape, seed), "keras", seed=seed)


def test_order_is_c_h_w():
    n, c, h, w = 2, 3, 4, 5
    x = _input((n, c, h, w), 0)
    y = mc.Flatten().forward(x)
    assert y.shape == (n, c * h * w)
    for (i, ci, hi, wi) in [(0, 0, 0, 1), (1, 2, 3, 4), (0, 1, 2, 0), (1, 0, 1, 3)]:
        assert y[i, ci * h * w + hi * w + wi] == x[i, ci, hi, wi]


@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 2, 2), (2, 1, 3, 2, 2)])
def test_finite_differences(shape):
    check_finite_differences(mc.Flatten(), _input(shape, 1))


def test_backward_restores_the_input_shape_and_dtype():
    layer = mc.Flatten()
    x = _input((2, 3, 4, 5), 2).astype(np.float32)
    y = layer.forward(x)
    dx = layer.backward(y)
    assert y.dtype == dx.dtype == np.float32
    np.testing.assert_array_equal(dx, x)


def test_explain_and_output_shape():
    layer = mc.Flatten()
    assert layer.output_shape((64, 32, 7, 7)) == (64, 32 * 7 * 7)
    assert layer.explain((64, 32, 7, 7)) == [f"{32 * 7 * 7} = 32·7·7"]
    assert layer.explain((8, 10)) == ["10 = 10"]
    assert layer.output_shape((0, 3, 2)) == (0, 6)
    assert layer.forward(np.zeros((0, 3, 2))).shape == (0, 6)


def test_rank_one_input_is_a_shape_error():
    with pytest.raises(ShapeError,
                       match=r"Flatten\(\): expected an input \(N, \.\.\.\).*got \(5,\) of rank 1"):
        mc.Flatten().forward(np.zeros(5))


def test_backward_checks_dy():
    layer = mc.Flatten()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    layer.forward(np.ones((2, 3, 4)))
    with pytest.raises(ShapeError, match=rf"\(2, {3 * 4}\), got \(2, 3, 4\)"):
        layer.backward(np.ones((2, 3, 4)))
    assert math.prod(layer.backward(np.ones((2, 12))).shape) == 24
