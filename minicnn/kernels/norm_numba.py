"""Batch normalisation compiled with Numba: the formulas of ``norm_loops`` in two passes.

Same functions and signatures as ``norm_loops``. NumPy spends a batch normalisation in a
dozen passes over memory, each with a temporary array (x − mean, its square, x_hat, x_hat·γ,
...). Here each pass is one compiled loop over the (image, channel) planes, in parallel
(``prange`` over N·C; no two planes write the same memory):

* forward, training: one pass sums each plane, one normalises it: x read twice, y written
  once. Backward needs x_hat, which it recomputes from x (kept, not copied) with the same
  arithmetic, instead of a second array written here and read there;
* backward: one pass sums dout and dout·x_hat per plane, one writes dx: dout and x read twice;
* forward with given statistics (evaluation): one pass.

The per-channel sums (for the mean and the variance, and backward's Σdout and Σdout·x_hat)
accumulate in float64, one sum per plane, then the N planes of each channel are added in order
of n: at least as accurate as NumPy's float32 sums, and the same whatever the number of
threads. The variance of float32 data comes from the shifted sums Σ(x − k) and Σ(x − k)² of
one pass, k a value of the channel (float64 has 29 bits to spare for the cancellation in
Σ(x − k)²/n − (Σ(x − k)/n)²); float64 data has none to spare and takes a second pass with k the
mean (the corrected two-pass algorithm).

Shapes: x, y, dout, dx (N, C, H, W); weight (γ), bias (β), mean, var (C,), or weight and bias
None. Arrays of another dtype than float32 and float64 go to ``norm_loops``.
"""
import numpy as np
from numba import prange

from . import norm_loops, workspace
from .jit import COMPILED_DTYPES, FMA, SUM, Fallback, kernel

_PARALLEL_SIZE = 1 << 15     # below this many elements one thread is faster than waking two


def _version(kernel, size):
    return kernel if size >= _PARALLEL_SIZE else kernel.run_serial


# The kernels see every array (N, C, H, W) as (N, C, H·W) and index it flat: plane nc
# (image nc // C, channel nc % C) is the run nc·H·W .. (nc + 1)·H·W, so a plane of 2×2 costs its
# four elements, not a view and two integer divisions (n, c) per plane. Measured on 2 threads:
# the per-plane sums of resnet_small's (64, 256, 2, 2) 0.057 ms indexed [n, c, i], 0.029 flat.


@kernel(parallel=True, fastmath=SUM)
def _plane_sums(x, shift, sums, squares):
    """x (N, C, H·W), shift (C,) float64 -> sums, squares (N, C) float64: Σ(x − shift[c]) and
    Σ(x − shift[c])² over each plane."""
    N, C, HW = x.shape
    X, S, Q = x.reshape(x.size), sums.reshape(sums.size), squares.reshape(squares.size)
    u_HW = np.uint64(HW)
    for nc in prange(N * C):
        k = shift[nc % C]
        at = np.uint64(nc) * u_HW
        s, q = 0.0, 0.0
        for i in range(u_HW):
            d = np.float64(X[at + i]) - k
            s += d
            q += d * d
        S[nc] = s
        Q[nc] = q


@kernel(parallel=True, fastmath=FMA)
def _normalise(x, mean, inv_std, weight, bias, y, relu):
    """y = (x − mean)·inv_std·γ + β per channel, then max(y, 0) with ``relu`` (the ReLU after
    the layer, applied to each value as it is written: the same bits as a ReLU pass over the
    whole output afterwards); x, y (N, C, H·W), the rest (C,)."""
    N, C, HW = x.shape
    X, Y = x.reshape(x.size), y.reshape(y.size)
    u_HW = np.uint64(HW)
    zero = y.dtype.type(0)
    for nc in prange(N * C):
        c = nc % C
        m, s, g, b = mean[c], inv_std[c], weight[c], bias[c]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            v = (X[at + i] - m) * s * g + b
            # NaN is not <= 0 and stays; every value is stored (``clip_at_zero``)
            Y[at + i] = zero if relu and v <= zero else v


