"""Winograd's F(2×2, 3×3): a 3×3 convolution (stride 1, no dilation) with 2.25 times fewer
multiplications, compiled with Numba; ``conv_numba`` chooses it where it is faster.

A 2×2 block of outputs reads a 4×4 tile d of the input. Directly, it costs 2·2·3·3 = 36
multiply-adds per (output channel, input channel). Winograd (Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2015) writes the same four numbers as

    Y = Aᵀ [ Σ_c (G g_c Gᵀ) ⊙ (Bᵀ d_c B) ] A

with g_c the 3×3 weights of input channel c and

    Bᵀ = [[1, 0, −1, 0], [0, 1, 1, 0], [0, −1, 1, 0], [0, 1, 0, −1]]
    G  = [[1, 0, 0], [½, ½, ½], [½, −½, ½], [0, 0, 1]]
    Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]]

The transforms only add and subtract (G's halves are exact in binary), and the sum over the
channels is, for each of the 16 positions ξ of the 4×4 tile, a matrix product

    M[ξ] (O, tiles) = U[ξ] (O, C) @ V[ξ] (C, tiles),   U = G g Gᵀ,  V = Bᵀ d B

so 16 products of C multiply-adds per (o, tile) instead of 36: the 16 go to BLAS, one image per
thread, as in the "gemm" algorithm.

The backward pass is the same steps transposed, both gradients in one pass over the images
(``gradients``), since both start from dM = A dY Aᵀ, the gradient of M for each 2×2 tile dY of
the output's gradient:

    dU[ξ] (O, C) = Σ over the images of dM[ξ] (O, tiles) @ V[ξ]ᵀ (tiles, C),  dg = Gᵀ dU G
    dV[ξ] (C, tiles) = U[ξ]ᵀ (C, O) @ dM[ξ] (O, tiles),  dd = B dV Bᵀ for each tile,

the tiles' dd added where they overlap (they are 4×4, two apart) to give the input's gradient:
16 more products per image, and no second image to transform.

Rounding: each output is a sum whose every term went through at most C + 11 roundings (4 in
U, 2 in V, 1 product, C − 1 additions over the channels, 4 in Aᵀ·M·A, 1 for the bias), so
|computed − exact| <= γ_(C+11) · Aᵀ [Σ_c (|G| |g_c| |G|ᵀ) ⊙ (|B|ᵀ |d_c| |B|)] A + γ_1·|b|, with
γ_k = k·u/(1 − k·u) (Higham, §3.1). Each entry of the input's gradient likewise: at most O + 12
roundings (4 in U, 2 in dM, 1 product, O − 1 additions, 3 along the rows and 3 down the columns
in B·dV·Bᵀ with the overlapping tiles added), within γ_(O+12) · the same sum of the absolute
values. tests/test_kernels_numba.py checks these bounds.
"""
import numba
import numpy as np
from numba import prange

from . import blas, workspace
from .blas import NO_TRANS, TRANS
from .blas_numba import gemm as _gemm
from .blas_numba import set_threads as _set_threads
from .jit import helper, kernel
from .winograd_lanes import (input_gradient_planes, input_tiles, output_gradient_tiles,
                             output_plane, pooled_gradient_tiles, pooled_plane)

G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
B_T = np.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]])
A_T = np.array([[1, 1, 1, 0], [0, 1, -1, -1]])


def tiles(H_out, W_out):
    """(tiles down, tiles across) of 2×2 outputs: ceil(H_out/2), ceil(W_out/2)."""
    return (H_out + 1) // 2, (W_out + 1) // 2


def transform_weights(w):
    """U (16, O, C) = G g Gᵀ for each (o, c), the 4×4 result flattened row by row: w (O, C, 3, 3)
    in its own dtype. (Two tensordots: 3 times faster than one einsum, which matters when a
    batch goes through in slices.)"""
    g = G.astype(w.dtype)
    wg = np.tensordot(w, g, axes=([3], [1]))          # (O, C, 3, 4): g Gᵀ, row by row
    U = np.tensordot(g, wg, axes=([1], [2]))          # (4, O, C, 4): G (g Gᵀ)
    return np.ascontiguousarray(U.transpose(0, 3, 1, 2)).reshape(16, w.shape[0], w.shape[1])


