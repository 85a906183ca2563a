"""SGD = torch.optim.SGD: plain, momentum (PyTorch's buffer), Nesterov, L2 weight decay."""
import numpy as np

from .base import Optimizer, number as _number


class SGD(Optimizer):
    """Stochastic gradient descent, exactly as torch.optim.SGD (without dampening).

    Per parameter p with gradient grad, at every step:

        g = grad + weight_decay · p                (L2 penalty, added to the gradient)
        buf = g                  on the first step  (momentum > 0 only)
        buf = momentum · buf + g afterwards
        g = buf                  (heavy ball)   or   g = g + momentum · buf   (nesterov)
        p = p − lr · g

    Keras writes momentum differently: ``v = momentum · v − lr · g;  p = p + v``. Unrolled,
    PyTorch's step is  −lr_t · Σ_k momentum^(t−k) g_k  and Keras'  −Σ_k momentum^(t−k) lr_k g_k:
    the same while lr is constant (Keras' v is −lr · buf), different as soon as lr changes
    (a schedule): PyTorch rescales the whole accumulated history by the new lr at once,
    Keras applies the new lr only to gradients from then on. Keras' ``weight_decay`` is also
    not this L2 term but decoupled (p −= lr · wd · p, AdamW-style).

    params: iterable of Parameter; lr >= 0; momentum >= 0; nesterov needs momentum > 0;
    weight_decay >= 0. State per parameter (momentum > 0): "momentum_buffer", shape of p.
    """

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov,
                                      weight_decay=weight_decay))

    def _validate(self):
        self._check(_number(self.lr) and self.lr >= 0, f"lr must be a number >= 0, got {self.lr!r}")
        self._check(_number(self.momentum) and self.momentum >= 0,
                    f"momentum must be a number >= 0, got {self.momentum!r}")
        self._check(_number(self.weight_decay) and self.weight_decay >= 0,
                    f"weight_decay must be a number >= 0, got {self.weight_decay!r}")
        self._check(isinstance(self.nesterov, (bool, np.bool_)),
                    f"nesterov must be True or False, got {self.nesterov!r}")
        self._check(not self.nesterov or self.momentum > 0,
                    f"nesterov=True needs momentum > 0, got momentum={self.momentum!r}")

    def _state_names(self):
        return ("momentum_buffer",) if self.momentum != 0 else ()

    def _update(self, p, state):
        g = p.grad
        if self.weight_decay != 0:
            g = g + self.weight_decay * p.data  # a new array: p.grad itself stays untouched
        if self.momentum != 0:
            if "momentum_buffer" not in state:
                buf = state["momentum_buffer"] = np.array(g, copy=True)
            else:
                buf = state["momentum_buffer"]
                buf *= self.momentum
                buf += g
            g = g + self.momentum * buf if self.nesterov else buf
        p.data -= self.lr * g
