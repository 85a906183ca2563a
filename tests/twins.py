"""The one shared helper: build a layer's twin in PyTorch or Keras, copy the weights, compare.

``compare(layer, x, framework)`` runs ``layer`` forward on ``x`` (NCHW) and backward with a
RANDOM upstream gradient ``dy``; builds the same layer in PyTorch (NCHW) or Keras (NHWC, the
input and gradients transposed at the border) holding the same weights; differentiates
``sum(y * dy)`` there with autograd / GradientTape; and compares output, input gradient and
every parameter gradient. ``compare_loss`` does the same for a loss. ``check_finite_differences``
checks the hand-written backward against central differences, without any framework.

The twins themselves live in the package, ``minicnn.check.twins`` (``python -m minicnn.check``
grades a learner's layer with them); this file adds the asserts, the pytest markers and the
torchvision blocks of reference/torch/resnet.py.

Agreement means  max|ours − theirs| <= atol + rtol · max|theirs|  for each quantity: the error
is measured relative to the largest value of the reference, so entries near zero do not make
the check meaningless or flaky. A failure message names the quantity, the layer, the
configuration and the max error.
"""
import os
import sys

import numpy as np
import pytest

import minicnn.layers as L
from minicnn.check.compare import central_differences
from minicnn.check.twins import (TORCH_MODULE_BUILDERS, Twin, Unsupported,  # noqa: F401
                                 copy_to_torch, framework_loss_results, framework_results,
                                 have_keras, have_torch, keras, keras_loss_twin, keras_twin, make_twin,
                                 nchw_to_nhwc, nhwc_to_nchw, torch_bn, torch_loss_twin,
                                 torch_module, torch_twin)

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HAVE_TORCH = have_torch()
HAVE_KERAS = have_keras()
torch = None
if HAVE_TORCH:
    import torch
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:  # reference/ sits beside tests/
        sys.path.insert(0, _ROOT)
    from reference.torch import resnet as torch_resnet  # torchvision's blocks, in plain PyTorch

    def _torch_bottleneck(block, input_shape):
        """torchvision's Bottleneck (reference/torch/resnet.py) configured as the minicnn block:
        where the stride goes, convolution biases."""
        if block.expansion != 4:
            raise Unsupported(f"torchvision's Bottleneck expands by 4, not {block.expansion}")
        mod = torch_resnet.Bottleneck(block.in_channels, block.width, block.stride,
                                      stride_in_1x1=block.stride_in_1x1, bias=block.conv_bias)
        return _with_bns_and_downsample(mod, block, ("bn1", "bn2", "bn3"), input_shape)

    def _torch_basic_block(block, input_shape):
        """torchvision's BasicBlock (reference/torch/resnet.py) configured as the minicnn block."""
        mod = torch_resnet.BasicBlock(block.in_channels, block.out_channels, block.stride,
                                      bias=block.conv_bias)
        return _with_bns_and_downsample(mod, block, ("bn1", "bn2"), input_shape)

    def _with_bns_and_downsample(mod, block, bns, input_shape):
        for name in bns:
            setattr(mod, name, torch_bn(getattr(block, name)))
        if block.downsample is not None:
            mod.downsample = torch_module(block.downsample, input_shape)
        return mod

    TORCH_MODULE_BUILDERS[L.Bottleneck] = _torch_bottleneck
    TORCH_MODULE_BUILDERS[L.BasicBlock] = _torch_basic_block

requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed "
                                    "(pip install -e .[reference])")
requires_keras = pytest.mark.skipif(not HAVE_KERAS, reason="keras/tensorflow is not installed "
                                    "(pip install -e .[reference])")


