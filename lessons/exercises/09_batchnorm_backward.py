"""Exercise 9: the backward pass of batch normalisation, in training mode.

Lesson: lessons/11-batch-norm-and-residuals.md (11.1 what BatchNorm computes, 11.2 training
mode and evaluation mode).

Write ``BatchNorm2D.backward``; the forward pass is minicnn's. In training mode it normalises
each channel with the batch's own mean and (biased) variance over the m = N·H·W values:

    x̂ = (x − mean) / sqrt(var + eps),   y = γ · x̂ + β            all (N, C, H, W)
    self.saved_for_backward() gives what forward kept: (x_hat, inv_std, batch): x̂ (N, C, H, W),
    1/sqrt(var + eps) (C,) and batch=True (the batch's statistics were used)

    dy: (N, C, H, W) -> dx: (N, C, H, W), in dy's dtype
    self.weight.grad (dγ): (C,) = Σ_{n,h,w} dy · x̂
    self.bias.grad   (dβ): (C,) = Σ_{n,h,w} dy
    with g = dy · γ and the means over (N, H, W), per channel:
    dx = (g − mean(g) − x̂ · mean(g · x̂)) · inv_std

mean and var depend on every entry of x: the two extra terms are their share of the gradient.

Check it:   python -m minicnn.check lessons/exercises/09_batchnorm_backward.py:BatchNorm2D
"""
import numpy as np

import minicnn


class BatchNorm2D(minicnn.BatchNorm2D):

    def backward(self, dy):
        """dy (N, C, H, W) -> dx (N, C, H, W); fills weight.grad and bias.grad."""
        dy = np.asarray(dy, dtype=self.dtype)
        x_hat, inv_std, batch = self.saved_for_backward()
        raise NotImplementedError("write BatchNorm2D.backward: dγ, dβ, then dx")
