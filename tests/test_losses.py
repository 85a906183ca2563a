"""CrossEntropyLoss, NLLLoss, CategoricalCrossentropy against PyTorch and Keras (both reductions),
finite differences, Keras' clipping of probabilities, huge logits, and bad input."""
import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

import minicnn as mc
from minicnn.core.errors import ShapeError
from twins import compare_loss, check_finite_differences_loss, requires_keras, requires_torch

KERAS_EXAMPLES = min(40, hsettings.default.max_examples)
REDUCTIONS = ["mean", "sum"]
ALL_LOSSES = [mc.CrossEntropyLoss(), mc.NLLLoss(), mc.CategoricalCrossentropy()]


def _log_softmax(z):
    s = z - z.max(axis=1, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=1, keepdims=True))


@st.composite
def logits_cases(draw, dtype=np.float64):
    """(logits (N, C), labels (N,) int64)."""
    n, c = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 10.0]))
    z = (rng.standard_normal((n, c)) * scale).astype(dtype)
    return z, rng.integers(0, c, n)


@st.composite
def probability_cases(draw, dtype=np.float64, one_hot=None):
    """(probabilities (N, C), target): rows that may be unnormalised, may hold exact 0s, or be
    exactly one-hot (entries 0 and 1), so that Keras' renormalisation and clipping both act.
    The target is one-hot (N, C) or integer labels (N,)."""
    n, c = draw(st.integers(1, 6)), draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    p = np.exp(rng.standard_normal((n, c)) * draw(st.sampled_from([0.5, 2.0, 6.0])))
    p /= p.sum(axis=1, keepdims=True)
    kind = draw(st.sampled_from(["normalised", "unnormalised", "zeros", "exact"]))
    if kind == "unnormalised":
        p *= rng.uniform(0.2, 5.0, (n, 1))
    elif kind == "zeros":  # some exact zeros, never a whole row
        p[rng.random((n, c)) < 0.3] = 0
        p[np.arange(n), rng.integers(0, c, n)] += 0.5
    elif kind == "exact":  # some rows exactly one-hot predictions
        rows = rng.random(n) < 0.5
        p[rows] = np.eye(c)[rng.integers(0, c, rows.sum())]
    labels = rng.integers(0, c, n)
    if kind != "normalised" and draw(st.booleans()):
        labels = p.argmax(axis=1)  # a confident right answer: hits the 1 − ε clip
    if one_hot is None:
        one_hot = draw(st.booleans())
    target = np.eye(c, dtype=dtype)[labels] if one_hot else labels
    return p.astype(dtype), target


# ----------------------------------------------------------------------------------------
# against PyTorch
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=logits_cases())
def test_cross_entropy_matches_torch(reduction, case):
    z, y = case
    compare_loss(mc.CrossEntropyLoss(reduction=reduction), z, y, "torch")


@requires_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=logits_cases())
def test_nll_matches_torch(reduction, case):
    z, y = case
    compare_loss(mc.NLLLoss(reduction=reduction), _log_softmax(z), y, "torch")


@requires_torch
@pytest.mark.parametrize("reduction", REDUCTIONS)
@given(case=probability_cases())
def test_categorical_crossentropy_matches_keras_formula_in_torch(reduction, case):
    p, target = case
    compare_loss(mc.CategoricalCrossentropy(reduction=reduction), p, target, "torch")


@requires_torch
@pytest.mark.parametrize("loss", [mc.CrossEntropyLoss(), mc.NLLLoss(reduction="sum")], ids=repr)
@given(case=logits_cases(np.float32))
def test_float32_matches_torch_and_keeps_dtype(loss, case):
    z, y = case
    compare_loss(loss, z, y, "torch")
    assert loss.backward().dtype == np.float32


# ----------------------------------------------------------------------------------------
# against Keras
# ----------------------------------------------------------------------------------------
@requires_keras
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@hsettings(max_examples=KERAS_EXAMPLES)
@given(data=st.data())
def test_logit_losses_match_keras(reduction, dtype, data):
    z, y = data.draw(logits_cases(dtype))
    compare_loss(mc.CrossEntropyLoss(reduction=reduction), z, y, "keras")
    compare_loss(mc.NLLLoss(reduction=reduction), _log_softmax(z), y, "keras")


@requires_keras
@pytest.mark.filterwarnings("ignore:In loss categorical_crossentropy")
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("one_hot", [True, False], ids=["one-hot", "integer"])
@hsettings(max_examples=KERAS_EXAMPLES)
@given(data=st.data())
def test_categorical_crossentropy_matches_keras(reduction, dtype, one_hot, data):
    p, target = data.draw(probability_cases(dtype, one_hot))
    loss = mc.CategoricalCrossentropy(reduction=reduction)
    compare_loss(loss, p, target, "keras")
    assert loss.backward().dtype == dtype


