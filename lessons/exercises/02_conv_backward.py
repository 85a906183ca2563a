"""Exercise 2: the backward pass of a 2-D convolution: dx, dW and db.

Lessons: lessons/05-backward-and-gradient-checks.md (what backward returns and what it writes)
and lessons/01-convolution.md (the forward formula it differentiates).

Write ``Conv2D.backward``. The forward pass (given) keeps the padded input.

    forward:  y[n, o, i, j] = b[o] + Σ_{c, p, q} x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w] · W[o, c, p, q]

    dy:  (N, O, H_out, W_out)    ∂loss/∂y, given
    dx:  (N, C, H, W)            what backward returns (in dy's dtype)
    self.weight.grad:  (O, C, kh, kw)     self.bias.grad: (O,)  (when self.bias is not None)

    db[o]          = Σ_{n, i, j} dy[n, o, i, j]
    dW[o, c, p, q] = Σ_{n, i, j} dy[n, o, i, j] · x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w]
    dx_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w]  +=  dy[n, o, i, j] · W[o, c, p, q]
                                                    for every n, o, i, j, c, p, q
    dx = dx_pad without the padding: dx_pad[:, :, top:top + H, left:left + W]

Sums, not means: the loss already averaged over the batch. And ``+=``: where windows overlap,
an input entry collects a share from each of them.

Check it:   python -m minicnn.check lessons/exercises/02_conv_backward.py:Conv2D
"""
import numpy as np

import minicnn


class Conv2D(minicnn.Conv2D):

    def forward(self, x):
        """Given: minicnn's forward pass; keeps x_pad (N, C, H + top + bottom, W + left + right)."""
        x = np.asarray(x, dtype=self.dtype)
        self._pads = self.padding_for(x.shape[2], x.shape[3])
        (top, bottom), (left, right) = self._pads
        self._x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        self._x_shape = x.shape
        return super().forward(x)

    def backward(self, dy):
        """dy (N, O, H_out, W_out) -> dx (N, C, H, W); fills self.weight.grad and self.bias.grad."""
        dy = np.asarray(dy, dtype=self.dtype)
        x_pad, (N, C, H, W) = self._x_pad, self._x_shape
        (top, bottom), (left, right) = self._pads
        raise NotImplementedError("write Conv2D.backward: db, dW, then dx with +=")
