"""Elementwise work in plain NumPy: a sum of two arrays, ReLU's two passes and Adam's update.

The reference for ``elementwise_numba``, which does the same arithmetic in the same order in
one compiled pass (the tests check the two bit for bit). Functions and signatures are the same
in both modules.
"""
import numpy as np


def add(a, b, out):
    """out = a + b, arrays of one shape (a residual block's two paths); returns out."""
    return np.add(a, b, out=out)


def relu_forward(x, out=None):
    """out = max(x, 0) for a float array of any shape (NaN stays NaN). Returns out, same shape;
    ``out=x`` clips x in place."""
    return np.maximum(x, x.dtype.type(0), out=out)


def relu_backward(dout, out):
    """dx = dout where out > 0, else 0; out is the forward output (out > 0 exactly where x > 0)."""
    return np.where(out > 0, dout, out.dtype.type(0)).astype(out.dtype, copy=False)


def adam_step(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, step_size,
              sqrt_bias_correction2, eps, weight_decay):
    """One Adam update of p (any shape) in place, with gradient g and moments m, v (same shape).

    The scalars are Python floats: NumPy rounds each to p's dtype when it meets a float32 array,
    which is what the compiled version does explicitly.
    """
    if weight_decay != 0:
        g = g + weight_decay * p
    m += one_minus_beta1 * (g - m)          # torch: lerp, the same as β1·m + (1−β1)·g
    v *= beta2
    v += one_minus_beta2 * (g * g)
    smallest = np.finfo(m.dtype).tiny      # subnormal moments are stored as 0 (optim.Adam)
    m[np.abs(m) < smallest] = 0
    v[v < smallest] = 0
    denom = np.sqrt(v) / sqrt_bias_correction2 + eps
    p -= step_size * (m / denom)
