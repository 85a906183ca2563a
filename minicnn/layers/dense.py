"""Dense (fully connected) layer: y = x @ W.T + b, as PyTorch's nn.Linear."""
import math

import numpy as np

from .. import kernels
from ..core.errors import ShapeError
from ..core.parameter import Parameter
from ..core.random import get_rng
from .base import Layer, shape_product, check_upstream


class Dense(Layer):
    """y = x @ W.T + b on the last dimension; every leading dimension is kept.

    weight: (out_features, in_features), PyTorch's layout (Keras stores the transpose,
            its kernel is (in_features, out_features))
    bias:   (out_features,), or None with ``bias=False``

    forward:  x (N, in_features) -> y (N, out_features);
              any leading shape: x (N, ..., in_features) -> y (N, ..., out_features)
    backward: dy (shape of y) -> dx (shape of x); fills weight.grad (out, in) and bias.grad (out,)

    Initialisation as PyTorch's nn.Linear: weight and bias uniform in [−1/√in, 1/√in], drawn
    from ``minicnn.random.get_rng(rng)`` (``rng``: None for the global generator, an int seed
    or a np.random.Generator). A CNN's feature maps (N, C, H, W) go through ``Flatten()`` first.
    """

    per_image = True

    def __init__(self, in_features, out_features, bias=True, dtype=np.float32, rng=None):
        super().__init__()
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Dense: {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"{self!r}: dtype must be a float dtype, got {self.dtype}")
        rng = get_rng(rng)
        bound = 1 / math.sqrt(self.in_features)
        w = rng.uniform(-bound, bound, (self.out_features, self.in_features))
        self.weight = Parameter(w.astype(self.dtype), "weight")
        b = rng.uniform(-bound, bound, self.out_features) if bias else None
        self.bias = Parameter(b.astype(self.dtype), "bias") if bias else None
        self._x = None

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise ShapeError(f"{self!r}: expected input (N, {self.in_features}) with a batch "
                             f"dimension, got {input_shape} of rank {len(input_shape)}")
        if input_shape[-1] != self.in_features:
            expected = "N, " if len(input_shape) == 2 else "N, ..., "
            lines = [f"{self!r}: expected input ({expected}{self.in_features}), got {input_shape}",
                     f"  the last dimension must equal in_features: {input_shape[-1]} ≠ "
                     f"{self.in_features}"]
            if len(input_shape) > 2:
                # The usual cause: feature maps (N, C, H, W) that were never flattened.
                features = math.prod(input_shape[1:])
                lines.append(f"  Dense acts on the last dimension only; flattening everything "
                             f"after N would give {shape_product(input_shape[1:])} = {features}"
                             f" features")
                if features == self.in_features:
                    lines.append("  that matches in_features: put Flatten() before this layer")
            raise ShapeError("\n".join(lines))
        return input_shape[:-1] + (self.out_features,)

    def forward(self, x):
        x = self._check_input(x)
        self._x = x
        rows = x.reshape(-1, self.in_features)        # every leading position is a row
        y = kernels.matmul()(rows, self.weight.data.T).reshape(x.shape[:-1] + (self.out_features,))
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, dy):
        x = self._x
        shape = None if x is None else x.shape[:-1] + (self.out_features,)
        dy = check_upstream(self, dy, shape, self.dtype)
        # Every leading position (batch, time, ...) is one more sample for the weight gradient.
        dy2, x2 = dy.reshape(-1, self.out_features), x.reshape(-1, self.in_features)
        # dW = dyᵀ x and dx = dy W do not depend on each other: small ones run side by side
        self.weight.grad, dx = kernels.two_products()(dy2.T, x2, dy2, self.weight.data)
        if self.bias is not None:
            self.bias.grad = dy2.sum(axis=0)
        return dx.reshape(x.shape)

    def __repr__(self):
        extra = "" if getattr(self, "bias", True) is not None else ", bias=False"
        return f"Dense(in_features={self.in_features}, out_features={self.out_features}{extra})"
