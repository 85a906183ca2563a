"""The arithmetic under the layers, written three times.

* ``*_loops``: plain loops that read like the formula, for learning (slow).
* ``*_fast``:  vectorised NumPy (im2col + one matrix product, strided views).
* ``*_numba``: compiled by Numba, in parallel over the batch (convolution: the formula's loops
  (``conv_direct``), Winograd's (``conv_winograd``) or im2col in Numba
  and BLAS called from inside the threads; ``elementwise_numba``: ReLU and Adam;
  ``norm_numba``: batch normalisation, two passes over the planes, sums in float64;
  ``matmul_numba``: the Dense layer's products, split over the threads). The
  default: training and prediction use these. Imported on first use (Numba loads slowly);
  each kernel compiles once per machine, on its first call (lesson 13).

The modules of a family have the same functions and signatures, e.g. for convolution
``forward(x, w, b, stride, pads, dilation) -> (out, cache)`` and
``backward(dout, cache, need_dx=True) -> (dx, dw, db)``, and one vocabulary for the names
inside: N, C, H, W, O, KH, KW, stride_h/stride_w, pad_top/pad_bottom/pad_left/pad_right,
dil_h/dil_w, x_pad (N, C, H_pad, W_pad), H_out, W_out, and the gradients dout, dx, dw, db.
The layers ask ``conv()``, ``pool()``, ``norm()`` or ``elementwise()`` for the module to use
(and ``matmul()`` for the function),
one rule for every family (``norm`` and ``elementwise`` have no ``_fast``: their ``_loops`` are
NumPy already); choose with ``MINICNN_KERNELS=loops`` (or ``fast``) in the environment,
``use("loops")``, or ``with using("loops"): ...``.
"""
import os
import threading
from contextlib import contextmanager

import numpy as np

from . import conv_fast, conv_loops, elementwise_loops, norm_loops, pool_fast, pool_loops

BACKENDS = ("fast", "loops", "numba")
DEFAULT = "numba"
_backend = os.environ.get("MINICNN_KERNELS", DEFAULT)
if _backend not in BACKENDS:
    raise ValueError(f"MINICNN_KERNELS must be one of {BACKENDS}, got {_backend!r}")


def backend():
    """The name of the kernels in use: "numba" (the default), "fast" or "loops"."""
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


# While a thread compiles the Numba kernels in the background (``minicnn.train.warmup``), every
# other thread gets the NumPy kernels: the first batches of a fresh machine do not wait.
_compiling = None


def compiling_in(thread):
    """Mark ``thread`` as the one compiling the Numba kernels (None: done). Until then, other
    threads asking for the "numba" kernels get the "fast" (NumPy) ones."""
    global _compiling
    _compiling = thread


def compiling():
    """Whether a background compile of the Numba kernels is running."""
    return _compiling is not None


def _numba_here():
    """Whether this thread runs the Numba kernels now."""
    thread = _compiling
    return _backend == "numba" and (thread is None or thread is threading.current_thread())


def conv():
    """The convolution kernel module in use."""
    if _numba_here():
        from . import conv_numba
        return conv_numba
    return conv_loops if _backend == "loops" else conv_fast


def pool():
    """The pooling kernel module in use."""
    if _numba_here():
        from . import pool_numba
        return pool_numba
    return pool_loops if _backend == "loops" else pool_fast


def norm():
    """The batch normalisation kernel module in use: compiled, or NumPy for loops/fast."""
    if _numba_here():
        from . import norm_numba
        return norm_numba
    return norm_loops


def elementwise():
    """The elementwise kernel module in use (ReLU, Adam): compiled, or NumPy for loops/fast."""
    if _numba_here():
        from . import elementwise_numba
        return elementwise_numba
    return elementwise_loops


def matmul():
    """The matrix product of the Dense layer: compiled (split by rows or columns over Numba's
    threads, each block on one BLAS thread), or ``np.matmul`` for loops/fast."""
    if _numba_here():
        from . import matmul_numba
        return matmul_numba.matmul
    return np.matmul


def two_products():
    """``f(a, b, c, d) -> (a @ b, c @ d)``: two independent products (a Dense layer's two
    gradients), side by side on two threads when they are small (compiled), or ``np.matmul``
    twice for loops/fast."""
    if _numba_here():
        from . import matmul_numba
        return matmul_numba.two_products
    return lambda a, b, c, d: (np.matmul(a, b), np.matmul(c, d))
