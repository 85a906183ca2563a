"""Wrong solutions of exercises 1 (Conv2D forward) and 2 (Conv2D backward)."""
import numpy as np

from exercise_stubs import stub


def convolve(x_pad, w, b, stride, dilation, h_out, w_out, flip=False):
    """The loops of exercise 1 on an already padded input (flip=True turns the kernel)."""
    (sh, sw), (dh, dw) = stride, dilation
    O, C, kh, kw = w.shape
    if flip:
        w = w[:, :, ::-1, ::-1]
    y = np.zeros((x_pad.shape[0], O, h_out, w_out), dtype=x_pad.dtype)
    for i in range(h_out):
        for j in range(w_out):
            window = x_pad[:, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
            y[:, :, i, j] = np.tensordot(window, w, axes=([1, 2, 3], [1, 2, 3]))
    if b is not None:
        y += b[None, :, None, None]
    return y


class _ForwardExercise(stub("01_conv_forward", "Conv2D")):
    """Exercise 1, whose backward is given."""

    def _padded(self, x):
        x = np.asarray(x, dtype=self.dtype)
        self._x = x
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        return x, np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def _bias(self):
        return None if self.bias is None else self.bias.data


class Conv2DOffByOne(_ForwardExercise):
    """H_out = ⌊(H_pad − D·(k − 1) − 1)/S⌋, the + 1 forgotten."""

    def forward(self, x):
        x, x_pad = self._padded(x)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        h_out = (x_pad.shape[2] - dh * (kh - 1) - 1) // sh
        w_out = (x_pad.shape[3] - dw * (kw - 1) - 1) // sw
        return convolve(x_pad, self.weight.data, self._bias(), self.stride, self.dilation, h_out, w_out)


class Conv2DPadOneSide(_ForwardExercise):
    """Pads the top and the left only (the bottom and right padding forgotten)."""

    def forward(self, x):
        x = np.asarray(x, dtype=self.dtype)
        self._x = x
        (top, bottom), (left, right) = self.padding_for(x.shape[2], x.shape[3])
        x_pad = np.pad(x, ((0, 0), (0, 0), (top, 0), (left, 0)))
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        h_out = (x_pad.shape[2] - dh * (kh - 1) - 1) // sh + 1
        w_out = (x_pad.shape[3] - dw * (kw - 1) - 1) // sw + 1
        return convolve(x_pad, self.weight.data, self._bias(), self.stride, self.dilation, h_out, w_out)


class Conv2DFlippedKernel(_ForwardExercise):
    """The textbook convolution: the kernel turned by 180°."""

    def forward(self, x):
        x, x_pad = self._padded(x)
        h_out, w_out = self.output_shape(x.shape)[2:]
        return convolve(x_pad, self.weight.data, self._bias(), self.stride, self.dilation, h_out,
                        w_out, flip=True)


class _BackwardExercise(stub("02_conv_backward", "Conv2D")):
    """Exercise 2 (its forward keeps x_pad), and the loops of its backward with mistake switches."""

    def loops(self, dy, assign=False, ignore_stride=False, db_mean=False, dw_mean=False):
        dy = np.asarray(dy, dtype=self.dtype)
        x_pad, (N, C, H, W) = self._x_pad, self._x_shape
        (top, _), (left, _) = self._pads
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        if ignore_stride:
            sh = sw = 1
        w = self.weight.data
        dx_pad = np.zeros_like(x_pad)
        dW = np.zeros_like(w)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                for p in range(kh):
                    for q in range(kw):
                        r, c = i * sh + p * dh, j * sw + q * dw
                        share = np.einsum("no,oc->nc", dy[:, :, i, j], w[:, :, p, q])
                        if assign:
                            dx_pad[:, :, r, c] = share
                        else:
                            dx_pad[:, :, r, c] += share
                        r0, c0 = i * self.stride[0] + p * dh, j * self.stride[1] + q * dw
                        dW[:, :, p, q] += np.einsum("no,nc->oc", dy[:, :, i, j], x_pad[:, :, r0, c0])
        self.weight.grad = dW / N if dw_mean else dW
        if self.bias is not None:
            self.bias.grad = dy.mean(axis=(0, 2, 3)) if db_mean else dy.sum(axis=(0, 2, 3))
        return dx_pad[:, :, top:top + H, left:left + W]


class Conv2DAssignNotAdd(_BackwardExercise):
    """dx_pad[...] = share instead of += share."""

    def backward(self, dy):
        return self.loops(dy, assign=True)


class Conv2DStrideIgnoredInDx(_BackwardExercise):
    """dx written at rows i + p·D instead of i·S + p·D."""

    def backward(self, dy):
        return self.loops(dy, ignore_stride=True)


class Conv2DBiasGradAveraged(_BackwardExercise):
    """bias.grad = dy.mean(axis=(0, 2, 3)) instead of the sum."""

    def backward(self, dy):
        return self.loops(dy, db_mean=True)


class Conv2DWeightGradMeanOverBatch(_BackwardExercise):
    """weight.grad divided by N."""

    def backward(self, dy):
        return self.loops(dy, dw_mean=True)
