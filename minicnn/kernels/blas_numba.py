"""NumPy's BLAS called from inside compiled kernels (``blas.py`` finds it).

``gemm(address, ...)`` and ``set_threads(address, count)`` are Numba intrinsics: they call the C
function at an address given as an integer, so that the kernels' machine code, which calls
them, can be cached on disk (an address baked into the code would differ between processes).
"""
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .blas import ROW_MAJOR


@intrinsic
def gemm(typingctx, address, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """cblas_?gemm(RowMajor, transa, transb, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc), the
    function at ``address``: C = alpha·op(A)·op(B) + beta·C. A, B, C are given as addresses
    (``array.ctypes.data``), sizes as integers (64-bit in the call), alpha and beta in the
    dtype of the arrays (float32: sgemm, float64: dgemm)."""
    sig = types.void(address, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)

    def codegen(context, builder, signature, args):
        i32, i64, pointer = ir.IntType(32), ir.IntType(64), ir.IntType(8).as_pointer()
        real = context.get_value_type(signature.args[6])
        kinds = [i32, i32, i32, i64, i64, i64, real, pointer, i64, pointer, i64, real, pointer,
                 i64]
        function = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), kinds).as_pointer())
        values = [ir.Constant(i32, ROW_MAJOR)]
        for value, kind in zip(args[1:], kinds[1:]):
            if kind is pointer:
                value = builder.inttoptr(value, pointer)
            elif isinstance(kind, ir.IntType) and value.type.width != kind.width:
                value = (builder.sext if value.type.width < kind.width else builder.trunc)(
                    value, kind)
            values.append(value)
        builder.call(function, values)
    return sig, codegen


@intrinsic
def set_threads(typingctx, address, count):
    """openblas_set_num_threads_local(count), the function at ``address``: this thread's BLAS
    thread count; returns the previous one."""
    sig = types.int32(address, count)

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        function = builder.inttoptr(args[0], ir.FunctionType(i32, [i32]).as_pointer())
        return builder.call(function, [builder.trunc(args[1], i32)])
    return sig, codegen
