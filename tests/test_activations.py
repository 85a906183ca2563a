"""ReLU, Tanh, Sigmoid, Softmax, LogSoftmax against PyTorch and Keras, finite differences,
extreme values (±1000) and bad input."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import minicnn as mc
from minicnn.core.errors import ShapeError
from twins import compare, check_finite_differences, requires_keras, requires_torch

ACTIVATIONS = [mc.ReLU, mc.Tanh, mc.Sigmoid, mc.Softmax, mc.LogSoftmax]
IDS = [cls.__name__ for cls in ACTIVATIONS]
KERAS_EXAMPLES = min(40, hsettings.default.max_examples)


@st.composite
def inputs(draw, dtype=np.float64):
    """A 2-D (N, C) or 4-D (N, C, H, W) input, standard normal times a drawn scale."""
    if draw(st.booleans()):
        shape = (draw(st.integers(1, 6)), draw(st.integers(1, 7)))
    else:
        shape = (draw(st.integers(1, 3)), draw(st.integers(1, 4)),
                 draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ----------------------------------------------------------------------------------------
# against the frameworks
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("cls", ACTIVATIONS, ids=IDS)
@given(x=inputs(), seed=st.integers(0, 1000))
def test_matches_torch_float64(cls, x, seed):
    compare(cls(), x, "torch", seed=seed)


@requires_torch
@pytest.mark.parametrize("cls", ACTIVATIONS, ids=IDS)
@given(x=inputs(np.float32))
def test_matches_torch_float32_and_keeps_dtype(cls, x):
    layer = cls()
    compare(layer, x, "torch")  # rtol 1e-5 for float32
    assert layer.forward(x).dtype == np.float32
    assert layer.backward(np.ones(x.shape, np.float32)).dtype == np.float32


@requires_keras
@pytest.mark.filterwarnings("ignore:You are using a softmax over axis")  # C = 1 is on purpose
@pytest.mark.parametrize("cls", ACTIVATIONS, ids=IDS)
@hsettings(max_examples=KERAS_EXAMPLES)
@given(x=inputs(), seed=st.integers(0, 1000))
def test_matches_keras(cls, x, seed):
    compare(cls(), x, "keras", seed=seed)


@requires_torch
@pytest.mark.parametrize("cls", [mc.Softmax, mc.LogSoftmax], ids=["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [0, 2, 3, -1, -3])
def test_softmax_other_axes_match_torch(cls, axis):
    x = np.random.default_rng(axis + 5).standard_normal((2, 3, 4, 5))
    compare(cls(axis=axis), x, "torch")


# ----------------------------------------------------------------------------------------
# finite differences
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", ACTIVATIONS, ids=IDS)
@pytest.mark.parametrize("shape", [(4, 5), (2, 3, 4, 3)])
def test_finite_differences(cls, shape):
    x = np.random.default_rng(len(shape)).standard_normal(shape) * 2
    if cls is mc.ReLU:  # the kink at 0 is not differentiable: keep the entries away from it
        x = np.where(np.abs(x) < 1e-3, 0.5, x)
    check_finite_differences(cls(), x)


# ----------------------------------------------------------------------------------------
# extreme values
# ----------------------------------------------------------------------------------------
def _strict():
    """Any floating-point overflow, invalid operation or warning becomes an error."""
    warnings.simplefilter("error")
    return np.errstate(over="raise", invalid="raise", divide="raise")


@requires_torch
@pytest.mark.parametrize("cls", [mc.Softmax, mc.LogSoftmax], ids=["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_softmaxes_on_huge_logits_stay_finite_and_match_torch(cls, dtype):
    x = np.array([[1000, -1000, 0, 999], [-1000, -1000, -999, -1000],
                  [1000, 1000, 1000, 1000]], dtype=dtype)
    with warnings.catch_warnings(), _strict():
        y = cls().forward(x)
    assert np.all(np.isfinite(y))
    compare(cls(), x, "torch")


@requires_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sigmoid_on_huge_inputs_no_warning_and_matches_torch(dtype):
    x = np.array([[-1000, -100, -30, 0, 30, 100, 1000]], dtype=dtype)
    layer = mc.Sigmoid()
    with warnings.catch_warnings(), _strict():
        y = layer.forward(x)
        dx = layer.backward(np.ones_like(y))
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert y[0, 0] >= 0 and y[0, -1] <= 1
    compare(mc.Sigmoid(), x, "torch")


@requires_torch
def test_tanh_on_huge_inputs_matches_torch():
    x = np.array([[-1000.0, -20.0, 0.0, 20.0, 1000.0]])
    with warnings.catch_warnings(), _strict():
        mc.Tanh().forward(x)
    compare(mc.Tanh(), x, "torch")


# ----------------------------------------------------------------------------------------
# behaviour and bad input
# ----------------------------------------------------------------------------------------
def test_relu_gradient_at_zero_is_zero():
    layer = mc.ReLU()
    layer.forward(np.array([[-1.0, 0.0, 2.0]]))
    np.testing.assert_array_equal(layer.backward(np.ones((1, 3))), [[0.0, 0.0, 1.0]])


def test_softmax_rows_sum_to_one_along_axis_1_in_nchw():
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    y = mc.Softmax().forward(x)
    np.testing.assert_allclose(y.sum(axis=1), np.ones((2, 4, 5)), rtol=1e-12)


def test_integer_input_is_computed_in_float64():
    y = mc.Sigmoid().forward(np.array([[0, 1, -1]]))
    assert y.dtype == np.float64


@pytest.mark.parametrize("cls", [mc.Softmax, mc.LogSoftmax], ids=["Softmax", "LogSoftmax"])
def test_softmax_axis_outside_the_input_is_a_shape_error(cls):
    with pytest.raises(ShapeError, match=r"axis 1 does not exist in an input of rank 1, "
                                         r"shape \(5,\)"):
        cls().forward(np.zeros(5))
    assert cls().output_shape((2, 3)) == (2, 3)


@pytest.mark.parametrize("cls", ACTIVATIONS, ids=IDS)
def test_backward_checks_dy_shape_and_order(cls):
    layer = cls()
    with pytest.raises(RuntimeError, match="before forward"):
        layer.backward(np.ones((2, 3)))
    layer.forward(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"expected dy of the output's shape \(2, 3\), got \(3,\)"):
        layer.backward(np.ones(3))


def test_repr_and_no_parameters():
    assert repr(mc.Softmax()) == "Softmax(axis=1)"
    assert repr(mc.LogSoftmax(axis=-1)) == "LogSoftmax(axis=-1)"
    assert repr(mc.ReLU()) == "ReLU()"
    assert all(cls().parameters() == [] for cls in ACTIVATIONS)
