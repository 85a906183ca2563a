"""Convolution vectorised: im2col + one matrix product (which NumPy hands to BLAS).

im2col lays every window of the padded input out as one row of a matrix ``cols``
(N·H_out·W_out, C·KH·KW); the weights are a matrix (O, C·KH·KW); then

    out  = cols @ w_matᵀ          (forward)
    dw   = doutᵀ @ cols           (gradient of the weights)
    dcols = dout @ w_mat          (gradient of the columns, then col2im back to dx)

Same functions, signatures and results as ``conv_loops``.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.shapes import window_output_size
from . import conv_pool, elementwise_loops, pool_fast


def _output_size(size, kernel, stride, dilation):
    """Window positions along one (already padded) axis; the layer has checked that it is >= 1."""
    return window_output_size(size, kernel, stride, (0, 0), dilation)


def im2col(x_pad, kernel, stride, dilation):
    """x_pad (N, C, H_pad, W_pad) -> cols (N·H_out·W_out, C·KH·KW), rows in (n, i, j) order.

    ``sliding_window_view`` gives every position of the dilated window (a view, no copy);
    stepping by the stride keeps the positions the convolution uses, stepping by the dilation
    keeps the kernel taps. Positions past the last full stride are never reached, so a padded
    input larger than needed ((H_pad − effective kernel) % S != 0) is handled by the slicing.
    """
    (KH, KW), (stride_h, stride_w), (dil_h, dil_w) = kernel, stride, dilation
    N, C = x_pad.shape[:2]
    H_out = _output_size(x_pad.shape[2], KH, stride_h, dil_h)
    W_out = _output_size(x_pad.shape[3], KW, stride_w, dil_w)
    eff_h, eff_w = dil_h * (KH - 1) + 1, dil_w * (KW - 1) + 1
    windows = sliding_window_view(x_pad, (eff_h, eff_w), axis=(2, 3))
    # (N, C, H_out, W_out, KH, KW)
    windows = windows[:, :, ::stride_h, ::stride_w, ::dil_h, ::dil_w]
    assert windows.shape[2:4] == (H_out, W_out)
    # the reshape copies: this is the (large) im2col matrix
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * H_out * W_out, C * KH * KW), H_out, W_out


def col2im(dcols, x_pad_shape, kernel, stride, dilation, out_hw):
    """The adjoint of im2col: dcols (C, KH, KW, N, H_out, W_out) summed into (N, C, H_pad, W_pad).

    For one kernel tap (p, q) the windows read x_pad at rows p·D_h + i·S_h and columns
    q·D_w + j·S_w: distinct positions, so one strided-slice ``+=`` per tap is exact. Overlaps
    between windows are taps of different (p, q), added one after the other.
    """
    (KH, KW), (stride_h, stride_w), (dil_h, dil_w) = kernel, stride, dilation
    H_out, W_out = out_hw
    dx_pad = np.zeros(x_pad_shape, dtype=dcols.dtype)
    for p in range(KH):
        rows = slice(p * dil_h, p * dil_h + stride_h * (H_out - 1) + 1, stride_h)
        for q in range(KW):
            cols = slice(q * dil_w, q * dil_w + stride_w * (W_out - 1) + 1, stride_w)
            dx_pad[:, :, rows, cols] += dcols[:, p, q].transpose(1, 0, 2, 3)
    return dx_pad


def forward(x, w, b, stride, pads, dilation, relu=False, pool=False, need_cache=True):
    """Convolve x with w, add b.

    x: (N, C, H, W); w: (O, C, KH, KW); b: (O,) or None
    stride (S_h, S_w); pads ((pad_top, pad_bottom), (pad_left, pad_right)); dilation (D_h, D_w)
    relu: out = max(out, 0), the ReLU after the layer applied as the output is written (the
    cache does not change: the convolution's backward does not read its output).
    pool: then the pool of the output's 2×2, stride-2 windows after the layer (and its ReLU):
    True or "max", "mean" or "sum" (``conv_pool.after``), (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋); the
    cache is then (the convolution's, the pool's).
    need_cache: False for prediction, where no backward pass follows: the cache may be None.
    Returns out (N, O, H_out, W_out) and the cache for ``backward``.
    """
    N = x.shape[0]
    O, C, KH, KW = w.shape
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    x_pad = np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))
    cols, H_out, W_out = im2col(x_pad, (KH, KW), stride, dilation)
    out = cols @ w.reshape(O, C * KH * KW).T                         # (N·H_out·W_out, O)
    if b is not None:
        out += b
    out = np.ascontiguousarray(out.reshape(N, H_out, W_out, O).transpose(0, 3, 1, 2))
    if relu:
        np.maximum(out, out.dtype.type(0), out=out)
    cache = (cols, w, b is not None, x.shape, x_pad.shape, stride, pads, dilation)
    if pool:
        return conv_pool.after(pool_fast, out, cache, pool, relu, need_cache)
    return out, cache if need_cache else None


def backward(dout, cache, need_dx=True, clip=None, spread=None):
    """Gradients w.r.t. x, w and b, given dout = ∂loss/∂out (N, O, H_out, W_out).

    Returns dx (N, C, H, W), dw (O, C, KH, KW), db (O,) or None; dx is None when
    ``need_dx`` is False.
    ``clip``: the layer's input x, the output of a ReLU whose gradient dx then gets too: dx
    where x > 0, else 0 (``layers.fusion``). ``spread``: the pool's half of the cache after
    ``forward(pool="mean" or "sum")``; dout is then the pool's output's gradient, spread back
    first (``conv_pool.spread``).
    """
    if spread is not None:
        dout = conv_pool.spread(pool_fast, dout, spread)
    cols, w, has_bias, x_shape, x_pad_shape, stride, pads, dilation = cache
    N, C, H, W = x_shape
    O, _, KH, KW = w.shape
    _, _, H_out, W_out = dout.shape
    (pad_top, _), (pad_left, _) = pads

    dout_rows = dout.transpose(0, 2, 3, 1).reshape(N * H_out * W_out, O)
    dw = (dout_rows.T @ cols).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    # (C·KH·KW, O) @ (O, N·H_out·W_out): laid out so that each tap (p, q) is one block for
    # col2im
    dcols = (w.reshape(O, C * KH * KW).T @ dout_rows.T).reshape(C, KH, KW, N, H_out, W_out)
    dx_pad = col2im(dcols, x_pad_shape, (KH, KW), stride, dilation, (H_out, W_out))
    dx = np.ascontiguousarray(dx_pad[:, :, pad_top: pad_top + H, pad_left: pad_left + W])
    if clip is not None:       # the ReLU before the layer: its gradient too
        dx = elementwise_loops.relu_backward(dx, clip)
    return dx, dw, db
