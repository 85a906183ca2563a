"""Flatten: feature maps (N, C, H, W) -> rows (N, C·H·W), from convolutions to Dense."""
import math

from ..core.errors import ShapeError
from .base import Layer, shape_product, check_upstream


class Flatten(Layer):
    """Keep the batch dimension N and flatten everything after it, in NCHW (C, H, W) order.

    forward:  x (N, C, H, W) -> y (N, C·H·W); any rank >= 2: (N, d1, ..., dk) -> (N, d1·...·dk)
    backward: dy (N, C·H·W) -> dx (N, C, H, W)

    This is PyTorch's ``out.view(out.size(0), -1)`` (and ``nn.Flatten()``): entry (c, h, w)
    lands at column c·H·W + h·W + w. Keras' Flatten works on NHWC and so flattens in
    (H, W, C) order: the same numbers in a different column order, which matters when copying
    the weights of the Dense layer that follows between the two frameworks.
    """

    per_image = True

    def __init__(self):
        super().__init__()
        self._input_shape = self._dtype = None

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ShapeError(f"{self!r}: expected an input (N, ...) with a batch dimension and "
                             f"at least one more, got {input_shape} of rank {len(input_shape)}")
        return (input_shape[0], math.prod(input_shape[1:]))

    def explain(self, input_shape):
        """e.g. ["1568 = 32·7·7"] for (64, 32, 7, 7)."""
        out = self.output_shape(input_shape)
        return [f"{out[1]} = {shape_product(tuple(input_shape)[1:])}"]

    def forward(self, x):
        x = self._check_input(x)
        self._input_shape, self._dtype = x.shape, x.dtype
        return x.reshape(self.output_shape(x.shape))

    def backward(self, dy):
        shape = None if self._input_shape is None else self.output_shape(self._input_shape)
        dy = check_upstream(self, dy, shape, self._dtype)
        return dy.reshape(self._input_shape)
