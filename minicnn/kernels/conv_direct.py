"""The convolution's formula compiled: conv_numba's "direct" algorithm, any stride and dilation.

    out[n, o, i, j] = b[o] + Σ_c Σ_p Σ_q w[o, c, p, q] · x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w]

The input is first split into phases (``_phase_image``): phase (a, b) of a channel holds the
rows a, a + S_h, a + 2·S_h, ... and, of them, the columns b, b + S_w, ..., a (Hq, Wq) plane.
Input (i·S_h + p·D_h, j·S_w + q·D_w) is then (i + ⌊p·D_h / S_h⌋, j + ⌊q·D_w / S_w⌋) of phase
((p·D_h) mod S_h, (q·D_w) mod S_w), and laid out row after row that is

    (i·Wq + j) + offset(c, p, q)

in the image's memory: for every output (i, j) the same offset. So each tap (c, p, q) of the
kernel is ONE multiply-add over a contiguous run of the image, computed on a grid of width Wq
(the Wq − W_out columns right of each output row are computed too, and dropped), and the
compiler turns it into vector instructions. With stride 1 there is one phase, x_pad itself.

The forward pass keeps the sums in registers: 32 grid positions (two vectors of
``lanes_numba.LANES``) of 8 output channels (``CHANNELS``) at a time, 16 vectors of sums, into
which every tap's run goes with 8 multiply-adds per vector load (``lanes_numba.taps_block``);
for at most 6 channels 32 positions × 6, for at most 4 48 × 4, so that no multiply-add is spent
on a channel that is not there (LeNet-5's first layer, 6 channels: 1.2 times faster). Written
as loops,
the sums went through memory, a load and a store for every four multiply-adds: measured on an
Intel Xeon, 2 threads, resnet_small's first layer for 500 images 17 -> 10 ms, LeNet-5's first
for 64 images 300 -> 150 µs. The weights' gradient is the same sums turned around: the dot
products of two output channels' gradients (on the same grid, zeros in the dropped columns)
with four taps' runs of the input per pass, whose eight sums the compiler keeps in vector
registers already (a 4 × 4 block of them in ``lanes_numba``'s style measured no faster); the
input's gradient adds, for each tap, four output channels' gradients times their weights into
the tap's run, then undoes the phases (``unphase_into``).

Indices are unsigned (``np.uint64``): Numba then needs no check for negative (wrap-around)
indices, and the loops vectorise; with signed ones they run several times slower.
"""
import functools

import numba
import numpy as np
from numba import prange

from . import workspace
from .elementwise_numba import clip_at_zero
from .jit import FMA, SUM, helper, kernel
from .lanes_numba import CHANNELS, copy_every_other, copy_run, taps_block
from .pool_numba import spread_2x2, sum_2x2_plane