@requires_keras
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("one_hot", [True, False], ids=["one-hot", "integer"])
def test_clipping_of_exact_zeros_and_ones_matches_keras(dtype, one_hot):
    # Rows: wrong with certainty (p_y = 0), right with certainty (p_y = 1), a zero elsewhere,
    # and an unnormalised row whose largest entry exceeds 1.
    p = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.5, 0.5], [0.5, 3.0, 0.2]], dtype)
    labels = np.array([0, 1, 1, 1])
    target = np.eye(3, dtype=dtype)[labels] if one_hot else labels
    loss = mc.CategoricalCrossentropy()
    compare_loss(loss, p, target, "keras")
    compare_loss(loss, p, target, "torch")
    # Certainly wrong costs −log ε, not infinity.
    assert loss.forward(p[:1], target[:1]) == pytest.approx(-np.log(np.float64(dtype(1e-7))),
                                                            rel=1e-6)


# ----------------------------------------------------------------------------------------
# finite differences (float64, away from the clipping bounds)
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_finite_differences(reduction):
    rng = np.random.default_rng(0)
    z, y = rng.standard_normal((4, 5)), rng.integers(0, 5, 4)
    check_finite_differences_loss(mc.CrossEntropyLoss(reduction=reduction), z, y)
    check_finite_differences_loss(mc.NLLLoss(reduction=reduction), _log_softmax(z), y)
    p = rng.uniform(0.05, 1.0, (4, 5))  # unnormalised: the renormalisation's gradient counts
    check_finite_differences_loss(mc.CategoricalCrossentropy(reduction=reduction), p, y)
    check_finite_differences_loss(mc.CategoricalCrossentropy(reduction=reduction), p, np.eye(5)[y])


# ----------------------------------------------------------------------------------------
# extreme logits
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_entropy_on_huge_logits_is_finite_and_matches_torch(dtype):
    z = np.array([[1000, -1000, 0], [-1000, 1000, 999], [1000, 1000, 1000]], dtype=dtype)
    y = np.array([1, 2, 0])
    loss = mc.CrossEntropyLoss()
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise", divide="raise"):
        warnings.simplefilter("error")
        value = loss.forward(z, y)
    assert np.isfinite(value) and np.all(np.isfinite(loss.backward()))
    compare_loss(loss, z, y, "torch")


# ----------------------------------------------------------------------------------------
# API and bad input
# ----------------------------------------------------------------------------------------
def test_call_is_forward_and_attributes():
    z, y = np.random.default_rng(1).standard_normal((3, 4)), np.array([0, 3, 1])
    loss = mc.CrossEntropyLoss()
    assert loss(z, y) == loss.forward(z, y)
    assert isinstance(loss(z, y), float)
    assert loss.reduction == "mean" and mc.NLLLoss(reduction="sum").reduction == "sum"
    assert mc.CategoricalCrossentropy().epsilon == 1e-7
    assert mc.CrossEntropyLoss(reduction="sum")(z, y) == pytest.approx(3 * loss(z, y), rel=1e-12)


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
def test_shape_mismatches_name_the_loss_and_both_shapes(loss):
    name = type(loss).__name__
    with pytest.raises(ShapeError, match=rf"{name}.*input \(4, 3, 2\).*target \(4,\)"):
        loss(np.ones((4, 3, 2)), np.zeros(4, int))
    with pytest.raises(ShapeError, match=rf"{name}.*target \(5,\).*\(4, 3\)"
                                         rf"|{name}.*\(4, 3\).*target \(5,\)"):
        loss(np.ones((4, 3)), np.zeros(5, int))


@pytest.mark.parametrize("loss", ALL_LOSSES, ids=lambda loss: type(loss).__name__)
@pytest.mark.parametrize("bad", [3, 7, -1])
def test_label_out_of_range_names_the_label(loss, bad):
    labels = np.array([0, 2, bad, 1])
    with pytest.raises(ValueError, match=rf"{type(loss).__name__}.*target label {bad} at index 2 "
                                         r"is out of range for 3 classes"):
        loss(np.full((4, 3), 1 / 3), labels)


def test_other_bad_targets():
    with pytest.raises(ShapeError, match=r"one-hot target.*\(2, 3\).*got target \(2, 4\)"):
        mc.CategoricalCrossentropy()(np.full((2, 3), 1 / 3), np.eye(4)[:2])
    with pytest.raises(ShapeError, match=r"expected target \(2,\).*got target \(2, 3\).*argmax"):
        mc.CrossEntropyLoss()(np.zeros((2, 3)), np.eye(3)[:2])
    with pytest.raises(ValueError, match="integer class indices, got dtype float64"):
        mc.NLLLoss()(np.zeros((2, 3)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="reduction must be 'mean' or 'sum'"):
        mc.CrossEntropyLoss(reduction="none")
    with pytest.raises(RuntimeError, match="before forward"):
        mc.NLLLoss().backward()
