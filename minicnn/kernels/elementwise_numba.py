"""Elementwise work compiled with Numba: a sum of two arrays, ReLU's two passes and Adam's
update.

NumPy evaluates ``np.where(x > 0, dout, 0)`` as separate passes over memory, each with its own
temporary array (the mask, then the result); Adam's update is ten such passes per parameter.
A compiled loop reads each input once and writes each output once. The arithmetic, and its
order, is the NumPy code's: results are bit for bit those of the NumPy versions in
``layers/activations.py`` and ``optim.py`` (the tests check it).

Arrays of another dtype (float16), or Adam's arrays when they differ in layout, go to
``elementwise_loops`` instead: the same functions, in NumPy.
"""
import numpy as np
from numba import prange

from . import elementwise_loops, workspace
from .jit import COMPILED_DTYPES, helper, kernel

_PARALLEL_SIZE = 1 << 15     # below this many elements one thread is faster than waking two


def _version(kernel, size):
    return kernel if size >= _PARALLEL_SIZE else kernel.run_serial


@helper()
def clip_at_zero(a):
    """a (1-D, contiguous) := max(a, 0) in place, as ``_relu`` (NaN stays NaN): the convolution
    kernels' ReLU on an image's output just written, while it is in the cache."""
    zero = a.dtype.type(0)
    for i in range(np.uint64(a.size)):
        v = a[i]
        # "+ zero" (v itself: v > 0 or NaN here) makes every element a store: written as
        # ``a[i] = zero if v <= zero else v`` the compiler stores only the zeros, with a
        # masked store (vmaskmovps) that AMD's CPUs run about 14 times slower than this loop
        # (measured on an EPYC, 4704 floats: 2.2 µs vs 0.16 µs)
        a[i] = zero if v <= zero else v + zero


@kernel(parallel=True)
def _add(a, b, out):
    for i in prange(a.size):
        out[i] = a[i] + b[i]


@kernel(parallel=True)
def _relu(x, out):
    zero = out.dtype.type(0)
    for i in prange(x.size):
        # NaN is not <= 0 and passes through, as with np.maximum(x, 0)
        out[i] = zero if x[i] <= zero else x[i]


@kernel(parallel=True)
def _relu_backward(dout, out, dx):
    zero = dx.dtype.type(0)
    for i in prange(out.size):
        # out > 0 exactly where x > 0 (a NaN input gives a NaN output, and no gradient)
        dx[i] = dout[i] if out[i] > zero else zero


def _same_layout(*arrays):
    """Whether the arrays are all C-contiguous, of one compiled dtype and one shape."""
    first = arrays[0]
    if first.dtype not in COMPILED_DTYPES:
        return False
    # a loop, not all(generator): called per parameter per step (Adam), where it showed
    for a in arrays:
        if a.dtype != first.dtype or a.shape != first.shape or not a.flags.c_contiguous:
            return False
    return True


def add(a, b, out):
    """out = a + b, arrays of one shape (a residual block's two paths), on Numba's threads
    (NumPy's add runs on one); returns out."""
    if not _same_layout(a, b, out):
        return elementwise_loops.add(a, b, out)
    _version(_add, a.size)(a.reshape(-1), b.reshape(-1), out.reshape(-1))
    return out


def relu_forward(x, out=None):
    """out = max(x, 0) for a float array of any shape (NaN stays NaN). Returns out, same shape;
    ``out=x`` clips x in place."""
    if x.dtype not in COMPILED_DTYPES or not (out is None or _same_layout(x, out)):
        return elementwise_loops.relu_forward(x, out)
    x = np.ascontiguousarray(x)
    out = workspace.empty_like(x) if out is None else out
    _version(_relu, x.size)(x.reshape(-1), out.reshape(-1))
    return out


def relu_backward(dout, out):
    """dx = dout where out > 0, else 0; out is the forward output. Same shape and dtype as out."""
    if out.dtype not in COMPILED_DTYPES:
        return elementwise_loops.relu_backward(dout, out)
    dout, out = np.ascontiguousarray(dout), np.ascontiguousarray(out)
    dx = workspace.empty_like(out)
    _version(_relu_backward, out.size)(dout.reshape(-1), out.reshape(-1), dx.reshape(-1))
    return dx


@helper(inline="always")
def _adam_element(p, g, m, v, i, one_minus_beta1, beta2, one_minus_beta2, step_size,
                  sqrt_bias_correction2, eps, weight_decay, smallest):
    # the operations of optim.Adam._update, in its order and in p's dtype
    grad = g[i]
    if weight_decay != 0:
        grad = grad + weight_decay * p[i]
    zero = p.dtype.type(0)
    # a moment below ``smallest`` (the dtype's smallest normal float) is stored as 0: on the
    # subnormal floats below it every later step would run 10 to 100 times slower (optim.Adam)
    moment = m[i] + one_minus_beta1 * (grad - m[i])
    m[i] = zero if abs(moment) < smallest else moment
    moment = v[i] * beta2
    moment += one_minus_beta2 * (grad * grad)
    v[i] = zero if moment < smallest else moment
    denom = np.sqrt(v[i]) / sqrt_bias_correction2 + eps
    p[i] -= step_size * (m[i] / denom)


@kernel(parallel=True)
def _adam(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, step_size,
          sqrt_bias_correction2, eps, weight_decay, smallest):
    for i in prange(p.size):
        _adam_element(p, g, m, v, i, one_minus_beta1, beta2, one_minus_beta2, step_size,
                      sqrt_bias_correction2, eps, weight_decay, smallest)


def adam_step(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2, step_size,
              sqrt_bias_correction2, eps, weight_decay):
    """One Adam update of p (any shape) in place, with its gradient g and moments m, v (same
    shape, dtype and contiguity); a moment below np.finfo(dtype).tiny is stored as 0. The
    scalars are Python floats; each is rounded to p's dtype first, as NumPy does when it
    multiplies a float32 array by a Python float."""
    if not _same_layout(p, g, m, v):
        return elementwise_loops.adam_step(p, g, m, v, one_minus_beta1, beta2, one_minus_beta2,
                                           step_size, sqrt_bias_correction2, eps, weight_decay)
    t = p.dtype.type
    _version(_adam, p.size)(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1),
                            t(one_minus_beta1), t(beta2), t(one_minus_beta2), t(step_size),
                            t(sqrt_bias_correction2), t(eps), t(weight_decay),
                            np.finfo(p.dtype).tiny)
