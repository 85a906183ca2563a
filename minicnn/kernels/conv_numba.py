"""Convolution compiled with Numba: the kernels that training uses by default.

Same functions, signatures and results (to rounding) as ``conv_loops`` and ``conv_fast``:
``forward(x, w, b, stride, pads, dilation) -> (out, cache)`` and
``backward(dout, cache, need_dx=True) -> (dx, dw, db)``. Three algorithms, chosen per shape
(``algorithm``):

* "winograd" (``conv_winograd``): 2.25 times fewer multiplications for 3×3, stride-1 layers;
  the default where it is faster (``algorithm``), all three passes.
* "gemm" (the default for every other shape): im2col written in Numba, then the products in BLAS,
  one image per thread (``prange`` over the batch). Each thread builds its image's im2col
  matrix in its own buffer, which stays in its cache, and calls BLAS itself, single-threaded
  (``blas.py``): no Python between the images and no second pool of threads. Small images
  (resnet_small's later stages: 8×8 to 2×2 outputs) would make thin products, 4 to 64
  columns, where BLAS spends more time starting than multiplying; there the matrices of B
  images sit side by side, one product of about ``_PRODUCT_COLUMNS`` columns for the B
  (``_images_per_product``; measured on 2 threads, resnet_small's gemm layers forward and
  backward: 15.1 ms per batch of 64 one image per product, 12.1 ms with 256 columns). With at
  most 16 output channels (LeNet-5's second layer) and one image per product, the output and
  the weights' gradient are register tiles instead (``tile_lanes``, ``TILES``): the 16
  channels side by side in one vector, the input values read straight from the padded input,
  no im2col matrix built; only the input's gradient is BLAS's then. The backward
  pass rebuilds the image's matrix instead of keeping the batch's (LeNet-5's would be 5 MB,
  mnist_cnn's 43 MB: rebuilding from the cache costs less than reading them back). A large
  kernel with a stride reads the input split into column phases (``_phased``), so that each
  row of a window is a contiguous copy.
* "direct" (``conv_direct``): the loops of the formula, compiled, any stride; one image per
  thread. Each tap of the kernel is one contiguous multiply-add over the image split into its
  stride's phases; the forward pass keeps 32 positions × 8 output channels (or 32 × 6, 48 × 4)
  of sums in vector registers (``lanes_numba.taps_block``), the backward pass four taps and two
  output channels per pass. The default for at most 8 output channels and a kernel larger than 1×1 (LeNet-5's
  first layer, resnet_small's first and its 8-channel 3×3 layers), where im2col would copy
  each input KH·KW times to feed a product of a few rows; slower than "gemm" on the other zoo
  layers (their backward passes most: these loops keep the input's gradient in memory).
  Lesson 13 times it, and ``force("direct")`` selects it.

The gemm path adds a row of ones to the im2col matrix and the bias as a column of the weight
matrix: ``[W | b] @ [cols; 1]`` adds the bias inside the product, and the gradient of that
column is the bias gradient, one pass less over the output and over its gradient. The weight
gradient is summed in groups of ``_GROUP`` images, and the groups in order, so that it does not
depend on the number of threads. Where NumPy's BLAS cannot be called from Numba
(``blas.GEMM is None``), the same im2col kernels feed ``np.matmul`` from Python, a few images
at a time.

Indices inside the compiled loops are unsigned: Numba then needs no check for negative
(wrap-around) indices, and the loops vectorise. float32 and float64 each compile once per
machine (``cache=True`` writes the machine code next to this file).
"""
import functools
from contextlib import contextmanager

import numba
import numpy as np
from numba import prange

from ..core.shapes import window_output_size
from . import (blas, conv_direct, conv_fast, conv_pool, conv_winograd, elementwise_numba,
               lanes_numba, pool_numba, tile_lanes, workspace)
from .elementwise_numba import clip_at_zero
from .blas import NO_TRANS, TRANS
from .blas_numba import gemm as _gemm
from .blas_numba import set_threads as _set_threads
from .jit import FMA as _FMA
from .jit import SUM as _SUM
from .jit import COMPILED_DTYPES, Fallback, helper, kernel
from .pool_numba import spread_2x2, sum_2x2_plane
from .lanes_numba import add_taps, copy_run, window_rows

_CHUNK_BYTES = 2 << 20      # NumPy path: im2col of a few images at a time (the L2 cache's size)
_GROUP = 4                  # images whose weight gradients one thread adds up before the next
_ALGORITHMS = ("direct", "gemm", "winograd")
_PRODUCT_COLUMNS = 256     # columns of one product, made of several small images (measured:
_PRODUCT_GROUPS = 4        # 128 to 1024 within 3 %), and at least this many products a batch
# ... for outputs of at most this many positions: LeNet-5's second layer (10×10 = 100) measured
# 1.07 times slower per training step with 3 images per product than with one
_PRODUCT_POSITIONS = 64
_forced = None
#: im2col and col2im in whole vector instructions (``lanes_numba``) where the machine code has
#: fast masked stores (AVX-512); elsewhere the loops, the same bits (tests set it either way)
VECTOR_RUNS = lanes_numba.MASKED_STORES
#: "gemm" layers of at most ``tile_lanes.LANES`` output channels: their output and weights'
#: gradient in register tiles read straight from the input (``tile_lanes``), where masked
#: loads are fast (as above); else BLAS on im2col. Measured on an Intel Xeon, LeNet-5's second
#: layer: the weights' gradient 3.2 µs per image against 6.5 (BLAS 5.1, im2col 1.4). Other
#: sums' order than BLAS's: tests set it either way
TILES = lanes_numba.MASKED_STORES
# the divisor of a 2×2 window's sum for ``forward(pool=...)``
_DIVISORS = {"mean": 4, "sum": 1}
_WINDOW = ((2, 2), (2, 2), ((0, 0), (0, 0)))
# an argument for a kernel's array that has no images (nothing to pool or spread)
_NO_IMAGES = {dtype: np.empty((0, 0, 0, 0), dtype) for dtype in COMPILED_DTYPES}
# Winograd from this many input and output channels, and input positions H·W, on: below, its
# 16 products are too small for BLAS to beat one im2col product. Measured on one thread,
# forward + backward of 64 images: 32→64 channels at 26×26 (mnist_cnn) 1.2 times faster and
# 32→32 at 32×32 1.4 times; 16→16 at 16×16 and 64→64 at 8×8 1.1 to 1.2 times slower.
_WINOGRAD_CHANNELS = 32
_WINOGRAD_POSITIONS = 256
# "direct" for few output channels, where im2col copies every input KH·KW times for a product
# of few rows. Measured with 2 threads, 64 images, forward and backward, as a share of gemm's
# time: resnet_small's 7×7 stride-2 first layer (3 -> 8 channels) 0.47 and 0.59, its 8 -> 8
# 3×3 layers 0.94 and 0.78, LeNet-5's first layer (1 -> 6, 5×5) 0.73 and 1.0; but a 1×1 layer
# (a plain product, nothing to copy) 1.4 and 1.2, and 16 output channels (LeNet-5's second
# layer) 2.3 and 1.4 (an AMD EPYC, before the register blocks of ``lanes_numba``). Again on an
# Intel Xeon with them, forward of 500 images and forward + backward of 64, as a share of
# gemm's time: the 7×7 first layer 0.34 and 0.53, the 8 -> 8 3×3 layers 0.72 and 0.91, LeNet-5's
# first 0.85 and 1.1; 1×1 layers 1.2 to 2.1, LeNet-5's second 1.1 and 1.6.
_DIRECT_CHANNELS = 8


