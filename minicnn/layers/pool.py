"""Pooling: shrink each channel by summarising windows of it. No parameters.

    MaxPool2D        largest value of each window      PyTorch MaxPool2d, Keras MaxPooling2D
    AvgPool2D        mean of each window               PyTorch AvgPool2d, Keras AveragePooling2D
    SumPool2D        sum of each window = mean·kh·kw   in neither (LeNet-5 summed, then scaled)
    GlobalAvgPool2D  mean of each whole channel        Keras GlobalAveragePooling2D: (N, C)

A windowed pool slides a kh×kw window by (sh, sw) over every channel separately:

    x (N, C, H, W) -> y (N, C, H_out, W_out),   H_out = ⌊(H + top + bottom − kh) / sh⌋ + 1

``stride`` defaults to ``kernel_size`` (windows side by side, as in PyTorch and Keras).
``padding`` is an int, a pair (rows, columns), ((top, bottom), (left, right)), "valid" (none)
or "same" (Keras: the output has ⌈H / sh⌉ rows; an odd total puts the extra row at the bottom).
Max pooling pads with −inf and sum pooling with 0, so padding never wins a max nor adds to a
sum. Every side's padding must be smaller than the kernel, so each window holds at least one
real element (PyTorch is stricter: at most half the kernel).

The arithmetic runs in the kernels of ``minicnn.kernels.pool()``: compiled loops
(``pool_numba``, the default), plain loops (``pool_loops``) or vectorised NumPy (``pool_fast``).
"""
import numpy as np

from .. import kernels
from ..core.errors import ShapeError
from ..core.shapes import check_window_fits, pair, resolve_padding, window_formula
from .base import Layer, as_float, keeping_caches


#: a spreading pool's cache when the convolution before it spreads its gradient
#: (``_SpreadingPool.spread_by_conv``)
_SPREAD_BY_CONV = "spread by the convolution before it"


