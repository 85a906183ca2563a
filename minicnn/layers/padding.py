"""ZeroPadding2D: rows and columns of zeros around each image, as Keras' layer of that name."""
import numpy as np

from ..core.shapes import pair
from .base import Layer, as_float, check_upstream


def _padding(padding):
    """((top, bottom), (left, right)) from an int, a pair (rows, columns) or a pair of pairs."""
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        pads = tuple(pair(tuple(p), "padding") for p in padding)
    else:
        try:
            ph, pw = pair(padding, "padding")
        except ValueError:
            raise ValueError(f"ZeroPadding2D: padding must be an int, a pair (rows, columns) or "
                             f"((top, bottom), (left, right)), got {padding!r}") from None
        pads = ((ph, ph), (pw, pw))
    if min(min(p) for p in pads) < 0:
        raise ValueError(f"ZeroPadding2D: padding must be >= 0, got {padding!r}")
    return pads


class ZeroPadding2D(Layer):
    """Add zeros around the height and width of an NCHW batch (Keras' ZeroPadding2D).

    ZeroPadding2D(padding): an int (every side), a pair (rows above and below, columns left
    and right) or ((top, bottom), (left, right)), as Keras takes it. PyTorch's equivalent is
    nn.ZeroPad2d((left, right, top, bottom)) — the width first, the other way round.
    Keras' ResNet50 starts with ZeroPadding2D(3) then a "valid" 7×7 stride-2 convolution:
    the same as PyTorch's Conv2d(..., padding=3).

    forward:  x (N, C, H, W) -> y (N, C, top + H + bottom, left + W + right)
    backward: dy (shape of y) -> dx = dy without the padded border (the zeros are constants)
    """

    per_image = True

    def __init__(self, padding=1):
        super().__init__()
        self.padding = _padding(padding)
        self._shape = self._dtype = None

    def output_shape(self, input_shape):
        n, c, h, w = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        (t, b), (l, r) = self.padding
        return (n, c, h + t + b, w + l + r)

    def explain(self, input_shape):
        _, _, h, w = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        (t, b), (l, r) = self.padding
        return [f"H: {t} + {h} + {b} = {h + t + b}", f"W: {l} + {w} + {r} = {w + l + r}"]

    def forward(self, x):
        x = as_float(x)
        out = self.output_shape(x.shape)
        self._shape, self._dtype = out, x.dtype
        return np.pad(x, ((0, 0), (0, 0)) + self.padding)

    def backward(self, dy):
        dy = check_upstream(self, dy, self._shape, self._dtype)
        (t, b), (l, r) = self.padding
        return dy[:, :, t:dy.shape[2] - b, l:dy.shape[3] - r].copy()

    def __repr__(self):
        (t, b), (l, r) = self.padding
        if t == b == l == r:
            return f"ZeroPadding2D({t})"
        if t == b and l == r:
            return f"ZeroPadding2D(({t}, {l}))"
        return f"ZeroPadding2D((({t}, {b}), ({l}, {r})))"
