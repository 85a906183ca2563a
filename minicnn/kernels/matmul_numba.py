"""The matrix product of the Dense layer, split over Numba's threads by rows or by columns.

``np.matmul`` would split a large product over OpenBLAS's own threads. After the product those
threads keep spinning for a while, waiting for more work, on the cores that Numba's threads
need for the next convolution; and Numba's threads, spinning after a convolution, do the same
to OpenBLAS. Measured on 2 cores: mnist_cnn's training step 2 times slower with both pools
than with Numba's alone. So minicnn has one pool of threads: here each of Numba's threads
multiplies a block of the rows, or of the columns, on one BLAS thread, as the convolutions do
(``blas.py``). The blocks depend on the shapes only, not on the number of threads, so that
the result is the same, bit for bit, on one thread or on several.

``matmul(a, b)`` takes 2-D float32 or float64 arrays of one dtype, either of them possibly a
transposed view (``w.T``): BLAS reads it with its "transposed" flag, without a copy.
"""
import numba
import numpy as np
from numba import prange

from . import blas, workspace
from .blas import NO_TRANS, TRANS
from .blas_numba import gemm as _gemm
from .blas_numba import set_threads as _set_threads
from .jit import COMPILED_DTYPES, kernel

#: multiply-adds from which the rows are split over the threads: below (LeNet-5's Dense layers,
#: 3 million) waking a second thread costs more than it saves; mnist_cnn's first Dense (75
#: million) is 1.1 times faster split, measured on 2 threads
_PARALLEL_MACS = 1 << 23
#: a product that splits is cut into at most ``_BLOCKS`` blocks of at least ``_NARROWEST`` rows
#: or columns, however many threads there are: BLAS may round a product of another shape
#: differently (measured on an AMD EPYC: Dense(2000, 100) on 64 rows, cut in 2 blocks of 50
#: columns, differs in the last bit from the one product), so the blocks, and hence the bits,
#: must not depend on the number of threads. Two: the MNIST CNN's training step measured 1.04
#: times faster than with 8 blocks (its Dense(9216, 128)'s gradients), on 2 threads
_BLOCKS = 2
_NARROWEST = 64
#: ``two_products`` runs the two side by side from this many multiply-adds each: measured on 2
#: threads, a Dense layer's backward pass on 64 rows: (400 -> 120, 3 million each) 140 µs side
#: by side against 183 one after the other; (120 -> 84, 0.6 million) 67 against 64, (84 -> 10)
#: 47 against 34 (starting the second thread costs more than it saves)
_SIDE_BY_SIDE_MACS = 1 << 21


@kernel(parallel=True)
def _blocks(a, b, out, K, transa, transb, lda, ldb, blocks, by_columns, gemm, set_threads):
    """out (M, N) = op(a) (M, K) @ op(b) (K, N) in ``blocks`` blocks, one per iteration: blocks
    of rows of op(a) and out, or with ``by_columns`` blocks of columns of op(b) and out. a and
    b are addresses (one compiled version for every layout); op(x) is x, or its transpose when
    its flag is TRANS (x stored (K, M), read down its columns)."""
    M, N = out.shape
    one, zero = out.dtype.type(1), out.dtype.type(0)
    size = out.itemsize
    for r in prange(blocks):
        if by_columns:
            n0, n1 = r * N // blocks, (r + 1) * N // blocks
            m0, m1 = 0, M
        else:
            n0, n1 = 0, N
            m0, m1 = r * M // blocks, (r + 1) * M // blocks
        if m1 > m0 and n1 > n0:
            # row m0 of op(a): row m0 of a, or column m0 of a stored transposed; column n0 of
            # op(b) likewise
            a0 = a + (m0 if transa == TRANS else m0 * lda) * size
            b0 = b + (n0 * ldb if transb == TRANS else n0) * size
            before = _set_threads(set_threads, 1)
            _gemm(gemm, transa, transb, m1 - m0, n1 - n0, K, one, a0, lda, b0, ldb, zero,
                  out.ctypes.data + (m0 * N + n0) * size, N)
            _set_threads(set_threads, before)


@kernel(parallel=True)
def _two(a, b, out, K, transa, transb, lda, ldb, c, d, out2, K2, transc, transd, ldc, ldd, gemm,
         set_threads):
    """out (M, N) = op(a) @ op(b) and out2 = op(c) @ op(d), each one BLAS call on one thread:
    the two products side by side on two threads (one after the other on one). The arrays
    are passed as ``_blocks`` takes them: addresses, flags and leading dimensions."""
    one, zero = out.dtype.type(1), out.dtype.type(0)
    for r in prange(2):
        before = _set_threads(set_threads, 1)
        if r == 0:
            _gemm(gemm, transa, transb, out.shape[0], out.shape[1], K, one, a, lda, b, ldb, zero,
                  out.ctypes.data, out.shape[1])
        else:
            _gemm(gemm, transc, transd, out2.shape[0], out2.shape[1], K2, one, c, ldc, d, ldd,
                  zero, out2.ctypes.data, out2.shape[1])
        _set_threads(set_threads, before)


