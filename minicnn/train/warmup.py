"""Compile the Numba kernels in the background, so that the first batches of a fresh machine
do not wait for them.

On a machine where Numba's on-disk cache does not hold minicnn's kernels yet, compiling the
ones a training step needs takes seconds (lesson 13). ``compile_in_background(model, xb, yb)``
starts a thread that runs one training step and one prediction of a copy of the model on that
batch, which compiles (and caches) every kernel they need; meanwhile the other threads get the
NumPy kernels from ``minicnn.kernels`` (the same arithmetic, to rounding), and once the thread
is done they get the compiled ones. A layer keeps the kernels of its forward pass for its
backward pass, so a step that straddles the switch stays consistent.

Compiling is Python and holds the GIL, which the training thread needs too. Given the model's
zoo name (``build=(name, kwargs)``), the compiling happens in a child process instead
(``python -m minicnn.train.warmup``: the same model, a batch of zeros of the same shape), on
another core; the thread only waits for it, then loads the kernels from the cache it wrote.

Nothing happens when the kernels are not Numba's, or when everything is in Numba's cache
already (then loading takes a fraction of a second, and the run stays bit for bit the same as
every other run with the same seed). ``MINICNN_COMPILE=wait`` compiles in the foreground, as
before. The first run on a machine therefore differs from later runs in the last bits of its
first batches.
"""
import copy
import hashlib
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np

from .. import kernels
from .loop import train_step

_SWITCH_INTERVAL = 1e-4     # seconds


def _work_key(model, xb, yb):
    """What decides which kernel versions a step and a prediction run: the layers (their repr
    says their shapes), the parameters' dtype, the batch, the optimizer, the loss, the threads."""
    import numba
    parameters = list(model.parameters())
    key = {"model": repr(model), "dtype": str(parameters[0].data.dtype) if parameters else "",
           "x": [list(xb.shape), xb.dtype.str], "y": [list(yb.shape), yb.dtype.str],
           "optimizer": type(model.optimizer).__name__, "loss": type(model.loss).__name__,
           "threads": numba.get_num_threads(), "numba": numba.__version__}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


def _stamp(key):
    """The file that lists the cache files a warm-up of ``key`` needed (beside Numba's cache of
    minicnn's kernels), or None when that cache's place is unknown."""
    from ..kernels import conv_numba, jit
    index = jit.cache_file(conv_numba._gemm_forward.serial)
    return None if index is None else os.path.join(os.path.dirname(index), f"minicnn-warm-{key}.json")


def cached(key):
    """Whether a warm-up of the work ``key`` (``_work_key``) finished on this machine and Numba's
    on-disk cache still holds every kernel version it ran (one index file each). Not all the
    kernels: a model runs some of them (pooling 2×2 or 3×3, Winograd or not), and one that
    never runs is never cached."""
    path = _stamp(key)
    try:
        with open(path, encoding="utf-8") as f:
            files = json.load(f)
    except (OSError, TypeError, ValueError):
        return False
    return isinstance(files, list) and all(isinstance(p, str) and os.path.exists(p) for p in files)


def _remember(key, versions):
    """Write the stamp of ``key``: the cache files of the versions a warm-up ran."""
    from ..core.files import atomic_write
    from ..kernels import jit
    path, files = _stamp(key), [jit.cache_file(v) for v in versions]
    if path is None or None in files:
        return
    try:
        atomic_write(path, lambda f: f.write(json.dumps(sorted(files)).encode()))
    except OSError:
        pass            # a read-only cache: warm up again next time, nothing worse


def _compile_in_child(build, twin, xb, yb):
    """Run ``python -m minicnn.train.warmup`` on the model ``build`` = (zoo name, kwargs); True
    if it compiled (then this process only loads). Waiting releases the GIL."""
    spec = {"model": build[0], "kwargs": build[1], "optimizer": type(twin.optimizer).__name__,
            "loss": type(twin.loss).__name__, "x": [list(xb.shape), xb.dtype.str],
            "y": [list(yb.shape), yb.dtype.str]}
    try:
        done = subprocess.run([sys.executable, "-m", "minicnn.train.warmup", json.dumps(spec)],
                              capture_output=True, text=True)
    except OSError:
        return False
    return done.returncode == 0


def compile_in_background(model, xb, yb, build=None, log=None):
    """Start compiling, in the background, the kernels that a training step and a prediction
    of ``model`` (compiled: ``model.optimizer`` and ``model.loss`` set) need on the batch
    xb (N, C, H, W), yb (N,) or (N, classes); with ``build=(zoo name, kwargs)`` that built the
    model, in a child process. Returns the thread that waits for it, or None when there is
    nothing to compile (kernels not Numba's, everything cached, or ``MINICNN_COMPILE=wait``).

    ``log(line)`` (default: a line on stderr above any progress bar) says that it started and
    when it is done.
    """
    if (kernels.backend() != "numba" or kernels.compiling()
            or os.environ.get("MINICNN_COMPILE", "") == "wait"):
        return None
    key = _work_key(model, xb, yb)
    if cached(key):
        return None
    from tqdm.auto import tqdm

    from ..kernels import jit
    log = log or (lambda line: tqdm.write(line, file=sys.stderr))
    twin = copy.deepcopy(model)             # its own parameters and optimizer state
    xb, yb = xb.copy(), yb.copy()
    done = {}

    def work():
        start = time.perf_counter()
        # Compiling is Python, and holds the GIL; NumPy lets it go at every large operation and
        # the training thread then waits a whole switch interval (5 ms) to get it back, a
        # hundred times a batch. A short interval while compiling keeps the batches moving.
        interval = sys.getswitchinterval()
        try:
            if build is not None:
                done["child"] = _compile_in_child(build, twin, xb, yb)
            sys.setswitchinterval(_SWITCH_INTERVAL)
            with jit.recording() as used:     # only this thread runs compiled kernels now
                train_step(twin, twin.loss, twin.optimizer, xb, yb)
                twin.eval()
                twin(xb)
            _remember(key, used)
        finally:
            sys.setswitchinterval(interval)
            kernels.compiling_in(None)
            done["seconds"] = time.perf_counter() - start
            log(f"kernels compiled in {done['seconds']:.1f} s: the rest runs on them")

    thread = threading.Thread(target=work, name="minicnn-compile", daemon=True)
    thread.done = done
    jit.silence_notice()                    # the line below says it instead
    kernels.compiling_in(thread)
    log("compiling kernels in the background (first run only); the first batches run on "
        "NumPy's kernels meanwhile")
    thread.start()
    return thread


def _child(spec):
    """The child process: build the model, run one step and one prediction on zeros."""
    from .. import losses, optim, zoo
    model = zoo.get(spec["model"], **spec["kwargs"])
    optimizer = getattr(optim, spec["optimizer"])(model.parameters(), lr=1e-3)
    loss = getattr(losses, spec["loss"])()
    xb = np.zeros(spec["x"][0], dtype=np.dtype(spec["x"][1]))
    yb = np.zeros(spec["y"][0], dtype=np.dtype(spec["y"][1]))
    train_step(model, loss, optimizer, xb, yb)
    model.eval()
    model(xb)


if __name__ == "__main__":
    _child(json.loads(sys.argv[1]))
