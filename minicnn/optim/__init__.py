"""Optimizers: SGD, Adam (PyTorch's) and KerasAdam (Keras'), and ``get(name)`` for Keras' strings.

    opt = minicnn.optim.Adam(model.parameters(), lr=1e-3)
    opt = minicnn.optim.get("adam", model.parameters(), lr=1e-3)     # what compile("adam") does
"""
from .adam import Adam, KerasAdam
from .base import Optimizer
from .sgd import SGD

#: name -> (class, default keyword arguments); SGD has no default learning rate in PyTorch,
#: Keras' default is 0.01
OPTIMIZERS = {"adam": (Adam, {}), "keras_adam": (KerasAdam, {}), "sgd": (SGD, {"lr": 0.01})}


def get(name, params, lr=None):
    """The optimizer named ``name`` over ``params``; an Optimizer object is returned as it is."""
    if isinstance(name, Optimizer):
        return name
    key = name.lower() if isinstance(name, str) else name
    if key not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; choose one of {sorted(OPTIMIZERS)}")
    cls, defaults = OPTIMIZERS[key]
    return cls(params, **(defaults | ({} if lr is None else {"lr": lr})))
