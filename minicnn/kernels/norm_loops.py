"""Batch normalisation in plain NumPy: the formulas of ``layers/norm.py``, one line each.

The reference for ``norm_numba``, which computes the same in two compiled passes over memory
(its sums in float64). Functions and signatures are the same in both modules; the cache is
each module's own (the layer hands it back to the module that wrote it).

Shapes: x, y, dout, dx (N, C, H, W); weight (γ), bias (β), mean, var (C,), or weight and bias
None (a layer without affine parameters: γ = 1, β = 0). Per channel the statistics run over
the n = N·H·W values of (N, H, W), and with inv_std = 1/sqrt(var + eps):

    x_hat = (x − mean) · inv_std        y = γ · x_hat + β
"""
import numpy as np

from . import elementwise_loops

AXES = (0, 2, 3)        # the axes every channel's statistics run over: N, H, W


def _per_channel(v):
    """(C,) -> (C, 1, 1): broadcasts against (N, C, H, W)."""
    return v[:, None, None]


def _normalise(x, mean, var, weight, bias, eps):
    """x (N, C, H, W) and the statistics -> y, x_hat (N, C, H, W) and inv_std (C,)."""
    inv_std = 1 / np.sqrt(var + x.dtype.type(eps))
    x_hat = (x - _per_channel(mean)) * _per_channel(inv_std)
    y = x_hat if weight is None else x_hat * _per_channel(weight) + _per_channel(bias)
    return y, x_hat, inv_std


def forward_train(x, weight, bias, eps, relu=False):
    """Normalise with the batch's statistics.

    x (N, C, H, W), weight and bias (C,) or None, eps > 0 -> (y (N, C, H, W), mean (C,),
    var (C,), cache). var is the BIASED variance Σ(x − mean)²/n, the one both frameworks
    normalise with; the layer turns it into the running variance it keeps. relu: y = max(y, 0),
    the ReLU after the layer (``layers.fusion``).
    """
    mean = x.mean(axis=AXES)
    var = x.var(axis=AXES)
    y, x_hat, inv_std = _normalise(x, mean, var, weight, bias, eps)
    return _clipped(y, x_hat, relu), mean, var, (x_hat, inv_std, True)


def forward_eval(x, mean, var, weight, bias, eps, relu=False):
    """Normalise with given statistics (the running ones), constants for backward.

    x (N, C, H, W), mean and var (C,), weight and bias (C,) or None -> (y (N, C, H, W), cache);
    relu as in ``forward_train``.
    """
    y, x_hat, inv_std = _normalise(x, mean, var, weight, bias, eps)
    return _clipped(y, x_hat, relu), (x_hat, inv_std, False)


def _clipped(y, x_hat, relu):
    """max(y, 0) with ``relu`` (a new array when y is x_hat, which the cache keeps), else y."""
    if not relu:
        return y
    return np.maximum(y, y.dtype.type(0), out=None if y is x_hat else y)


def saved_for_backward(cache):
    """The cache of a forward pass -> (x_hat (N, C, H, W), inv_std (C,), batch): batch True
    when the forward pass used the batch's statistics."""
    return cache


def backward(dout, cache, weight, clip=None):
    """dout (N, C, H, W), the cache of the forward pass, weight (C,) or None ->
    (dx (N, C, H, W), dweight (C,), dbias (C,)); dweight and dbias None without weight.

    With batch statistics, mean and var depend on every x, so with g = dout·γ:
        dx = (g − mean(g) − x_hat · mean(g · x_hat)) · inv_std,
    the means over (N, H, W). With given statistics they are constants: dx = g · inv_std.
    ``clip``: the layer's output, clipped by the ReLU after it, whose gradient dout then gets
    first: dout where clip > 0, else 0 (``layers.fusion``).
    """
    if clip is not None:
        dout = elementwise_loops.relu_backward(dout, clip)
    x_hat, inv_std, batch = cache
    dweight = dbias = None
    if weight is not None:
        dweight = (dout * x_hat).sum(axis=AXES)
        dbias = dout.sum(axis=AXES)
        g = dout * _per_channel(weight)
    else:
        g = dout
    if batch:
        g = (g - g.mean(axis=AXES, keepdims=True)
             - x_hat * (g * x_hat).mean(axis=AXES, keepdims=True))
    return g * _per_channel(inv_std), dweight, dbias
