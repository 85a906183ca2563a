"""Activations: ReLU, Tanh, Sigmoid, Softmax, LogSoftmax. No parameters.

Each works elementwise (or along one axis, for the softmaxes) on an input of any shape and
returns an output of the same shape, computed in the input's float dtype (an integer input is
computed in float64). ``axis=1`` is the class axis of (N, C) and the channel axis of NCHW, as
PyTorch's ``dim=1``; Keras, being NHWC, normalises along its last axis instead.
"""
import numpy as np

from .. import kernels
from ..core.errors import ShapeError
from .base import Layer, as_float, check_upstream


class _Elementwise(Layer):
    """An activation applied to every entry: any input shape, the same output shape."""

    per_image = True

    def __init__(self):
        super().__init__()
        self._cache = None  # what backward needs: a mask or the output
        self._shape = self._dtype = None

    def output_shape(self, input_shape):
        return tuple(input_shape)

    def _upstream(self, dy):
        return check_upstream(self, dy, self._shape, self._dtype)


#: ReLU's cache when the layer after it applies its gradient (``ReLU.applied_later``)
_APPLIED_LATER = "applied by the layer after it"


class ReLU(_Elementwise):
    """y = max(x, 0).

    forward:  x (any shape) -> y (same shape)
    backward: dy (same shape) -> dx = dy · [x > 0]   (the gradient at exactly 0 is 0, as in
              PyTorch and TensorFlow)
    """

    def forward(self, x):
        x = as_float(x)
        self._shape, self._dtype = x.shape, x.dtype
        # the output itself tells backward where x > 0 (y > 0 there): no mask to keep
        self._cache = kernels.elementwise().relu_forward(x)
        return self._cache

    def computed(self, y):
        """Take y as this layer's output, computed elsewhere: a convolution that clipped its own
        output as it wrote it (``layers.fusion``). Keeps what backward needs, as forward does."""
        self._shape, self._dtype = y.shape, y.dtype
        self._cache = y
        return y

    def applied_later(self, shape, dtype):
        """The next layer applies this ReLU's gradient (``layers.fusion``), for its output of
        ``shape``: a MaxPool2D that ran in the convolution before it (a maximum not above 0
        sends none back, ``MaxPool2D.computed``), a convolution before it that ran the 2×2
        AvgPool2D or SumPool2D after it and spreads its gradient (``shape`` is then that
        pool's output's, which the pool passes on), a BatchNorm2D before it that clipped its
        own output (its backward pass reads dy only where that output is > 0,
        ``BatchNorm2D.clips_output_gradient``), or a Conv2D, AvgPool2D or SumPool2D that
        takes it as input (its dx is kept only where its input is > 0,
        ``Conv2D.clips_input_gradient``). backward then passes dy on."""
        self._shape, self._dtype = shape, dtype
        self._cache = _APPLIED_LATER

    def backward(self, dy):
        if self._cache is _APPLIED_LATER:
            return self._upstream(dy)
        return kernels.elementwise().relu_backward(self._upstream(dy), self._cache)


class Tanh(_Elementwise):
    """y = tanh(x).

    forward:  x (any shape) -> y (same shape), in (−1, 1)
    backward: dy (same shape) -> dx = dy · (1 − y²)
    """

    def forward(self, x):
        x = as_float(x)
        y = np.tanh(x)
        self._cache, self._shape, self._dtype = y, y.shape, y.dtype
        return y

    def backward(self, dy):
        y = self._cache
        dy = self._upstream(dy)
        return dy * (1 - y * y)


class Sigmoid(_Elementwise):
    """y = 1 / (1 + exp(−x)), computed without overflow for any x.

    exp(−x) overflows for x < −709 (float64) or x < −88 (float32), so both branches are
    written with e = exp(−|x|) <= 1:  y = 1/(1 + e) for x >= 0,  y = e/(1 + e) for x < 0.

    forward:  x (any shape) -> y (same shape), in [0, 1]
    backward: dy (same shape) -> dx = dy · y · (1 − y)
    """

    def forward(self, x):
        x = as_float(x)
        e = np.exp(-np.abs(x))
        y = np.where(x >= 0, 1 / (1 + e), e / (1 + e))
        self._cache, self._shape, self._dtype = y, y.shape, y.dtype
        return y

    def backward(self, dy):
        y = self._cache
        dy = self._upstream(dy)
        return dy * y * (1 - y)


class _AlongAxis(_Elementwise):
    """A normalisation along one axis (the class / channel axis 1 by default)."""

    def __init__(self, axis=1):
        super().__init__()
        if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
            raise TypeError(f"{type(self).__name__}: axis must be an int, got {axis!r}")
        self.axis = int(axis)

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if not -len(input_shape) <= self.axis < len(input_shape):
            raise ShapeError(
                f"{self!r}: axis {self.axis} does not exist in an input of rank "
                f"{len(input_shape)}, shape {input_shape} (expected e.g. (N, C) or (N, C, H, W) "
                f"for axis=1)")
        return input_shape

    @property
    def per_image(self):
        return self.axis > 0        # along axis 0 (or −1 of a vector) it mixes the images

    def __repr__(self):
        return f"{type(self).__name__}(axis={self.axis})"


class Softmax(_AlongAxis):
    """y = exp(x) / sum(exp(x)) along ``axis``: probabilities that sum to 1 along it.

    The maximum along the axis is subtracted first: it cancels in the ratio and keeps exp()
    from overflowing (logits of 1000 stay finite).

    forward:  x (N, C) or (N, C, H, W) (any shape with ``axis``) -> y (same shape)
    backward: dy (same shape) -> dx = y · (dy − sum(dy · y, axis))
    """

    def forward(self, x):
        x = self._check_input(as_float(x))
        e = np.exp(x - x.max(axis=self.axis, keepdims=True))
        y = e / e.sum(axis=self.axis, keepdims=True)
        self._cache, self._shape, self._dtype = y, y.shape, y.dtype
        return y

    def backward(self, dy):
        y = self._cache
        dy = self._upstream(dy)
        return y * (dy - np.sum(dy * y, axis=self.axis, keepdims=True))


class LogSoftmax(_AlongAxis):
    """y = x − log(sum(exp(x))) along ``axis``: log-probabilities, as PyTorch's LogSoftmax.

    The log-sum-exp is computed as m + log(sum(exp(x − m))) with m the maximum along the
    axis: no overflow, and no log(0) where a probability underflows (log(softmax(x)) would
    give −inf there).

    forward:  x (N, C) or (N, C, H, W) (any shape with ``axis``) -> y (same shape)
    backward: dy (same shape) -> dx = dy − softmax(x) · sum(dy, axis)
    """

    def forward(self, x):
        x = self._check_input(as_float(x))
        shifted = x - x.max(axis=self.axis, keepdims=True)
        y = shifted - np.log(np.exp(shifted).sum(axis=self.axis, keepdims=True))
        self._cache, self._shape, self._dtype = y, y.shape, y.dtype
        return y

    def backward(self, dy):
        y = self._cache
        dy = self._upstream(dy)
        return dy - np.exp(y) * np.sum(dy, axis=self.axis, keepdims=True)