def winograd_fits(w_shape, stride, dilation=(1, 1)):
    """Whether Winograd's F(2×2, 3×3) computes this convolution: 3×3 weights, stride 1, no
    dilation, and BLAS callable from Numba."""
    return (tuple(w_shape[2:]) == (3, 3) and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)
            and blas.GEMM is not None)


def algorithm(x_shape, w_shape, stride, dilation=(1, 1)):
    """The algorithm for input (N, C, H, W), weights (O, C, KH, KW), stride and dilation:
    "winograd" for 3×3, stride 1 with at least ``_WINOGRAD_CHANNELS`` channels in and out and
    ``_WINOGRAD_POSITIONS`` input positions; "direct" for at most ``_DIRECT_CHANNELS`` output
    channels and a kernel larger than 1×1 (LeNet-5's first layer, resnet_small's first and its
    8-channel 3×3 layers); "gemm" for every other shape (faster there, measured on one and on
    two threads: all three split the batch over the threads the same way).

    ``force(name)`` or ``with forcing(name):`` overrides it where the algorithm applies
    (tests, lesson 13): "direct" and "gemm" take every shape, "winograd" ``winograd_fits``.
    """
    if _forced in ("gemm", "direct"):
        return _forced
    if winograd_fits(w_shape, stride, dilation):
        if _forced == "winograd" or (
                _forced is None and min(w_shape[0], w_shape[1]) >= _WINOGRAD_CHANNELS
                and x_shape[2] * x_shape[3] >= _WINOGRAD_POSITIONS):
            return "winograd"
    if _forced is None and w_shape[0] <= _DIRECT_CHANNELS and w_shape[2] * w_shape[3] > 1:
        return "direct"
    return "gemm"


@contextmanager
def forcing(name):
    """``with forcing("direct"): ...`` uses that algorithm inside the block only."""
    previous = _forced
    force(name)
    try:
        yield
    finally:
        force(previous)


def force(name):
    """Use ``name`` ("direct", "gemm" or "winograd") for every shape it supports; None: choose
    per shape. The others stay on "gemm"."""
    global _forced
    if name is not None and name not in _ALGORITHMS:
        raise ValueError(f"conv algorithm must be one of {_ALGORITHMS} or None, got {name!r}")
    _forced = name


# ----------------------------------------------------------------------------------------
# padding
# ----------------------------------------------------------------------------------------
@kernel(parallel=True)
def _pad_into(x, x_pad, pad_top, pad_left):
    """x_pad (N, C, H_pad, W_pad) := x (N, C, H, W) with zeros around it, ``top`` rows above and
    ``left`` columns before."""
    N, C, H, W = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        x_pad[n, c] = 0
        for h in range(H):
            x_pad[n, c, pad_top + h, pad_left:pad_left + W] = x[n, c, h]


@kernel(parallel=True)
def _crop_into(x_pad, x, pad_top, pad_left):
    """x (N, C, H, W) := the inside of x_pad (N, C, H_pad, W_pad) from row pad_top and column
    pad_left: the inverse of ``_pad_into`` (NumPy's copy of the strided view ran on one thread,
    row by short row: 0.18 ms per resnet_small 3×3 layer and batch, several times this)."""
    N, C, H, W = x.shape
    for nc in prange(N * C):
        n, c = nc // C, nc % C
        for h in range(H):
            x[n, c, h] = x_pad[n, c, pad_top + h, pad_left:pad_left + W]


def _padded(x, pads):
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    if pad_top == pad_bottom == pad_left == pad_right == 0:
        return x
    N, C, H, W = x.shape
    x_pad = workspace.empty((N, C, H + pad_top + pad_bottom, W + pad_left + pad_right), x.dtype)
    _pad_into(x, x_pad, pad_top, pad_left)
    return x_pad


