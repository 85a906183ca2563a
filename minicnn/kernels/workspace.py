"""The kernels' large arrays, their memory reused from one batch to the next.

A training step makes the same arrays batch after batch: every layer's output and every
gradient, megabytes each. glibc's ``malloc`` hands large blocks straight back to the system when
they are freed (and trims the top of its heap), so the next batch's arrays are fresh memory
that the system faults in page by page, 4 KB at a time, and with two threads faulting at once
they queue for the same lock. Measured on LeNet-5, batch 64, 2 threads: 600 page faults and
1.8 ms of system time per training step of about 5 ms.

``empty(shape, dtype)`` hands out an array on a buffer the pool keeps. A buffer is handed out
again only when no array uses it any more: every array made from it (views, reshapes, slices,
what a compiled kernel returns of it) keeps a reference to it, NumPy's ``base``, so the
buffer's reference count says whether any of them is alive. A user who keeps a layer's output
keeps its buffer; the next batch gets another.

The pool holds at most ``LIMIT`` bytes; a buffer not handed out for ``STALE`` requests is
dropped when a new one is made (a last batch of another size does not stay resident), and
``release()`` drops every idle buffer. ``disabled()`` allocates with NumPy only (to compare).
Arrays under ``SMALLEST`` bytes come from NumPy directly: glibc keeps small blocks itself.
"""
import math
import sys
import threading

import numpy as np

from ..core.switch import Switch

SMALLEST = 1 << 16
LIMIT = 1 << 30
STALE = 1000

_lock = threading.Lock()
_buffers = {}           # bytes -> [[buffer (uint8), last request that took it], ...]
_requests = 0
_SWITCH = Switch()


def disabled():
    """``with workspace.disabled(): ...``: every array from NumPy, none kept."""
    return _SWITCH.off()


def _references(entries, i):
    return sys.getrefcount(entries[i][0])


# the count of an idle buffer, measured (it depends on the interpreter): its entry in the pool
# and getrefcount's argument
_IDLE_REFERENCES = _references([[np.empty(1, np.uint8), 0]], 0)


def _idle(entries, i):
    """Whether no array made from the buffer of ``entries[i]`` is alive."""
    return _references(entries, i) == _IDLE_REFERENCES


def _pooled_bytes():
    return sum(size * len(entries) for size, entries in _buffers.items())


def _drop(keep):
    """Drop the idle buffers for which ``keep(entry)`` is false."""
    for size in list(_buffers):
        entries = _buffers[size]
        _buffers[size] = [e for i, e in enumerate(entries) if keep(e) or not _idle(entries, i)]
        if not _buffers[size]:
            del _buffers[size]


def empty(shape, dtype=np.float64):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, on a reused buffer when
    one of its size is idle."""
    dtype = np.dtype(dtype)
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    size = math.prod(shape) * dtype.itemsize
    if not _SWITCH.on or size < SMALLEST:
        return np.empty(shape, dtype)
    global _requests
    with _lock:
        _requests += 1
        # the entries are in the order they were last handed out: from the end, the first idle
        # one is the likeliest to be still in the CPU's cache
        entries = _buffers.get(size, [])
        for i in range(len(entries) - 1, -1, -1):
            if _idle(entries, i):
                entry = entries.pop(i)
                entries.append(entry)
                entry[1] = _requests
                return entry[0].view(dtype).reshape(shape)
        _drop(lambda e: _requests - e[1] < STALE)
        if _pooled_bytes() + size > LIMIT:
            return np.empty(shape, dtype)
        buffer = np.empty(size, np.uint8)
        _buffers.setdefault(size, []).append([buffer, _requests])
        return buffer.view(dtype).reshape(shape)


def empty_like(a):
    """``empty(a.shape, a.dtype)``."""
    return empty(a.shape, a.dtype)


def zeros(shape, dtype=np.float64):
    """``empty(shape, dtype)`` filled with zeros."""
    out = empty(shape, dtype)
    out.fill(0)
    return out


def release():
    """Give back every idle buffer (the arrays still in use keep theirs)."""
    with _lock:
        _drop(lambda e: False)


def pooled_bytes():
    """Bytes the pool holds now, in use or idle."""
    with _lock:
        return _pooled_bytes()
