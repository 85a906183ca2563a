"""ZeroPadding2D against torch.nn.ZeroPad2d and keras.layers.ZeroPadding2D, shapes and errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn as mc
from minicnn.train import checkpoint as ckpt
from twins import check_finite_differences, compare, requires_keras, requires_torch

side = st.integers(0, 3)
padding = st.one_of(side, st.tuples(side, side), st.tuples(st.tuples(side, side), st.tuples(side, side)))


@requires_torch
@given(padding, st.integers(1, 3), st.integers(1, 3), st.integers(1, 5), st.integers(1, 5))
def test_matches_torch(pad, n, c, h, w):
    x = np.random.default_rng(h * 10 + w).standard_normal((n, c, h, w))
    compare(mc.ZeroPadding2D(pad), x, "torch", config=f"padding={pad}")


@requires_keras
@settings(max_examples=min(settings().max_examples, 10))  # a Keras layer per example: slow
@given(padding)
def test_matches_keras(pad):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    compare(mc.ZeroPadding2D(pad), x, "keras", config=f"padding={pad}")


def test_finite_differences():
    check_finite_differences(mc.ZeroPadding2D(((1, 2), (0, 3))),
                             np.random.default_rng(1).standard_normal((2, 2, 3, 3)))


def test_keras_resnet_stem_equals_torch_padding_3():
    """Keras' ResNet50: ZeroPadding2D(3) then a "valid" 7×7 stride-2 conv = Conv2d(padding=3)."""
    rng = np.random.default_rng(2)
    padded = mc.Sequential([mc.ZeroPadding2D(3), mc.Conv2D(3, 4, 7, stride=2, dtype=np.float64, rng=0)])
    direct = mc.Conv2D(3, 4, 7, stride=2, padding=3, dtype=np.float64, rng=0)
    x = rng.standard_normal((1, 3, 32, 32))
    assert padded.output_shape(x.shape) == direct.output_shape(x.shape) == (1, 4, 16, 16)
    np.testing.assert_allclose(padded(x), direct(x), rtol=1e-12)


def test_shapes_explain_repr_config():
    pad = mc.ZeroPadding2D(((1, 2), (0, 3)))
    assert pad.output_shape((8, 3, 10, 10)) == (8, 3, 13, 13)
    assert pad.explain((8, 3, 10, 10)) == ["H: 1 + 10 + 2 = 13", "W: 0 + 10 + 3 = 13"]
    assert repr(pad) == "ZeroPadding2D(((1, 2), (0, 3)))"
    assert repr(mc.ZeroPadding2D(3)) == "ZeroPadding2D(3)"
    assert repr(mc.ZeroPadding2D((1, 2))) == "ZeroPadding2D((1, 2))"
    assert repr(ckpt.build(ckpt.layer_config(pad))) == repr(pad)


@pytest.mark.parametrize("bad", [-1, (1, -2), "same", (1, 2, 3), ((1, 2), 3)])
def test_bad_padding(bad):
    with pytest.raises(ValueError, match="ZeroPadding2D|padding"):
        mc.ZeroPadding2D(bad)


def test_rank_error():
    with pytest.raises(mc.ShapeError, match=r"ZeroPadding2D\(1\): expected an input of rank 4"):
        mc.ZeroPadding2D(1)(np.zeros((2, 3)))