def phase_shape(x_shape, pads, stride):
    """(N, C, S_h, S_w, Hq, Wq): x (N, C, H, W) padded by pads ((top, bottom), (left, right))
    and split by the stride (S_h, S_w); Hq = ⌈H_pad / S_h⌉, Wq = ⌈W_pad / S_w⌉."""
    N, C, H, W = x_shape
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    S_h, S_w = stride
    return (N, C, S_h, S_w, -(-(H + pad_top + pad_bottom) // S_h),
            -(-(W + pad_left + pad_right) // S_w))


@helper(inline="always")
def _runs(W, pad_left, S_w, b, Wq):
    """For column phase b: the first and past-the-last column j of the phase that holds a
    column of x (padded column j·S_w + b = x's column j·S_w + b − pad_left, in [0, W))."""
    first = max(0, -(-(pad_left - b) // S_w))
    last = min(Wq, -(-(W + pad_left - b) // S_w))
    return first, max(first, last)


@helper()
def _phase_image(x, n, image, pad_top, pad_left, vector_runs):
    """image (C, S_h, S_w, Hq, Wq) := x[n] (C, H, W) padded with zeros (pad_top rows above,
    pad_left columns before, zeros after) and split into phases:
    image[c, a, b, r, s] = x_pad[n, c, r·S_h + a, s·S_w + b]. With ``vector_runs`` and a
    stride of 2 along the rows, each run is picked from pairs of a vector load
    (``lanes_numba.copy_every_other``: resnet_small's 7×7 stride-2 first layer, 4.0 -> 3.1 µs
    per image on 2 threads of an Intel Xeon), else value by value; the same values."""
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    S_h, S_w, Wq = image.shape[1], image.shape[2], image.shape[4]
    u = np.uint64
    image[...] = 0
    flat_x, flat_image = x.reshape(x.size), image.reshape(image.size)
    for c in range(C):
        for h in range(H):
            r = h + pad_top
            a, row = r % S_h, r // S_h
            for b in range(S_w):
                first, last = _runs(W, pad_left, S_w, b, Wq)
                shift = u(first * S_w + b - pad_left)
                if vector_runs and S_w == 2:
                    copy_every_other(flat_image, u((((c * S_h + a) * S_w + b) * image.shape[3]
                                                    + row) * Wq + first),
                                     flat_x, u(((n * C + c) * H + h) * W) + shift,
                                     u(last - first))
                    continue
                source = x[n, c, h]
                target = image[c, a, b, row]
                for j in range(u(last - first)):
                    target[u(first) + j] = source[shift + j * u(S_w)]


@kernel(parallel=True)
def unphase_into(dxq, dx, pad_top, pad_left):
    """dx (N, C, H, W) := the inside of the padded image whose phases are dxq (the inverse
    of ``_phase_image``: the padding is dropped)."""
    N, C, H, W = dx.shape
    S_h, S_w, Wq = dxq.shape[2], dxq.shape[3], dxq.shape[5]
    u = np.uint64
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            r = h + pad_top
            a, row = r % S_h, r // S_h
            for b in range(S_w):
                first, last = _runs(W, pad_left, S_w, b, Wq)
                source = dxq[n, c, a, b, row]
                target = dx[n, c, h]
                shift = u(first * S_w + b - pad_left)
                for j in range(u(last - first)):
                    target[shift + j * u(S_w)] = source[u(first) + j]



@functools.lru_cache(maxsize=256)
def tap_offsets(xq_shape, KH, KW, dil_h, dil_w):
    """(C·KH·KW,) uint64: where, in an image of xq (C, S_h, S_w, Hq, Wq) flattened, tap
    (c, p, q) reads for output (0, 0); output (i, j) reads i·Wq + j further. Taps in the order
    of w[o].ravel(). Remembered per geometry (read-only): a batch's layers ask for the same
    ones every step."""
    _, C, S_h, S_w, Hq, Wq = xq_shape
    c, p, q = np.meshgrid(np.arange(C), np.arange(KH) * dil_h, np.arange(KW) * dil_w,
                          indexing="ij")
    offsets = (((c * S_h + p % S_h) * S_w + q % S_w) * Hq + p // S_h) * Wq + q // S_w
    offsets = offsets.ravel().astype(np.uint64)
    offsets.flags.writeable = False
    return offsets


def grid_length(H_out, W_out, Wq):
    """Positions of the grid of width Wq from output (0, 0) to output (H_out − 1, W_out − 1)."""
    return (H_out - 1) * Wq + W_out


@kernel(parallel=True)
def _forward(x, pad_top, pad_left, xq, offsets, weights, bias, out, rows, relu, pooled, divisor,
             vector_runs):
    """xq (N, C, S_h, S_w, Hq, Wq) := the phases of x (N, C, H, W) padded (``_phase_image``), and
    out (N, O, H_out, W_out) := b[o] + Σ_t w[o, t] · (image n's run of tap t), for the taps t
    at ``offsets``, then max(·, 0) with ``relu``. weights (⌈O / CHANNELS⌉, T, CHANNELS) and
    bias (⌈O / CHANNELS⌉, CHANNELS) are w (O, T) and b by blocks of CHANNELS output channels,
    zeros past O (``blocked``); rows (threads, CHANNELS, L) scratch: a block's sums on the
    grid, ``lanes_numba.taps_block``. When pooled (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋) has images: the
    sums of out's 2×2 windows / divisor (``pool_numba.sum_2x2_plane``), taken from each image's
    output while it is in the cache. Each image is split into its phases just before it is
    read, while it is in the cache: into xq[n], or into xq[thread] when xq has fewer images
    than x (a prediction: no backward pass reads them, and a thread's buffer stays in its
    cache)."""
    N, O, H_out, W_out = out.shape
    blocks, T = weights.shape[0], weights.shape[1]
    Wq = xq.shape[5]
    u = np.uint64
    L = u(rows.shape[2])
    size, plane, u_W_out = u(xq[0].size), u(H_out * W_out), u(W_out)
    target = out.reshape(out.size)
    own = xq.shape[0] < N
    for n in prange(N):
        thread = numba.get_thread_id()
        sums = rows[thread].reshape(u(CHANNELS) * L)
        image = xq[thread] if own else xq[n]
        _phase_image(x, n, image, pad_top, pad_left, vector_runs)
        X = image.reshape(size)
        for block in range(blocks):
            first = block * CHANNELS
            channels = min(CHANNELS, O - first)
            taps_block(sums, L, X, offsets, weights[block].reshape(T * CHANNELS), bias[block],
                       channels)
            for o in range(channels):
                at = u(n * O + first + o) * plane
                for i in range(H_out):
                    copy_run(target, at + u(i) * u_W_out, sums, u(o) * L + u(i) * u(Wq),
                             u_W_out)
        if relu:
            clip_at_zero(out[n].reshape(u(O * H_out * W_out)))
        if pooled.shape[0] > 0:
            for c in range(O):
                sum_2x2_plane(out[n, c], pooled[n, c], divisor, out.dtype.type(0))


def blocked(w, b):
    """(weights (⌈O / CHANNELS⌉, T, CHANNELS), bias (⌈O / CHANNELS⌉, CHANNELS)): w (O, C, KH,
    KW) as (O, T), T = C·KH·KW, and b (O,) or None, cut into blocks of CHANNELS output
    channels, each tap's CHANNELS weights side by side; zeros past O, and for no bias."""
    O = w.shape[0]
    blocks = -(-O // CHANNELS)
    weights = np.zeros((blocks * CHANNELS, w.size // O), w.dtype)
    weights[:O] = w.reshape(O, -1)
    bias = np.zeros(blocks * CHANNELS, w.dtype)
    if b is not None:
        bias[:O] = b
    return (np.ascontiguousarray(weights.reshape(blocks, CHANNELS, -1).transpose(0, 2, 1)),
            bias.reshape(blocks, CHANNELS))


@kernel(parallel=True)
def widen(dout, wide, Wq):
    """wide (N, O, L) := dout (N, O, H_out, W_out) laid out on the grid of width Wq, zeros in
    the columns between the rows."""
    N, O, H_out, W_out = dout.shape
    for no in prange(N * O):
        n, o = no // O, no % O
        wide[n, o] = 0
        for i in range(H_out):
            wide[n, o, i * Wq:i * Wq + W_out] = dout[n, o, i]


@kernel(parallel=True)
def _widen_spread(dpool, divisor, clip, clipping, wide, H_out, W_out, Wq, vector_runs):
    """wide (N, O, L) := the gradient of a 2×2 sum pool / divisor, dpool (N, O, ⌊H_out/2⌋,
    ⌊W_out/2⌋) the pool's output's gradient, spread over the output (N, O, H_out, W_out) and
    laid out on the grid of width Wq, as ``widen`` (``pool_numba.spread_2x2``, with the ReLU's
    gradient where ``clipping``: clip is the clipped output); zeros between the rows."""
    N, O = dpool.shape[0], dpool.shape[1]
    zero = wide.dtype.type(0)
    for no in prange(N * O):
        n, o = no // O, no % O
        wide[n, o] = 0
        spread_2x2(dpool[n, o], divisor, zero, clip[n, o], clipping, wide[n, o], H_out, W_out,
                   Wq, vector_runs)


@helper(fastmath=SUM)
def _image_weights(wide, X, offsets, part):
    """part (O, T + 1) += Σ_k wide[o, k] · X[offsets[t] + k] for the taps t, and in column T
    Σ_k wide[o, k] (the bias gradient): one image's share of ``_weights``, wide (O, L) its
    output's gradient on the grid, X its phases flat. Two output channels share each pass over
    four taps' runs (an odd last channel goes alone): eight sums, each input value loaded
    feeding two of them."""
    O, L = wide.shape
    T = offsets.shape[0]
    u = np.uint64
    zero = wide.dtype.type(0)
    o = 0
    while o + 2 <= O:
        g0, g1 = wide[o], wide[o + 1]
        t = 0
        while t + 4 <= T:
            s0, s1, s2, s3 = offsets[t], offsets[t + 1], offsets[t + 2], offsets[t + 3]
            d0, d1, d2, d3 = zero, zero, zero, zero
            e0, e1, e2, e3 = zero, zero, zero, zero
            for k in range(u(L)):
                x0, x1, x2, x3 = X[s0 + k], X[s1 + k], X[s2 + k], X[s3 + k]
                a, c = g0[k], g1[k]
                d0 += a * x0
                d1 += a * x1
                d2 += a * x2
                d3 += a * x3
                e0 += c * x0
                e1 += c * x1
                e2 += c * x2
                e3 += c * x3
            part[o, t] += d0
            part[o, t + 1] += d1
            part[o, t + 2] += d2
            part[o, t + 3] += d3
            part[o + 1, t] += e0
            part[o + 1, t + 1] += e1
            part[o + 1, t + 2] += e2
            part[o + 1, t + 3] += e3
            t += 4
        while t < T:
            s0, d0, e0 = offsets[t], zero, zero
            for k in range(u(L)):
                x0 = X[s0 + k]
                d0 += g0[k] * x0
                e0 += g1[k] * x0
            part[o, t] += d0
            part[o + 1, t] += e0
            t += 1
        o += 2
    if o < O:
        grad = wide[o]
        t = 0
        while t + 4 <= T:
            s0, s1, s2, s3 = offsets[t], offsets[t + 1], offsets[t + 2], offsets[t + 3]
            d0, d1, d2, d3 = zero, zero, zero, zero
            for k in range(u(L)):
                gk = grad[k]
                d0 += gk * X[s0 + k]
                d1 += gk * X[s1 + k]
                d2 += gk * X[s2 + k]
                d3 += gk * X[s3 + k]
            part[o, t] += d0
            part[o, t + 1] += d1
            part[o, t + 2] += d2
            part[o, t + 3] += d3
            t += 4
        while t < T:
            s0, d0 = offsets[t], zero
            for k in range(u(L)):
                d0 += grad[k] * X[s0 + k]
            part[o, t] += d0
            t += 1
    for o in range(O):
        total = zero
        grad = wide[o]
        for k in range(u(L)):
            total += grad[k]
        part[o, T] += total


@kernel(parallel=True, fastmath=SUM)
def _weights(wide, xq, offsets, partial, group):
    """partial[g] (O, T + 1) := Σ over the images n of group g (``group`` images each) of
    wide[n, o] · (image n's run of tap t), and in column T Σ wide[n, o] (the bias gradient),
    ``_image_weights``. The groups run in parallel and are added in order afterwards: the
    result does not depend on the number of threads."""
    N = wide.shape[0]
    size = np.uint64(xq[0].size)
    for g in prange(partial.shape[0]):
        part = partial[g]
        part[:] = 0
        for n in range(g * group, min(N, (g + 1) * group)):
            _image_weights(wide[n], xq[n].reshape(size), offsets, part)


@kernel(parallel=True, fastmath=SUM)
def _spread_weights(dpool, divisor, clip, clipping, wide, xq, offsets, partial, group, H_out,
                    W_out, Wq, vector_runs):
    """``_weights`` of the gradient of a 2×2 pool after the layer, spread image by image
    (``_widen_spread``'s) into wide (threads, O, L), each thread's, where it stays in the
    cache for the sums that read it at once (the input's gradient, which reads it again, is
    not wanted: LeNet-5's first layer)."""
    N, O = dpool.shape[0], dpool.shape[1]
    size = np.uint64(xq[0].size)
    zero = wide.dtype.type(0)
    for g in prange(partial.shape[0]):
        part = partial[g]
        part[:] = 0
        rows = wide[numba.get_thread_id()]
        for n in range(g * group, min(N, (g + 1) * group)):
            for o in range(O):
                rows[o] = 0
                spread_2x2(dpool[n, o], divisor, zero, clip[n, o], clipping, rows[o], H_out,
                           W_out, Wq, vector_runs)
            _image_weights(rows, xq[n].reshape(size), offsets, part)


@kernel(parallel=True, fastmath=FMA)
def _data(wide, w, offsets, dxq):
    """dxq (N, C, S_h, S_w, Hq, Wq) := Σ over taps t and output channels o of w[o, t] · wide[n, o]
    added into image n's run of tap t (four output channels per pass)."""
    N, O, L = wide.shape
    T = w.shape[1]
    u = np.uint64
    size = u(dxq[0].size)
    for n in prange(N):
        D = dxq[n].reshape(size)
        D[:] = 0
        for t in range(T):
            s = offsets[t]
            run = D[s:s + u(L)]
            o = 0
            while o + 4 <= O:
                g0, g1, g2, g3 = wide[n, o], wide[n, o + 1], wide[n, o + 2], wide[n, o + 3]
                w0, w1, w2, w3 = w[o, t], w[o + 1, t], w[o + 2, t], w[o + 3, t]
                for k in range(u(L)):
                    run[k] += (w0 * g0[k] + w1 * g1[k]) + (w2 * g2[k] + w3 * g3[k])
                o += 4
            while o < O:
                g0, w0 = wide[n, o], w[o, t]
                for k in range(u(L)):
                    run[k] += w0 * g0[k]
                o += 1


def forward(x, w, b, stride, pads, dilation, H_out, W_out, relu=False, pooled=None, divisor=1,
            need_cache=True, vector_runs=False):
    """out (N, O, H_out, W_out) = x (N, C, H, W) ⋆ w (O, C, KH, KW) + b (O,) (b may be None),
    then max(out, 0) with ``relu``; returns out and xq, the padded input's phases (what
    ``backward`` reads; with ``need_cache=False`` None, and each thread splits its images into
    one buffer of its own). ``pooled`` (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), when given, := the sums
    of out's 2×2 windows / ``divisor``. ``vector_runs``: ``_phase_image``'s vector copies
    (``conv_numba.VECTOR_RUNS``)."""
    N = x.shape[0]
    O, _, KH, KW = w.shape
    (pad_top, _), (pad_left, _) = pads
    shape = phase_shape(x.shape, pads, stride)
    threads = numba.get_num_threads()
    if not need_cache and threads < N:
        shape = (threads,) + shape[1:]
    xq = workspace.empty(shape, w.dtype)
    offsets = tap_offsets(xq.shape, KH, KW, *dilation)
    out = workspace.empty((N, O, H_out, W_out), w.dtype)
    rows = workspace.empty((numba.get_num_threads(), CHANNELS,
                            grid_length(H_out, W_out, xq.shape[5])), w.dtype)
    weights, bias = blocked(w, b)
    pooled = np.empty((0, 0, 0, 0), w.dtype) if pooled is None else pooled    # none: no images
    _forward(np.ascontiguousarray(x, dtype=w.dtype), pad_top, pad_left, xq, offsets,
             weights, bias, out, rows, relu, pooled, w.dtype.type(divisor), vector_runs)
    return out, (xq if need_cache else None)


def backward(dout, xq, w, x_shape, pads, dilation, group, need_dx=True, spread=None,
             vector_runs=False):
    """(dx (N, C, H, W) or None, dw (O, C, KH, KW), db (O,)) given dout (N, O, H_out, W_out),
    xq from ``forward``, and w. dw and db are summed in groups of ``group`` images, the groups
    in order. ``spread`` = (out_shape, divisor, clip): dout is instead the gradient of the 2×2
    pool after the layer (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), spread over the output (N, O, H_out,
    W_out) / divisor, where clip (the clipped output, or None) is > 0, as it is laid out
    (LANES shares at a time with ``vector_runs``, ``pool_numba.spread_2x2``)."""
    N, O, H_out, W_out = dout.shape if spread is None else spread[0]
    KH, KW = w.shape[2:]
    Wq = xq.shape[5]
    offsets = tap_offsets(xq.shape, KH, KW, *dilation)
    L = grid_length(H_out, W_out, Wq)
    partial = np.empty((-(-N // group), O, offsets.size + 1), dtype=w.dtype)
    if spread is not None and not need_dx:     # each image spread just before its sums
        _, divisor, clip = spread
        wide = workspace.empty((numba.get_num_threads(), O, L), w.dtype)
        _spread_weights(dout, w.dtype.type(divisor), dout if clip is None else clip,
                        clip is not None, wide, xq, offsets, partial, group, H_out, W_out, Wq,
                        vector_runs)
    else:
        wide = workspace.empty((N, O, L), w.dtype)
        if spread is None:
            widen(dout, wide, Wq)
        else:
            _, divisor, clip = spread
            _widen_spread(dout, w.dtype.type(divisor), dout if clip is None else clip,
                          clip is not None, wide, H_out, W_out, Wq, vector_runs)
        _weights(wide, xq, offsets, partial, group)
    dwb = partial.sum(axis=0)
    dw = np.ascontiguousarray(dwb[:, :-1]).reshape(w.shape)
    db = np.ascontiguousarray(dwb[:, -1])
    if not need_dx:
        return None, dw, db
    dxq = workspace.empty(xq.shape, w.dtype)
    _data(wide, w.reshape(O, -1), offsets, dxq)
    (pad_top, _), (pad_left, _) = pads
    dx = workspace.empty(x_shape, w.dtype)
    unphase_into(dxq, dx, pad_top, pad_left)
    return dx, dw, db