@kernel(parallel=True, fastmath=SUM)
def _plane_gradient_sums(dout, x, mean, inv_std, sums, products):
    """dout, x (N, C, H·W), mean and inv_std (C,) -> sums, products (N, C) float64: Σdout
    and Σdout·x_hat over each plane, x_hat = (x − mean)·inv_std as the forward pass made it."""
    N, C, HW = x.shape
    D, X = dout.reshape(dout.size), x.reshape(x.size)
    S, P = sums.reshape(sums.size), products.reshape(products.size)
    u_HW = np.uint64(HW)
    for nc in prange(N * C):
        c = nc % C
        m, s = mean[c], inv_std[c]
        at = np.uint64(nc) * u_HW
        total, dot = 0.0, 0.0
        for i in range(u_HW):
            x_hat = (X[at + i] - m) * s
            d = np.float64(D[at + i])
            total += d
            dot += d * np.float64(x_hat)
        S[nc] = total
        P[nc] = dot


@kernel(parallel=True, fastmath=FMA)
def _input_gradient(dout, x, mean, inv_std, scale, mean_dout, mean_dout_x_hat, dx):
    """dx = scale·(dout − mean_dout − x_hat·mean_dout_x_hat) per channel, scale = γ·inv_std;
    dout, x, dx (N, C, H·W), the rest (C,)."""
    N, C, HW = x.shape
    D, X, G = dout.reshape(dout.size), x.reshape(x.size), dx.reshape(dx.size)
    u_HW = np.uint64(HW)
    for nc in prange(N * C):
        c = nc % C
        m, s, a, md, mdx = mean[c], inv_std[c], scale[c], mean_dout[c], mean_dout_x_hat[c]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            x_hat = (X[at + i] - m) * s
            G[at + i] = a * (D[at + i] - md - x_hat * mdx)


@kernel(parallel=True)
def _scale(dout, scale, dx):
    """dx = dout·scale per channel (the statistics were constants); dout, dx (N, C, H·W)."""
    N, C, HW = dout.shape
    D, G = dout.reshape(dout.size), dx.reshape(dx.size)
    u_HW = np.uint64(HW)
    for nc in prange(N * C):
        a = scale[nc % C]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            G[at + i] = D[at + i] * a


