"""Dense against PyTorch's nn.Linear and Keras' Dense, finite differences, initialisation like
PyTorch's, and the error message for a wrong number of features."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import minicnn as mc
from minicnn.core.errors import ShapeError
from twins import compare, check_finite_differences, requires_keras, requires_torch, torch

KERAS_EXAMPLES = min(40, hsettings.default.max_examples)


@st.composite
def dense_cases(draw, leading_ranks=(1, 2, 3), dtype=np.float64):
    """(layer, x): x of shape (N, in), (N, T, in) or (N, T, U, in)."""
    fin, fout = draw(st.integers(1, 8)), draw(st.integers(1, 8))
    rank = draw(st.sampled_from(leading_ranks))
    lead = tuple(draw(st.integers(1, 4)) for _ in range(rank))
    seed = draw(st.integers(0, 2**32 - 1))
    layer = mc.Dense(fin, fout, bias=draw(st.booleans()), dtype=dtype, rng=seed)
    x = np.random.default_rng(seed + 1).standard_normal(lead + (fin,)).astype(dtype)
    return layer, x


# ----------------------------------------------------------------------------------------
# against the frameworks
# ----------------------------------------------------------------------------------------
@requires_torch
@given(case=dense_cases(), seed=st.integers(0, 1000))
def test_matches_torch_float64(case, seed):
    layer, x = case
    compare(layer, x, "torch", seed=seed)


@requires_torch
@given(case=dense_cases(dtype=np.float32))
def test_matches_torch_float32(case):
    layer, x = case
    compare(layer, x, "torch")  # rtol 1e-5 for float32


@requires_keras
@hsettings(max_examples=KERAS_EXAMPLES)
@given(case=dense_cases(leading_ranks=(1,)), seed=st.integers(0, 1000))
def test_matches_keras(case, seed):  # the Keras twin is built for (N, in) inputs
    layer, x = case
    compare(layer, x, "keras", seed=seed)


# ----------------------------------------------------------------------------------------
# finite differences, gradients overwritten
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)])
def test_finite_differences(bias, shape):
    layer = mc.Dense(4, 3, bias=bias, dtype=np.float64, rng=1)
    check_finite_differences(layer, np.random.default_rng(2).standard_normal(shape))


def test_backward_overwrites_the_gradients():
    layer = mc.Dense(3, 2, dtype=np.float64, rng=0)
    x, dy = np.ones((4, 3)), np.ones((4, 2))
    layer.forward(x)
    layer.backward(dy)
    first = [p.grad.copy() for p in layer.parameters()]
    layer.forward(x)
    layer.backward(dy)
    for p, g in zip(layer.parameters(), first):
        np.testing.assert_array_equal(p.grad, g)


# ----------------------------------------------------------------------------------------
# initialisation and dtype
# ----------------------------------------------------------------------------------------
def _ks_statistic(a, b):
    """Two-sample Kolmogorov–Smirnov statistic: max distance between the empirical CDFs."""
    a, b = np.sort(a.ravel()), np.sort(b.ravel())
    grid = np.concatenate([a, b])
    return np.max(np.abs(np.searchsorted(a, grid, side="right") / a.size
                         - np.searchsorted(b, grid, side="right") / b.size))


@requires_torch
def test_initialisation_is_distributed_like_torch_linear():
    fin, fout = 16, 4096
    ours = mc.Dense(fin, fout, dtype=np.float64, rng=0)
    torch.manual_seed(0)
    theirs = torch.nn.Linear(fin, fout)
    bound = 1 / math.sqrt(fin)
    for name, a, b in [("weight", ours.weight.data, theirs.weight.detach().numpy()),
                       ("bias", ours.bias.data, theirs.bias.detach().numpy())]:
        assert a.shape == b.shape, name
        assert np.abs(a).max() <= bound, name
        # Same distribution: the KS statistic exceeds c(α)·sqrt((n+m)/(n·m)), with
        # c(α) = sqrt(−ln(α/2)/2), with probability α = 1e-6 when both are U(−b, b).
        n, m = a.size, b.size
        critical = math.sqrt(-math.log(1e-6 / 2) / 2) * math.sqrt((n + m) / (n * m))
        assert _ks_statistic(a, b) < critical, name


def test_initialisation_is_seeded():
    a, b = mc.Dense(5, 3, rng=7), mc.Dense(5, 3, rng=7)
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    np.testing.assert_array_equal(a.bias.data, b.bias.data)
    mc.manual_seed(3)
    c = mc.Dense(5, 3)
    mc.manual_seed(3)
    d = mc.Dense(5, 3)
    np.testing.assert_array_equal(c.weight.data, d.weight.data)
    assert not np.array_equal(a.weight.data, c.weight.data)


def test_parameters_shapes_names_and_dtype():
    layer = mc.Dense(6, 4)
    assert layer.weight.shape == (4, 6) and layer.bias.shape == (4,)
    assert [p.name for p in layer.parameters()] == ["weight", "bias"]
    assert layer.weight.data.dtype == np.float32 and layer.bias.data.dtype == np.float32
    y = layer.forward(np.ones((2, 6), np.float64))  # computed in the parameters' dtype
    assert y.dtype == np.float32 and y.shape == (2, 4)
    assert layer.backward(np.ones((2, 4))).dtype == np.float32
    no_bias = mc.Dense(6, 4, bias=False)
    assert no_bias.bias is None and no_bias.parameters() == [no_bias.weight]


def test_repr_and_output_shape():
    assert repr(mc.Dense(9216, 128)) == "Dense(in_features=9216, out_features=128)"
    assert repr(mc.Dense(3, 2, bias=False)) == "Dense(in_features=3, out_features=2, bias=False)"
    assert mc.Dense(3, 2).output_shape((7, 5, 3)) == (7, 5, 2)


# ----------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------
def test_wrong_number_of_features_names_layer_expected_and_received():
    layer = mc.Dense(9216, 128)
    with pytest.raises(ShapeError) as err:
        layer.forward(np.zeros((64, 1568), np.float32))
    assert "Dense(in_features=9216, out_features=128): expected input (N, 9216), got (64, 1568)" \
        in str(err.value)
    assert "1568 ≠ 9216" in str(err.value)


def test_sequential_error_says_where_the_features_came_from():
    model = mc.Sequential([mc.Flatten(), mc.Dense(9216, 128)])
    x = np.zeros((64, 32, 7, 7), np.float32)
    for run in (lambda: model.forward(x), lambda: model.output_shape(x.shape)):
        with pytest.raises(ShapeError) as err:
            run()
        message = str(err.value)
        assert "Dense(in_features=9216" in message
        assert "(64, 1568)" in message
        assert f"{32 * 7 * 7} = 32·7·7" in message


def test_unflattened_feature_maps_get_the_arithmetic_and_a_hint():
    with pytest.raises(ShapeError) as err:
        mc.Dense(1568, 10).forward(np.zeros((2, 32, 7, 7)))
    message = str(err.value)
    assert "expected input (N, ..., 1568), got (2, 32, 7, 7)" in message
    assert "32·7·7 = 1568" in message and "Flatten()" in message


def test_input_without_batch_dimension_and_bad_constructor_arguments():
    with pytest.raises(ShapeError, match=r"expected input \(N, 3\).*got \(3,\) of rank 1"):
        mc.Dense(3, 2).forward(np.zeros(3))
    with pytest.raises(ValueError, match="in_features must be a positive int"):
        mc.Dense(0, 2)
    layer = mc.Dense(3, 2)
    layer.forward(np.zeros((4, 3)))
    with pytest.raises(ShapeError, match=r"expected dy of the output's shape \(4, 2\), "
                                         r"got \(4, 3\)"):
        layer.backward(np.zeros((4, 3)))
