"""Classification losses: from logits (PyTorch's habit) or from probabilities (Keras' default).

A network's last Dense layer outputs LOGITS: unnormalised scores, any real numbers.
Softmax turns them into PROBABILITIES (positive, summing to 1 per sample); LogSoftmax into
log-probabilities. The frameworks split the work differently:

- PyTorch: the model ends at the logits and ``nn.CrossEntropyLoss`` applies log-softmax
  itself (``CrossEntropyLoss`` = ``LogSoftmax`` + ``NLLLoss``). ``nn.NLLLoss`` expects
  log-probabilities, the output of a ``LogSoftmax`` layer.
- Keras: the model usually ends with ``activation="softmax"`` and
  ``CategoricalCrossentropy()`` (default ``from_logits=False``) takes PROBABILITIES, clipping
  them to [ε, 1 − ε] so that log(0) never happens.

Feeding logits to a loss that expects probabilities (or the reverse) trains badly without
any error, so each class here says which one it takes.

Every loss: ``loss(input, target)`` (= ``forward``) returns a Python float, the mean over the
batch (``reduction="mean"``) or the sum (``reduction="sum"``); ``backward()`` returns the
gradient with respect to ``input``, same shape and dtype.
"""
import numpy as np

from .core.errors import ShapeError

_REDUCTIONS = ("mean", "sum")


class _Loss:
    """Shared parts: reduction, input/target validation, __call__."""

    takes = "scores"  # what the input holds, for the error messages
    target_form = "(N,) of integer class indices"

    def __init__(self, reduction="mean"):
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', "
                             f"got {reduction!r}")
        self.reduction = reduction
        self._grad = None

    def __call__(self, input, target):
        return self.forward(input, target)

    def backward(self):
        """d loss / d input: an array of the input's shape and dtype."""
        if self._grad is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        return self._grad

    def _weight(self, n, dtype):
        """The factor of every per-sample loss in the total: 1/N for "mean", 1 for "sum"."""
        return dtype.type(1 / n if self.reduction == "mean" else 1)

    def _input(self, input, target):
        """input as a float (N, C) array; target as it is; ShapeError on a rank mismatch."""
        z = np.asarray(input)
        if not np.issubdtype(z.dtype, np.floating):
            z = z.astype(np.float64)
        t = np.asarray(target)
        if z.ndim != 2 or z.shape[0] == 0 or z.shape[1] == 0:
            raise ShapeError(f"{self!r}: expected input (N, C) of {self.takes} with N, C >= 1 "
                             f"and target {self.target_form}, got input {z.shape} and "
                             f"target {t.shape}")
        return z, t

    def _labels(self, z, t):
        """Check ``t`` as (N,) integer class indices for the (N, C) input ``z``."""
        n, c = z.shape
        if t.shape != (n,):
            hint = ""
            if t.shape == z.shape:
                hint = " (a one-hot target? pass target.argmax(axis=1))"
            raise ShapeError(f"{self!r}: expected target ({n},) of class indices for input "
                             f"{z.shape}, got target {t.shape}{hint}")
        if not np.issubdtype(t.dtype, np.integer):
            raise ValueError(f"{self!r}: target must hold integer class indices, got dtype "
                             f"{t.dtype}")
        bad = np.flatnonzero((t < 0) | (t >= c))
        if bad.size:
            i = int(bad[0])
            raise ValueError(f"{self!r}: target label {int(t[i])} at index {i} is out of range "
                             f"for {c} classes (input {z.shape}): expected 0 <= label < {c}")
        return t

    def __repr__(self):
        return f"{type(self).__name__}(reduction={self.reduction!r})"


class CrossEntropyLoss(_Loss):
    """Cross-entropy from LOGITS, as PyTorch's ``nn.CrossEntropyLoss``: LogSoftmax + NLLLoss.

    loss_i = −log softmax(z_i)[y_i] = log Σ_c exp(z_ic) − z_iy,  with the log-sum-exp taken
    after subtracting the row maximum, so logits of ±1000 give finite losses and gradients.
    (Keras: ``SparseCategoricalCrossentropy(from_logits=True)``.)

    forward:  input (N, C) logits, target (N,) integer class indices -> float
    backward: () -> d input (N, C) = (softmax(z) − onehot(y)) / N   (without /N for "sum")
    """

    takes = "logits"

    def forward(self, input, target):
        z, t = self._input(input, target)
        t = self._labels(z, t)
        rows = np.arange(z.shape[0])
        shifted = z - z.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        sum_e = e.sum(axis=1, keepdims=True)
        per_sample = np.log(sum_e[:, 0]) - shifted[rows, t]
        w = self._weight(z.shape[0], z.dtype)
        grad = e / sum_e
        grad[rows, t] -= 1
        self._grad = grad * w
        return float(per_sample.sum() * w)


class NLLLoss(_Loss):
    """Negative log-likelihood from LOG-PROBABILITIES, as PyTorch's ``nn.NLLLoss``.

    loss_i = −input[i, y_i]. The input is meant to be the output of ``LogSoftmax``; feeding
    logits here is a silent mistake (use CrossEntropyLoss for logits). Keras has no such loss.

    forward:  input (N, C) log-probabilities, target (N,) integer class indices -> float
    backward: () -> d input (N, C) = −onehot(y) / N   (without /N for "sum")
    """

    takes = "log-probabilities"

    def forward(self, input, target):
        z, t = self._input(input, target)
        t = self._labels(z, t)
        rows = np.arange(z.shape[0])
        w = self._weight(z.shape[0], z.dtype)
        grad = np.zeros_like(z)
        grad[rows, t] = -w
        self._grad = grad
        return float(-z[rows, t].sum() * w)