def _planes(a):
    """(N, C, H, W) -> the view (N, C, H·W) the kernels take (a C-contiguous array)."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


def _channel_sums(kernel, *arrays):
    """Run a plane-sums kernel on arrays (N, C, H, W) (+ (C,) ones) -> two sums (C,) float64,
    the N planes of each channel added in order of n (the same for any number of threads)."""
    N, C = arrays[0].shape[:2]
    first, second = np.empty((N, C)), np.empty((N, C))
    arrays = [_planes(a) if a.ndim == 4 else a for a in arrays]
    _version(kernel, arrays[0].size)(*arrays, first, second)
    return first.sum(axis=0), second.sum(axis=0)


def _affine(weight, bias, C, dtype):
    """γ and β as arrays of ``dtype`` (C,): ones and zeros without affine parameters."""
    if weight is None:
        return np.ones(C, dtype), np.zeros(C, dtype)
    return weight.astype(dtype, copy=False), bias.astype(dtype, copy=False)


def _inv_std(var, eps, dtype):
    """1/sqrt(var + eps) from float64 var (C,), rounded once to ``dtype``."""
    return (1 / np.sqrt(np.asarray(var, np.float64) + eps)).astype(dtype)


def _apply(x, mean, inv_std, weight, bias, relu=False):
    """y (N, C, H, W) = (x − mean)·inv_std·γ + β [then max(y, 0)]."""
    y = workspace.empty_like(x)
    gamma, beta = _affine(weight, bias, x.shape[1], x.dtype)
    _version(_normalise, x.size)(_planes(x), mean, inv_std, gamma, beta, _planes(y), relu)
    return y


def forward_train(x, weight, bias, eps, relu=False):
    """Normalise with the batch's statistics.

    x (N, C, H, W), weight and bias (C,) or None, eps > 0 -> (y (N, C, H, W), mean (C,),
    var (C,), cache), mean and var (biased: Σ(x − mean)²/n) in x's dtype. The cache keeps x.
    relu: y = max(y, 0), the ReLU after the layer (``layers.fusion``); the cache is the same.
    """
    if x.dtype not in COMPILED_DTYPES:
        y, mean, var, cache = norm_loops.forward_train(x, weight, bias, eps, relu)
        return y, mean, var, Fallback((cache,))
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    count = N * H * W
    shift = x[0, :, 0, 0].astype(np.float64)
    passes = 2 if x.dtype == np.float64 else 1
    for _ in range(passes):
        sums, squares = _channel_sums(_plane_sums, x, shift)
        mean = shift + sums / count
        var = np.maximum(squares / count - (sums / count) ** 2, 0)
        shift = mean
    inv_std = _inv_std(var, eps, x.dtype)
    mean = mean.astype(x.dtype)
    y = _apply(x, mean, inv_std, weight, bias, relu)
    return y, mean, var.astype(x.dtype), (x, mean, inv_std, True)


def forward_eval(x, mean, var, weight, bias, eps, relu=False):
    """Normalise with given statistics (the running ones), constants for backward.

    x (N, C, H, W), mean and var (C,), weight and bias (C,) or None -> (y (N, C, H, W), cache);
    relu as in ``forward_train``.
    """
    if x.dtype not in COMPILED_DTYPES:
        y, cache = norm_loops.forward_eval(x, mean, var, weight, bias, eps, relu)
        return y, Fallback((cache,))
    x = np.ascontiguousarray(x)
    inv_std = _inv_std(var, eps, x.dtype)
    mean = np.array(mean, x.dtype)          # a copy: the running mean moves in place
    return _apply(x, mean, inv_std, weight, bias, relu), (x, mean, inv_std, False)


def saved_for_backward(cache):
    """The cache of a forward pass -> (x_hat (N, C, H, W), inv_std (C,), batch): batch True
    when the forward pass used the batch's statistics. x_hat is computed here, as the
    forward pass computed it."""
    if isinstance(cache, Fallback):
        return norm_loops.saved_for_backward(cache[0])
    x, mean, inv_std, batch = cache
    return _apply(x, mean, inv_std, None, None), inv_std, batch


def backward(dout, cache, weight):
    """dout (N, C, H, W), the cache of the forward pass, weight (C,) or None ->
    (dx (N, C, H, W), dweight (C,), dbias (C,)); dweight and dbias None without weight.

    With batch statistics: dx = γ·inv_std·(dout − mean(dout) − x_hat·mean(dout·x_hat)), the
    means over (N, H, W) (``norm_loops.backward`` with γ taken out of the means); with given
    statistics dx = γ·inv_std·dout. dweight = Σdout·x_hat, dbias = Σdout.
    """
    if isinstance(cache, Fallback):
        return norm_loops.backward(dout, cache[0], weight)
    x, mean, inv_std, batch = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    N, C, H, W = x.shape
    gamma = np.ones(C, x.dtype) if weight is None else weight.astype(x.dtype, copy=False)
    scale = gamma * inv_std
    dx = workspace.empty_like(x)
    if batch or weight is not None:
        total, dot = _channel_sums(_plane_gradient_sums, dout, x, mean, inv_std)
    if batch:
        count = N * H * W
        _version(_input_gradient, x.size)(_planes(dout), _planes(x), mean, inv_std, scale,
                                         (total / count).astype(x.dtype),
                                         (dot / count).astype(x.dtype), _planes(dx))
    else:
        _version(_scale, x.size)(_planes(dout), scale, _planes(dx))
    if weight is None:
        return dx, None, None
    return dx, dot.astype(x.dtype), total.astype(x.dtype)