# ----------------------------------------------------------------------------------------
# gemm: im2col and col2im in Numba, the products in BLAS
# ----------------------------------------------------------------------------------------
def _phased(x_pad, KH, KW, stride_h, stride_w):
    """x_pad (N, C, H_pad, W_pad) -> (N, C, S, H_pad, ⌈W_pad / S⌉), S = stride_w: phase t holds
    the columns t, t + S, t + 2S, ... of every row. Column j·S + u of a row is then column
    j + u // S of phase u % S, so the row of a window that im2col copies (the columns
    j·S + q·D_w, j = 0 .. W_out − 1) is one contiguous run, a vector copy, instead of a gather
    with a stride.

    The split is one more copy of the input, so it is made where im2col copies every value
    many times: KH·KW / (S_h·S_w) ≥ 4 (resnet_small's 7×7, stride-2 first layer: 12 times;
    measured 1.3 times faster in both passes). A 3×3, stride-2 layer copies each value 2.25
    times and a 1×1 one at most once: the split measured slower there, and S = 1, a view of
    x_pad itself, read with the stride."""
    N, C, H_pad, W_pad = x_pad.shape
    S = stride_w if stride_w > 1 and KH * KW >= 4 * stride_h * stride_w else 1
    if S == 1:
        return x_pad.reshape(N, C, 1, H_pad, W_pad)
    x_ph = workspace.zeros((N, C, S, H_pad, -(-W_pad // S)), x_pad.dtype)
    for t in range(S):
        phase = x_pad[:, :, :, t::S]
        x_ph[:, :, t, :, :phase.shape[3]] = phase
    return x_ph


def _unphased(dx_ph, W_pad):
    """The inverse of ``_phased``: (N, C, S, H_pad, ⌈W_pad / S⌉) -> (N, C, H_pad, W_pad)."""
    N, C, S, H_pad, _ = dx_ph.shape
    if S == 1:
        return dx_ph.reshape(N, C, H_pad, W_pad)
    dx_pad = workspace.empty((N, C, H_pad, W_pad), dx_ph.dtype)
    for t in range(S):
        columns = dx_pad[:, :, :, t::S]
        columns[...] = dx_ph[:, :, t, :, :columns.shape[3]]
    return dx_pad


@helper()
def _window_start(x_ph, n, c, p, q, stride_w, dil_h, dil_w):
    """Where, in x_ph flattened, image n's channel c starts the row of tap (p, q) that output
    row 0 reads: phase (q·D_w) mod S, row p·D_h, column ⌊q·D_w / S⌋ (unsigned, as every index
    of these loops)."""
    _, C, S, H_pad, W_ph = x_ph.shape
    u = np.uint64
    return (((u(n) * u(C) + u(c)) * u(S) + u((q * dil_w) % S)) * u(H_pad)
            + u(p * dil_h)) * u(W_ph) + u((q * dil_w) // S)


@helper()
def _im2col_image(x_ph, n, block, b, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out,
                  vector_runs):
    """block[:K, b] (K, H_out·W_out) := the windows of image n, K = C·KH·KW; x_ph
    (N, C, S, H_pad, W_ph) is the padded input split into its column phases (``_phased``),
    block (rows, group, H_out·W_out) a group's im2col matrices side by side.

    Row r = (c·KH + p)·KW + q holds x_pad[n, c, i·stride_h + p·dil_h, j·stride_w + q·dil_w] in
    column i·W_out + j: that is x_ph[n, c, t, i·stride_h + p·dil_h, j + s] with t, s the
    remainder and quotient of q·dil_w by stride_w, contiguous in j. (Not split, S = 1: the
    columns j·stride_w + q·dil_w of x_ph[n, c, 0].) Both arrays are indexed flat: a view of
    each row would cost more than copying the 4 to 32 values of a small one. A contiguous row
    is copied ``LANES`` values per vector instruction (``lanes_numba.copy_run``): a loop of
    W_out = 10 values, LeNet-5's second layer, is too short to be vectorised by the compiler.
    """
    C, S, W_ph = x_ph.shape[1], x_ph.shape[2], x_ph.shape[4]
    source, target = x_ph.reshape(x_ph.size), block.reshape(block.size)
    u = np.uint64
    u_W_out, group, HW = u(W_out), u(block.shape[1]), u(H_out * W_out)
    row_step, step = u(stride_h) * u(W_ph), u(stride_w // S)
    for c in range(C):
        for p in range(KH):
            for q in range(KW):
                start = _window_start(x_ph, n, c, p, q, stride_w, dil_h, dil_w)
                row = (u((c * KH + p) * KW + q) * group + u(b)) * HW
                if vector_runs and step == 1 and row_step == u_W_out:   # one run: the rows follow on
                    copy_run(target, row, source, start, HW)
                    continue
                for i in range(u(H_out)):
                    if vector_runs and step == 1:      # contiguous: whole vector instructions
                        copy_run(target, row + i * u_W_out, source, start + i * row_step,
                                 u_W_out)
                    elif step == 1:     # contiguous: its own loop, which the compiler vectorises
                        for j in range(u_W_out):
                            target[row + i * u_W_out + j] = source[start + i * row_step + j]
                    else:
                        for j in range(u_W_out):
                            target[row + i * u_W_out + j] = source[start + i * row_step
                                                                   + j * step]


@helper()
def _col2im_image(block, b, dx_ph, n, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out,
                  vector_runs):
    """The adjoint of im2col: dx_ph[n] := Σ over the windows of block[:, b] (K, H_out·W_out),
    each window's values added back where im2col read them (overlapping windows add up)."""
    C, S, H_pad, W_ph = dx_ph.shape[1], dx_ph.shape[2], dx_ph.shape[3], dx_ph.shape[4]
    source, target = block.reshape(block.size), dx_ph.reshape(dx_ph.size)
    u = np.uint64
    u_W_out, group, HW = u(W_out), u(block.shape[1]), u(H_out * W_out)
    row_step, step = u(stride_h) * u(W_ph), u(stride_w // S)
    if (vector_runs and stride_h == stride_w == 1 and dil_h == dil_w == 1
            and H_pad == H_out + KH - 1 and W_ph == W_out + KW - 1):
        # each row y of dx at once: the window rows p that reach it (output row i = y − p),
        # their KW taps each, summed in a register in the order p, q as below and written
        # once (``lanes_numba.window_rows``), no row read back nor zeroed first: a vector
        # load of a row just stored waits for the store (measured, LeNet-5's second layer:
        # 3.0 µs per image one window row at a time, as below)
        for c in range(C):
            for y in range(H_pad):
                p_low, p_high = max(0, y - H_out + 1), min(KH - 1, y)
                start = (u((c * KH + p_low) * KW) * group + u(b)) * HW + u(y - p_low) * u_W_out
                window_rows(target, u(((n * C + c) * H_pad + y) * W_ph), u(W_ph), source, start,
                            u_W_out, KW, group * HW, p_high - p_low + 1,
                            u(KW) * group * HW - u_W_out)
        return
    dx_ph[n] = 0
    if vector_runs and stride_w == 1 and dil_w == 1:
        # the KW taps of a window row land on one row of dx, shifted by q: summed in a
        # register and written once per row (``lanes_numba.add_taps``), in the order q = 0, 1,
        # ... as below; a vector add per tap would read back what the last one just wrote
        for c in range(C):
            for p in range(KH):
                start = _window_start(dx_ph, n, c, p, 0, stride_w, dil_h, dil_w)
                row = (u((c * KH + p) * KW) * group + u(b)) * HW
                for i in range(u(H_out)):
                    add_taps(target, start + i * row_step, u_W_out + u(KW - 1), source,
                             row + i * u_W_out, u_W_out, KW, group * HW)
        return
    for c in range(C):
        for p in range(KH):
            for q in range(KW):
                start = _window_start(dx_ph, n, c, p, q, stride_w, dil_h, dil_w)
                row = (u((c * KH + p) * KW + q) * group + u(b)) * HW
                for i in range(u(H_out)):
                    if step == 1:
                        for j in range(u_W_out):
                            target[start + i * row_step + j] += source[row + i * u_W_out + j]
                    else:
                        for j in range(u_W_out):
                            target[start + i * row_step + j * step] += \
                                source[row + i * u_W_out + j]


@kernel(parallel=True)
def _gemm_forward(x_ph, wb, out, cols, outs, starts, positions, w_t, o_t, p_t, KH, KW, stride_h,
                  stride_w, dil_h, dil_w, H_out, W_out, vector_runs, relu, pooled, divisor, gemm,
                  set_threads):
    """out[n] (O, H_out·W_out) = wb (O, rows) @ [im2col(x[n]); 1] (rows, H_out·W_out), then
    max(·, 0) with ``relu``. cols (threads, rows, B, H_out·W_out) is each thread's im2col
    matrix for B images side by side (its ones row set), one product for the B images; with
    B > 1 the product goes to outs (threads, O, B, H_out·W_out) and is copied out image by
    image, else straight into out[n]. When pooled (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋) has images: the
    sums of each image's 2×2 windows / divisor, while its output is in the cache.

    When ``positions`` has entries (then B = 1 and O <= ``tile_lanes.LANES``), out[n] is
    ``tile_lanes.tiled_rows``'s instead, read straight from x_ph without im2col (starts and
    positions: ``_tile_offsets``): w_t (K·LANES,) holds the weights transposed, o_t (threads,
    HW·LANES) takes each image's output transposed, p_t (threads, ⌊H_out/2⌋·⌊W_out/2⌋·LANES)
    its pool's (``_finish_tiles``)."""
    O, rows = wb.shape
    HW = H_out * W_out
    N, B = x_ph.shape[0], cols.shape[2]
    one, zero = out.dtype.type(1), out.dtype.type(0)
    tiled = positions.shape[0] > 0
    has_bias = rows > starts.shape[0]
    bias = np.zeros(tile_lanes.LANES if tiled else 0, wb.dtype)    # zeros past O
    if tiled and has_bias:
        bias[:O] = wb[:, rows - 1]
    image = x_ph.reshape(x_ph.size)
    u = np.uint64
    plane, width = u(x_ph[0].size), u(tile_lanes.LANES)
    for g in prange(-(-N // B)):
        buf = cols[numba.get_thread_id()]
        n0 = g * B
        nb = min(B, N - n0)
        if tiled:
            sums = o_t[numba.get_thread_id()]
            tile_lanes.tiled_rows(sums, image, u(n0) * plane, positions, starts, w_t, O, False)
            _finish_tiles(sums, O, bias, has_bias, relu, out[n0].reshape(O * HW), H_out, W_out,
                          pooled[n0].reshape(pooled[n0].size) if pooled.shape[0] > 0 else w_t,
                          pooled.shape[0] > 0, divisor, p_t[numba.get_thread_id()])
            continue
        else:
            for b in range(nb):
                _im2col_image(x_ph, n0 + b, buf, b, KH, KW, stride_h, stride_w, dil_h, dil_w,
                              H_out, W_out, vector_runs)
            if B == 1:
                target = out[n0].ctypes.data
            else:
                target = outs[numba.get_thread_id()].ctypes.data
            before = _set_threads(set_threads, 1)   # this product on this thread: the others are busy
            _gemm(gemm, NO_TRANS, NO_TRANS, O, nb * HW, rows, one, wb.ctypes.data, rows,
                  buf.ctypes.data, B * HW, zero, target, B * HW)
            _set_threads(set_threads, before)
        for b in range(nb):
            if B > 1:
                out[n0 + b] = outs[numba.get_thread_id(), :, b]
            if relu:
                clip_at_zero(out[n0 + b].reshape(O * HW))
            if pooled.shape[0] > 0:
                for c in range(O):
                    sum_2x2_plane(out[n0 + b, c].reshape((H_out, W_out)), pooled[n0 + b, c],
                                  divisor, zero)


@helper()
def _finish_tiles(sums, O, bias, has_bias, relu, out, H_out, W_out, pooled, pooling, divisor,
                  pooled_t):
    """One image's output from its tiles, sums (HW·LANES,) (the O channels side by side at each
    position): + bias, max(·, 0) with ``relu`` (``clip_at_zero``'s ``0 if v <= 0 else v + 0``),
    turned around into out (O·HW,); with ``pooling`` the sums of the 2×2 windows / divisor
    into pooled (O·⌊H_out/2⌋·⌊W_out/2⌋,) in ``sum_2x2_plane``'s order, (((0 + a) + b) + c) + d,
    LANES channels at a time (pooled_t, (⌊H_out/2⌋·⌊W_out/2⌋·LANES,), their buffer). The same
    values as adding the bias, ``clip_at_zero`` and ``sum_2x2_plane`` on out, plane by plane."""
    u = np.uint64
    lanes = u(tile_lanes.LANES)
    O, HW = u(O), u(H_out * W_out)
    adding, clipping = u(1 if has_bias else 0), u(1 if relu else 0)
    for t in range(HW):
        tile_lanes.bias_relu_lanes(sums, t * lanes, bias, adding, clipping)
    for t0 in range(u(0), HW, lanes):
        tile_lanes.transpose(out, t0, HW, sums, t0 * lanes, lanes, min(lanes, HW - t0), O, bias,
                             False)
    if not pooling:
        return
    H_p, W_p = u(H_out // 2), u(W_out // 2)
    for i in range(H_p):
        for j in range(W_p):
            a = (u(2) * i * u(W_out) + u(2) * j) * lanes
            b = a + u(W_out) * lanes
            tile_lanes.pool_lanes(pooled_t, (i * W_p + j) * lanes, sums, a, a + lanes, b,
                                  b + lanes, divisor)
    P = H_p * W_p
    for t0 in range(u(0), P, lanes):
        tile_lanes.transpose(pooled, t0, P, pooled_t, t0 * lanes, lanes, min(lanes, P - t0), O,
                             bias, False)


@helper()
def _weight_rows_of(image, at, starts, positions, flat, O, d_t, sums, accumulate, ones,
                    ones_at):
    """sums (rows, LANES) (+)= the weights' gradient of one image, transposed: rows k < K of
    ``tile_lanes.tiled_rows`` (the windows at ``at + starts[k] + positions`` in the flat
    image), row K (the bias's, when rows > K) Σ_t d[:, t]. flat (O·HW,) is the image's output
    gradient d (O, HW), d_t (HW·LANES,) the buffer for its transpose; ones an image of ones,
    ones_at [0] (the bias's row reads it)."""
    u = np.uint64
    HW, width = u(positions.shape[0]), u(tile_lanes.LANES)
    tile_lanes.transpose(d_t, 0, width, flat, 0, HW, O, HW, flat, False)   # d (O, HW) -> (HW, LANES)
    flat_sums = sums.reshape(sums.size)
    tile_lanes.tiled_rows(flat_sums, image, at, starts, positions, d_t, O, accumulate)
    K = u(starts.shape[0])
    if sums.shape[0] > K:           # the bias's gradient: Σ_t 1 · d_t[t]
        tile_lanes.tiled_rows(flat_sums[K * width:], ones, 0, ones_at, positions, d_t, O,
                              accumulate)


@kernel(parallel=True)
def _gemm_backward(x_ph, wb, dout, dpool, divisor, clip, clipping, partial, dx_ph, cols, dcols,
                   douts, starts, positions, d_t, group, KH, KW, stride_h, stride_w, dil_h, dil_w,
                   H_out, W_out, vector_runs, gemm, set_threads):
    """partial[g] (rows, O) = Σ over images n of group g of cols_n (rows, H_out·W_out) @
    dout[n]ᵀ, the weights' gradient transposed (BLAS is faster this way round: measured 1.4 to
    1.7 times on LeNet-5's and mnist_cnn's second layers); dx_ph[n] = col2im(Wᵀ @ dout[n]) when
    dx_ph has images (else only the weights' gradient).

    B images per product (cols (threads, rows, B, HW), dcols (threads, K, B, HW)): with B > 1
    their dout is first copied side by side into douts (threads, O, B, HW). When dpool (N, O,
    ⌊H_out/2⌋, ⌊W_out/2⌋) has images, it is the gradient of a 2×2 sum pool / divisor after the
    layer, and dout is not read: each image's is dpool spread into douts (with the ReLU's
    gradient where ``clipping``: clip (N, O, H_out, W_out) is the clipped output),
    ``pool_numba.spread_2x2``. Groups of ``group`` images (a multiple of B), in parallel; their
    sums are added in order afterwards, so the result does not depend on the number of
    threads.

    When ``starts`` (K,) has rows (then B = 1 and O <= ``tile_lanes.LANES``), the weights'
    gradient is ``tile_lanes.tiled_rows``'s, read straight from x_ph without im2col (starts and
    positions: ``_tile_offsets``), d_t (threads, HW·LANES) takes each image's dout transposed,
    and partial is (groups, rows, LANES).
    """
    N = x_ph.shape[0]
    O, rows = wb.shape
    K, B, HW = dcols.shape[1], cols.shape[2], H_out * W_out
    one, zero = dout.dtype.type(1), dout.dtype.type(0)
    spreading, tiled = dpool.shape[0] > 0, starts.shape[0] > 0
    image = x_ph.reshape(x_ph.size)
    u = np.uint64
    plane = u(x_ph[0].size)
    ones = np.ones(x_ph[0].size if tiled else 0, dout.dtype)
    ones_at = np.zeros(1, np.uint64)
    for g in prange(partial.shape[0]):
        buf, dbuf = cols[numba.get_thread_id()], dcols[numba.get_thread_id()]
        before = _set_threads(set_threads, 1)
        for n0 in range(g * group, min(N, (g + 1) * group), B):
            nb = min(B, N - n0)
            for b in range(nb):
                if not tiled:
                    _im2col_image(x_ph, n0 + b, buf, b, KH, KW, stride_h, stride_w, dil_h,
                                  dil_w, H_out, W_out, vector_runs)
                if spreading:
                    for o in range(O):
                        spread_2x2(dpool[n0 + b, o], divisor, zero, clip[n0 + b, o], clipping,
                                   douts[numba.get_thread_id(), o, b], H_out, W_out, W_out,
                                   vector_runs)
                elif B > 1:
                    douts[numba.get_thread_id(), :, b] = dout[n0 + b]
            if B == 1 and not spreading:
                d = dout[n0].ctypes.data
            else:
                d = douts[numba.get_thread_id()].ctypes.data
            if tiled:
                if spreading:
                    source = douts[numba.get_thread_id()].reshape(O * HW)
                else:
                    source = dout[n0].reshape(O * HW)
                _weight_rows_of(image, u(n0) * plane, starts, positions, source, O,
                                d_t[numba.get_thread_id()], partial[g], n0 > g * group, ones,
                                ones_at)
            else:
                # partial[g] (+)= buf (rows, nb·HW) @ d (O, nb·HW)ᵀ
                _gemm(gemm, NO_TRANS, TRANS, rows, O, nb * HW, one, buf.ctypes.data, B * HW,
                      d, B * HW, zero if n0 == g * group else one,
                      partial[g].ctypes.data, O)
            if dx_ph.shape[0] > 0:
                # dbuf (K, nb·HW) = W[:, :K]ᵀ (K, O) @ d (O, nb·HW); W is wb, leading dim rows
                _gemm(gemm, TRANS, NO_TRANS, K, nb * HW, O, one, wb.ctypes.data, rows,
                      d, B * HW, zero, dbuf.ctypes.data, B * HW)
                for b in range(nb):
                    _col2im_image(dbuf, b, dx_ph, n0 + b, KH, KW, stride_h, stride_w, dil_h,
                                  dil_w, H_out, W_out, vector_runs)
        _set_threads(set_threads, before)


@kernel()
def _weight_gradient(partial, K, dw, db):
    """dw (O, K) and db (O,) (when it has O entries) := Σ_g partial[g] (rows, O), transposed:
    partial[0] + partial[1] + ... in that order, as ``partial.sum(axis=0)`` adds them, the
    bias's row K after the K rows of the weights. 16 rows at a time, so that each row of dw is
    written 16 values at a time (a transposing copy through NumPy, one value per cache line,
    took 43 µs for resnet_small's last layer, (128, 256)). partial's rows may be wider than O
    (``tile_lanes``'s, LANES): the columns past O are not read."""
    G, rows, width = partial.shape
    u = np.uint64
    P, D = partial.reshape(partial.size), dw.reshape(dw.size)
    block = np.empty(16 * width, dtype=partial.dtype)
    u_O, u_width, u_K, plane = u(dw.shape[0]), u(width), u(K), u(rows * width)
    for k0 in range(0, rows, 16):
        n = u(min(16, rows - k0))
        start = u(k0) * u_width
        for e in range(n * u_width):
            block[e] = P[start + e]
        for g in range(1, G):
            at = u(g) * plane + start
            for e in range(n * u_width):
                block[e] += P[at + e]
        n_w = u(max(0, min(rows - k0, 16, K - k0)))
        for o in range(u_O):
            row = o * u_K + u(k0)
            for i in range(n_w):
                D[row + i] = block[i * u_width + o]
            if n_w < n and db.shape[0] > 0:
                db[o] = block[(u_K - u(k0)) * u_width + o]


@kernel(parallel=True)
def _im2col(x_ph, n0, cols, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out,
            vector_runs):
    """cols[b, :K] (K, 1, H_out·W_out) := im2col of image n0 + b, for every b (without BLAS in
    Numba)."""
    for b in prange(cols.shape[0]):
        _im2col_image(x_ph, n0 + b, cols[b], 0, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out,
                      W_out, vector_runs)


@kernel(parallel=True)
def _col2im(dcols, n0, dx_ph, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out,
            vector_runs):
    """dx_ph[n0 + b] := col2im of dcols[b] (K, 1, H_out·W_out), for every b (without BLAS in
    Numba)."""
    for b in prange(dcols.shape[0]):
        _col2im_image(dcols[b], 0, dx_ph, n0 + b, KH, KW, stride_h, stride_w, dil_h, dil_w,
                      H_out, W_out, vector_runs)


def _tile_offsets(x_ph, KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out, wanted=True):
    """(starts, positions), uint64, for ``tile_lanes``: im2col's entry (k, t) of image n is
    x_ph.flat[n·x_ph[0].size + starts[k] + positions[t]]. starts (C·KH·KW,): where row
    k = (c·KH + p)·KW + q starts in one image of x_ph (N, C, S, H_pad, W_ph), its first
    window's value (``_window_start`` of image 0); positions (H_out·W_out,): output (i, j)'s
    window's offset from there, i·stride_h·W_ph + j·(stride_w / S). Empty unless ``wanted``.
    Made once per geometry (NumPy takes 30 µs to make them)."""
    return _offsets(x_ph.shape[1:] if wanted else None, KH, KW, dil_h, dil_w, stride_h,
                    stride_w, H_out, W_out)


@functools.lru_cache(maxsize=64)
def _offsets(phased, KH, KW, dil_h, dil_w, stride_h, stride_w, H_out, W_out):
    starts, positions = np.empty(0, np.uint64), np.empty(0, np.uint64)
    if phased is not None:
        C, S, H_pad, W_ph = phased
        c, p, q = np.meshgrid(np.arange(C), np.arange(KH), np.arange(KW), indexing="ij")
        starts = ((((c * S + (q * dil_w) % S) * H_pad + p * dil_h) * W_ph + (q * dil_w) // S)
                  .ravel().astype(np.uint64))
        i, j = np.meshgrid(np.arange(H_out), np.arange(W_out), indexing="ij")
        positions = (i * stride_h * W_ph + j * (stride_w // S)).ravel().astype(np.uint64)
    for offsets in (starts, positions):     # shared by every call: one compiled type either way
        offsets.flags.writeable = False
    return starts, positions


def _with_bias(w, b):
    """[W | b]: (O, C·KH·KW [+ 1]); the bias is the weight of a constant input 1."""
    O = w.shape[0]
    K = w.size // O
    wb = np.empty((O, K + (b is not None)), dtype=w.dtype)
    wb[:, :K] = w.reshape(O, K)
    if b is not None:
        wb[:, K] = b
    return wb


def _images_per_product(N, HW):
    """Images whose im2col matrices sit side by side in one product, for N images of HW output
    positions: 1 above ``_PRODUCT_POSITIONS`` positions, else enough for ``_PRODUCT_COLUMNS``
    columns, and at most N / ``_PRODUCT_GROUPS`` so that the threads still have products to
    share."""
    if HW > _PRODUCT_POSITIONS:
        return 1
    return max(1, min(-(-_PRODUCT_COLUMNS // HW), N // _PRODUCT_GROUPS))


def _chunk(rows, HW, itemsize):
    """Images per chunk of the NumPy path: an im2col matrix of about ``_CHUNK_BYTES``."""
    return max(1, _CHUNK_BYTES // (rows * HW * itemsize))


def _buffers(count, rows, HW, dtype, ones, images=1):
    """``count`` im2col matrices (rows, images, HW) (a block of ``images`` images side by side,
    as ``_im2col_image`` writes); with ``ones`` the last row is all ones."""
    cols = workspace.empty((count, rows, images, HW), dtype)
    if ones:
        cols[:, -1] = 1
    return cols


# ----------------------------------------------------------------------------------------
# the two passes
# ----------------------------------------------------------------------------------------
def forward(x, w, b, stride, pads, dilation, relu=False, pool=False, need_cache=True,
            pooled=None, divisor=1):
    """Convolve x with w, add b.

    x: (N, C, H, W); w: (O, C, KH, KW); b: (O,) or None
    stride (S_h, S_w); pads ((pad_top, pad_bottom), (pad_left, pad_right)); dilation (D_h, D_w)
    relu: out = max(out, 0), the ReLU after the layer applied to each image's output just
    written (the cache does not change: the backward pass does not read the output).
    pool: then a pool of the output's 2×2, stride-2 windows, (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋), the
    layer after the convolution (and its ReLU): True or "max" their maxima (MaxPool2D(2)),
    "mean" or "sum" their means or sums (AvgPool2D(2), SumPool2D(2)). The cache is then (the
    convolution's, the pool's): for "max" ``pool_numba.max_backward``'s, for "mean" and "sum"
    what ``backward`` takes as ``spread``.
    need_cache: False for prediction, where no backward pass follows: the cache may be None.
    pooled, divisor: (``_forward_spreading``) the "direct" and "gemm" kernels also write the
    sums of out's 2×2 windows / divisor into pooled (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋).
    Returns out (N, O, H_out, W_out) and the cache for ``backward``.
    """
    if pool not in (False, None, True, "max") and pool not in _DIVISORS:
        raise ValueError(f"pool must be False, True, 'max', 'mean' or 'sum', got {pool!r}")
    compiled = w.dtype in COMPILED_DTYPES
    if pool in _DIVISORS:
        return _forward_spreading(x, w, b, stride, pads, dilation, relu, pool, need_cache)
    if pool and not (compiled and algorithm(x.shape, w.shape, stride, dilation) == "winograd"):
        # only Winograd pools each image's output in its kernel; the others pool afterwards
        out, cache = forward(x, w, b, stride, pads, dilation, relu, need_cache=need_cache)
        return conv_pool.after(pool_numba, out, cache, pool, relu, need_cache)
    if not compiled:                            # e.g. float16: NumPy's kernels
        out, cache = conv_fast.forward(x, w, b, stride, pads, dilation, relu)
        return out, Fallback((cache,)) if need_cache else None
    x, w = np.ascontiguousarray(x), np.ascontiguousarray(w)
    algo = algorithm(x.shape, w.shape, stride, dilation)
    if algo == "winograd":              # it pads inside its kernels, image by image
        # the cache keeps x itself (not padded) and w; geometry is unused by this backward
        cache = ("winograd", x, w, b is not None, x.shape, pads, None) if need_cache else None
        if not pool:
            return conv_winograd.forward(x, w, b, pads, relu), cache
        if not need_cache:
            return conv_winograd.forward(x, w, b, pads, relu, pool=True), None
        out, winner = conv_winograd.forward(x, w, b, pads, relu, pool=True, winners=True)
        H_out = x.shape[2] + sum(pads[0]) - 2
        W_out = x.shape[3] + sum(pads[1]) - 2
        return out, (cache, ((x.shape[0], w.shape[0], H_out, W_out), winner))
    O, _, KH, KW = w.shape
    (stride_h, stride_w), (dil_h, dil_w) = stride, dilation
    H_out = window_output_size(x.shape[2], KH, stride_h, pads[0], dil_h)
    W_out = window_output_size(x.shape[3], KW, stride_w, pads[1], dil_w)
    if algo == "direct":                # the cache keeps the padded input's phases
        out, xq = conv_direct.forward(x, w, b, stride, pads, dilation, H_out, W_out, relu,
                                      pooled, divisor, need_cache, VECTOR_RUNS)
        return out, ((algo, xq, w, b is not None, x.shape, pads, dilation) if need_cache
                     else None)
    x_pad = _padded(x, pads)
    N, C, H_pad, W_pad = x_pad.shape
    out = workspace.empty((N, O, H_out, W_out), w.dtype)
    geometry = (KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out)
    wb = _with_bias(w, b)
    HW = H_out * W_out
    flat = out.reshape(N, O, HW)
    x_ph = _phased(x_pad, KH, KW, stride_h, stride_w)   # cached: backward's im2col reads it
    if blas.GEMM is not None:
        threads, B = numba.get_num_threads(), _images_per_product(N, HW)
        tiled = TILES and B == 1 and O <= tile_lanes.LANES
        starts, positions = _tile_offsets(x_ph, *geometry, tiled)
        w_t = np.zeros((KH * KW * C if tiled else 0, tile_lanes.LANES), w.dtype)
        if tiled:
            w_t[:, :O] = w.reshape(O, -1).T
        o_t = workspace.zeros((threads if tiled else 0, HW * tile_lanes.LANES), w.dtype)
        p_t = workspace.empty((threads if tiled else 0,
                               (H_out // 2) * (W_out // 2) * tile_lanes.LANES), w.dtype)
        cols = _buffers(threads, 0 if tiled else wb.shape[1], HW, w.dtype,
                        b is not None and not tiled, B)
        outs = workspace.empty((threads if B > 1 else 0, O, B, HW), w.dtype)
        with blas.one_thread_per_product():
            _gemm_forward(x_ph, wb, flat, cols, outs, starts, positions, w_t.reshape(-1), o_t, p_t,
                          *geometry, VECTOR_RUNS, relu,
                          _NO_IMAGES[w.dtype] if pooled is None else pooled,
                          w.dtype.type(divisor), blas.GEMM[w.dtype], blas.SET_THREADS_LOCAL)
    else:
        B = _chunk(wb.shape[1], HW, w.itemsize)
        cols = _buffers(min(B, N), wb.shape[1], HW, w.dtype, b is not None)
        for n0 in range(0, N, B):
            nb = min(B, N - n0)
            _im2col(x_ph, n0, cols[:nb], *geometry, VECTOR_RUNS)
            np.matmul(wb, cols[:nb, :, 0], out=flat[n0:n0 + nb])   # one product per image, in C
            if relu:
                np.maximum(flat[n0:n0 + nb], flat.dtype.type(0), out=flat[n0:n0 + nb])
    return out, (algo, x_ph, wb, b is not None, x.shape, pads, geometry + (W_pad,))


def _forward_spreading(x, w, b, stride, pads, dilation, relu, pool, need_cache):
    """``forward`` with pool "mean" or "sum": (pooled, (the convolution's cache, spread)),
    spread = (the pool's cache as ``pool_numba.avg_forward`` keeps it, the clipped output or
    None without ``relu``). "direct" and "gemm" take the sums of each image's output while it
    is in the cache, in the kernel; the others (Winograd, NumPy's) pool afterwards, with the
    same bits (``pool_numba.sum_2x2_plane``)."""
    divisor = _DIVISORS[pool]
    compiled = w.dtype in COMPILED_DTYPES
    algo = algorithm(x.shape, w.shape, stride, dilation) if compiled else None
    if algo == "direct" or (algo == "gemm" and blas.GEMM is not None):
        N, O = x.shape[0], w.shape[0]
        H_out = window_output_size(x.shape[2], w.shape[2], stride[0], pads[0], dilation[0])
        W_out = window_output_size(x.shape[3], w.shape[3], stride[1], pads[1], dilation[1])
        pooled = workspace.empty((N, O, H_out // 2, W_out // 2), w.dtype)
        out, cache = forward(x, w, b, stride, pads, dilation, relu, pooled=pooled,
                             divisor=divisor, need_cache=need_cache)
        pool_cache = (out.shape,) + _WINDOW + (np.full(pooled.shape[2:], divisor, w.dtype),)
        return pooled, ((cache, (pool_cache, out if relu else None)) if need_cache else None)
    out, cache = forward(x, w, b, stride, pads, dilation, relu, need_cache=need_cache)
    return conv_pool.after(pool_numba, out, cache, pool, relu, need_cache)


def backward(dout, cache, need_dx=True, clip=None, spread=None):
    """Gradients w.r.t. x, w and b, given dout = ∂loss/∂out (N, O, H_out, W_out).

    Returns dx (N, C, H, W), dw (O, C, KH, KW), db (O,) or None. With ``need_dx=False`` dx is
    not computed and None is returned in its place (the first layer's input is the data: the
    training loop never uses its gradient). ``clip``: the layer's input x, the output of a ReLU
    whose gradient dx then gets too: dx where x > 0, else 0 (``layers.fusion``); Winograd's
    kernel applies it as it writes dx. ``spread``: the cache's second half after
    ``forward(pool="mean" or "sum")``; dout is then the pool's output's gradient (N, O,
    ⌊H_out/2⌋, ⌊W_out/2⌋), spread back over the output (with the ReLU's gradient) as "direct"
    lays it out and as "gemm" hands it to BLAS, image by image, or first by
    ``pool_numba.avg_backward``. After ``forward(pool="max")``, a ``MaxSpread``: Winograd
    spreads the max-pool's gradient as it makes its tiles' (``takes_max_gradient``).
    """
    if isinstance(spread, MaxSpread) and not takes_max_gradient(cache):
        (x_shape, winner), clipped = spread
        if clipped is not None:
            dout = elementwise_numba.relu_backward(dout, clipped)
        dout, spread = pool_numba.max_backward(dout, (x_shape, winner)), None
    elif spread is not None and not isinstance(spread, MaxSpread) and not _spreads(cache):
        dout, spread = conv_pool.spread(pool_numba, dout, spread), None
    if isinstance(cache, Fallback):
        dx, dw, db = conv_fast.backward(dout, cache[0], need_dx=need_dx)
        return _clipped(dx, clip), dw, db
    algo, x_pad, w, has_bias, x_shape, pads, geometry = cache
    dout = np.ascontiguousarray(dout, dtype=w.dtype)
    if algo == "winograd":                # x_pad is x, w the weights (O, C, 3, 3)
        pooled = None
        if spread is not None:                  # a MaxSpread: the pool's gradient
            (_, winner), clipped = spread
            pooled = (winner, clipped)
        dx, dw, db = conv_winograd.gradients(x_pad, dout, w, pads, _GROUP, need_dx,
                                             clip is not None, pooled)
        return dx, dw, db if has_bias else None
    if algo == "direct":                  # x_pad holds the phases, geometry the dilation
        if spread is not None:
            pool_cache, out = spread
            spread = (pool_cache[0], pool_numba.two_by_two_divisor(pool_cache[4], w.dtype),
                      out)
        dx, dw, db = conv_direct.backward(dout, x_pad, w, x_shape, pads, geometry, _GROUP,
                                          need_dx, spread, VECTOR_RUNS)
        return _clipped(dx, clip), dw, db if has_bias else None
    N, C, H, W = x_shape
    x_ph, (*geometry, W_pad) = x_pad, geometry     # gemm's cache: the phased input
    KH, KW, stride_h, stride_w, dil_h, dil_w, H_out, W_out = geometry
    O, K, HW = w.shape[0], C * KH * KW, H_out * W_out
    dx_ph = workspace.empty(x_ph.shape if need_dx else (0,) + x_ph.shape[1:], w.dtype)
    rows = w.shape[1]                 # w is [W | b] here
    if blas.GEMM is not None:
        threads, B = numba.get_num_threads(), _images_per_product(N, HW)
        group = B * -(-_GROUP // B)
        tiled = TILES and B == 1 and O <= tile_lanes.LANES
        starts, positions = _tile_offsets(x_ph, *geometry, tiled)
        partial = np.empty((-(-N // group), rows, tile_lanes.LANES if tiled else O),
                           dtype=w.dtype)
        d_t = workspace.empty((threads if tiled else 0, HW * tile_lanes.LANES), w.dtype)
        cols = _buffers(threads, 0 if tiled else rows, HW, w.dtype, has_bias and not tiled, B)
        dcols = workspace.empty((threads if need_dx else 0, K, B, HW), w.dtype)
        douts = workspace.empty((threads if B > 1 or spread else 0, O, B, HW), w.dtype)
        if spread is None:
            flat, dpool, divisor, out = dout.reshape(N, O, HW), _NO_IMAGES[w.dtype], 1, None
        else:
            (pool_cache, out), dpool = spread, dout
            flat = dout.reshape(N, O, -1)
            divisor = pool_numba.two_by_two_divisor(pool_cache[4], w.dtype)
        with blas.one_thread_per_product():
            _gemm_backward(x_ph, w, flat, dpool, w.dtype.type(divisor),
                           dpool if out is None else out, out is not None, partial, dx_ph, cols,
                           dcols, douts, starts, positions, d_t, group, *geometry, VECTOR_RUNS,
                           blas.GEMM[w.dtype],
                           blas.SET_THREADS_LOCAL)
        dw = np.empty((O, C, KH, KW), dtype=w.dtype)
        db = np.empty(O if has_bias else 0, dtype=w.dtype)
        _weight_gradient(partial, K, dw.reshape(O, K), db)
        db = db if has_bias else None
    else:
        flat = dout.reshape(N, O, HW)
        B = _chunk(rows, HW, w.itemsize)
        cols = _buffers(min(B, N), rows, HW, w.dtype, has_bias)
        w_t = w[:, :K].T
        dwb = np.zeros((O, rows), dtype=w.dtype)
        for n0 in range(0, N, B):
            nb = min(B, N - n0)
            _im2col(x_ph, n0, cols[:nb], *geometry, VECTOR_RUNS)
            dwb += np.matmul(flat[n0:n0 + nb], cols[:nb, :, 0].transpose(0, 2, 1)).sum(axis=0)
            if need_dx:
                dcols = np.matmul(w_t, flat[n0:n0 + nb])[:, :, None]
                _col2im(dcols, n0, dx_ph, *geometry, VECTOR_RUNS)
        dw = np.ascontiguousarray(dwb[:, :K]).reshape((O, C, KH, KW))
        db = np.ascontiguousarray(dwb[:, K]) if has_bias else None
    dx_pad = _unphased(dx_ph, W_pad) if need_dx else None
    if not need_dx:
        return None, dw, db
    (pad_top, _), (pad_left, _) = pads
    dx = dx_pad
    if dx_pad.shape != x_shape:
        dx = workspace.empty(x_shape, dx_pad.dtype)
        _crop_into(dx_pad, dx, pad_top, pad_left)
    return _clipped(dx, clip), dw, db


class MaxSpread(tuple):
    """``backward``'s spread for a 2×2 max-pool that ran in Winograd's forward kernel
    (``takes_max_gradient``): ``MaxSpread((pool_cache, clipped))``, the pool's cache
    (``pool_numba.max_backward``'s) and its output when a ReLU ran between, else None."""


def takes_max_gradient(cache):
    """Whether ``backward`` with this cache (of ``forward(pool="max")``'s first half) takes the
    max-pool's gradient itself (``spread=MaxSpread(...)``): Winograd's, which spreads it to
    each window's maximum as it makes each image's tiles' gradients, so that the output's
    gradient (four times the pool's) is never written nor read (mnist_cnn's second layer:
    0.84 ms of pool_numba.max_backward per batch of 64 gone)."""
    return not isinstance(cache, Fallback) and cache[0] == "winograd"


def _spreads(cache):
    """Whether ``backward`` with this cache spreads a 2×2 pool's gradient in its own kernels:
    "direct", and "gemm" with BLAS called from Numba."""
    return (not isinstance(cache, Fallback)
            and (cache[0] == "direct" or (cache[0] == "gemm" and blas.GEMM is not None)))


def _clipped(dx, x):
    """dx where x > 0, else 0 (the ReLU before the layer, x its output); dx itself without x."""
    return dx if x is None or dx is None else elementwise_numba.relu_backward(dx, x)
