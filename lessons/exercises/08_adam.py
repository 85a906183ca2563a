"""Exercise 8: one step of Adam, as torch.optim.Adam takes it.

Lesson: lessons/06-optimizers.md (6.4 Adam: one step size for every parameter; 6.5 why Keras'
and PyTorch's Adam differ).

Write ``Adam._update(p, state)``: ONE parameter's step. ``step()`` (minicnn's) calls it for
every trainable parameter; the constructor is minicnn's Adam(params, lr, betas, eps,
weight_decay), its hyperparameters are self.lr, self.beta1, self.beta2, self.eps,
self.weight_decay.

    p.data, p.grad:  arrays of the same shape; update p.data IN PLACE (p.data -= ...)
    state:           a dict, empty before the first step; keep t, m and v in it

    t = t + 1                                   (t = 1 on the first step)
    g = p.grad + weight_decay · p.data
    m = β1 · m + (1 − β1) · g                   (m = 0 before the first step)
    v = β2 · v + (1 − β2) · g²                  (v = 0 before the first step)
    m̂ = m / (1 − β1^t),   v̂ = v / (1 − β2^t)   (the bias correction)
    p.data −= lr · m̂ / (sqrt(v̂) + eps)

The check runs 20 steps and compares the parameters after each with torch.optim.Adam's.

Check it:   python -m minicnn.check lessons/exercises/08_adam.py:Adam
"""
import numpy as np  # noqa: F401  (you will need it)

import minicnn


class Adam(minicnn.optim.Adam):

    def _update(self, p, state):
        """One Adam step of parameter p (in place), with its state dict."""
        raise NotImplementedError("write Adam._update: t, g, m, v, the bias correction, the step")
