"""Wrong solutions of exercises 3 (MaxPool2D) and 4 (AvgPool2D, SumPool2D backward)."""
import numpy as np

from exercise_stubs import stub


class _MaxPoolLoops(stub("03_maxpool", "MaxPool2D")):
    """Max pooling in loops, with mistake switches."""

    def forward(self, x, plus_one=1):
        x = np.asarray(x)
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=-np.inf)
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        h_out = (x_pad.shape[2] - kh) // sh + plus_one
        w_out = (x_pad.shape[3] - kw) // sw + plus_one
        y = np.zeros(x.shape[:2] + (h_out, w_out), dtype=x.dtype)
        for i in range(h_out):
            for j in range(w_out):
                y[:, :, i, j] = x_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw].max(axis=(2, 3))
        self._x_pad, self._pads, self._shape = x_pad, (top, left), x.shape
        return y

    def backward(self, dy, every_tie=False, assign=False):
        x_pad = self._x_pad
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        dx_pad = np.zeros_like(x_pad)
        for n in range(dy.shape[0]):
            for c in range(dy.shape[1]):
                for i in range(dy.shape[2]):
                    for j in range(dy.shape[3]):
                        window = x_pad[n, c, i * sh:i * sh + kh, j * sw:j * sw + kw]
                        if every_tie:
                            mask = window == window.max()
                            dx_pad[n, c, i * sh:i * sh + kh, j * sw:j * sw + kw] += mask * dy[n, c, i, j]
                            continue
                        p, q = np.unravel_index(np.argmax(window), window.shape)
                        if assign:
                            dx_pad[n, c, i * sh + p, j * sw + q] = dy[n, c, i, j]
                        else:
                            dx_pad[n, c, i * sh + p, j * sw + q] += dy[n, c, i, j]
        (top, left), (N, C, H, W) = self._pads, self._shape
        return dx_pad[:, :, top:top + H, left:left + W]


class MaxPool2DEveryTie(_MaxPoolLoops):
    """On a tie, every maximum of the window gets dy."""

    def backward(self, dy):
        return super().backward(dy, every_tie=True)


class MaxPool2DAssignNotAdd(_MaxPoolLoops):
    """dx_pad[...] = dy instead of +=: overlapping windows overwrite each other."""

    def backward(self, dy):
        return super().backward(dy, assign=True)


class MaxPool2DOffByOne(_MaxPoolLoops):
    """H_out = ⌊(H_pad − k)/S⌋, the + 1 forgotten."""

    def forward(self, x):
        return super().forward(x, plus_one=0)


def _spread(layer, dy, share, assign=False):
    """dx: each window's entries get ``share`` (N, C, H_out, W_out), added (or assigned)."""
    N, C, H, W = layer._x_shape
    (top, bottom), (left, right) = layer._pads
    (kh, kw), (sh, sw) = layer.kernel_size, layer.stride
    dx_pad = np.zeros((N, C, H + top + bottom, W + left + right), dtype=dy.dtype)
    for i in range(dy.shape[2]):
        for j in range(dy.shape[3]):
            if assign:
                dx_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] = share[:, :, i, j, None, None]
            else:
                dx_pad[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += share[:, :, i, j, None, None]
    return dx_pad[:, :, top:top + H, left:left + W]


class AvgPool2DNotDivided(stub("04_avg_sum_pool", "AvgPool2D")):
    """Average pooling's backward without the division by the window's count."""

    def backward(self, dy):
        dy = np.asarray(dy)
        return _spread(self, dy, dy)


class AvgPool2DAssignNotAdd(stub("04_avg_sum_pool", "AvgPool2D")):
    """dx_pad[window] = share instead of +=."""

    def backward(self, dy):
        dy = np.asarray(dy)
        count = self._counts if not self.count_include_pad else np.prod(self.kernel_size)
        return _spread(self, dy, (dy / count).astype(dy.dtype), assign=True)


class SumPool2DDivided(stub("04_avg_sum_pool", "SumPool2D")):
    """Sum pooling's backward divides by kh·kw, as average pooling does."""

    def backward(self, dy):
        dy = np.asarray(dy)
        return _spread(self, dy, (dy / np.prod(self.kernel_size)).astype(dy.dtype))


class SumPool2DAssignNotAdd(stub("04_avg_sum_pool", "SumPool2D")):
    """dx_pad[window] = dy instead of +=."""

    def backward(self, dy):
        dy = np.asarray(dy)
        return _spread(self, dy, dy, assign=True)
