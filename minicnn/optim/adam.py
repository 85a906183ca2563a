"""Adam twice: torch.optim.Adam (ε added to the bias-corrected √v) and keras.optimizers.Adam
(ε added to the uncorrected √v). On tiny gradients the two move the weights differently (lesson 06).
"""
import numpy as np

from .. import kernels
from .base import Optimizer, number as _number


class Adam(Optimizer):
    """Adam as torch.optim.Adam (L2 weight decay, no amsgrad).

    Per parameter p with gradient grad, at step t = 1, 2, ...:

        g = grad + weight_decay · p
        m = β1 · m + (1 − β1) · g                  (first moment; zeros before step 1)
        v = β2 · v + (1 − β2) · g²                 (second moment)
        p = p − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)

    i.e. p −= lr · m̂ / (sqrt(v̂) + eps) with the bias-corrected m̂ = m / (1 − β1^t) and
    v̂ = v / (1 − β2^t): eps is added AFTER the bias correction. See ``KerasAdam`` for why
    Keras' numbers differ.

    One difference from PyTorch: a moment below the smallest normal float,
    np.finfo(dtype).tiny (1.2e-38 in float32), is stored as 0, as a processor's flush-to-zero
    mode would store it (TensorFlow turns that mode on; PyTorch does not). A weight whose
    gradient stopped, behind a ReLU that no longer fires, keeps an m that shrinks by β1 a
    step down through the subnormal floats, and x86 processors compute on those 10 to 100
    times slower: after two epochs of LeNet-5 on Fashion-MNIST 12,000 of its 61,706 first
    moments were subnormal, and the update took 0.27 ms a step instead of 0.09. Such an m
    moves its weight by at most lr · m / eps, far below the weight's rounding, so the weights
    are PyTorch's (tests/test_optim.py).

    params: iterable of Parameter; lr >= 0; 0 <= β1, β2 < 1; eps >= 0; weight_decay >= 0.
    State per parameter: "step" (int), "exp_avg" (m), "exp_avg_sq" (v), shape of p.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        if len(betas) != 2:
            raise ValueError(f"Adam: betas must be a pair (β1, β2), got {betas!r}")
        super().__init__(params, dict(lr=lr, beta1=betas[0], beta2=betas[1], eps=eps,
                                      weight_decay=weight_decay))

    @property
    def betas(self):
        return (self.beta1, self.beta2)

    def _validate(self):
        _check_adam(self, self.lr, self.beta1, self.beta2, self.eps)
        self._check(_number(self.weight_decay) and self.weight_decay >= 0,
                    f"weight_decay must be a number >= 0, got {self.weight_decay!r}")

    def _state_names(self):
        return ("step", "exp_avg", "exp_avg_sq")

    def _update(self, p, state):
        if not state:
            state.update(step=0, exp_avg=np.zeros_like(p.data), exp_avg_sq=np.zeros_like(p.data))
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        # one pass over memory (compiled) instead of ten NumPy passes; the arithmetic is
        # torch.optim.Adam's: m ← m + (1−β1)(g − m), v ← β2·v + (1−β2)·g², and
        # p ← p − lr/(1−β1^t) · m / (√v/√(1−β2^t) + ε)
        kernels.elementwise().adam_step(
            p.data, p.grad, m, v, 1 - self.beta1, self.beta2, 1 - self.beta2,
            self.lr / (1 - self.beta1 ** t), (1 - self.beta2 ** t) ** 0.5, self.eps,
            self.weight_decay)


class KerasAdam(Optimizer):
    """Adam, exactly as keras.optimizers.Adam (Keras 3; no amsgrad, no weight decay).

    Per parameter p with gradient g, at step t = 1, 2, ...:

        alpha = lr · sqrt(1 − β2^t) / (1 − β1^t)
        m = m + (g − m) · (1 − β1)
        v = v + (g² − v) · (1 − β2)
        p = p − alpha · m / (sqrt(v) + epsilon)

    Why Keras and PyTorch give different numbers for "the same" Adam:
    1. Where epsilon enters. Rewrite Keras' step with the bias-corrected v̂ = v / (1 − β2^t):
       p −= lr · m̂ / (sqrt(v̂) + epsilon / sqrt(1 − β2^t)). So Keras' epsilon is effectively
       divided by sqrt(1 − β2^t), which is 0.0316 at t = 1 (β2 = 0.999): early in training
       Keras' epsilon acts ~32 times larger than PyTorch's (``Adam``), and it only fades
       towards the nominal value after thousands of steps. With gradients much larger
       than epsilon this changes nothing visible; with gradients near epsilon (tiny losses,
       float16, sparse features) the steps differ by large factors.
    2. The default epsilon: 1e-7 in Keras, 1e-8 in PyTorch.
    Both are the paper's algorithm; the paper itself adds epsilon to sqrt(v̂) in Algorithm 1
    and to the uncorrected sqrt(v) in the efficient form that Keras uses (Section 2).
    Keras' ``weight_decay`` is decoupled (AdamW-style: p −= lr · wd · p), not PyTorch's L2
    term, so it is left out here rather than given a second meaning.

    Scalars (alpha, 1 − β) are computed in float64 and applied to arrays of p's dtype;
    Keras computes them in the variable's dtype, so float32 results agree to float32
    rounding (~1e-6 relative), not bit for bit. (Keras on float64 variables still goes
    through float32 for lr, beta_1 and beta_2: keras.ops.cast(0.9, "float64") is
    0.8999999761581421. Pass the float32-rounded values here to reproduce such a run.)

    params: iterable of Parameter; lr >= 0; 0 <= beta_1, beta_2 < 1; epsilon >= 0.
    State per parameter: "step" (int), "m", "v", shape of p.
    """

    def __init__(self, params, lr=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7):
        super().__init__(params, dict(lr=lr, beta_1=beta_1, beta_2=beta_2, epsilon=epsilon))

    def _validate(self):
        _check_adam(self, self.lr, self.beta_1, self.beta_2, self.epsilon)

    def _state_names(self):
        return ("step", "m", "v")

    def _update(self, p, state):
        if not state:
            state.update(step=0, m=np.zeros_like(p.data), v=np.zeros_like(p.data))
        g = p.grad
        state["step"] += 1
        t, m, v = state["step"], state["m"], state["v"]
        alpha = self.lr * (1 - self.beta_2 ** t) ** 0.5 / (1 - self.beta_1 ** t)
        m += (g - m) * (1 - self.beta_1)
        v += (g * g - v) * (1 - self.beta_2)
        p.data -= (m * alpha) / (np.sqrt(v) + self.epsilon)


def _check_adam(opt, lr, beta1, beta2, eps):
    opt._check(_number(lr) and lr >= 0, f"lr must be a number >= 0, got {lr!r}")
    for which, beta in (("first", beta1), ("second", beta2)):
        opt._check(_number(beta) and 0 <= beta < 1,
                   f"the {which} beta must be in [0, 1), got {beta!r}")
    opt._check(_number(eps) and eps >= 0, f"epsilon must be a number >= 0, got {eps!r}")
