"""Wrong solutions of exercises 5 (Dense), 6 (cross-entropy), 8 (Adam) and 9 (BatchNorm2D)."""
import numpy as np

from exercise_stubs import stub

_DenseExercise = stub("05_dense_backward", "Dense")


class DenseWeightGradTransposed(_DenseExercise):
    """weight.grad = xᵀ @ dy: (in, out), the transpose of the weight's (out, in)."""

    def backward(self, dy):
        dy = np.asarray(dy, dtype=self.dtype)
        self.weight.grad = self._x.T @ dy
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=0)
        return dy @ self.weight.data


class DenseBiasGradAveraged(_DenseExercise):
    """bias.grad = dy.mean(axis=0) instead of the sum."""

    def backward(self, dy):
        dy = np.asarray(dy, dtype=self.dtype)
        self.weight.grad = dy.T @ self._x
        if self.bias is not None:
            self.bias.grad = dy.mean(axis=0)
        return dy @ self.weight.data


class DenseWeightGradMeanOverBatch(_DenseExercise):
    """weight.grad divided by N."""

    def backward(self, dy):
        dy = np.asarray(dy, dtype=self.dtype)
        self.weight.grad = (dy.T @ self._x) / len(dy)
        if self.bias is not None:
            self.bias.grad = dy.sum(axis=0)
        return dy @ self.weight.data


class _GivenForward(stub("06_softmax_cross_entropy", "CrossEntropyLoss")):
    """Exercise 6 (its forward keeps z and the target), with the softmax and the one-hot."""

    def softmax(self, stable=True):
        z = self._z - self._z.max(axis=1, keepdims=True) if stable else self._z
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def onehot(self):
        return np.eye(self._z.shape[1], dtype=self._z.dtype)[self._target]


class CrossEntropyLossNotAveraged(_GivenForward):
    """dz = softmax − onehot, the 1/N of reduction="mean" forgotten."""

    def backward(self):
        return self.softmax() - self.onehot()


class CrossEntropyLossNoOnehot(_GivenForward):
    """dz = softmax / N: the target's − 1 forgotten."""

    def backward(self):
        w = 1 / len(self._z) if self.reduction == "mean" else 1
        return (self.softmax() * w).astype(self._z.dtype)


class CrossEntropyLossUnstable(_GivenForward):
    """The softmax without subtracting the row maximum: exp(1000) overflows."""

    def backward(self):
        w = 1 / len(self._z) if self.reduction == "mean" else 1
        return ((self.softmax(stable=False) - self.onehot()) * w).astype(self._z.dtype)


class _AdamLoops(stub("08_adam", "Adam")):
    def step_with(self, p, state, correct=True, keras_eps=False, square=True):
        if not state:
            state.update(t=0, m=np.zeros_like(p.data), v=np.zeros_like(p.data))
        state["t"] += 1
        t, m, v = state["t"], state["m"], state["v"]
        g = p.grad + self.weight_decay * p.data
        m[...] = self.beta1 * m + (1 - self.beta1) * g
        v[...] = self.beta2 * v + (1 - self.beta2) * (g * g if square else g)
        if not correct:
            p.data -= self.lr * m / (np.sqrt(v) + self.eps)
        elif keras_eps:
            alpha = self.lr * np.sqrt(1 - self.beta2 ** t) / (1 - self.beta1 ** t)
            p.data -= alpha * m / (np.sqrt(v) + self.eps)
        else:
            m_hat, v_hat = m / (1 - self.beta1 ** t), v / (1 - self.beta2 ** t)
            p.data -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)


class AdamNoBiasCorrection(_AdamLoops):
    """p −= lr · m / (sqrt(v) + eps): m and v not divided by (1 − β^t)."""

    def _update(self, p, state):
        self.step_with(p, state, correct=False)


class AdamKerasEpsilon(_AdamLoops):
    """ε added to the uncorrected sqrt(v), as Keras does."""

    def _update(self, p, state):
        self.step_with(p, state, keras_eps=True)


class AdamGradNotSquared(_AdamLoops):
    """v = β2·v + (1 − β2)·g: the square forgotten."""

    def _update(self, p, state):
        with np.errstate(invalid="ignore"):
            self.step_with(p, state, square=False)


class _BatchNormBackward(stub("09_batchnorm_backward", "BatchNorm2D")):
    def grads(self, dy, constant_stats=False, db_mean=False, dgamma_plain=False):
        dy = np.asarray(dy, dtype=self.dtype)
        x_hat, inv_std, batch = self.saved_for_backward()
        axes = (0, 2, 3)
        self.weight.grad = dy.sum(axis=axes) if dgamma_plain else (dy * x_hat).sum(axis=axes)
        self.bias.grad = dy.mean(axis=axes) if db_mean else dy.sum(axis=axes)
        g = dy * self.weight.data[:, None, None]
        if not constant_stats:
            g = g - g.mean(axis=axes, keepdims=True) - x_hat * (g * x_hat).mean(axis=axes, keepdims=True)
        return g * inv_std[:, None, None]


class BatchNorm2DConstantStatistics(_BatchNormBackward):
    """dx = dy·γ/sqrt(var + eps): the batch's mean and variance treated as constants."""

    def backward(self, dy):
        return self.grads(dy, constant_stats=True)


class BatchNorm2DBiasGradAveraged(_BatchNormBackward):
    """dβ = mean of dy instead of the sum."""

    def backward(self, dy):
        return self.grads(dy, db_mean=True)


class BatchNorm2DWeightGradWithoutXhat(_BatchNormBackward):
    """dγ = Σ dy: the x̂ factor forgotten."""

    def backward(self, dy):
        return self.grads(dy, dgamma_plain=True)
