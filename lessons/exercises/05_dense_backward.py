"""Exercise 5: the backward pass of a dense (fully connected) layer.

Lessons: lessons/03-flatten-and-dense.md (3.5 Dense: y = x Wᵀ + b) and
lessons/05-backward-and-gradient-checks.md (what backward returns and what it writes).

Write ``Dense.backward``; the forward pass is minicnn's (it keeps the input as self._x).

    x:       (N, in_features)              self._x
    weight:  (out_features, in_features)   self.weight.data (PyTorch's layout)
    bias:    (out_features,)               self.bias.data, or self.bias is None
    y = x @ weightᵀ + bias:  (N, out_features)

    dy: (N, out_features) -> dx: (N, in_features) = dy @ weight
    self.weight.grad: (out_features, in_features) = dyᵀ @ x      (a sum over the batch)
    self.bias.grad:   (out_features,)             = Σ_n dy[n]   (a sum, not a mean)

Check it:   python -m minicnn.check lessons/exercises/05_dense_backward.py:Dense
"""
import numpy as np

import minicnn


class Dense(minicnn.Dense):

    def backward(self, dy):
        """dy (N, out_features) -> dx (N, in_features); fills weight.grad and bias.grad."""
        dy = np.asarray(dy, dtype=self.dtype)
        x = self._x
        raise NotImplementedError("write Dense.backward: dx, weight.grad, bias.grad")
