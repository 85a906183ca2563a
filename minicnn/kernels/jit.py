"""What the Numba kernels share: how they are compiled, on how many threads, and the notice.

Numba compiles a kernel the first time it is called with a new combination of argument types
(float32 and float64 arrays are two), and ``cache=True`` writes the machine code to
``__pycache__`` next to the source, so later processes load it in milliseconds. Only the very
first run on a machine (or after the kernel's source changed) compiles, which takes seconds;
``notice_once`` says so on stderr instead of leaving a silent pause.

A parallel kernel (``kernel(parallel=True)``) exists twice: compiled with ``parallel=True``, its
``prange`` loops are split over Numba's threads; compiled without, ``prange`` is a plain
``range``. One thread (``NUMBA_NUM_THREADS=1``, or ``OMP_NUM_THREADS=1`` without it) runs the
second and never wakes a thread pool. Each version is compiled the first time it is needed.

The threads are Numba's default pool: OpenMP ("omp", GNU libgomp). Its idle threads spin for a
while before they sleep, which is fast on an idle machine and slow on a busy one (two processes
with two spinning threads each on two cores); ``NUMBA_THREADING_LAYER=workqueue`` trades a
little speed for threads that sleep at once. A process loads one libgomp, shared by Numba and
PyTorch (whoever loads it first chooses the copy): ``minicnn.bench`` runs each framework in a
process of its own.
"""
import os
import sys
import types
from contextlib import contextmanager

# Numba starts as many threads as there are cores unless NUMBA_NUM_THREADS says otherwise. When
# only OMP_NUM_THREADS is given (as for BLAS and PyTorch, e.g. one thread per test worker),
# follow it: two processes with two spinning threads each on two cores run ten times slower.
_OMP = os.environ.get("OMP_NUM_THREADS", "")
_FOLLOW_OMP = "NUMBA_NUM_THREADS" not in os.environ and _OMP.isdigit() and int(_OMP) >= 1
if _FOLLOW_OMP and "numba" not in sys.modules:
    os.environ["NUMBA_NUM_THREADS"] = _OMP          # numba reads it when imported, just below

import numba  # noqa: E402
import numpy as np  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402


if _FOLLOW_OMP and int(_OMP) < numba.get_num_threads():
    # numba was imported before us (its environment is read once): limit this thread's launches
    numba.set_num_threads(int(_OMP))

# 'contract' lets the compiler fuse a·b + c into one FMA instruction; 'reassoc' lets it split
# a sum into several partial sums (one per vector lane). Neither assumes away NaN or infinity.
FMA = {"contract"}
SUM = {"contract", "reassoc"}

COMPILED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


class Fallback(tuple):
    """The cache of a pass that the NumPy kernels did (an array of another dtype, e.g. float16,
    which the compiled kernels do not take): ``Fallback((cache,))``, so that backward knows."""


DISPATCHERS = []    # every compiled version of every kernel, for compile_counts()
_used = None        # the versions called while ``recording()``, else None


@contextmanager
def recording():
    """``with recording() as used:`` collects in the set ``used`` the compiled versions that
    kernels run inside the block (any thread)."""
    global _used
    previous, _used = _used, set()
    try:
        yield _used
    finally:
        _used = previous


def cache_file(version):
    """The path of the on-disk cache index of a compiled version (None if Numba moved it)."""
    try:
        return version._cache._cache_file._index_path
    except AttributeError:
        return None


class Kernel:
    """A compiled kernel, called from Python. With ``parallel=True`` it exists twice: calls run
    the parallel version when the calling thread has more than one Numba thread
    (``numba.get_num_threads()``), the serial one otherwise (or when asked: ``run_serial``).
    The first call of a version that is neither compiled nor cached prints the compile notice."""

    def __init__(self, fn, parallel, options):
        self.__name__, self.__doc__ = fn.__name__, fn.__doc__
        if parallel:
            self.parallel = numba.njit(cache=True, parallel=True, **options)(fn)
            # a copy under another name: Numba's cache files are named after the function
            copy = types.FunctionType(fn.__code__, fn.__globals__, fn.__name__ + "_serial",
                                      fn.__defaults__, fn.__closure__)
            copy.__qualname__ = fn.__qualname__ + "_serial"
            fn = copy
        self.serial = numba.njit(cache=True, **options)(fn)
        if not parallel:
            self.parallel = self.serial
        DISPATCHERS.extend({id(d): d for d in (self.parallel, self.serial)}.values())

    def version(self):
        """The compiled version this thread runs."""
        return self.parallel if numba.get_num_threads() > 1 else self.serial

    def __call__(self, *args):
        version = self.version()
        notice_once(version)
        if _used is not None:
            _used.add(version)
        return version(*args)

    def run_serial(self, *args):
        """Run the serial version, whatever the thread count (for work too small to share)."""
        notice_once(self.serial)
        if _used is not None:
            _used.add(self.serial)
        return self.serial(*args)


#: the kernels follow NumPy's rules for a division by zero (inf or NaN, no exception): with
#: Numba's default ("python") every division first tests its divisor and raises
#: ZeroDivisionError, and that branch keeps the loop from becoming vector instructions.
#: Measured, one thread, Adam's update of 10,080 floats: 38 µs with the test, 5.5 without
#: (the serial versions; the parallel ones measured vectorised either way).
ERRORS = "numpy"


def kernel(parallel=False, **options):
    """A ``Kernel``: ``numba.njit(cache=True, error_model=ERRORS, **options)``, twice with
    ``parallel=True``."""
    options.setdefault("error_model", ERRORS)
    return lambda fn: Kernel(fn, parallel, options)


def helper(**options):
    """``numba.njit(cache=True, error_model=ERRORS, **options)`` for functions that kernels
    call (not Python)."""
    options.setdefault("error_model", ERRORS)

    def wrap(fn):
        compiled = numba.njit(cache=True, **options)(fn)
        DISPATCHERS.append(compiled)
        return compiled
    return wrap


def compile_counts():
    """(compiled, loaded): how many kernel versions this process compiled, and how many it
    loaded from Numba's on-disk cache, so far. A benchmark reports them with the first call."""
    compiled = sum(sum(d.stats.cache_misses.values()) for d in DISPATCHERS)
    loaded = sum(sum(d.stats.cache_hits.values()) for d in DISPATCHERS)
    return compiled, loaded


_noticed = False
_checked = set()    # kernels already looked at: the look-up below costs ~30 µs, a call ~1 µs


def silence_notice():
    """No compile notice from now on (a background compile says so itself)."""
    global _noticed
    _noticed = True


def notice_once(kernel):
    """Say once per process, on stderr, that Numba is compiling (a first run takes seconds).

    Nothing is said when this kernel is already compiled in this process or its compiled code
    is in Numba's on-disk cache (then the first call only loads it).
    """
    global _noticed
    if _noticed or kernel in _checked:
        return
    _checked.add(kernel)
    if kernel.signatures:
        return
    index = cache_file(kernel)   # None: Numba's cache internals moved: better one line too many
    if index is None or not os.path.exists(index):
        # tqdm.write: above a progress bar that is running, not in the middle of it
        tqdm.write("compiling kernels (first run only)", file=sys.stderr)
        _noticed = True
