"""Exercise 3: max pooling, forward and backward, ties included.

Lesson: lessons/02-pooling.md (2.1 max pooling, 2.2 the stride, 2.4 the gradient goes to the
maximum only).

Write ``MaxPool2D.forward`` and ``MaxPool2D.backward``. The constructor (kernel_size, stride,
padding) and ``padding_for`` come from minicnn's MaxPool2D.

    x:  (N, C, H, W)    ->    y: (N, C, H_out, W_out), in x's dtype
    (top, bottom), (left, right) = self.padding_for(H, W)    padding counts as −inf
    kh, kw = self.kernel_size;  S_h, S_w = self.stride

    H_out = ⌊(H + top + bottom − kh) / S_h⌋ + 1                        (W_out likewise)
    y[n, c, i, j] = max over p < kh, q < kw of x_pad[n, c, i·S_h + p, j·S_w + q]

    backward: dy (N, C, H_out, W_out) -> dx (N, C, H, W)
    dx_pad[n, c, i·S_h + p*, j·S_w + q*]  +=  dy[n, c, i, j]
    where (p*, q*) is THE position of the maximum of window (i, j): on a tie, the first one in
    row-major order (np.argmax does that), as PyTorch. One maximum per window, and += because
    an entry may be the maximum of several overlapping windows.

Check it:   python -m minicnn.check lessons/exercises/03_maxpool.py:MaxPool2D
"""
import numpy as np

import minicnn


class MaxPool2D(minicnn.MaxPool2D):

    def forward(self, x):
        """x (N, C, H, W) -> y (N, C, H_out, W_out); keep what backward needs on self."""
        x = np.asarray(x)
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        raise NotImplementedError("write MaxPool2D.forward: pad with -inf, take each window's max")

    def backward(self, dy):
        """dy (N, C, H_out, W_out) -> dx (N, C, H, W)."""
        raise NotImplementedError("write MaxPool2D.backward: dy to each window's first maximum")
