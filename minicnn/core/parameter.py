"""A trainable array and its gradient."""
import numpy as np


class Parameter:
    """A learnable tensor: ``data`` holds the values, ``grad`` the gradient of the loss.

    ``grad`` has the shape and dtype of ``data``. A layer's ``backward`` OVERWRITES ``grad``
    (it does not add to it, unlike PyTorch's autograd): one backward pass, one gradient.
    ``zero_grad()`` exists anyway, because every PyTorch training loop calls it.
    ``trainable = False`` freezes the parameter: optimizers skip it.
    """

    def __init__(self, data, name=""):
        self.data = np.asarray(data)
        self.grad = np.zeros_like(self.data)
        self.name = name
        self.trainable = True

    @property
    def shape(self):
        return self.data.shape

    @property
    def size(self):
        return self.data.size

    def zero_grad(self):
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter({self.name or 'unnamed'}, shape={self.data.shape}, dtype={self.data.dtype})"
