"""Convolution as plain loops: the formula, written out. For learning; slow.

    out[n, o, i, j] = b[o] + Σ_{c, p, q} x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w] · w[o, c, p, q]

(what deep-learning libraries call convolution is a cross-correlation: the kernel is not flipped).
The sum over (c, p, q) is one ``np.sum`` over the window; the loops over (n, o, i, j) are explicit.
``conv_fast`` computes the same with im2col and one matrix product.
"""
import numpy as np

from ..core.shapes import window_output_size


def _pad(x, pads):
    """x (N, C, H, W) with zeros added: ((top, bottom), (left, right)) -> (N, C, H_pad, W_pad)."""
    (top, bottom), (left, right) = pads
    return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))


def _output_size(size, kernel, stride, dilation):
    """Window positions along one (already padded) axis; the layer has checked that it is >= 1."""
    return window_output_size(size, kernel, stride, (0, 0), dilation)


def forward(x, w, b, stride, pads, dilation):
    """Convolve x with w, add b.

    x: (N, C, H, W); w: (O, C, kh, kw); b: (O,) or None
    stride (S_h, S_w); pads ((top, bottom), (left, right)); dilation (D_h, D_w)
    Returns out (N, O, H_out, W_out) and the cache for ``backward``.
    """
    N, C, H, W = x.shape
    O, _, kh, kw = w.shape
    sh, sw = stride
    dil_h, dil_w = dilation
    x_pad = _pad(x, pads)
    H_out = _output_size(x_pad.shape[2], kh, sh, dil_h)
    W_out = _output_size(x_pad.shape[3], kw, sw, dil_w)

    out = np.zeros((N, O, H_out, W_out), dtype=np.result_type(x, w))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    # rows i·S_h + p·D_h for p = 0..kh−1, columns j·S_w + q·D_w for q = 0..kw−1
                    window = x_pad[n, :, i * sh: i * sh + dil_h * (kh - 1) + 1: dil_h,
                                   j * sw: j * sw + dil_w * (kw - 1) + 1: dil_w]   # (C, kh, kw)
                    out[n, o, i, j] = np.sum(window * w[o])
                    if b is not None:
                        out[n, o, i, j] += b[o]
    cache = (x_pad, w, b is not None, x.shape, stride, pads, dilation)
    return out, cache


def backward(dout, cache, need_dx=True):
    """Gradients of the loss w.r.t. x, w and b, given dout = ∂loss/∂out (N, O, H_out, W_out).

    Every output entry out[n, o, i, j] touched one window of x_pad and all of w[o]; its gradient
    flows back along the same connections: to the window (times w[o]) and to w[o] (times the
    window). Windows overlap when the stride is smaller than the kernel, hence ``+=``.
    Returns dx (N, C, H, W), dw (O, C, kh, kw), db (O,) or None; dx is None when
    ``need_dx`` is False (nobody needs the gradient of the data).
    """
    x_pad, w, has_bias, x_shape, stride, pads, dilation = cache
    N, C, H, W = x_shape
    O, _, kh, kw = w.shape
    _, _, H_out, W_out = dout.shape
    sh, sw = stride
    dil_h, dil_w = dilation
    (top, _), (left, _) = pads

    dx_pad = np.zeros_like(x_pad, dtype=np.result_type(x_pad, dout))
    dw = np.zeros_like(w, dtype=np.result_type(w, dout))
    for n in range(N):
        for o in range(O):
            for i in range(H_out):
                for j in range(W_out):
                    rows = slice(i * sh, i * sh + dil_h * (kh - 1) + 1, dil_h)
                    cols = slice(j * sw, j * sw + dil_w * (kw - 1) + 1, dil_w)
                    if need_dx:
                        dx_pad[n, :, rows, cols] += dout[n, o, i, j] * w[o]
                    dw[o] += dout[n, o, i, j] * x_pad[n, :, rows, cols]
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    # the padding is not an input: its gradient is dropped
    dx = np.ascontiguousarray(dx_pad[:, :, top: top + H, left: left + W])
    return dx, dw, db
