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

from ..core.errors import ShapeError

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


def number(x):
    """Whether x is a real number (an int or a float, not a bool)."""
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, bool)
