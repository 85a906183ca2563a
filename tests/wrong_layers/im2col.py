"""Wrong solutions of exercise 7 (im2col)."""
import numpy as np

from exercise_stubs import stub


class _Im2colExercise(stub("07_im2col", "Conv2D")):
    """Exercise 7 (forward and backward given), and each window's entries for im2col."""

    def windows(self, x_pad, stride):
        (kh, kw), (dh, dw) = self.kernel_size, self.dilation
        sh, sw = stride
        h_out = (x_pad.shape[2] - dh * (kh - 1) - 1) // sh + 1
        w_out = (x_pad.shape[3] - dw * (kw - 1) - 1) // sw + 1
        out = np.empty((x_pad.shape[0], h_out, w_out, x_pad.shape[1], kh, kw), x_pad.dtype)
        for i in range(h_out):
            for j in range(w_out):
                out[:, i, j] = x_pad[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh,
                                     j * sw:j * sw + dw * (kw - 1) + 1:dw]
        return out


class Conv2DIm2colChannelsLast(_Im2colExercise):
    """Each row in (kh, kw, C) order instead of (C, kh, kw)."""

    def im2col(self, x_pad):
        w = self.windows(x_pad, self.stride)
        return w.transpose(0, 1, 2, 4, 5, 3).reshape(w.shape[0] * w.shape[1] * w.shape[2], -1)


class Conv2DIm2colStrideIgnored(_Im2colExercise):
    """Windows at every position: the stride ignored."""

    def im2col(self, x_pad):
        w = self.windows(x_pad, (1, 1))
        return w.reshape(w.shape[0] * w.shape[1] * w.shape[2], -1)
