"""Pooling compiled with Numba: the loops of ``pool_loops``, run as machine code.

Same functions, signatures and results as ``pool_loops`` and ``pool_fast``. The loops are
those of the definition, with two changes that make them fast:

* one compiled loop nest per (image, channel) plane, and the planes run in parallel
  (``prange`` over N·C: the planes never write to the same memory, so no locks);
* max pooling remembers where each maximum was while it searches (the argmax is fused into
  the forward pass), so the backward pass is one scatter; under ``no_grad`` it does not
  (``need_cache=False``).

Windows are clipped to the real rows and columns, as in ``pool_loops``: no padded copy.
Shapes: x (N, C, H, W), kernel (KH, KW), stride (stride_h, stride_w),
pads ((pad_top, pad_bottom), (pad_left, pad_right)),
out (N, C, H_out, W_out). float32 and float64 each get their own compiled version; the first
call of each compiles (cached on disk by ``cache=True``, so later processes load it).
"""
import numpy as np
from numba import prange

from . import elementwise_numba, pool_fast, workspace
from .jit import COMPILED_DTYPES, Fallback, helper, kernel
from .lanes_numba import MASKED_STORES, spread_rows, window_max_row


#: windows in whole vector instructions (``lanes_numba``) where masked stores are fast (AVX-512),
#: else the loops: the same values (the tests set it either way)
VECTOR_RUNS = MASKED_STORES


def _output_size(size, kernel, stride, pad):
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _geometry(x_shape, kernel, stride, pads):
    H, W = x_shape[2:]
    H_out = _output_size(H, kernel[0], stride[0], pads[0])
    W_out = _output_size(W, kernel[1], stride[1], pads[1])
    return (H_out, W_out, int(kernel[0]), int(kernel[1]), int(stride[0]), int(stride[1]),
            int(pads[0][0]), int(pads[1][0]))


@helper()
def _bounds(n_out, kernel, stride, pad, size):
    """lo, hi (n_out,): the real rows (or columns) lo .. hi − 1 that each window covers."""
    lo = np.empty(n_out, dtype=np.int64)
    hi = np.empty(n_out, dtype=np.int64)
    for i in range(n_out):
        start = i * stride - pad
        lo[i], hi[i] = max(start, 0), min(start + kernel, size)
    return lo, hi


