"""Dropout: zero random entries while training, as PyTorch's nn.Dropout and Keras' Dropout."""
import numbers

import numpy as np

from ..core.random import get_rng
from .base import Layer, as_float, check_upstream


class Dropout(Layer):
    """Zero each entry with probability ``p`` in training; the identity in eval mode.

    ``p`` is the probability of DROPPING an entry, as in PyTorch and Keras (the original paper
    and old Caffe code used the keep probability). "Inverted" dropout: the kept entries are
    scaled by 1/(1 − p) during training, so that the expected output equals the input and
    nothing has to change at test time.

    forward:  x (any shape) -> y (same shape, same float dtype): x · mask / (1 − p) in
              training (``layer.training``, set by ``train()`` / ``eval()``), x in eval mode
    backward: dy (same shape) -> dx = dy · mask / (1 − p), with the mask of the last forward

    The masks come from the layer's own generator ``self.rng``: ``np.random.default_rng(seed)``
    for an int ``seed`` (or the Generator passed as ``seed``), else minicnn's global generator
    (``minicnn.manual_seed``). Same seed, same masks.
    """

    per_image = True

    def __init__(self, p=0.5, seed=None):
        super().__init__()
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not 0 <= p < 1:
            raise ValueError(f"Dropout: p is the drop probability and must satisfy 0 <= p < 1, "
                             f"got p={p!r}")
        self.p = float(p)
        self.rng = get_rng(seed)
        self._scale = None  # mask / (1 − p) of the last training forward, None for the identity
        self._shape = self._dtype = None

    def forward(self, x):
        x = as_float(x)
        self._shape, self._dtype = x.shape, x.dtype
        if not self.training or self.p == 0:
            self._scale = None
            return x.copy()
        keep = self.rng.random(x.shape) >= self.p  # True with probability 1 − p
        self._scale = keep.astype(x.dtype) * x.dtype.type(1 / (1 - self.p))
        return x * self._scale

    def backward(self, dy):
        dy = check_upstream(self, dy, self._shape, self._dtype)
        return dy.copy() if self._scale is None else dy * self._scale

    def __repr__(self):
        return f"Dropout(p={self.p})"
