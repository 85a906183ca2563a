"""Exercise 4: the backward passes of average pooling and sum pooling.

Lesson: lessons/02-pooling.md (2.1 max, average and sum; 2.3 sum pooling).

Write ``AvgPool2D.backward`` and ``SumPool2D.backward``; the forward passes are given (they
keep the padding, the input's shape and each window's count).

    forward (sum):      y[n, c, i, j] = Σ_{p < kh, q < kw} x_pad[n, c, i·S_h + p, j·S_w + q]
    forward (average):  y[n, c, i, j] = (that sum) / count[i, j]
        count[i, j] = kh·kw when self.count_include_pad, else the number of entries of window
        (i, j) that are not padding (self._counts holds it, shape (H_out, W_out))

    backward: dy (N, C, H_out, W_out) -> dx (N, C, H, W), in dy's dtype
    sum:      dx_pad[n, c, i·S_h + p, j·S_w + q]  +=  dy[n, c, i, j]
    average:  dx_pad[n, c, i·S_h + p, j·S_w + q]  +=  dy[n, c, i, j] / count[i, j]
    then dx = dx_pad[:, :, top:top + H, left:left + W]

Check them:  python -m minicnn.check lessons/exercises/04_avg_sum_pool.py:AvgPool2D
             python -m minicnn.check lessons/exercises/04_avg_sum_pool.py:SumPool2D
"""
import numpy as np

import minicnn


class _Kept:
    """Given: the forward pass of minicnn's pooling, keeping what both backward passes need:
    self._pads, self._x_shape and self._counts (each window's count of real entries)."""

    def forward(self, x):
        x = np.asarray(x)
        self._x_shape = x.shape
        self._pads = self.padding_for(x.shape[2], x.shape[3])
        (top, bottom), (left, right) = self._pads
        ones = np.pad(np.ones(x.shape[2:]), ((top, bottom), (left, right)))
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h_out = (x.shape[2] + top + bottom - kh) // sh + 1
        w_out = (x.shape[3] + left + right - kw) // sw + 1
        self._counts = np.array([[ones[i * sh:i * sh + kh, j * sw:j * sw + kw].sum()
                                  for j in range(w_out)] for i in range(h_out)])
        return super().forward(x)


class AvgPool2D(_Kept, minicnn.AvgPool2D):

    def backward(self, dy):
        """dy (N, C, H_out, W_out) -> dx (N, C, H, W)."""
        dy = np.asarray(dy)
        N, C, H, W = self._x_shape
        (top, bottom), (left, right) = self._pads
        raise NotImplementedError("write AvgPool2D.backward: each window shares dy / count")


class SumPool2D(_Kept, minicnn.SumPool2D):

    def backward(self, dy):
        """dy (N, C, H_out, W_out) -> dx (N, C, H, W)."""
        dy = np.asarray(dy)
        N, C, H, W = self._x_shape
        (top, bottom), (left, right) = self._pads
        raise NotImplementedError("write SumPool2D.backward: every entry of a window gets dy")
