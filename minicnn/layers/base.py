"""What every layer has: forward, backward, parameters, train/eval, output_shape.

A layer follows cs231n's pattern: ``forward(x)`` computes the output and keeps what the
backward pass needs (the cache) on the layer; ``backward(dy)`` consumes that cache, writes
the parameter gradients into ``param.grad`` (overwriting, not accumulating) and returns
the gradient with respect to the input. Shapes are NCHW, like PyTorch.
"""
import numpy as np

from ..errors import ShapeError
from ..parameter import Parameter


class Layer:
    """Base class. Subclasses implement ``forward``, ``backward`` and ``output_shape``."""

    def __init__(self):
        self.training = True

    # -- the two passes -------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    # -- shapes without running ---------------------------------------------------------
    def output_shape(self, input_shape):
        """Shape of the output for an input of ``input_shape`` (batch included), or ShapeError."""
        return tuple(input_shape)

    def explain(self, input_shape):
        """Lines of arithmetic, numbers filled in, that turn ``input_shape`` into the output shape."""
        return []

    # -- parameters and modes -------------------------------------------------------------
    def parameters(self):
        """The layer's Parameters, weight first, in a fixed order."""
        return [p for p in (getattr(self, "weight", None), getattr(self, "bias", None))
                if isinstance(p, Parameter)]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    def train(self, mode=True):
        self.training = mode
        return self

    def eval(self):
        return self.train(False)

    # -- helpers for subclasses -----------------------------------------------------------
    def _expect_rank(self, input_shape, rank, layout):
        """Raise ShapeError unless ``input_shape`` has ``rank`` dimensions, named by ``layout``."""
        input_shape = tuple(input_shape)
        if len(input_shape) != rank:
            raise ShapeError(
                f"{self!r}: expected an input of rank {rank} {layout}, "
                f"got shape {input_shape} of rank {len(input_shape)}")
        return input_shape

    def _check_input(self, x):
        """Validate ``x`` (as ``output_shape`` does) and return it as an array of the layer's dtype."""
        x = np.asarray(x)
        self.output_shape(x.shape)
        dtype = getattr(self, "dtype", None)
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        return x

    def __repr__(self):
        return f"{type(self).__name__}()"


def shape_product(dims):
    """'32·7·7' for (32, 7, 7): the product written out, as the error messages show it."""
    return "·".join(str(d) for d in dims)
