"""Sliding-window kernels, each written twice.

* ``*_loops``: plain loops that read like the formula, for learning (slow).
* ``*_fast``:  vectorised (im2col + one matrix product), for training.

Both modules of a family have the same functions and signatures, e.g. for convolution
``forward(x, w, b, stride, pads, dilation) -> (out, cache)`` and
``backward(dout, cache) -> (dx, dw, db)``. The layers ask ``conv()`` / ``pool()`` for the
module to use; choose with ``MINICNN_KERNELS=loops`` in the environment, ``use("loops")``,
or ``with using("loops"): ...``.
"""
import os
from contextlib import contextmanager

from . import conv_fast, conv_loops, pool_fast, pool_loops

BACKENDS = ("fast", "loops")
_backend = os.environ.get("MINICNN_KERNELS", "fast")
if _backend not in BACKENDS:
    raise ValueError(f"MINICNN_KERNELS must be one of {BACKENDS}, got {_backend!r}")


def backend():
    """The name of the kernels in use: "fast" or "loops"."""
    return _backend


def use(name):
    """Select the kernels for every later forward pass."""
    global _backend
    if name not in BACKENDS:
        raise ValueError(f"kernels must be one of {BACKENDS}, got {name!r}")
    _backend = name


@contextmanager
def using(name):
    """``with using("loops"): model(x)`` runs the teaching loops inside the block only."""
    previous = _backend
    use(name)
    try:
        yield
    finally:
        use(previous)


def conv():
    """The convolution kernel module in use."""
    return conv_loops if _backend == "loops" else conv_fast


def pool():
    """The pooling kernel module in use."""
    return pool_loops if _backend == "loops" else pool_fast
