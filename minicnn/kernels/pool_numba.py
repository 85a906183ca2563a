"""Pooling compiled with Numba: the loops of ``pool_loops``, run as machine code.

Same functions, signatures and results as ``pool_loops`` and ``pool_fast``. The loops are
those of the definition, with two changes that make them fast:

* one compiled loop nest per (image, channel) plane, and the planes run in parallel
  (``prange`` over N·C: the planes never write to the same memory, so no locks);
* max pooling remembers where each maximum was while it searches (the argmax is fused into
  the forward pass), so the backward pass is one scatter.

Windows are clipped to the real rows and columns, as in ``pool_loops``: no padded copy.
Shapes: x (N, C, H, W), kernel (kh, kw), stride (sh, sw), pads ((top, bottom), (left, right)),
out (N, C, H_out, W_out). float32 and float64 each get their own compiled version; the first
call of each compiles (cached on disk by ``cache=True``, so later processes load it).
"""
import os
import sys

import numpy as np
from numba import njit, prange

_noticed = False


def notice_once(kernel):
    """Say once per process, on stderr, that Numba is compiling (a first run takes seconds).

    Nothing is said when this kernel is already compiled in this process or its compiled code
    is in Numba's on-disk cache (then the first call only loads it).
    """
    global _noticed
    if _noticed or kernel.signatures:
        return
    try:
        cached = os.path.exists(kernel._cache._cache_file._index_path)
    except AttributeError:   # Numba's cache internals moved: better one line too many
        cached = False
    if not cached:
        print("compiling kernels (first run only)", file=sys.stderr, flush=True)
        _noticed = True


def _output_size(size, kernel, stride, pad):
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _geometry(x_shape, kernel, stride, pads):
    H, W = x_shape[2:]
    H_out = _output_size(H, kernel[0], stride[0], pads[0])
    W_out = _output_size(W, kernel[1], stride[1], pads[1])
    return (H_out, W_out, int(kernel[0]), int(kernel[1]), int(stride[0]), int(stride[1]),
            int(pads[0][0]), int(pads[1][0]))


# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _max_forward(x, out, winner, kh, kw, sh, sw, top, left):
    N, C, H, W = x.shape
    H_out, W_out = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(H_out):
            h0 = i * sh - top
            h_lo, h_hi = max(h0, 0), min(h0 + kh, H)
            for j in range(W_out):
                w0 = j * sw - left
                w_lo, w_hi = max(w0, 0), min(w0 + kw, W)
                best_h, best_w = h_lo, w_lo
                best = x[n, c, h_lo, w_lo]
                for h in range(h_lo, h_hi):
                    for w in range(w_lo, w_hi):
                        # strictly greater: on a tie the first maximum keeps the gradient
                        if x[n, c, h, w] > best:
                            best, best_h, best_w = x[n, c, h, w], h, w
                out[n, c, i, j] = best
                winner[n, c, i, j] = best_h * W + best_w


@njit(cache=True, parallel=True)
def _max_backward(dout, winner, dx):
    N, C, H_out, W_out = dout.shape
    W = dx.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(H_out):
            for j in range(W_out):
                k = winner[n, c, i, j]
                dx[n, c, k // W, k % W] += dout[n, c, i, j]


def max_forward(x, kernel, stride, pads):
    """Largest element of each window. x (N, C, H, W) -> out (N, C, H_out, W_out); the cache
    keeps each maximum's flat position h·W + w in its plane."""
    notice_once(_max_forward)
    x = np.ascontiguousarray(x)
    H_out, W_out, kh, kw, sh, sw, top, left = _geometry(x.shape, kernel, stride, pads)
    out = np.empty(x.shape[:2] + (H_out, W_out), dtype=x.dtype)
    winner = np.empty(out.shape, dtype=np.int64)
    _max_forward(x, out, winner, kh, kw, sh, sw, top, left)
    return out, (x.shape, winner)


def max_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each dout goes to its window's maximum."""
    x_shape, winner = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    _max_backward(np.ascontiguousarray(dout), winner, dx)
    return dx


# ----------------------------------------------------------------------------------------
# sum and average pooling
# ----------------------------------------------------------------------------------------
@njit(cache=True, parallel=True)
def _sum_forward(x, divisor, out, zero, kh, kw, sh, sw, top, left):
    N, C, H, W = x.shape
    H_out, W_out = out.shape[2], out.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(H_out):
            h0 = i * sh - top
            for j in range(W_out):
                w0 = j * sw - left
                total = zero   # of x's dtype: float32 sums stay float32, as in pool_loops
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        total += x[n, c, h, w]
                out[n, c, i, j] = total / divisor[i, j]


@njit(cache=True, parallel=True)
def _sum_backward(dout, divisor, dx, kh, kw, sh, sw, top, left):
    N, C, H_out, W_out = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for i in range(H_out):
            h0 = i * sh - top
            for j in range(W_out):
                w0 = j * sw - left
                share = dout[n, c, i, j] / divisor[i, j]
                for h in range(max(h0, 0), min(h0 + kh, H)):
                    for w in range(max(w0, 0), min(w0 + kw, W)):
                        dx[n, c, h, w] += share


def _real_counts(size, kernel, stride, pad, n_out):
    """How many real (non-padding) elements each of the n_out windows along one axis covers."""
    start = np.arange(n_out) * stride - pad[0]
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def _divided_sums(x, kernel, stride, pads, divisor_of):
    notice_once(_sum_forward)
    x = np.ascontiguousarray(x)
    geometry = _geometry(x.shape, kernel, stride, pads)
    H_out, W_out = geometry[:2]
    divisor = np.ascontiguousarray(divisor_of(H_out, W_out), dtype=x.dtype)
    out = np.empty(x.shape[:2] + (H_out, W_out), dtype=x.dtype)
    _sum_forward(x, divisor, out, x.dtype.type(0), *geometry[2:])
    return out, (x.shape, kernel, stride, pads, divisor)


def sum_forward(x, kernel, stride, pads):
    """Sum of each window (padding adds 0). x (N, C, H, W) -> out (N, C, H_out, W_out)."""
    return _divided_sums(x, kernel, stride, pads, lambda H_out, W_out: np.ones((H_out, W_out)))


def sum_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): every element of a window gets its dout."""
    return avg_backward(dout, cache)


def avg_forward(x, kernel, stride, pads, count_include_pad):
    """Mean of each window: its sum divided by kh·kw (``count_include_pad``, PyTorch's default)
    or by the number of real elements under it (Keras' "same").

    x (N, C, H, W) -> out (N, C, H_out, W_out); the cache keeps the divisors (H_out, W_out).
    """
    def divisor_of(H_out, W_out):
        if count_include_pad:
            return np.full((H_out, W_out), kernel[0] * kernel[1])
        rows = _real_counts(x.shape[2], kernel[0], stride[0], pads[0], H_out)
        cols = _real_counts(x.shape[3], kernel[1], stride[1], pads[1], W_out)
        return np.outer(rows, cols)
    return _divided_sums(x, kernel, stride, pads, divisor_of)


def avg_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each window spreads dout / divisor over its
    real elements (the padding's share goes nowhere); overlapping windows add up."""
    x_shape, kernel, stride, pads, divisor = cache
    dx = np.zeros(x_shape, dtype=dout.dtype)
    geometry = _geometry(x_shape, kernel, stride, pads)
    _sum_backward(np.ascontiguousarray(dout), divisor.astype(dout.dtype), dx, *geometry[2:])
    return dx