class _WindowPool(Layer):
    """What MaxPool2D, AvgPool2D and SumPool2D share: the window, its arithmetic, the checks.

    Subclasses say which kernel functions to call in ``_forward`` / ``_backward``.
    """

    per_image = True

    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else pair(stride, "stride")
        if min(self.kernel_size) < 1 or min(self.stride) < 1:
            raise ValueError(f"{type(self).__name__}: kernel_size and stride must be positive, "
                             f"got kernel_size={self.kernel_size}, stride={self.stride}")
        self.padding = padding.lower() if isinstance(padding, str) else padding
        pads = self.padding_for(*self.kernel_size)  # validates the padding's form
        for axis, (before, after), k in zip("HW", pads, self.kernel_size):
            if min(before, after) < 0 or max(before, after) >= k:
                raise ValueError(
                    f"{type(self).__name__}: padding along {axis} must be between 0 and "
                    f"kernel − 1 = {k - 1} on each side, so that every window holds a real "
                    f"element; got {before} and {after} (padding={padding!r})")
        self._cache = None

    def padding_for(self, H, W):
        """((top, bottom), (left, right)) for an input of H × W ("same" depends on the size)."""
        return resolve_padding(self.padding, (H, W), self.kernel_size, self.stride)

    # -- shapes ---------------------------------------------------------------------
    def output_shape(self, input_shape):
        """(N, C, H, W) -> (N, C, H_out, W_out); ShapeError when the rank is wrong or the
        window does not fit."""
        N, C, H, W = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        pads = self.padding_for(H, W)
        try:
            H_out = check_window_fits(self, "H", H, self.kernel_size[0], self.stride[0], pads[0])
            W_out = check_window_fits(self, "W", W, self.kernel_size[1], self.stride[1], pads[1])
        except ShapeError as err:  # add the whole shape: the message should show what came in
            raise ShapeError(f"{err}. Input shape (N, C, H, W) = {tuple(input_shape)}") from None
        return (N, C, H_out, W_out)

    def explain(self, input_shape):
        """Lines of arithmetic, e.g. for MaxPool2D(2) on (64, 1, 28, 28):

        ['H: (28 + 2·0 − 2)/2 + 1 = 14', 'W: (28 + 2·0 − 2)/2 + 1 = 14',
         '(64, 1, 28, 28) -> (64, 1, 14, 14)']
        """
        out = self.output_shape(input_shape)
        H, W = input_shape[2:]
        pads = self.padding_for(H, W)
        lines = []
        if self.padding == "same":
            lines.append(f'padding "same": rows {pads[0][0]} top + {pads[0][1]} bottom, '
                         f'columns {pads[1][0]} left + {pads[1][1]} right')
        lines.append(f"H: {window_formula(H, self.kernel_size[0], self.stride[0], pads[0])}")
        lines.append(f"W: {window_formula(W, self.kernel_size[1], self.stride[1], pads[1])}")
        lines.append(f"{tuple(input_shape)} -> {out}")
        return lines

    # -- the two passes -------------------------------------------------------------------
    def forward(self, x):
        """x (N, C, H, W) -> y (N, C, H_out, W_out), in x's float dtype."""
        x = as_float(self._check_input(x), np.float32)
        pads = self.padding_for(*x.shape[2:])
        # Remember the kernel module: backward must read the cache the same module wrote,
        # even if kernels.use() switches in between.
        self._kernels = kernels.pool()
        y, cache = self._forward(self._kernels, x, pads)
        self._cache = (cache, y.shape, y.dtype)
        return y

    def backward(self, dy):
        """dy (N, C, H_out, W_out) -> dx (N, C, H, W)."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        cache, y_shape, dtype = self._cache
        dy = np.asarray(dy, dtype=dtype)
        if dy.shape != y_shape:
            raise ShapeError(f"{self!r}: backward expected dy of the output's shape "
                             f"(N, C, H_out, W_out) = {y_shape}, got {dy.shape}")
        return self._backward(self._kernels, dy, cache)

    def _forward(self, k, x, pads):
        raise NotImplementedError

    def _backward(self, k, dy, cache):
        raise NotImplementedError

    def _repr_extra(self):
        return ""

    def __repr__(self):
        return (f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding!r}{self._repr_extra()})")


class MaxPool2D(_WindowPool):
    """y[n, c, i, j] = max of x[n, c] over window (i, j).  (N, C, H, W) -> (N, C, H_out, W_out).

    Padding counts as −inf. The gradient of each output goes to the element that was the
    maximum; on a tie, to the first maximum in row-major order (as PyTorch). With overlapping
    windows (stride < kernel) an element that wins several windows collects all their gradients.

    >>> MaxPool2D(2).output_shape((64, 32, 28, 28))
    (64, 32, 14, 14)
    """

    _CACHES = ("_cache", "_x", "_clipped")

    #: what a convolution's kernel calls this pool when it runs it (``layers.fusion``)
    kernel_pool = "max"

    def _forward(self, k, x, pads):
        self._clipped = None
        # under no_grad there is no backward: no need to remember where each maximum was
        return k.max_forward(x, self.kernel_size, self.stride, pads, need_cache=keeping_caches())

    def computed(self, y, cache, module, clipped=False):
        """Take y (N, C, H_out, W_out) as this layer's output, computed elsewhere with the cache
        of ``module`` (a kernels.pool() module): a convolution that pooled its own output
        (``layers.fusion``). ``clipped``: a ReLU ran between them, and its gradient is applied
        here (``ReLU.applied_by``): where the maximum is not above 0, none flows back."""
        self._kernels = module
        self._cache = (cache, y.shape, y.dtype)
        self._clipped = y if clipped else None
        return y

    def spread_by_conv(self, y):
        """Take y (N, C, H_out, W_out) as this layer's output, computed by the Conv2D before it,
        which also spreads this layer's gradient back itself (Winograd's kernel,
        ``conv_numba.takes_max_gradient``): backward passes dy on."""
        self._kernels, self._clipped = None, None
        self._cache = (_SPREAD_BY_CONV, y.shape, y.dtype)
        return y

    def _backward(self, k, dy, cache):
        if cache is _SPREAD_BY_CONV:
            return dy
        if getattr(self, "_clipped", None) is not None:
            # the ReLU's gradient, dy where its output > 0, taken at the maxima before they
            # are spread back: the same numbers as after, where nothing else is nonzero
            dy = kernels.elementwise().relu_backward(dy, self._clipped)
        return k.max_backward(dy, cache)


class _SpreadingPool(_WindowPool):
    """A pool whose backward pass spreads each output's gradient over its whole window (average
    and sum): it can take the gradient of a ReLU before it as it writes (``layers.fusion``)."""

    _CACHES = ("_cache", "_x", "_clip")

    def forward(self, x):
        self._clip = None
        return super().forward(x)

    def spread_by_conv(self, y):
        """Take y (N, C, H_out, W_out) as this layer's output, computed by the Conv2D before it
        (2×2 windows, ``layers.fusion``), which then also spreads this layer's gradient back
        over its own output as it needs it (``Conv2D.backward``): backward passes dy on."""
        self._kernels, self._clip = None, None
        self._cache = (_SPREAD_BY_CONV, y.shape, y.dtype)
        return y

    def _backward(self, k, dy, cache):
        return dy if cache is _SPREAD_BY_CONV else self._spread(k, dy, cache)

    def _spread(self, k, dy, cache):
        raise NotImplementedError

    def clips_input_gradient(self, x):
        """x, this layer's input in the last forward pass, is a ReLU's output (``layers.fusion``):
        backward then returns dx where x > 0, else 0, the ReLU's gradient too, applied as dx is
        written (``ReLU.applied_later``): one pass over the input's size fewer."""
        self._clip = x


