"""Optimizers: turn each parameter's gradient into a change of its values.

The training loop has the same shape as PyTorch's:

    opt = SGD(model.parameters(), lr=0.01, momentum=0.9)
    for x, y in batches:
        opt.zero_grad()                      # grads := 0
        dz = loss.backward(model(x), y)      # whatever the loss returns as d(loss)/d(output)
        model.backward(dz)                   # fills every param.grad
        opt.step()                           # param.data -= (something computed from grad)

Three optimizers, each a line-by-line translation of a reference implementation:

- ``SGD``      = torch.optim.SGD (plain, momentum, Nesterov, L2 weight decay)
- ``Adam``     = torch.optim.Adam (epsilon added to the bias-CORRECTED sqrt(v))
- ``KerasAdam`` = keras.optimizers.Adam (epsilon added to the UNcorrected sqrt(v))

State dict format (``Optimizer.state_dict``), flat so that it can be written with
``np.savez(..., allow_pickle=False)`` (arrays) plus a JSON file (the scalars):

    "optimizer"            str    class name, e.g. "Adam"
    "format"               int    version of this layout (1)
    "num_params"           int    how many parameters the optimizer was built with
    "hyper.<name>"         float / int / bool   every hyperparameter, e.g. "hyper.lr"
    "state.<i>.<name>"     np.ndarray (shape and dtype of parameter i), or int
                           e.g. "state.3.exp_avg", "state.3.step"

``<i>`` is the parameter's position in the list given to the constructor (frozen ones
included), so a model rebuilt the same way lines up with the saved state. A parameter that
has not been stepped yet has no "state.<i>.*" keys, as in PyTorch, whose state is lazy too.
Scalars are plain Python numbers, so ``json.dumps`` takes them; after an ``np.load`` they come
back as 0-d arrays, which ``load_state_dict`` accepts.
"""
import numpy as np

from . import kernels
from .errors import ShapeError

STATE_FORMAT = 1


class Optimizer:
    """Base class: holds the parameters, their per-parameter state and the hyperparameters.

    params:   iterable of minicnn ``Parameter`` (each with ``.data``, ``.grad``, ``.trainable``)
    defaults: {hyperparameter name: value}; each becomes an attribute (``opt.lr``), so a
              learning-rate schedule is just ``opt.lr = new_value``.

    Subclasses implement ``_update(p, state)`` for ONE parameter and ``_state_names()``.
    """

    def __init__(self, params, defaults):
        self.params = list(params)
        name = type(self).__name__
        if not self.params:
            raise ValueError(f"{name}: got an empty parameter list")
        for i, p in enumerate(self.params):
            if not (hasattr(p, "data") and hasattr(p, "grad") and hasattr(p, "trainable")):
                raise TypeError(f"{name}: parameter {i} is {type(p).__name__}, not a minicnn "
                                f"Parameter (it needs .data, .grad and .trainable)")
        if len({id(p) for p in self.params}) != len(self.params):
            raise ValueError(f"{name}: a parameter appears more than once in the list; "
                             f"it would be stepped twice per step()")
        self.defaults = dict(defaults)
        for key, value in self.defaults.items():
            setattr(self, key, value)
        self._validate()
        self.state = [{} for _ in self.params]

    # -- the training loop -----------------------------------------------------------------
    def step(self):
        """Update every trainable parameter in place from its current ``grad``.

        Parameters with ``trainable = False`` are skipped: neither their values nor their
        state change (PyTorch skips parameters whose ``grad`` is None in the same way).
        """
        for i, p in enumerate(self.params):
            if not p.trainable:
                continue
            if p.grad.shape != p.data.shape:
                raise ShapeError(f"{type(self).__name__}: parameter {i} ({p.name or 'unnamed'}) "
                                 f"has data of shape {p.data.shape} but grad of shape "
                                 f"{p.grad.shape}")
            self._update(p, self.state[i])

    def zero_grad(self):
        """Set every parameter's ``grad`` to 0 (frozen ones too).

        PyTorch ACCUMULATES gradients (``backward`` adds to ``.grad``), so a PyTorch loop must
        zero them before each backward or it would mix in the previous batch. minicnn's
        ``backward`` OVERWRITES ``grad``, so this call is not needed for correctness here; it
        exists so that the loop has the same shape as in PyTorch and code moves across as is.
        """
        for p in self.params:
            p.grad[...] = 0

    # -- what subclasses provide ------------------------------------------------------------
    def _update(self, p, state):
        raise NotImplementedError

    def _state_names(self):
        """The keys a stepped parameter's state holds, given the current hyperparameters."""
        raise NotImplementedError

    def _validate(self):
        """Raise ValueError for hyperparameters that make no sense."""

    def _check(self, ok, message):
        if not ok:
            raise ValueError(f"{type(self).__name__}: {message}")

    # -- saving and resuming ----------------------------------------------------------------
    def state_dict(self):
        """Everything needed to resume bit-identically, as a flat dict (format: module doc).

        Arrays are copies: stepping on does not change a state dict already taken.
        """
        d = {"optimizer": type(self).__name__, "format": STATE_FORMAT,
             "num_params": len(self.params)}
        for key in self.defaults:
            d[f"hyper.{key}"] = _plain(getattr(self, key))
        for i, state in enumerate(self.state):
            for key, value in state.items():
                d[f"state.{i}.{key}"] = value.copy() if isinstance(value, np.ndarray) else value
        return d

    def load_state_dict(self, d):
        """Restore hyperparameters and per-parameter state from ``state_dict()``'s output.

        Accepts the dict itself or what ``np.load`` gives back (scalars as 0-d arrays).
        Raises ValueError naming the parameter index and both shapes when the state does
        not fit the parameters this optimizer holds. Nothing changes unless all of it fits.
        """
        name = type(self).__name__
        d = dict(d)
        saved = _scalar(d.pop("optimizer", None))
        if saved != name:
            raise ValueError(f"{name}.load_state_dict: the state was saved by {saved!r}")
        version = _scalar(d.pop("format", None))
        if version != STATE_FORMAT:
            raise ValueError(f"{name}.load_state_dict: state format {version!r}, "
                             f"this version reads {STATE_FORMAT}")
        n = _scalar(d.pop("num_params", None))
        if n != len(self.params):
            raise ValueError(f"{name}.load_state_dict: the state is for {n} parameters, "
                             f"this optimizer holds {len(self.params)}")
        hyper, state = {}, [{} for _ in self.params]
        for key, value in d.items():
            parts = key.split(".")
            if parts[0] == "hyper" and len(parts) == 2 and parts[1] in self.defaults:
                hyper[parts[1]] = _scalar(value)
            elif parts[0] == "state" and len(parts) == 3 and parts[1].isdigit():
                i = int(parts[1])
                if i >= len(self.params):
                    raise ValueError(f"{name}.load_state_dict: {key!r} is for parameter {i}, "
                                     f"but there are only {len(self.params)}")
                state[i][parts[2]] = value
            else:
                raise ValueError(f"{name}.load_state_dict: unexpected key {key!r}")
        missing = set(self.defaults) - set(hyper)
        if missing:
            raise ValueError(f"{name}.load_state_dict: missing hyperparameters {sorted(missing)}")

        old = {key: getattr(self, key) for key in self.defaults}
        for key, value in hyper.items():
            setattr(self, key, value)
        try:
            self._validate()
            expected = set(self._state_names())
            for i, (p, s) in enumerate(zip(self.params, state)):
                if s and set(s) != expected:
                    raise ValueError(f"{name}.load_state_dict: parameter {i} has state "
                                     f"{sorted(s)}, expected {sorted(expected)}")
                for key, value in s.items():
                    value = np.asarray(value)
                    if key == "step":
                        s[key] = int(value)
                        continue
                    if value.shape != p.data.shape:
                        raise ValueError(
                            f"{name}.load_state_dict: state.{i}.{key} has shape {value.shape} "
                            f"but parameter {i} ({p.name or 'unnamed'}) has shape "
                            f"{p.data.shape}")
                    s[key] = value.astype(p.data.dtype, copy=True)
        except ValueError:
            for key, value in old.items():
                setattr(self, key, value)
            raise
        self.state = state

    def __repr__(self):
        hyper = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.defaults)
        n = len(self.params)
        return f"{type(self).__name__}({n} parameter{'s' * (n != 1)}, {hyper})"


