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
from .jit import COMPILED_DTYPES, FMA, SUM, Fallback, helper, kernel

_PARALLEL_SIZE = 1 << 15     # below this many elements one thread is faster than waking two


def _version(kernel, size):
    return kernel if size >= _PARALLEL_SIZE else kernel.run_serial


# The kernels see every array (N, C, H, W) as (N, C, H·W) and index it flat: plane nc
# (image nc // C, channel nc % C) is the run nc·H·W .. (nc + 1)·H·W, so a plane of 2×2 costs its
# four elements, not a view and two integer divisions (n, c) per plane. Measured on 2 threads:
# the per-plane sums of resnet_small's (64, 256, 2, 2) 0.057 ms indexed [n, c, i], 0.029 flat.
# The planes go in ``_SPANS`` runs of consecutive planes, one per prange turn, each run's
# channel counted along (``_span``) rather than nc % C per plane: an integer division per plane
# (Intel Xeon, 2 threads, (64, 256, 2, 2): sums 28 -> 22 µs, normalising 35 -> 22 µs).
# ``forward_train`` and ``backward`` are each one compiled call: their Python and NumPy around
# the kernels (a dozen small operations on (C,) arrays) took as long as the kernels on such
# planes (forward 80 -> 68 µs, and 38 -> 29 µs on (64, 8, 16, 16)).
_SPANS = 64


@helper(inline="always")
def _span(k, spans, planes, C):
    """(first, past the last, channel of the first) of run k of ``spans`` over ``planes``."""
    first = k * planes // spans
    return first, (k + 1) * planes // spans, first % C


@helper(fastmath=SUM)
def _plane_sums(X, shift, S, Q, first, last, c, C, u_HW):
    """S[nc], Q[nc] (float64) := Σ(x − shift[c]) and Σ(x − shift[c])² over each plane nc of
    first .. last − 1 (c the channel of the first) of X (N·C·H·W,)."""
    for nc in range(first, last):
        k = shift[c]
        at = np.uint64(nc) * u_HW
        s, q = 0.0, 0.0
        for i in range(u_HW):
            d = np.float64(X[at + i]) - k
            s += d
            q += d * d
        S[nc] = s
        Q[nc] = q
        c = c + 1 if c + 1 < C else 0


@helper(fastmath=FMA)
def _normalise_planes(X, mean, inv_std, weight, bias, Y, relu, first, last, c, C, u_HW):
    """Y := (X − mean)·inv_std·γ + β over the planes first .. last − 1, then max(·, 0) with
    ``relu`` (the ReLU after the layer, applied to each value as it is written: the same bits
    as a ReLU pass over the whole output afterwards)."""
    zero = Y.dtype.type(0)
    for nc in range(first, last):
        m, s, g, b = mean[c], inv_std[c], weight[c], bias[c]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            v = (X[at + i] - m) * s * g + b
            # NaN is not <= 0 and stays; every value is stored (``clip_at_zero``)
            Y[at + i] = zero if relu and v <= zero else v
        c = c + 1 if c + 1 < C else 0


