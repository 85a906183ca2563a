"""Pooling, vectorised: the same functions as ``pool_loops``, without Python loops over pixels.

Forward: pad x, then ``sliding_window_view`` gives every window at once as a strided view of
shape (N, C, H_out, W_out, KH, KW) (no copy), and a reduction over the last two axes pools.

Backward: a window of KH·KW elements means KH·KW "positions" (r, s). The elements at position
(r, s) of all windows form the strided slice  dx_pad[:, :, r::stride_h, s::stride_w]
(H_out × W_out of them), and within one slice no element repeats. So the backward pass is a
loop over the KH·KW positions, each adding its share of dout into one strided slice; overlapping windows
accumulate across positions. (``np.add.at`` would do the same scatter, many times slower.)

Shapes: x (N, C, H, W), kernel (KH, KW), stride (stride_h, stride_w),
pads ((pad_top, pad_bottom), (pad_left, pad_right)), out (N, C, H_out, W_out) with
H_out = (H + pad_top + pad_bottom − KH) // stride_h + 1. dtypes are kept.
"""
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from . import elementwise_loops


def _pad(x, pads, value):
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    if pad_top == pad_bottom == pad_left == pad_right == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)),
                  constant_values=value)


def _windows(xp, kernel, stride):
    """(N, C, H_out, W_out, KH, KW) strided view of the windows of the padded input."""
    return sliding_window_view(xp, kernel, axis=(2, 3))[:, :, ::stride[0], ::stride[1]]


def _positions(kernel, stride, out_hw):
    """For each window position (r, s): the slice of the padded input it covers in every window."""
    H_out, W_out = out_hw
    for r in range(kernel[0]):
        for s in range(kernel[1]):
            yield r, s, (slice(None), slice(None),
                         slice(r, r + stride[0] * (H_out - 1) + 1, stride[0]),
                         slice(s, s + stride[1] * (W_out - 1) + 1, stride[1]))


def _crop(dx_pad, pads, x_shape):
    """Drop the padding's rows and columns: their gradient goes nowhere."""
    (pad_top, _), (pad_left, _) = pads
    H, W = x_shape[2:]
    return dx_pad[:, :, pad_top:pad_top + H, pad_left:pad_left + W]


# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------
def max_forward(x, kernel, stride, pads, need_cache=True):
    """Largest element of each window; padding is −inf, so it never wins over real values.

    x (N, C, H, W) -> out (N, C, H_out, W_out). The cache keeps, per window, the flat
    position r·KW + s of its maximum: argmax returns the FIRST maximum in row-major order,
    which is where PyTorch sends the gradient on ties. (One corner differs from PyTorch and
    ``pool_loops``: a padded window whose real elements are all −inf may pick the padding.)
    With ``need_cache=False`` (prediction) the cache is None.
    """
    N, C = x.shape[:2]
    xp = _pad(x, pads, -np.inf)
    windows = _windows(xp, kernel, stride)
    H_out, W_out = windows.shape[2:4]
    rows = windows.reshape(N, C, H_out, W_out, kernel[0] * kernel[1])  # a copy: one row per window
    arg = rows.argmax(axis=-1)
    out = np.take_along_axis(rows, arg[..., None], axis=-1)[..., 0]
    return out, None if not need_cache else (x.shape, xp.shape, kernel, stride, pads, arg)


def max_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each dout goes to its window's maximum."""
    x_shape, padded_shape, kernel, stride, pads, arg = cache
    dx_pad = np.zeros(padded_shape, dtype=dout.dtype)
    for r, s, where in _positions(kernel, stride, dout.shape[2:]):
        dx_pad[where] += np.where(arg == r * kernel[1] + s, dout, 0)
    return _crop(dx_pad, pads, x_shape)


# ----------------------------------------------------------------------------------------
# sum and average pooling
# ----------------------------------------------------------------------------------------
def sum_forward(x, kernel, stride, pads):
    """Sum of each window (padding adds 0). x (N, C, H, W) -> out (N, C, H_out, W_out)."""
    out = _windows(_pad(x, pads, 0), kernel, stride).sum(axis=(-2, -1))
    return out, (x.shape, kernel, stride, pads, None)


def sum_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): every element of a window gets its dout
    (``clip``: as ``avg_backward``)."""
    return avg_backward(dout, cache, clip)


def _real_counts(size, kernel, stride, pad, n_out):
    """How many real (non-padding) elements each of the n_out windows along one axis covers."""
    start = np.arange(n_out) * stride - pad[0]
    return np.minimum(start + kernel, size) - np.maximum(start, 0)


def avg_forward(x, kernel, stride, pads, count_include_pad):
    """Mean of each window: its sum divided by KH·KW (``count_include_pad``, PyTorch's default)
    or by the number of real elements under it (Keras' "same").

    x (N, C, H, W) -> out (N, C, H_out, W_out). The cache keeps the divisors, (H_out, W_out).
    """
    total, _ = sum_forward(x, kernel, stride, pads)
    H_out, W_out = total.shape[2:]
    if count_include_pad:
        divisor = np.full((H_out, W_out), kernel[0] * kernel[1], dtype=x.dtype)
    else:  # a window's real area is (real rows) × (real columns)
        rows = _real_counts(x.shape[2], kernel[0], stride[0], pads[0], H_out)
        cols = _real_counts(x.shape[3], kernel[1], stride[1], pads[1], W_out)
        divisor = np.outer(rows, cols).astype(x.dtype)
    return total / divisor, (x.shape, kernel, stride, pads, divisor)


def avg_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each window spreads dout / divisor over its
    elements; the padding's share is cropped away; overlapping windows add up. ``clip``: the
    pool's input x, the output of a ReLU whose gradient dx then gets too: dx where x > 0, else
    0 (``layers.fusion``)."""
    x_shape, kernel, stride, pads, divisor = cache
    share = dout if divisor is None else dout / divisor
    (pad_top, pad_bottom), (pad_left, pad_right) = pads
    padded_shape = x_shape[:2] + (x_shape[2] + pad_top + pad_bottom,
                                  x_shape[3] + pad_left + pad_right)
    dx_pad = np.zeros(padded_shape, dtype=dout.dtype)
    for _, _, where in _positions(kernel, stride, dout.shape[2:]):
        dx_pad[where] += share
    dx = _crop(dx_pad, pads, x_shape)
    return dx if clip is None else elementwise_loops.relu_backward(dx, clip)


def global_mean(x):
    """x (N, C, H, W) -> (N, C): the mean of each plane (NumPy's, in x's dtype)."""
    return x.mean(axis=(2, 3))
