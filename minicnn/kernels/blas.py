"""BLAS for the compiled kernels: NumPy's own OpenBLAS, called from inside Numba's threads.

``np.matmul`` can only be called from Python, one product at a time, and OpenBLAS then splits
each product over ITS threads, which fight Numba's threads for the same cores. Calling the
matrix product from inside a Numba ``prange`` loop instead (one image per thread, each product
on one thread) keeps every core busy with whole images: no Python between the images, and one
set of threads.

The kernels receive the C functions' addresses as integers and call them through a pointer
(``blas_numba.gemm``), so that their machine code can still be cached on disk: an address
baked into the code would differ from one process to the next, and a ``ctypes`` function as
an argument costs Numba ~0.4 ms of type checks per call.

``GEMM`` ({dtype: address of cblas_sgemm / cblas_dgemm}) is None when NumPy's BLAS is not an
OpenBLAS with 64-bit integers that this module can find and that lets a thread choose its own
thread count (``openblas_set_num_threads_local``, OpenBLAS 0.3.27+); the kernels then use
``np.matmul`` from Python instead. ``MINICNN_BLAS=numpy`` forces that too.
"""
import contextlib
import ctypes
import glob
import os

import numpy as np

ROW_MAJOR, NO_TRANS, TRANS = 101, 111, 112


def _candidates():
    """Paths of shared libraries that may be NumPy's OpenBLAS: the wheel's bundled copy, then
    whatever this process has loaded (Linux)."""
    base = os.path.dirname(np.__file__)
    paths = []
    for pattern in (base + ".libs/*openblas*", os.path.join(base, ".dylibs", "*openblas*"),
                    os.path.join(base, "_core", "*openblas*")):
        paths += sorted(glob.glob(pattern))
    try:
        with open("/proc/self/maps") as maps:
            paths += sorted({line.split()[-1] for line in maps
                             if "openblas" in line and line.split()[-1].startswith("/")})
    except OSError:
        pass
    return paths


def _load():
    """(sgemm, dgemm, openblas_set_num_threads_local) as addresses (ints), and the library's
    (get, set) of its process-wide thread count as ctypes functions; or None."""
    if os.environ.get("MINICNN_BLAS", "") == "numpy":
        return None
    for path in _candidates():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        # NumPy's wheels (scipy-openblas) prefix and suffix the names; 64-bit integers only
        for prefix, suffix in (("scipy_", "64_"), ("", "64_")):
            names = (f"{prefix}cblas_sgemm{suffix}", f"{prefix}cblas_dgemm{suffix}",
                     "openblas_set_num_threads_local")
            count = (f"{prefix}openblas_get_num_threads{suffix}",
                     f"{prefix}openblas_set_num_threads{suffix}")
            if all(hasattr(lib, name) for name in names + count):
                get, put = (getattr(lib, name) for name in count)
                get.restype, get.argtypes = ctypes.c_int, []
                put.restype, put.argtypes = None, [ctypes.c_int]
                return tuple(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value
                             for name in names) + (get, put)
    return None


_FOUND = _load()
GEMM = None if _FOUND is None else {np.dtype(np.float32): _FOUND[0],
                                    np.dtype(np.float64): _FOUND[1]}
SET_THREADS_LOCAL = None if _FOUND is None else _FOUND[2]


class _OneThread:
    """The context manager ``one_thread_per_product()`` returns (a class: a training step of
    LeNet-5 enters it 20 times, and a generator's context manager cost 2 µs each)."""

    def __enter__(self):
        self.count = _FOUND[3]()
        if self.count != 1:
            _FOUND[4](1)

    def __exit__(self, *exc):
        if self.count != 1:
            _FOUND[4](self.count)


def one_thread_per_product():
    """Around a kernel that calls BLAS from Numba's threads: BLAS's thread count is 1 inside,
    and what it was before afterwards.

    Each product of such a kernel runs on the thread that calls it, the others being busy with
    their own images. The kernel sets the count to 1 around each product
    (``openblas_set_num_threads_local``), which in OpenBLAS's OpenMP build is the thread's own
    count. In its pthreads build (NumPy's wheels) that count is the process's: two threads
    setting it and putting it back at once could leave it at 1 for good (every later
    ``np.matmul``, a Dense layer, then ran on one thread: measured 2 times slower on 2 cores)
    or at 2 while the other thread multiplies (its product then waits for a core that is
    busy). So it is 1 from before the kernel starts, which the kernel's threads only ever set
    again, and put back from Python once no kernel thread runs."""
    return contextlib.nullcontext() if _FOUND is None else _OneThread()