def _plain(value):
    """A hyperparameter as a plain Python number/bool/str (JSON- and npz-friendly)."""
    return value.item() if isinstance(value, np.generic) else value


def _scalar(value):
    """Undo np.load's wrapping of a scalar into a 0-d array."""
    if isinstance(value, np.ndarray) and value.ndim == 0:
        return value.item()
    return _plain(value)


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


class Adam(Optimizer):
    """Adam, exactly as torch.optim.Adam (L2 weight decay, no amsgrad).

    Per parameter p with gradient grad, at step t = 1, 2, ...:

        g = grad + weight_decay · p
        m = β1 · m + (1 − β1) · g                  (first moment; zeros before step 1)
        v = β2 · v + (1 − β2) · g²                 (second moment)
        p = p − lr / (1 − β1^t) · m / (sqrt(v) / sqrt(1 − β2^t) + eps)

    i.e. p −= lr · m̂ / (sqrt(v̂) + eps) with the bias-corrected m̂ = m / (1 − β1^t) and
    v̂ = v / (1 − β2^t): eps is added AFTER the bias correction. See ``KerasAdam`` for why
    Keras' numbers differ.

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
        compiled = kernels.compiled()
        if compiled is not None and _same_layout(p.data, p.grad, m, v):
            # the lines below as one compiled loop: one pass over memory instead of ten
            compiled.adam_step(p.data, p.grad, m, v, 1 - self.beta1, self.beta2, 1 - self.beta2,
                               self.lr / (1 - self.beta1 ** t), (1 - self.beta2 ** t) ** 0.5,
                               self.eps, self.weight_decay)
            return
        g = p.grad
        if self.weight_decay != 0:
            g = g + self.weight_decay * p.data
        m += (1 - self.beta1) * (g - m)          # torch: lerp, the same as β1·m + (1−β1)·g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        bias_correction1 = 1 - self.beta1 ** t
        bias_correction2 = 1 - self.beta2 ** t
        step_size = self.lr / bias_correction1
        denom = np.sqrt(v) / bias_correction2 ** 0.5 + self.eps
        p.data -= step_size * (m / denom)


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


def _same_layout(*arrays):
    """Whether the arrays are all C-contiguous, of one float dtype and one shape (what the
    compiled update takes)."""
    first = arrays[0]
    return (first.dtype in (np.float32, np.float64)
            and all(a.dtype == first.dtype and a.shape == first.shape and a.flags.c_contiguous
                    for a in arrays))


def _number(x):
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)


def _check_adam(opt, lr, beta1, beta2, eps):
    opt._check(_number(lr) and lr >= 0, f"lr must be a number >= 0, got {lr!r}")
    for which, beta in (("first", beta1), ("second", beta2)):
        opt._check(_number(beta) and 0 <= beta < 1,
                   f"the {which} beta must be in [0, 1), got {beta!r}")
    opt._check(_number(eps) and eps >= 0, f"epsilon must be a number >= 0, got {eps!r}")