class CategoricalCrossentropy(_Loss):
    """Cross-entropy from PROBABILITIES, as Keras 3's CategoricalCrossentropy (from_logits=False).

    Target, either:
    - (N, C) one-hot (or soft) labels: Keras' ``CategoricalCrossentropy``. Keras first
      renormalises each row, then clips, then takes the log:
          q = p / Σ_c p_c,   q = clip(q, ε, 1 − ε),   loss_i = −Σ_c y_ic · log q_ic
    - (N,) integer labels: Keras' ``SparseCategoricalCrossentropy``. Keras clips first and
      feeds log(clip(p)) to a softmax cross-entropy, i.e. it renormalises AFTER clipping:
          c = clip(p, ε, 1 − ε),   loss_i = −log(c_iy / Σ_k c_ik)
    The two agree when the rows sum to 1 and nothing is clipped; they differ (in value and,
    much more, in gradient) when an entry is clipped, e.g. an exact 0 or 1.

    The gradient is the one TensorFlow's GradientTape gives: the renormalisation contributes
    (d q_k / d p_j = (δ_kj − q_k) / Σp), and clipping passes the gradient only where the value
    lies inside [ε, 1 − ε] (bounds included), zero outside.

    ε (``epsilon``, Keras' ``backend.epsilon()`` = 1e-7) keeps log away from 0: a confident
    wrong answer costs at most −log ε ≈ 16.1 per sample instead of infinity, and its gradient
    is then zero. PyTorch's CrossEntropyLoss takes logits instead.

    This loss sees only the probabilities. Keras on TensorFlow does not always: its softmax
    keeps the logits beside its output (``_keras_logits``) and its CategoricalCrossentropy then
    computes from those, so a Keras MODEL ending in a softmax trains on the loss from logits
    (``CrossEntropyLoss`` here), while this class matches Keras on a bare array of
    probabilities. The two differ when a probability is clipped (lessons/04, section 4.5).

    forward:  input (N, C) probabilities, target (N, C) one-hot or (N,) class indices -> float
    backward: () -> d input (N, C)
    """

    takes = "probabilities"

    def __init__(self, epsilon=1e-7, reduction="mean"):
        super().__init__(reduction)
        if not 0 <= epsilon < 0.5:
            raise ValueError(f"CategoricalCrossentropy: epsilon must satisfy 0 <= epsilon < 0.5, "
                             f"got {epsilon!r}")
        self.epsilon = float(epsilon)

    target_form = "(N, C) one-hot or (N,) of integer class indices"

    def forward(self, input, target):
        p, t = self._input(input, target)
        if t.ndim == 2:
            if t.shape != p.shape:
                raise ShapeError(f"{self!r}: expected a one-hot target of the input's shape "
                                 f"{p.shape} (or class indices ({p.shape[0]},)), got target "
                                 f"{t.shape}")
            return self._one_hot(p, t.astype(p.dtype))
        if t.ndim != 1:
            raise ShapeError(f"{self!r}: expected target {p.shape} one-hot or "
                             f"({p.shape[0]},) class indices for input {p.shape}, "
                             f"got target {t.shape}")
        return self._sparse(p, self._labels(p, t))

    def _clip_bounds(self, dtype):
        # Keras passes Python floats; in float32 1 − 1e-7 rounds to 0.99999988, as there.
        return dtype.type(self.epsilon), dtype.type(1 - self.epsilon)

    def _one_hot(self, p, y):
        lo, hi = self._clip_bounds(p.dtype)
        total = p.sum(axis=1, keepdims=True)
        q = p / total
        inside = (q >= lo) & (q <= hi)
        q = np.clip(q, lo, hi)
        w = self._weight(p.shape[0], p.dtype)
        loss = -(y * np.log(q)).sum() * w
        g = np.where(inside, -w * y / q, 0)  # d loss / d q (after the clip's mask)
        self._grad = (g - (g * (p / total)).sum(axis=1, keepdims=True)) / total
        return float(loss)

    def _sparse(self, p, t):
        lo, hi = self._clip_bounds(p.dtype)
        rows = np.arange(p.shape[0])
        inside = (p >= lo) & (p <= hi)
        c = np.clip(p, lo, hi)
        total = c.sum(axis=1, keepdims=True)
        w = self._weight(p.shape[0], p.dtype)
        loss = (np.log(total[:, 0]) - np.log(c[rows, t])).sum() * w
        g = np.broadcast_to(w / total, p.shape).copy()  # d/dc of log Σc
        g[rows, t] -= w / c[rows, t]
        self._grad = np.where(inside, g, 0)
        return float(loss)

    def __repr__(self):
        return f"CategoricalCrossentropy(epsilon={self.epsilon:g}, reduction={self.reduction!r})"


#: Keras' and PyTorch's names for the losses, as ``compile(loss=...)`` and the CLI take them
LOSSES = {
    "cross_entropy": CrossEntropyLoss,                   # from logits (PyTorch)
    "nll": NLLLoss,                                      # from log-probabilities
    "categorical": CategoricalCrossentropy,              # from probabilities (Keras)
    "categorical_crossentropy": CategoricalCrossentropy,
    "sparse_categorical_crossentropy": CategoricalCrossentropy,
}


def get(name):
    """A new loss object for ``name`` (a key of ``LOSSES``); a loss object is returned as it is."""
    if not isinstance(name, str):
        return name
    if name.lower() not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {sorted(LOSSES)}")
    return LOSSES[name.lower()]()
