"""Exercise 7: im2col, a convolution as one matrix product.

Lesson: lessons/13-why-loops-are-slow.md (13.3 im2col: a convolution as one matrix product).

Write ``Conv2D.im2col``. The forward pass (given) multiplies its result by the weight matrix;
the backward pass is minicnn's.

    x_pad: (N, C, H_pad, W_pad)      the input, already padded
    kh, kw = self.kernel_size;  S_h, S_w = self.stride;  D_h, D_w = self.dilation
    H_out = ⌊(H_pad − D_h·(kh − 1) − 1) / S_h⌋ + 1                  (W_out likewise)

    cols: (N·H_out·W_out, C·kh·kw)
    row r = (n·H_out + i)·W_out + j  holds window (i, j) of sample n, in (c, p, q) order:
    cols[r, (c·kh + p)·kw + q] = x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w]

Then y = cols @ weight.reshape(O, C·kh·kw)ᵀ (+ bias) is the convolution, one row per output
position: the (c, p, q) order matches the weight's reshape.

Check it:   python -m minicnn.check lessons/exercises/07_im2col.py:Conv2D
"""
import numpy as np

import minicnn


class Conv2D(minicnn.Conv2D):

    def im2col(self, x_pad):
        """x_pad (N, C, H_pad, W_pad) -> cols (N·H_out·W_out, C·kh·kw), in x_pad's dtype."""
        N, C, H_pad, W_pad = x_pad.shape
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        raise NotImplementedError("write Conv2D.im2col: one row per window, (c, p, q) order")

    def forward(self, x):
        """Given: x (N, C, H, W) -> y (N, O, H_out, W_out) through im2col."""
        x = np.asarray(x, dtype=self.dtype)
        self._x = x
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        cols = self.im2col(x_pad)
        N, (H_out, W_out) = x.shape[0], self.output_shape(x.shape)[2:]
        y = cols @ self.weight.data.reshape(self.out_channels, -1).T
        if self.bias is not None:
            y = y + self.bias.data
        return np.ascontiguousarray(y.reshape(N, H_out, W_out, -1).transpose(0, 3, 1, 2))

    def backward(self, dy):
        """Given: minicnn's backward pass, on the input that forward kept."""
        super().forward(self._x)
        return super().backward(dy)