@helper()
def _inside(W_out, KW, stride_w, pad_left, W):
    """The windows j_lo .. j_hi − 1 whose columns are all real (no padding, no clipping)."""
    j_lo = min((pad_left + stride_w - 1) // stride_w, W_out)
    j_hi = max(min(W_out, (W + pad_left - KW) // stride_w + 1), j_lo)
    return j_lo, j_hi


# The generic kernels visit a window's elements in the order of pool_loops (rows, then columns:
# row-major), so that sums and ties come out bit for bit the same. Sum pooling changes the
# nesting: for one output row i and one window row h, the loop over the output columns j is
# innermost and free of bounds arithmetic; windows that reach into the padding take the careful
# path, one by one. Max pooling keeps the tiny loop per output instead, with the maximum (and
# its position) in registers: the running maximum in memory, read and written once per tap,
# with a slice per window row, took 5 times longer for resnet's 3×3 stride-2 pooling.
#
# The 2×2 window with stride 2 and no padding (every zoo model's pooling) has kernels of its
# own, ``_*_2x2``: with the window's size known to the compiler, the four elements are
# read into registers and the loop over j has no inner loop at all: 2 to 4 times faster,
# measured on (64, 64, 24, 24) and (64, 6, 28, 28).

# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------
@kernel(parallel=True)
def _max_forward(x, out, winner, KH, KW, stride_h, stride_w, pad_top, pad_left, vector_runs):
    """out (N, C, H_out, W_out): each window's maximum; winner: its flat position h·W + w in
    its plane (none kept when winner has no elements: prediction). The window's first real
    element, then row by row, strictly greater: on a tie the first maximum keeps the gradient.
    The maximum and its position stay in registers until the window is done. With
    ``vector_runs`` and a stride of 2 along the rows, the windows of a row that lie inside the
    columns go 16 at a time (``lanes_numba.window_max_row``: resnet's 3×3 stride-2 pooling of
    500 images of 8 × 32 × 32, 3.7 -> 1.8 ms on 2 threads of an Intel Xeon), the others one
    by one."""
    N, C, H, W = x.shape
    H_out, W_out = out.shape[2], out.shape[3]
    row_lo, row_hi = _bounds(H_out, KH, stride_h, pad_top, H)
    col_lo, col_hi = _bounds(W_out, KW, stride_w, pad_left, W)
    j_lo, j_hi = _inside(W_out, KW, stride_w, pad_left, W)
    if not (vector_runs and stride_w == 2):
        j_lo = j_hi = W_out
    u_W = np.uint64(W)
    keep = winner.size > 0
    flat_x, flat_out = x.reshape(x.size), out.reshape(out.size)
    flat_winner = winner.reshape(winner.size)
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        plane = x[n, c].reshape(H * W)
        for i in range(H_out):
            if j_hi > j_lo:
                first = row_lo[i] * W + col_lo[j_lo]
                window_max_row(flat_x, nc * H * W + first, W, row_hi[i] - row_lo[i], KW,
                               j_hi - j_lo, flat_out, (nc * H_out + i) * W_out + j_lo,
                               flat_winner, first, keep)
            for j in range(W_out):
                if j_lo <= j < j_hi:
                    continue
                at = np.uint64(row_lo[i]) * u_W + np.uint64(col_lo[j])
                best = plane[at]
                for h in range(np.uint64(row_lo[i]), np.uint64(row_hi[i])):
                    for w in range(np.uint64(col_lo[j]), np.uint64(col_hi[j])):
                        if plane[h * u_W + w] > best:
                            best, at = plane[h * u_W + w], h * u_W + w
                out[n, c, i, j] = best
                if keep:
                    winner[n, c, i, j] = at


@helper(inline="always")
def max_2x2_plane(x, out, winner, keep):
    """out (H_out, W_out) := the maximum of each 2×2, stride-2 window of the plane x (H, W);
    with ``keep``, winner (H_out, W_out) := its flat position h·W + w in x (else winner is not
    touched). Row-major, strictly greater: on a tie the first maximum keeps the gradient."""
    W = x.shape[1]
    for i in range(out.shape[0]):
        r0, r1 = x[2 * i], x[2 * i + 1]
        for j in range(out.shape[1]):
            best, at = r0[2 * j], 2 * i * W + 2 * j
            if r0[2 * j + 1] > best:
                best, at = r0[2 * j + 1], 2 * i * W + 2 * j + 1
            if r1[2 * j] > best:
                best, at = r1[2 * j], (2 * i + 1) * W + 2 * j
            if r1[2 * j + 1] > best:
                best, at = r1[2 * j + 1], (2 * i + 1) * W + 2 * j + 1
            out[i, j] = best
            if keep:
                winner[i, j] = at


@kernel(parallel=True)
def _max_forward_2x2(x, out, winner):
    """The 2×2 stride-2 windows of _max_forward, with winners only when winner (N, C, H_out,
    W_out) has elements, else (N, C, 0, 0) (the test is the same for the whole loop: the
    compiler makes two loops of it, and the one without positions to keep vectorises)."""
    N, C = x.shape[0], x.shape[1]
    keep = winner.size > 0
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        max_2x2_plane(x[n, c], out[n, c], winner[n, c], keep)


@kernel(parallel=True)
def _max_backward(dout, winner, dx):
    N, C, H_out, W_out = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    for nc in prange(N * C):
        grad = dx[nc // C, nc % C].reshape(H * W)
        grad[:] = 0
        d = dout[nc // C, nc % C].reshape(H_out * W_out)
        at = winner[nc // C, nc % C].reshape(H_out * W_out)
        for k in range(H_out * W_out):
            grad[at[k]] += d[k]


def _is_2x2(kernel, stride, pads):
    return tuple(kernel) == (2, 2) and tuple(stride) == (2, 2) and pads == ((0, 0), (0, 0))


def max_forward(x, kernel, stride, pads, need_cache=True):
    """Largest element of each window. x (N, C, H, W) -> out (N, C, H_out, W_out); the cache
    keeps each maximum's flat position h·W + w in its plane. With ``need_cache=False``
    (prediction) no positions are kept and the cache is None."""
    if x.dtype not in COMPILED_DTYPES:
        out, cache = pool_fast.max_forward(x, kernel, stride, pads)
        return out, Fallback((cache,)) if need_cache else None
    x = np.ascontiguousarray(x)
    geometry = _geometry(x.shape, kernel, stride, pads)
    H_out, W_out, KH, KW, stride_h, stride_w, pad_top, pad_left = geometry
    out = workspace.empty(x.shape[:2] + (H_out, W_out), x.dtype)
    if not need_cache:
        none = np.empty(x.shape[:2] + (0, 0), dtype=np.int64)
        if _is_2x2(kernel, stride, pads):
            _max_forward_2x2(x, out, none)
        else:
            _max_forward(x, out, none, KH, KW, stride_h, stride_w, pad_top, pad_left,
                         VECTOR_RUNS)
        return out, None
    winner = workspace.empty(out.shape, np.int64)
    if _is_2x2(kernel, stride, pads):
        _max_forward_2x2(x, out, winner)
    else:
        _max_forward(x, out, winner, KH, KW, stride_h, stride_w, pad_top, pad_left,
                     VECTOR_RUNS)
    return out, (x.shape, winner)


def max_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each dout goes to its window's maximum."""
    if isinstance(cache, Fallback):
        return pool_fast.max_backward(dout, cache[0])
    x_shape, winner = cache
    dx = workspace.empty(x_shape, dout.dtype)    # zeroed plane by plane, in parallel
    _max_backward(np.ascontiguousarray(dout), winner, dx)
    return dx


# ----------------------------------------------------------------------------------------
# sum and average pooling
# ----------------------------------------------------------------------------------------
@kernel(parallel=True)
def _sum_forward(x, divisor, out, zero, KH, KW, stride_h, stride_w, pad_top, pad_left):
    N, C, H, W = x.shape
    H_out, W_out = out.shape[2], out.shape[3]
    row_lo, row_hi = _bounds(H_out, KH, stride_h, pad_top, H)
    col_lo, col_hi = _bounds(W_out, KW, stride_w, pad_left, W)
    j_lo, j_hi = _inside(W_out, KW, stride_w, pad_left, W)
    u_stride_w = np.uint64(stride_w)
    for nc in prange(N * C):
        plane = x[nc // C, nc % C].reshape(H * W)
        for i in range(H_out):
            total = out[nc // C, nc % C, i]
            total[:] = zero    # of x's dtype: float32 sums stay float32, as in pool_loops
            for h in range(row_lo[i], row_hi[i]):
                row = plane[h * W:(h + 1) * W]
                for q in range(KW):
                    src = row[j_lo * stride_w + q - pad_left:]
                    for jj in range(np.uint64(j_hi - j_lo)):
                        total[j_lo + jj] += src[jj * u_stride_w]
                for j in range(W_out):
                    if j < j_lo or j >= j_hi:
                        for w in range(col_lo[j], col_hi[j]):
                            total[j] += row[w]
            for j in range(W_out):
                total[j] = total[j] / divisor[i, j]


@helper(inline="always")
def sum_2x2_plane(x, out, divisor, zero):
    """out (H_out, W_out) := the sum of each 2×2, stride-2 window of the plane x (H, W), from
    ``zero`` in row-major order (the bits of ``pool_loops``), divided by ``divisor`` (4 for the
    mean, 1 for the sum). A convolution followed by such a pool calls it on each image's output
    while it is in the cache (``conv_numba.forward(pool="mean")``)."""
    for i in range(out.shape[0]):
        r0, r1 = x[2 * i], x[2 * i + 1]
        for j in range(out.shape[1]):
            total = (((zero + r0[2 * j]) + r0[2 * j + 1]) + r1[2 * j]) + r1[2 * j + 1]
            out[i, j] = total / divisor


@kernel(parallel=True)
def _sum_forward_2x2(x, divisor, out, zero):
    N, C = x.shape[0], x.shape[1]
    for nc in prange(N * C):
        sum_2x2_plane(x[nc // C, nc % C], out[nc // C, nc % C], divisor, zero)


@kernel(parallel=True)
def _sum_backward(dout, divisor, dx, KH, KW, stride_h, stride_w, pad_top, pad_left):
    N, C, H_out, W_out = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    row_lo, row_hi = _bounds(H_out, KH, stride_h, pad_top, H)
    col_lo, col_hi = _bounds(W_out, KW, stride_w, pad_left, W)
    # Where windows overlap along a row, an element gets several windows' shares and they
    # must be added in pool_loops' order (window by window): then the careful path does all.
    j_lo, j_hi = _inside(W_out, KW, stride_w, pad_left, W) if stride_w >= KW else (0, 0)
    u_stride_w = np.uint64(stride_w)
    for nc in prange(N * C):
        grad = dx[nc // C, nc % C].reshape(H * W)
        grad[:] = 0
        d = dout[nc // C, nc % C]
        for i in range(H_out):
            for h in range(row_lo[i], row_hi[i]):
                row = grad[h * W:(h + 1) * W]
                for q in range(KW):
                    dst = row[j_lo * stride_w + q - pad_left:]
                    for jj in range(np.uint64(j_hi - j_lo)):
                        dst[jj * u_stride_w] += d[i, j_lo + jj] / divisor[i, j_lo + jj]
            for j in range(W_out):
                if j < j_lo or j >= j_hi:
                    share = d[i, j] / divisor[i, j]
                    for h in range(row_lo[i], row_hi[i]):
                        for w in range(col_lo[j], col_hi[j]):
                            grad[h * W + w] += share


@helper(inline="always")
def spread_2x2(d, divisor, zero, clip, clipping, target, H, W, row_stride, vector_runs):
    """The gradient of ``sum_2x2_plane`` for one plane: target[r·row_stride + s] (r < H, s < W,
    target flat) := d[r // 2, s // 2] / divisor, d (H_out, W_out) the output's gradient; with
    ``clipping`` only where clip[r, s] (H, W), the output of the ReLU before the pool, is > 0
    (its gradient, as ``elementwise_numba.relu_backward``), 0 elsewhere, and 0 in the rows and
    columns no window covers. Other entries of target are not touched (``conv_direct`` spreads
    onto its grid of width row_stride > W). With ``vector_runs`` a row of shares goes
    LANES at a time (``lanes_numba.spread_rows``; d and clip contiguous), the same values."""
    H_out, W_out = d.shape
    u = np.uint64
    if 2 * H_out < H or 2 * W_out < W:
        for r in range(H):
            for s in range(W):
                target[u(r) * u(row_stride) + u(s)] = zero
    if vector_runs:
        flat_d, flat_clip = d.reshape(d.size), clip.reshape(clip.size)
        for i in range(H_out):
            spread_rows(flat_d, i * W_out, W_out, divisor, flat_clip, 2 * i * W,
                        (2 * i + 1) * W, clipping, target, u(2 * i) * u(row_stride),
                        u(2 * i + 1) * u(row_stride))
        return
    for i in range(H_out):
        r0 = target[u(2 * i) * u(row_stride):]
        r1 = target[u(2 * i + 1) * u(row_stride):]
        if clipping:
            k0, k1 = clip[2 * i], clip[2 * i + 1]
            for j in range(W_out):
                share = zero + d[i, j] / divisor
                r0[2 * j] = share if k0[2 * j] > zero else zero
                r0[2 * j + 1] = share if k0[2 * j + 1] > zero else zero
                r1[2 * j] = share if k1[2 * j] > zero else zero
                r1[2 * j + 1] = share if k1[2 * j + 1] > zero else zero
        else:
            for j in range(W_out):
                share = zero + d[i, j] / divisor     # 0 + s, as the loops: −0 → 0
                r0[2 * j] = share
                r0[2 * j + 1] = share
                r1[2 * j] = share
                r1[2 * j + 1] = share


@kernel(parallel=True)
def _sum_backward_2x2(dout, divisor, dx, zero, clip, clipping, vector_runs):
    """dx (N, C, H, W) := each dout / divisor spread over its 2×2 window; with ``clipping``,
    only where clip (N, C, H, W), the output of the ReLU before the pool, is > 0 (its gradient,
    as ``elementwise_numba.relu_backward``), 0 elsewhere: one pass over dx instead of two."""
    N, C = dout.shape[0], dout.shape[1]
    H, W = dx.shape[2], dx.shape[3]
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        spread_2x2(dout[n, c], divisor, zero, clip[n, c], clipping, dx[n, c].reshape(H * W),
                   H, W, W, vector_runs)


def two_by_two_divisor(divisor, dtype):
    """The divisor of every window of a 2×2, stride-2 pool without padding (4 for the mean, 1
    for the sum), from its divisors (H_out, W_out) as ``avg_forward``'s cache keeps them, as a
    scalar of ``dtype``."""
    return dtype.type(divisor[0, 0])


def _real_counts(size, kernel, stride, pad, n_out):
    """How many real (non-padding) elements each of the n_out windows along one axis covers."""
    start = np.arange(n_out) * stride - pad[0]
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def _divided_sums(x, kernel, stride, pads, divisor_of, numpy_version):
    if x.dtype not in COMPILED_DTYPES:
        out, cache = numpy_version()
        return out, Fallback((cache,))
    x = np.ascontiguousarray(x)
    geometry = _geometry(x.shape, kernel, stride, pads)
    H_out, W_out = geometry[:2]
    divisor = np.ascontiguousarray(divisor_of(H_out, W_out), dtype=x.dtype)
    out = workspace.empty(x.shape[:2] + (H_out, W_out), x.dtype)
    if _is_2x2(kernel, stride, pads):
        _sum_forward_2x2(x, two_by_two_divisor(divisor, x.dtype), out, x.dtype.type(0))
    else:
        _sum_forward(x, divisor, out, x.dtype.type(0), *geometry[2:])
    return out, (x.shape, kernel, stride, pads, divisor)


def sum_forward(x, kernel, stride, pads):
    """Sum of each window (padding adds 0). x (N, C, H, W) -> out (N, C, H_out, W_out)."""
    return _divided_sums(x, kernel, stride, pads, lambda H_out, W_out: np.ones((H_out, W_out)),
                         lambda: pool_fast.sum_forward(x, kernel, stride, pads))


def sum_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): every element of a window gets its dout
    (``clip``: as ``avg_backward``)."""
    return avg_backward(dout, cache, clip)


def avg_forward(x, kernel, stride, pads, count_include_pad):
    """Mean of each window: its sum divided by KH·KW (``count_include_pad``, PyTorch's default)
    or by the number of real elements under it (Keras' "same").

    x (N, C, H, W) -> out (N, C, H_out, W_out); the cache keeps the divisors (H_out, W_out).
    """
    def divisor_of(H_out, W_out):
        if count_include_pad:
            return np.full((H_out, W_out), kernel[0] * kernel[1])
        rows = _real_counts(x.shape[2], kernel[0], stride[0], pads[0], H_out)
        cols = _real_counts(x.shape[3], kernel[1], stride[1], pads[1], W_out)
        return np.outer(rows, cols)
    return _divided_sums(x, kernel, stride, pads, divisor_of, lambda: pool_fast.avg_forward(
        x, kernel, stride, pads, count_include_pad))


def avg_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each window spreads dout / divisor over its
    real elements (the padding's share goes nowhere); overlapping windows add up.

    ``clip``: the pool's input x, the output of a ReLU whose gradient dx then gets too: dx
    where x > 0, else 0 (``layers.fusion``); 2×2 windows apply it as they write dx."""
    if isinstance(cache, Fallback):
        return pool_fast.avg_backward(dout, cache[0], clip)
    x_shape, kernel, stride, pads, divisor = cache
    dx = workspace.empty(x_shape, dout.dtype)    # zeroed plane by plane, in parallel
    dout, divisor = np.ascontiguousarray(dout), divisor.astype(dout.dtype, copy=False)
    if _is_2x2(kernel, stride, pads):
        clipping = clip is not None
        clip = np.ascontiguousarray(clip, dtype=dx.dtype) if clipping else dx
        _sum_backward_2x2(dout, two_by_two_divisor(divisor, dx.dtype), dx, dx.dtype.type(0), clip,
                          clipping, VECTOR_RUNS)
        return dx
    _sum_backward(dout, divisor, dx, *_geometry(x_shape, kernel, stride, pads)[2:])
    return dx if clip is None else elementwise_numba.relu_backward(dx, clip)


@kernel(parallel=True)
def _global_mean(x, out):
    """out (N·C,) := the mean of each plane of x (N·C, H·W), summed in float64 in order."""
    planes, HW = x.shape
    for p in prange(planes):
        total = 0.0
        for i in range(HW):
            total += np.float64(x[p, i])
        out[p] = total / HW


def global_mean(x):
    """x (N, C, H, W) -> (N, C) in x's dtype: the mean of each plane, its sum in float64 in
    order (NumPy's mean over two small axes spends ~15 ns per plane outside its sum: 2 ms for
    resnet_small's (500, 256, 2, 2), against 0.05 ms here)."""
    if x.dtype not in COMPILED_DTYPES:
        return x.mean(axis=(2, 3))
    N, C, H, W = x.shape
    out = np.empty((N, C), x.dtype)
    _global_mean(np.ascontiguousarray(x).reshape(N * C, H * W), out.reshape(N * C))
    return out