def two_products(a, b, c, d):
    """(a @ b, c @ d) for 2-D arrays of one dtype, as ``matmul`` computes each.

    A Dense layer's backward pass has two independent products (the weights' gradient and the
    input's). When each is large enough to share (``_SIDE_BY_SIDE_MACS``) but neither large
    enough to split (``_PARALLEL_MACS``: LeNet-5's first Dense layer), the two run side by
    side, each on one thread, instead of one after the other with the second thread idle.
    Each is one BLAS call on one thread either way, so the bits do not depend on the thread
    count.
    """
    arrays = (a, b, c, d)
    if (blas.GEMM is None or any(x.ndim != 2 or x.dtype != a.dtype or 0 in x.shape
                                 for x in arrays)
            or a.dtype not in COMPILED_DTYPES or a.shape[1] != b.shape[0]
            or c.shape[1] != d.shape[0]):
        return matmul(a, b), matmul(c, d)
    macs = (a.shape[0] * a.shape[1] * b.shape[1], c.shape[0] * c.shape[1] * d.shape[1])
    if not _SIDE_BY_SIDE_MACS <= min(macs) <= max(macs) < _PARALLEL_MACS:
        return matmul(a, b), matmul(c, d)
    (a, transa, lda), (b, transb, ldb) = _layout(a), _layout(b)
    (c, transc, ldc), (d, transd, ldd) = _layout(c), _layout(d)
    out = workspace.empty((a.shape[0], b.shape[1]), a.dtype)
    out2 = workspace.empty((c.shape[0], d.shape[1]), a.dtype)
    with blas.one_thread_per_product():
        _two(a.ctypes.data, b.ctypes.data, out, a.shape[1], transa, transb, lda, ldb,
             c.ctypes.data, d.ctypes.data, out2, c.shape[1], transc, transd, ldc, ldd,
             blas.GEMM[a.dtype], blas.SET_THREADS_LOCAL)
    return out, out2


def _layout(x):
    """(x, flag, leading dimension) for BLAS: rows contiguous (NO_TRANS) or columns
    contiguous (TRANS: x is the transpose of a C-ordered array); else a C-ordered copy."""
    item = x.itemsize
    if x.strides[1] == item and x.strides[0] >= x.shape[1] * item:
        return x, NO_TRANS, x.strides[0] // item
    if x.strides[0] == item and x.strides[1] >= x.shape[0] * item:
        return x, TRANS, x.strides[1] // item
    x = np.ascontiguousarray(x)
    return x, NO_TRANS, max(x.shape[1], 1)


def matmul(a, b):
    """a (M, K) @ b (K, N) -> (M, N), a and b 2-D, one dtype (float32 or float64)."""
    if (blas.GEMM is None or a.ndim != 2 or b.ndim != 2 or a.dtype != b.dtype
            or a.dtype not in COMPILED_DTYPES or 0 in a.shape or 0 in b.shape):
        return np.matmul(a, b)
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"matmul: shapes {a.shape} and {b.shape} do not fit "
                         f"({a.shape[1]} ≠ {b.shape[0]})")
    (M, K), N = a.shape, b.shape[1]
    # each thread reads its block of the larger input and all of the other: mnist_cnn's
    # Dense(9216, 128) with batches of 64 splits W's rows (forward), x's columns (weight
    # gradient) and W's columns (input gradient), 1.1 to 1.3 times faster than splitting the 64
    # rows of the batch, measured on 2 threads
    by_columns = N > M
    blocks = max(1, min(_BLOCKS, (N if by_columns else M) // _NARROWEST))
    if M * N * K < _PARALLEL_MACS:
        blocks = 1
    with blas.one_thread_per_product():
        if blocks == 1:                 # one BLAS thread, called from here: the least overhead
            return np.matmul(a, b)
        a, transa, lda = _layout(a)
        b, transb, ldb = _layout(b)
        out = workspace.empty((M, N), a.dtype)
        _blocks(a.ctypes.data, b.ctypes.data, out, K, transa, transb, lda, ldb, blocks,
                by_columns, blas.GEMM[a.dtype], blas.SET_THREADS_LOCAL)
    return out