@helper()
def _channel_totals(per_plane, C, totals):
    """totals[c] (float64) := Σ over n of per_plane[n·C + c], added in order of n as NumPy's
    ``sum(axis=0)`` of (N, C) adds its rows (the first row, then each next one)."""
    totals[:] = per_plane[:C]
    for n in range(1, per_plane.size // C):
        for c in range(C):
            totals[c] += per_plane[n * C + c]


@kernel(parallel=True)
def _forward_train(x, count, eps, passes, weight, bias, relu, y, mean, var, inv_std, sums,
                   squares, totals, shift):
    """The whole of ``forward_train`` in one call (its Python was half the time on small
    planes): ``passes`` times, the per-plane shifted sums, their totals per channel in order of
    n, mean = shift + Σ/count and var = max(Σ²/count − (Σ/count)², 0) in float64 (NumPy's
    operations, in its order), shift = mean; then inv_std = 1/sqrt(var + eps), and y the
    normalised x. x, y (N, C, H·W); weight, bias (C,) in x's dtype; mean, var, inv_std (C,)
    out, in x's dtype; sums, squares (N·C,), totals (2, C), shift (C,) float64 scratch."""
    N, C, HW = x.shape
    X, Y = x.reshape(x.size), y.reshape(y.size)
    u_HW = np.uint64(HW)
    spans = min(_SPANS, N * C)
    for c in range(C):
        shift[c] = np.float64(x[0, c, 0])
    mean64, var64 = totals[0], totals[1]
    for _ in range(passes):
        for span in prange(spans):
            first, last, c = _span(span, spans, N * C, C)
            _plane_sums(X, shift, sums, squares, first, last, c, C, u_HW)
        _channel_totals(sums, C, mean64)
        _channel_totals(squares, C, var64)
        for c in range(C):
            average = mean64[c] / count
            v = var64[c] / count - average * average
            mean64[c] = shift[c] + average
            var64[c] = v if v >= 0.0 or v != v else 0.0      # np.maximum(v, 0)
            shift[c] = mean64[c]
    for c in range(C):
        inv_std[c] = 1 / np.sqrt(var64[c] + eps)
        mean[c] = mean64[c]
        var[c] = var64[c]
    for span in prange(spans):
        first, last, c = _span(span, spans, N * C, C)
        _normalise_planes(X, mean, inv_std, weight, bias, Y, relu, first, last, c, C, u_HW)


@kernel(parallel=True)
def _normalise(x, mean, inv_std, weight, bias, y, relu):
    """y = (x − mean)·inv_std·γ + β per channel, then max(y, 0) with ``relu``; x, y (N, C,
    H·W), the rest (C,)."""
    N, C, HW = x.shape
    spans = min(_SPANS, N * C)
    for span in prange(spans):
        first, last, c = _span(span, spans, N * C, C)
        _normalise_planes(x.reshape(x.size), mean, inv_std, weight, bias, y.reshape(y.size),
                          relu, first, last, c, C, np.uint64(HW))


@helper(inline="always")
def _relu_gradient(D, K, clipping, i):
    """dout[i], or where ``clipping`` dout[i] if K[i] (the ReLU's output) > 0 else 0: the
    gradient of the ReLU after the layer, as elementwise_numba.relu_backward makes it."""
    d = D[i]
    if clipping:
        d = d if K[i] > D.dtype.type(0) else D.dtype.type(0)
    return d


@helper(fastmath=SUM)
def _gradient_sums(D, K, clipping, X, mean, inv_std, S, P, first, last, c, C, u_HW):
    """S[nc], P[nc] (float64) := Σdout and Σdout·x_hat over the planes first .. last − 1,
    x_hat = (x − mean)·inv_std as the forward pass made it (dout: ``_relu_gradient``)."""
    for nc in range(first, last):
        m, s = mean[c], inv_std[c]
        at = np.uint64(nc) * u_HW
        total, dot = 0.0, 0.0
        for i in range(u_HW):
            x_hat = (X[at + i] - m) * s
            d = np.float64(_relu_gradient(D, K, clipping, at + i))
            total += d
            dot += d * np.float64(x_hat)
        S[nc] = total
        P[nc] = dot
        c = c + 1 if c + 1 < C else 0


@helper(fastmath=FMA)
def _input_gradient(D, K, clipping, X, mean, inv_std, scale, mean_dout, mean_dout_x_hat, G,
                    first, last, c, C, u_HW):
    """G := scale·(dout − mean_dout − x_hat·mean_dout_x_hat) over the planes first .. last − 1,
    scale = γ·inv_std (dout: ``_relu_gradient``)."""
    for nc in range(first, last):
        m, s, a, md, mdx = mean[c], inv_std[c], scale[c], mean_dout[c], mean_dout_x_hat[c]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            x_hat = (X[at + i] - m) * s
            G[at + i] = a * (_relu_gradient(D, K, clipping, at + i) - md - x_hat * mdx)
        c = c + 1 if c + 1 < C else 0


@helper(inline="always")
def _scale(D, K, clipping, scale, G, first, last, c, C, u_HW):
    """G := dout·scale over the planes first .. last − 1 (the statistics were constants; dout:
    ``_relu_gradient``)."""
    for nc in range(first, last):
        a = scale[c]
        at = np.uint64(nc) * u_HW
        for i in range(u_HW):
            G[at + i] = _relu_gradient(D, K, clipping, at + i) * a
        c = c + 1 if c + 1 < C else 0


@kernel(parallel=True)
def _backward(dout, clip, clipping, x, mean, inv_std, gamma, batch, sums_needed, count, dx,
              dweight, dbias, sums, products, totals, scale, means):
    """The whole of ``backward`` in one call: when ``sums_needed``, dbias = Σdout and dweight =
    Σdout·x_hat per channel (per plane in float64, the planes of a channel added in order of
    n, then rounded to x's dtype); scale = γ·inv_std; with batch statistics dx =
    scale·(dout − Σdout/count − x_hat·Σdout·x_hat/count), else dx = scale·dout. dout, x, dx
    (N, C, H·W); the rest (C,) in x's dtype; sums, products (N·C,), totals (2, C) float64 and
    means (2, C) in x's dtype scratch. With ``clipping``, dout is first the ReLU's gradient
    where clip (N, C, H·W), the layer's clipped output, is > 0 (``_relu_gradient``)."""
    N, C, HW = x.shape
    D, X, G = dout.reshape(dout.size), x.reshape(x.size), dx.reshape(dx.size)
    K = clip.reshape(clip.size)
    u_HW = np.uint64(HW)
    spans = min(_SPANS, N * C)
    total, dot = totals[0], totals[1]
    if sums_needed:
        for span in prange(spans):
            first, last, c = _span(span, spans, N * C, C)
            _gradient_sums(D, K, clipping, X, mean, inv_std, sums, products, first, last, c,
                           C, u_HW)
        _channel_totals(sums, C, total)
        _channel_totals(products, C, dot)
        for c in range(C):
            dbias[c] = total[c]
            dweight[c] = dot[c]
    for c in range(C):
        scale[c] = gamma[c] * inv_std[c]
    if batch:
        mean_dout, mean_dout_x_hat = means[0], means[1]
        for c in range(C):
            mean_dout[c] = total[c] / count
            mean_dout_x_hat[c] = dot[c] / count
        for span in prange(spans):
            first, last, c = _span(span, spans, N * C, C)
            _input_gradient(D, K, clipping, X, mean, inv_std, scale, mean_dout,
                            mean_dout_x_hat, G, first, last, c, C, u_HW)
    else:
        for span in prange(spans):
            first, last, c = _span(span, spans, N * C, C)
            _scale(D, K, clipping, scale, G, first, last, c, C, u_HW)


def _planes(a):
    """(N, C, H, W) -> the view (N, C, H·W) the kernels take (a C-contiguous array)."""
    return a.reshape(a.shape[0], a.shape[1], a.shape[2] * a.shape[3])


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
    The variance of float32 data comes from one pass of shifted sums (the shift a value of the
    channel), of float64 data from a second pass shifted by the first one's mean.
    """
    if x.dtype not in COMPILED_DTYPES:
        y, mean, var, cache = norm_loops.forward_train(x, weight, bias, eps, relu)
        return y, mean, var, Fallback((cache,))
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    gamma, beta = _affine(weight, bias, C, x.dtype)
    y = workspace.empty_like(x)
    mean, var, inv_std = np.empty(C, x.dtype), np.empty(C, x.dtype), np.empty(C, x.dtype)
    _version(_forward_train, x.size)(
        _planes(x), N * H * W, float(eps), 2 if x.dtype == np.float64 else 1, gamma, beta, relu,
        _planes(y), mean, var, inv_std, np.empty(N * C), np.empty(N * C), np.empty((2, C)),
        np.empty(C))
    return y, mean, var, (x, mean, inv_std, True)


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


def backward(dout, cache, weight, clip=None):
    """dout (N, C, H, W), the cache of the forward pass, weight (C,) or None ->
    (dx (N, C, H, W), dweight (C,), dbias (C,)); dweight and dbias None without weight.

    With batch statistics: dx = γ·inv_std·(dout − mean(dout) − x_hat·mean(dout·x_hat)), the
    means over (N, H, W) (``norm_loops.backward`` with γ taken out of the means); with given
    statistics dx = γ·inv_std·dout. dweight = Σdout·x_hat, dbias = Σdout. ``clip``: the
    layer's output, clipped by the ReLU after it (``layers.fusion``): dout where clip > 0,
    else 0, first, as each value is read (the ReLU's gradient, one pass fewer).
    """
    if isinstance(cache, Fallback):
        return norm_loops.backward(dout, cache[0], weight, clip)
    x, mean, inv_std, batch = cache
    dout = np.ascontiguousarray(dout, dtype=x.dtype)
    N, C, H, W = x.shape
    gamma = np.ones(C, x.dtype) if weight is None else weight.astype(x.dtype, copy=False)
    dx = workspace.empty_like(x)
    dweight, dbias = np.empty(C, x.dtype), np.empty(C, x.dtype)
    clipping = clip is not None
    clip = np.ascontiguousarray(clip, dtype=x.dtype) if clipping else dout
    _version(_backward, x.size)(
        _planes(dout), _planes(clip), clipping, _planes(x), mean, inv_std, gamma, batch,
        batch or weight is not None,
        N * H * W, _planes(dx), dweight, dbias, np.empty(N * C), np.empty(N * C),
        np.empty((2, C)), np.empty(C, x.dtype), np.empty((2, C), x.dtype))
    if weight is None:
        return dx, None, None
    return dx, dweight, dbias