class AvgPool2D(_SpreadingPool):
    """y[n, c, i, j] = mean of x[n, c] over window (i, j).  (N, C, H, W) -> (N, C, H_out, W_out).

    Padding counts as zeros. ``count_include_pad`` says what a padded window divides by:

    * True: kh·kw, padding included (PyTorch's AvgPool2d default);
    * False: the number of real elements under the window (Keras' AveragePooling2D, "same");
    * None (the default): False for padding="same", True otherwise, so that AvgPool2D(k,
      padding="same") behaves like Keras and AvgPool2D(k, padding=p) like PyTorch.

    The attribute ``count_include_pad`` holds the resolved bool.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=None):
        super().__init__(kernel_size, stride, padding)
        if count_include_pad is None:
            count_include_pad = self.padding != "same"
        self.count_include_pad = bool(count_include_pad)

    #: what a convolution's kernel calls this pool when it runs it (``layers.fusion``): with
    #: 2×2 windows and no padding every window divides by 4, count_include_pad or not
    kernel_pool = "mean"

    def _forward(self, k, x, pads):
        return k.avg_forward(x, self.kernel_size, self.stride, pads, self.count_include_pad)

    def _spread(self, k, dy, cache):
        return k.avg_backward(dy, cache, getattr(self, "_clip", None))

    def _repr_extra(self):
        return f", count_include_pad={self.count_include_pad}"


class SumPool2D(_SpreadingPool):
    """y[n, c, i, j] = sum of x[n, c] over window (i, j).  (N, C, H, W) -> (N, C, H_out, W_out).

    Neither PyTorch nor Keras ships this layer: it equals average pooling (padding included)
    times the window area kh·kw, i.e. PyTorch's AvgPool2d(..., divisor_override=1). LeNet-5's
    subsampling layers summed 2×2 windows before a trainable scale. Padding adds zeros.
    """

    kernel_pool = "sum"

    def _forward(self, k, x, pads):
        return k.sum_forward(x, self.kernel_size, self.stride, pads)

    def _spread(self, k, dy, cache):
        return k.sum_backward(dy, cache, getattr(self, "_clip", None))


class GlobalAvgPool2D(Layer):
    """The mean of each channel over all positions: (N, C, H, W) -> (N, C).

    Like Keras' GlobalAveragePooling2D. PyTorch's AdaptiveAvgPool2d(1) computes the same
    numbers but keeps the spatial axes, (N, C, 1, 1); follow it with Flatten there.
    """

    per_image = True

    def __init__(self):
        super().__init__()
        self._cache = None

    def output_shape(self, input_shape):
        N, C, H, W = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        if H < 1 or W < 1:
            raise ShapeError(f"{self!r}: needs at least one position to average, got "
                             f"H·W = {H}·{W} = {H * W} for input shape (N, C, H, W) = "
                             f"{tuple(input_shape)}")
        return (N, C)

    def explain(self, input_shape):
        out = self.output_shape(input_shape)
        H, W = input_shape[2:]
        return [f"mean over H·W = {H}·{W} = {H * W} positions per channel",
                f"{tuple(input_shape)} -> {out}"]

    def forward(self, x):
        """x (N, C, H, W) -> y (N, C), in x's float dtype."""
        x = as_float(self._check_input(x), np.float32)
        self._cache = (x.shape, x.dtype)
        return kernels.pool().global_mean(x)

    def backward(self, dy):
        """dy (N, C) -> dx (N, C, H, W): each position receives dy / (H·W)."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        x_shape, dtype = self._cache
        dy = np.asarray(dy, dtype=dtype)
        if dy.shape != x_shape[:2]:
            raise ShapeError(f"{self!r}: backward expected dy of the output's shape (N, C) = "
                             f"{x_shape[:2]}, got {dy.shape}")
        area = x_shape[2] * x_shape[3]
        return np.broadcast_to((dy / dtype.type(area))[:, :, None, None], x_shape).copy()
