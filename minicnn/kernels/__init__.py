"""Sliding-window kernels, each written twice.

* ``*_loops``: plain loops that read like the formula, for learning (slow).
* ``*_fast``:  vectorised (im2col + one matrix product), for training.
* ``*_numba``: the loops compiled by Numba (pooling; convolution uses ``conv_numba`` when
  it exists, ``conv_fast`` otherwise). Imported on first use: Numba loads slowly.

Both modules of a family have the same functions and signatures, e.g. for convolution
``forward(x, w, b, stride, pads, dilation) -> (out, cache)`` and
``backward(dout, cache) -> (dx, dw, db)``. The layers ask ``conv()`` / ``pool()`` for the
module to use; choose with ``MINICNN_KERNELS=loops`` in the environment, ``use("loops")``,
or ``with using("loops"): ...``.
"""
import importlib.util
import os
from contextlib import contextmanager

from . import conv_fast, conv_loops, pool_fast, pool_loops

BACKENDS = ("fast", "loops", "numba")
_HAVE_CONV_NUMBA = importlib.util.find_spec(f"{__name__}.conv_numba") is not None
_backend = os.environ.get("MINICNN_KERNELS", "fast")
if _backend not in BACKENDS:
    raise ValueError(f"MINICNN_KERNELS must be one of {BACKENDS}, got {_backend!r}")


def backend():
    """The name of the kernels in use: "fast", "loops" or "numba"."""
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
    if _backend == "numba":
        if not _HAVE_CONV_NUMBA:
            return conv_fast   # no compiled convolution yet: im2col + BLAS
        from . import conv_numba
        return conv_numba
    return conv_loops if _backend == "loops" else conv_fast


def pool():
    """The pooling kernel module in use."""
    if _backend == "numba":
        from . import pool_numba
        return pool_numba
    return pool_loops if _backend == "loops" else pool_fast