# ----------------------------------------------------------------------------------------
# comparing arrays
# ----------------------------------------------------------------------------------------
def assert_close(quantity, ours, theirs, *, rtol, atol=0.0, config=""):
    """Fail with a message naming ``quantity``, the configuration and the max error."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (
        f"{quantity}: shape {ours.shape} != reference shape {theirs.shape} [{config}]")
    if ours.size == 0:
        return
    err = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    scale = float(np.max(np.abs(theirs)))
    limit = atol + rtol * scale
    worst = float(err.max())
    assert np.all(np.isfinite(ours)), f"{quantity}: non-finite values in ours [{config}]"
    assert worst <= limit, (
        f"{quantity} differs [{config}]: max abs error {worst:.3e} at index "
        f"{np.unravel_index(int(err.argmax()), err.shape)} > allowed {limit:.3e} "
        f"(atol {atol:g} + rtol {rtol:g} x max|reference| {scale:.3e})")


# ----------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------
def _ours(layer, x, seed):
    y = layer.forward(x)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    dx = layer.backward(dy)
    return y, dy, dx, [p.grad.copy() for p in layer.parameters()]


def compare(layer, x, framework, *, rtol=None, atol=None, seed=0, config=None):
    """Compare ``layer`` with its twin in ``framework`` ("torch" or "keras") on input ``x``.

    The random upstream gradient is seeded by ``seed``. Raises ``Unsupported`` when the
    framework cannot express the configuration.
    """
    config = config or repr(layer)
    # Each compared value is a sum that the twin adds in its own order (its SIMD width, threads,
    # FMA: whatever the CPU). The tests' shapes keep every sum at n <= ~1,000 terms (a weight
    # gradient over N·OH·OW = 3·18·18); rounding of a sum of n mixed-sign terms grows as
    # sqrt(n)·u: 2e-6 of the largest value in float32 (u = 6e-8), 4e-15 in float64 (u = 1e-16),
    # five and 25,000 times below the default rtol
    if rtol is None:
        rtol = 1e-10 if x.dtype == np.float64 else 1e-5
    if atol is None:
        atol = 1e-12 if x.dtype == np.float64 else 1e-6
    twin = make_twin(layer, x.shape, framework)  # before our forward moves any running statistics
    y, dy, dx, grads = _ours(layer, x, seed)
    y_ref, dx_ref, grads_ref = framework_results(layer, x, dy, framework, twin)
    where = f"{framework}, {config}, input {x.shape} {x.dtype}"
    assert_close("output", y, y_ref, rtol=rtol, atol=atol, config=where)
    assert_close("input gradient", dx, dx_ref, rtol=rtol, atol=atol, config=where)
    assert len(grads) == len(grads_ref), f"parameter count differs [{where}]"
    for p, g, g_ref in zip(layer.parameters(), grads, grads_ref):
        assert_close(f"gradient of {p.name or 'parameter'}", g, g_ref, rtol=rtol, atol=atol,
                     config=where)


def check_finite_differences(layer, x, *, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0, before_forward=None,
                       max_entries=60):
    """Central differences of  sum(layer(x) · dy)  against the hand-written backward (float64).

    Checks up to ``max_entries`` randomly chosen entries of the input and of every parameter.
    ``before_forward`` is called before every forward (e.g. to fix a dropout mask).
    """
    rng = np.random.default_rng(seed)
    if before_forward:
        before_forward()
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    analytic = [("input", x, dx)] + [(p.name or "parameter", p.data, p.grad.copy())
                                      for p in layer.parameters()]

    def objective():
        if before_forward:
            before_forward()
        return float(np.sum(layer.forward(x) * dy))

    check_numeric_gradients(objective, analytic, rng, eps=eps, rtol=rtol, atol=atol,
                            max_entries=max_entries, config=repr(layer))


def check_numeric_gradients(objective, analytic, rng, *, eps=1e-6, rtol=1e-6, atol=1e-9,
                            max_entries=60, config=""):
    """Compare each (name, array, gradient) of ``analytic`` with central differences of
    ``objective()`` (a float), perturbing up to ``max_entries`` random entries of each array in place.
    """
    for name, array, grad in analytic:
        picks = rng.choice(array.size, size=min(max_entries, array.size), replace=False)
        numeric = central_differences(objective, array, picks, eps)
        assert_close(f"gradient of {name} vs finite differences", grad.reshape(-1)[picks], numeric,
                     rtol=rtol, atol=atol, config=config)


def compare_loss(loss, z, target, framework, *, rtol=None, atol=None, config=None):
    """Compare a loss's value and input gradient with PyTorch or Keras."""
    rtol = rtol if rtol is not None else (1e-10 if z.dtype == np.float64 else 1e-5)
    atol = atol if atol is not None else (1e-12 if z.dtype == np.float64 else 1e-6)
    value = loss.forward(z, target)
    grad = loss.backward()
    value_ref, grad_ref = framework_loss_results(loss, z, target, framework)
    where = f"{framework}, {config or repr(loss)}, input {z.shape} {z.dtype}"
    assert_close("loss value", np.float64(value), np.float64(value_ref), rtol=rtol, atol=atol,
                 config=where)
    assert_close("input gradient", grad, grad_ref, rtol=rtol, atol=atol, config=where)


def check_finite_differences_loss(loss, z, target, *, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Central differences of the loss against its backward (float64), every entry of z."""
    loss.forward(z, target)
    grad = loss.backward()
    numeric = central_differences(lambda: loss.forward(z, target), z, np.arange(z.size), eps)
    assert_close("loss gradient vs finite differences", grad.reshape(-1), numeric, rtol=rtol,
                 atol=atol, config=repr(loss))