@helper()
def _transform_input(x_pad, n, v):
    """v (C, 16, tiles) := Bᵀ d B of every 4×4 tile d of image n of x_pad (N, C, H_pad, W_pad),
    contiguous (``winograd_lanes.input_tiles``: 16 tiles at once, Bᵀ down the columns, then B
    along the rows)."""
    C, H_pad, W_pad = x_pad.shape[1], x_pad.shape[2], x_pad.shape[3]
    plane = H_pad * W_pad
    input_tiles(x_pad.reshape(x_pad.size), n * C * plane, plane, W_pad, (H_pad - 2) // 2,
                (W_pad - 2) // 2, C, v.reshape(v.size), v.shape[2])


@helper()
def _transform_image(x, n, pad_top, pad_left, images, thread, v):
    """v (C, 16, tiles) := Bᵀ d B of every tile of image n of x (N, C, H, W) padded: placed at
    (pad_top, pad_left) in images[thread], zeros (they stay: only the inside is written), or
    read in place when images has no threads (x needs no zeros)."""
    if images.shape[0] == 0:
        _transform_input(x, n, v)
        return
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    H_in = min(H, images.shape[2] - pad_top)
    W_in = min(W, images.shape[3] - pad_left)
    for c in range(C):
        for i in range(H_in):
            images[thread, c, pad_top + i, pad_left:pad_left + W_in] = x[n, c, i, :W_in]
    _transform_input(images, thread, v)


@kernel(parallel=True)
def _correlate(x, pad_top, pad_left, U, b, out, H_out, W_out, images, V, M, relu, pool, winner,
               gemm, set_threads):
    """out (N, O, H_out, W_out) := the 3×3 correlation of x (N, C, H, W), padded with zeros
    (pad_top rows above, pad_left columns before, and below and after as many as the tiles
    need), with U (16, O, C) the transformed weights; + b (O,); then max(·, 0) with ``relu``.
    With ``pool``, out (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋) := the maxima of its 2×2, stride-2
    windows, each an output tile's four values (``winograd_lanes``: the full output is never
    written), and winner (the shape of out, or (N, O, 0, 0) for none) := each maximum's flat
    position h·W_out + w in its plane, as pool_numba's cache.

    Each thread's buffers: images (threads, C, 2·TH + 2, 2·TW + 2), zeros, the padded image
    (or no threads at all: x is already that, read in place); V (threads, C, 16, tiles) and
    M (threads, O, 16, tiles), a tile's 16 values close together.
    """
    N, O = x.shape[0], out.shape[1]
    T = V.shape[3]
    C = x.shape[1]
    TH, TW = (H_out + 1) // 2, (W_out + 1) // 2
    one, zero = out.dtype.type(1), out.dtype.type(0)
    keep = winner.size > 0
    plane = out.shape[2] * out.shape[3]
    flat_out, flat_winner = out.reshape(out.size), winner.reshape(winner.size)
    for n in prange(N):
        thread = numba.get_thread_id()
        v, m = V[thread], M[thread]
        _transform_image(x, n, pad_top, pad_left, images, thread, v)
        before = _set_threads(set_threads, 1)   # one product per thread: the others are busy
        for xi in range(16):        # M[:, ξ] (O, T) = U[ξ] (O, C) @ V[:, ξ] (C, T), rows 16·T apart
            _gemm(gemm, NO_TRANS, NO_TRANS, O, T, C, one, U[xi].ctypes.data, C,
                  v[0, xi].ctypes.data, 16 * T, zero, m[0, xi].ctypes.data, 16 * T)
        _set_threads(set_threads, before)
        flat_m = m.reshape(m.size)
        for o in range(O):
            at = (n * O + o) * plane
            if pool:
                pooled_plane(flat_m, o * 16 * T, T, b[o], relu, flat_out, at, flat_winner, keep,
                             TW, H_out, W_out)
            else:
                output_plane(flat_m, o * 16 * T, T, b[o], relu, flat_out, at, TH, TW, H_out,
                             W_out)


@kernel(parallel=True)
def _gradients(x, pad_top, pad_left, dout, H_out, W_out, winner, clipped, clip_pooled, U, dx,
               partial, partial_b, group, images, V, DM, bands, clip, gemm, set_threads):
    """partial[g] (16, O, C) = Σ over the images n of group g and their tiles of
    dM[:, ξ] (O, tiles) @ V[:, ξ]ᵀ (tiles, C): the gradient of U = G g Gᵀ, with V = Bᵀ d B of x
    padded as in _correlate and dM = A dY Aᵀ of dout (N, O, H_out, W_out); partial_b[g] (O,)
    the bias gradient: Σ of dM[:, 5], each tile's (a + c) + (b + d).
    Groups of ``group`` images run in parallel and are added in order afterwards: the result
    does not depend on the number of threads. When dx has images, the input gradient dx (N, C,
    H, W) too: for each image dV[:, ξ] (C, tiles) = U[ξ]ᵀ (C, O) @ dM[:, ξ] (O, tiles), U (16,
    O, C) the transformed weights, written over V once the weight gradient's products have read
    it, then B dV Bᵀ of every tile added into dx (``winograd_lanes.input_gradient_planes``;
    with ``clip``, only where x > 0: the gradient of the ReLU before the layer). dM comes from
    ``winograd_lanes.output_gradient_tiles``, or when winner (flat) has elements, from
    ``winograd_lanes.pooled_gradient_tiles``: dout is then the gradient of the output's 2×2
    max-pool (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), its maxima at winner, and with ``clip_pooled`` the
    ReLU's gradient is taken where clipped (flat), the pooled output, is > 0. images, V
    (threads, C, 16, tiles), DM (threads, O, 16, tiles) and bands (threads, 2, 4, ≥ 2·TW + 2)
    are each thread's, as in _correlate. x and dout are contiguous."""
    N, C, H, W = x.shape
    O = dout.shape[1]
    T = V.shape[3]
    pooled = winner.size > 0
    pooled_plane = (H_out // 2) * (W_out // 2)
    TH, TW = (H_out + 1) // 2, (W_out + 1) // 2
    flat_x, flat_dout, flat_dx = x.reshape(x.size), dout.reshape(dout.size), dx.reshape(dx.size)
    need_dx = dx.shape[0] > 0
    one, zero = dout.dtype.type(1), dout.dtype.type(0)
    for g in prange(partial.shape[0]):
        thread = numba.get_thread_id()
        v, dm = V[thread], DM[thread]
        flat_v, flat_bands = v.reshape(v.size), bands[thread].reshape(bands[thread].size)
        before = _set_threads(set_threads, 1)
        partial_b[g, :] = zero
        for n in range(g * group, min(N, (g + 1) * group)):
            _transform_image(x, n, pad_top, pad_left, images, thread, v)
            if pooled:
                pooled_gradient_tiles(flat_dout, n * O * pooled_plane, clipped, clip_pooled,
                                      winner, H_out, W_out, O, dm.reshape(dm.size), T)
            else:
                output_gradient_tiles(flat_dout, n * O * H_out * W_out, H_out, W_out, O,
                                      dm.reshape(dm.size), T)
            for o in range(O):
                total = zero
                for t in range(T):
                    total += dm[o, 5, t]
                partial_b[g, o] += total
            beta = zero if n == g * group else one
            for xi in range(16):    # partial[g, ξ] (O, C) (+)= dM[:, ξ] (O, T) @ V[:, ξ]ᵀ (T, C)
                _gemm(gemm, NO_TRANS, TRANS, O, C, T, one, dm[0, xi].ctypes.data, 16 * T,
                      v[0, xi].ctypes.data, 16 * T, beta, partial[g, xi].ctypes.data, C)
            if need_dx:
                for xi in range(16):    # dV[:, ξ] (C, T) = U[ξ]ᵀ (C, O) @ dM[:, ξ] (O, T)
                    _gemm(gemm, TRANS, NO_TRANS, C, T, O, one, U[xi].ctypes.data, C,
                          dm[0, xi].ctypes.data, 16 * T, zero, v[0, xi].ctypes.data, 16 * T)
                input_gradient_planes(flat_v, T, flat_dx, n * C * H * W, H, W, C, pad_top,
                                      pad_left, TH, TW, flat_bands, clip, flat_x)
        _set_threads(set_threads, before)


def gradients(x, dout, w, pads, group, need_dx=True, clip=False, pooled=None):
    """(dx (N, C, H, W) or None, dw (O, C, 3, 3), db (O,)) of out = x ⋆ w + b (3×3, stride 1,
    padding pads), given x (N, C, H, W) and dout (N, O, H_out, W_out), in one pass over the
    images: all three read dM = A dY Aᵀ. dw = Gᵀ dU G with dU = Σ dM ⊙ V over the images and
    tiles, in groups of ``group`` images added in order; dx the inside of Σ over the tiles of
    B (Σ_o U ⊙ dM) Bᵀ, the transpose of the forward pass; db = Σ over each image's tiles of
    dM[:, 5] (the sum of each tile), the images in the same groups. ``clip``: dx only where
    x > 0, the gradient of the ReLU whose output x is, applied as dx is written. ``pooled``:
    (winner, clipped) from ``forward(pool=True, winners=True)``: dout is then the gradient of
    the pooled output, spread to each window's maximum as dM is made (the output's gradient
    is never written), with the gradient of the ReLU between them where clipped (the pooled
    output) is not None: the same numbers as ``pool_numba.max_backward`` and then this."""
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    N, C, H, W = x.shape
    O = dout.shape[1]
    H_out, W_out = H + pad_top + pad_bottom - 2, W + pad_left + pad_right - 2
    TH, TW = tiles(H_out, W_out)
    threads = numba.get_num_threads()
    dtype = dout.dtype
    in_place = pad_top == pad_left == 0 and (H, W) == (2 * TH + 2, 2 * TW + 2)
    images = workspace.zeros((0 if in_place else threads, C, 2 * TH + 2, 2 * TW + 2), dtype)
    V = workspace.empty((threads, C, 16, TH * TW), dtype)
    DM = workspace.empty((threads, O, 16, TH * TW), dtype)
    bands = np.empty((threads, 2, 4, 2 * TW + 2), dtype=dtype)
    groups = -(-N // group)
    partial = np.empty((groups, 16, O, C), dtype=dtype)
    partial_b = np.empty((groups, O), dtype=dtype)
    dx = workspace.empty((N if need_dx else 0, C, H, W), dtype)
    winner, clipped = (np.empty(0, np.int64), None) if pooled is None else pooled
    clipped_flat = np.empty(0, dtype) if clipped is None else np.ascontiguousarray(
        clipped, dtype).reshape(-1)
    with blas.one_thread_per_product():
        _gradients(np.ascontiguousarray(x, dtype=dtype), pad_top, pad_left,
                   np.ascontiguousarray(dout), H_out, W_out,
                   np.ascontiguousarray(winner).reshape(-1), clipped_flat, clipped is not None,
                   transform_weights(np.ascontiguousarray(w, dtype)), dx, partial, partial_b,
                   group, images, V, DM, bands, clip, blas.GEMM[dtype], blas.SET_THREADS_LOCAL)
    dU = partial.sum(axis=0).reshape(4, 4, O, C)
    g = G.astype(dtype)
    dg = np.tensordot(g, dU, axes=([0], [0]))         # (3, 4, O, C): Gᵀ dU
    dg = np.tensordot(dg, g, axes=([1], [0]))         # (3, O, C, 3): Gᵀ dU G
    db = partial_b.sum(axis=0)
    return (dx if need_dx else None), np.ascontiguousarray(dg.transpose(1, 2, 0, 3)), db


def forward(x, w, b, pads, relu=False, pool=False, winners=False):
    """out (N, O, H_out, W_out) = x (N, C, H, W) ⋆ w (O, C, 3, 3) + b (O,) (b may be None),
    stride 1, padding pads ((pad_top, pad_bottom), (pad_left, pad_right)); with ``relu``,
    max(out, 0); with ``pool``, then the maxima of its 2×2, stride-2 windows (N, O, ⌊H_out/2⌋,
    ⌊W_out/2⌋), each image's while it is in the cache (a Conv2D -> ReLU -> MaxPool2D(2),
    ``layers.fusion``). With ``winners`` too, returns (out, winner): each maximum's position
    in its plane of the unpooled output, for the pool's backward pass
    (``pool_numba.max_backward``)."""
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    N, C, H, W = x.shape
    O = w.shape[0]
    H_out, W_out = H + pad_top + pad_bottom - 2, W + pad_left + pad_right - 2
    TH, TW = tiles(H_out, W_out)
    threads = numba.get_num_threads()
    dtype = w.dtype
    # x itself is the padded image when it needs no zeros: no padding, and no odd size
    in_place = pad_top == pad_left == 0 and (H, W) == (2 * TH + 2, 2 * TW + 2)
    images = workspace.zeros((0 if in_place else threads, C, 2 * TH + 2, 2 * TW + 2), dtype)
    out = workspace.empty((N, O) + ((H_out // 2, W_out // 2) if pool else (H_out, W_out)), dtype)
    winner = workspace.empty(out.shape if pool and winners else (N, O, 0, 0), np.int64)
    V = workspace.empty((threads, C, 16, TH * TW), dtype)
    M = workspace.empty((threads, O, 16, TH * TW), dtype)
    bias = np.zeros(O, dtype) if b is None else np.ascontiguousarray(b, dtype=dtype)
    with blas.one_thread_per_product():
        _correlate(np.ascontiguousarray(x, dtype=dtype), pad_top, pad_left,
                   transform_weights(w), bias, out, H_out, W_out, images, V, M, relu, pool,
                   winner, blas.GEMM[dtype], blas.SET_THREADS_LOCAL)
    return (out, winner) if pool and winners else out
