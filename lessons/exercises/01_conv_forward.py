"""Exercise 1: the forward pass of a 2-D convolution, written as loops.

Lesson: lessons/01-convolution.md (1.1 the output size, 1.2 stride, padding and dilation,
1.4 the loops).

Write ``Conv2D.forward``. Everything else (the constructor, the weights, ``padding_for``, the
backward pass) comes from minicnn's Conv2D.

    x:       (N, C, H, W)            the input, NCHW
    weight:  (O, C, kh, kw)          self.weight.data
    bias:    (O,)                    self.bias.data, or self.bias is None (bias=False)
    y:       (N, O, H_out, W_out)    what forward returns, in x's dtype

    (top, bottom), (left, right) = self.padding_for(H, W)     zeros added around x
    S_h, S_w = self.stride;  D_h, D_w = self.dilation;  kh, kw = self.kernel_size

    H_out = ⌊(H + top + bottom − D_h·(kh − 1) − 1) / S_h⌋ + 1          (W_out likewise)

    y[n, o, i, j] = bias[o] + Σ_{c, p, q} x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w] · weight[o, c, p, q]

A cross-correlation, as every deep-learning library computes it: the kernel is not flipped.

Check it:   python -m minicnn.check lessons/exercises/01_conv_forward.py:Conv2D
"""
import numpy as np

import minicnn


class Conv2D(minicnn.Conv2D):

    def forward(self, x):
        """x (N, C, H, W) -> y (N, O, H_out, W_out)."""
        x = np.asarray(x, dtype=self.dtype)
        self._x = x  # the backward pass below needs it
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        raise NotImplementedError("write Conv2D.forward: pad x, then the formula above")

    def backward(self, dy):
        """Given: minicnn's backward pass, run on the input that forward kept (exercise 2 writes it)."""
        super().forward(self._x)
        return super().backward(dy)
