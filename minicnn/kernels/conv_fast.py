"""Convolution vectorised: im2col + one matrix product (which NumPy hands to BLAS).

im2col lays every window of the padded input out as one row of a matrix ``cols``
(N·H_out·W_out, C·kh·kw); the weights are a matrix (O, C·kh·kw); then

    out  = cols @ w_matᵀ          (forward)
    dw   = doutᵀ @ cols           (gradient of the weights)
    dcols = dout @ w_mat          (gradient of the columns, then col2im back to dx)

Same functions, signatures and results as ``conv_loops``.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..core.shapes import window_output_size


def _output_size(size, kernel, stride, dilation):
    """Window positions along one (already padded) axis; the layer has checked that it is >= 1."""
    return window_output_size(size, kernel, stride, (0, 0), dilation)


def im2col(x_pad, kernel, stride, dilation):
    """x_pad (N, C, H_pad, W_pad) -> cols (N·H_out·W_out, C·kh·kw), rows in (n, i, j) order.

    ``sliding_window_view`` gives every position of the dilated window (a view, no copy);
    stepping by the stride keeps the positions the convolution uses, stepping by the dilation
    keeps the kernel taps. Positions past the last full stride are never reached, so a padded
    input larger than needed ((H_pad − effective kernel) % S != 0) is handled by the slicing.
    """
    (kh, kw), (sh, sw), (dil_h, dil_w) = kernel, stride, dilation
    N, C = x_pad.shape[:2]
    H_out = _output_size(x_pad.shape[2], kh, sh, dil_h)
    W_out = _output_size(x_pad.shape[3], kw, sw, dil_w)
    eff_h, eff_w = dil_h * (kh - 1) + 1, dil_w * (kw - 1) + 1
    windows = sliding_window_view(x_pad, (eff_h, eff_w), axis=(2, 3))
    windows = windows[:, :, ::sh, ::sw, ::dil_h, ::dil_w]          # (N, C, H_out, W_out, kh, kw)
    assert windows.shape[2:4] == (H_out, W_out)
    # the reshape copies: this is the (large) im2col matrix
    return windows.transpose(0, 2, 3, 1, 4, 5).reshape(N * H_out * W_out, C * kh * kw), H_out, W_out


def col2im(dcols, x_pad_shape, kernel, stride, dilation, out_hw):
    """The adjoint of im2col: dcols (C, kh, kw, N, H_out, W_out) summed into (N, C, H_pad, W_pad).

    For one kernel tap (p, q) the windows read x_pad at rows p·D_h + i·S_h and columns
    q·D_w + j·S_w: distinct positions, so one strided-slice ``+=`` per tap is exact. Overlaps
    between windows are taps of different (p, q), added one after the other.
    """
    (kh, kw), (sh, sw), (dil_h, dil_w) = kernel, stride, dilation
    H_out, W_out = out_hw
    dx_pad = np.zeros(x_pad_shape, dtype=dcols.dtype)
    for p in range(kh):
        rows = slice(p * dil_h, p * dil_h + sh * (H_out - 1) + 1, sh)
        for q in range(kw):
            cols = slice(q * dil_w, q * dil_w + sw * (W_out - 1) + 1, sw)
            dx_pad[:, :, rows, cols] += dcols[:, p, q].transpose(1, 0, 2, 3)
    return dx_pad


def forward(x, w, b, stride, pads, dilation):
    """Convolve x with w, add b.

    x: (N, C, H, W); w: (O, C, kh, kw); b: (O,) or None
    stride (S_h, S_w); pads ((top, bottom), (left, right)); dilation (D_h, D_w)
    Returns out (N, O, H_out, W_out) and the cache for ``backward``.
    """
    N = x.shape[0]
    O, C, kh, kw = w.shape
    (top, bottom), (left, right) = pads
    x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    cols, H_out, W_out = im2col(x_pad, (kh, kw), stride, dilation)
    out = cols @ w.reshape(O, C * kh * kw).T                         # (N·H_out·W_out, O)
    if b is not None:
        out += b
    out = np.ascontiguousarray(out.reshape(N, H_out, W_out, O).transpose(0, 3, 1, 2))
    cache = (cols, w, b is not None, x.shape, x_pad.shape, stride, pads, dilation)
    return out, cache


def backward(dout, cache, need_dx=True):
    """Gradients w.r.t. x, w and b, given dout = ∂loss/∂out (N, O, H_out, W_out).

    Returns dx (N, C, H, W), dw (O, C, kh, kw), db (O,) or None; dx is None when
    ``need_dx`` is False.
    """
    cols, w, has_bias, x_shape, x_pad_shape, stride, pads, dilation = cache
    N, C, H, W = x_shape
    O, _, kh, kw = w.shape
    _, _, H_out, W_out = dout.shape
    (top, _), (left, _) = pads

    dout_rows = dout.transpose(0, 2, 3, 1).reshape(N * H_out * W_out, O)
    dw = (dout_rows.T @ cols).reshape(w.shape)
    db = dout.sum(axis=(0, 2, 3)) if has_bias else None
    if not need_dx:
        return None, dw, db
    # (C·kh·kw, O) @ (O, N·H_out·W_out): laid out so that each tap (p, q) is one block for col2im
    dcols = (w.reshape(O, C * kh * kw).T @ dout_rows.T).reshape(C, kh, kw, N, H_out, W_out)
    dx_pad = col2im(dcols, x_pad_shape, (kh, kw), stride, dilation, (H_out, W_out))
    dx = np.ascontiguousarray(dx_pad[:, :, top: top + H, left: left + W])
    return dx, dw, db
