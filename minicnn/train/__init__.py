"""Training: the loop, Keras' fit, and checkpoints.

* ``loop``: ``train_step`` (zero_grad, forward, loss, backward, step), ``evaluate``, ``predict``;
* ``fit``: Keras' ``fit`` (``minicnn.train.fit.fit``) with epochs, validation, Ctrl-C and exact resume; it gives every
  Sequential its ``compile`` / ``fit`` / ``evaluate`` / ``predict`` methods;
* ``checkpoint``: weights, buffers, optimizer state and progress in one ``.npz``, no pickle.
"""
from ..core.errors import NonFiniteError
from .checkpoint import load, save
from .fit import History, StopOnInterrupt
from .loop import accuracy, evaluate, first_nonfinite, predict, train_step
