"""Pooling as plain loops that read like the definition (slow: for learning, and as the reference).

Every function takes x of shape (N, C, H, W), ``kernel = (KH, KW)``,
``stride = (stride_h, stride_w)`` and ``pads = ((pad_top, pad_bottom), (pad_left, pad_right))``.
Window (i, j) covers the rows ``i·stride_h − pad_top … i·stride_h − pad_top + KH − 1`` and the
columns ``j·stride_w − pad_left … j·stride_w − pad_left + KW − 1`` of x; the parts of a window
that fall outside x are padding. There are

    H_out = (H + pad_top + pad_bottom − KH) // stride_h + 1
    W_out = (W + pad_left + pad_right − KW) // stride_w + 1

windows along each axis. Instead of building a padded copy of x, each window is clipped to
the real rows and columns (``_window``): padding holds −inf for max pooling and 0 for sum
pooling, so leaving it out gives the same answer, and the clipped size is exactly the count
that average pooling with ``count_include_pad=False`` divides by.

``pool_fast`` has the same functions, vectorised; the tests check that the two agree.
"""
import numpy as np

from . import elementwise_loops


def _output_size(size, kernel, stride, pad):
    return (size + pad[0] + pad[1] - kernel) // stride + 1


def _window(i, j, kernel, stride, pads, H, W):
    """The rows and the columns of x that window (i, j) covers, padding left out."""
    first_row = i * stride[0] - pads[0][0]
    first_col = j * stride[1] - pads[1][0]
    rows = range(max(first_row, 0), min(first_row + kernel[0], H))
    cols = range(max(first_col, 0), min(first_col + kernel[1], W))
    return rows, cols


def _output_shape(x_shape, kernel, stride, pads):
    N, C, H, W = x_shape
    return (N, C, _output_size(H, kernel[0], stride[0], pads[0]),
            _output_size(W, kernel[1], stride[1], pads[1]))


# ----------------------------------------------------------------------------------------
# max pooling
# ----------------------------------------------------------------------------------------
def max_forward(x, kernel, stride, pads, need_cache=True):
    """out[n, c, i, j] = the largest x[n, c, h, w] under window (i, j).

    x (N, C, H, W) -> out (N, C, H_out, W_out), same dtype; the cache remembers where each
    maximum came from, (row, column) in x, because only that element receives gradient.
    With ``need_cache=False`` (prediction) the cache is None.
    """
    N, C, H, W = x.shape
    out = np.empty(_output_shape(x.shape, kernel, stride, pads), dtype=x.dtype)
    H_out, W_out = out.shape[2:]
    winner = np.empty((N, C, H_out, W_out, 2), dtype=np.intp)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    rows, cols = _window(i, j, kernel, stride, pads, H, W)
                    best = (rows[0], cols[0])
                    for h in rows:
                        for w in cols:
                            # Strictly greater: on a tie the first maximum in row-major
                            # order keeps the gradient, as in PyTorch.
                            if x[n, c, h, w] > x[n, c, best[0], best[1]]:
                                best = (h, w)
                    out[n, c, i, j] = x[n, c, best[0], best[1]]
                    winner[n, c, i, j] = best
    return out, None if not need_cache else (x.shape, winner)


def max_backward(dout, cache):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): each dout goes to its window's maximum.

    With overlapping windows one element can win several windows; its gradients add up.
    """
    x_shape, winner = cache
    N, C, H_out, W_out = dout.shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for i in range(H_out):
                for j in range(W_out):
                    h, w = winner[n, c, i, j]
                    dx[n, c, h, w] += dout[n, c, i, j]
    return dx


# ----------------------------------------------------------------------------------------
# sum and average pooling
# ----------------------------------------------------------------------------------------
def sum_forward(x, kernel, stride, pads):
    """out[n, c, i, j] = the sum of x[n, c, h, w] under window (i, j) (padding adds 0).

    x (N, C, H, W) -> out (N, C, H_out, W_out), same dtype.
    """
    return _divided_sums(x, kernel, stride, pads, lambda rows, cols: 1)


def sum_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W): every element of a window gets its dout
    (``clip``: as ``avg_backward``)."""
    return avg_backward(dout, cache, clip)


def avg_forward(x, kernel, stride, pads, count_include_pad):
    """out[n, c, i, j] = the mean of window (i, j): its sum divided by

    * KH·KW when ``count_include_pad`` (padding counts as zeros; PyTorch's default), or
    * the number of real elements under the window otherwise (Keras' "same").

    x (N, C, H, W) -> out (N, C, H_out, W_out), same dtype.
    """
    if count_include_pad:
        return _divided_sums(x, kernel, stride, pads, lambda rows, cols: kernel[0] * kernel[1])
    return _divided_sums(x, kernel, stride, pads, lambda rows, cols: len(rows) * len(cols))


def _divided_sums(x, kernel, stride, pads, count):
    """out[n, c, i, j] = (sum of window (i, j)) / count(rows, cols) of that window.

    The cache keeps every window's divisor, shape (H_out, W_out), for the backward pass.
    """
    N, C, H, W = x.shape
    out = np.empty(_output_shape(x.shape, kernel, stride, pads), dtype=x.dtype)
    H_out, W_out = out.shape[2:]
    divisor = np.empty((H_out, W_out), dtype=x.dtype)
    for i in range(H_out):
        for j in range(W_out):
            rows, cols = _window(i, j, kernel, stride, pads, H, W)
            divisor[i, j] = count(rows, cols)
            for n in range(N):
                for c in range(C):
                    total = x.dtype.type(0)
                    for h in rows:
                        for w in cols:
                            total += x[n, c, h, w]
                    out[n, c, i, j] = total / divisor[i, j]
    return out, (x.shape, kernel, stride, pads, divisor)


def avg_backward(dout, cache, clip=None):
    """dout (N, C, H_out, W_out) -> dx (N, C, H, W).

    Each window spreads dout / divisor over its real elements (the padding's share is
    dropped); overlapping windows add up. ``clip``: the pool's input x, the output of a ReLU
    whose gradient dx then gets too: dx where x > 0, else 0 (``layers.fusion``).
    """
    x_shape, kernel, stride, pads, divisor = cache
    N, C, H, W = x_shape
    H_out, W_out = dout.shape[2:]
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for i in range(H_out):
        for j in range(W_out):
            rows, cols = _window(i, j, kernel, stride, pads, H, W)
            for n in range(N):
                for c in range(C):
                    share = dout[n, c, i, j] / divisor[i, j]
                    for h in rows:
                        for w in cols:
                            dx[n, c, h, w] += share
    return dx if clip is None else elementwise_loops.relu_backward(dx, clip)


def global_mean(x):
    """x (N, C, H, W) -> (N, C): the mean of each plane (NumPy's, in x's dtype)."""
    return x.mean(axis=(2, 3))
