"""Convolution as plain loops: the formula, written out. For learning; slow.

    out[n, o, i, j] = b[o] + Σ_{c, p, q} x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w] · w[o, c, p, q]

(what deep-learning libraries call convolution is a cross-correlation: the kernel is not flipped).
The sum over (c, p, q) is one ``np.sum`` over the window; the loops over (n, o, i, j) are explicit.
``conv_fast`` computes the same with im2col and one matrix product.
"""
import numpy as np

from ..core.shapes import window_output_size
from . import conv_pool, elementwise_loops, pool_loops


def _pad(x, pads):
    """x (N, C, H, W) with zeros added by pads ((pad_top, pad_bottom), (pad_left, pad_right))
    -> x_pad (N, C, H_pad, W_pad)."""
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    return np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)))


def _output_size(size, kernel, stride, dilation):
    """Window positions along one (already padded) axis; the layer has checked that it is >= 1."""
    return window_output_size(size, kernel, stride, (0, 0), dilation)


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
    N, C, H, W = x.shape
    O, _, KH, KW = w.shape
    stride_h, stride_w = stride
    dil_h, dil_w = dilation
    x_pad = _pad(x, pads)
    H_out = _output_size(x_pad.shape[2], KH, stride_h, dil_h)
    W_out = _output_size(x_pad.shape[3], KW, stride_w, dil_w)

    out = np.zeros((N, O, H_out, W_out), dtype=np.result_type(x, w))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    # rows i·S_h + p·D_h for p = 0..KH−1, columns j·S_w + q·D_w for q = 0..KW−1
                    rows = slice(i * stride_h, i * stride_h + dil_h * (KH - 1) + 1, dil_h)
                    cols = slice(j * stride_w, j * stride_w + dil_w * (KW - 1) + 1, dil_w)
                    window = x_pad[n, :, rows, cols]                        # (C, KH, KW)
                    out[n, o, i, j] = np.sum(window * w[o])
                    if b is not None:
                        out[n, o, i, j] += b[o]
    if relu:
        np.maximum(out, out.dtype.type(0), out=out)
    cache = (x_pad, w, b is not None, x.shape, stride, pads, dilation)
    if pool:
        return conv_pool.after(pool_loops, out, cache, pool, relu, need_cache)
    return out, cache if need_cache else None


def backward(dout, cache, need_dx=True, clip=None, spread=None):
    """Gradients of the loss w.r.t. x, w and b, given dout = ∂loss/∂out (N, O, H_out, W_out).

    Every output entry out[n, o, i, j] touched one window of x_pad and all of w[o]; its gradient
    flows back along the same connections: to the window (times w[o]) and to w[o] (times the
    window). Windows overlap when the stride is smaller than the kernel, hence ``+=``.
    Returns dx (N, C, H, W), dw (O, C, KH, KW), db (O,) or None; dx is None when
    ``need_dx`` is False (nobody needs the gradient of the data).
    ``clip``: the layer's input x, the output of a ReLU whose gradient dx then gets too: dx
    where x > 0, else 0 (``layers.fusion``). ``spread``: the pool's half of the cache after
    ``forward(pool="mean" or "sum")``; dout is then the pool's output's gradient, spread back
    first (``conv_pool.spread``).
    """
    if spread is not None:
        dout = conv_pool.spread(pool_loops, dout, spread)
    x_pad, w, has_bias, x_shape, stride, pads, dilation = cache
    N, C, H, W = x_shape
    O, _, KH, KW = w.shape
    _, _, H_out, W_out = dout.shape
    stride_h, stride_w = stride
    dil_h, dil_w = dilation
    (pad_top, _), (pad_left, _) = pads

    dx_pad = np.zeros_like(x_pad, dtype=np.result_type(x_pad, dout))
    dw = np.zeros_like(w, dtype=np.result_type(w, dout))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * stride_h, i * stride_h + dil_h * (KH - 1) + 1, dil_h)
                    cols = slice(j * stride_w, j * stride_w + dil_w * (KW - 1) + 1, dil_w)
                    if need_dx:
                        dx_pad[n, :, rows, cols] += dout[n, o, i, j] * w[o]
                    dw[o] += dout[n, o, i, j] * x_pad[n, :, rows, cols]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    # the padding is not an input: its gradient is dropped
    dx = np.ascontiguousarray(dx_pad[:, :, pad_top: pad_top + H, pad_left: pad_left + W])
    if clip is not None:       # the ReLU before the layer: its gradient too
        dx = elementwise_loops.relu_backward(dx, clip)
    return dx, dw, db
