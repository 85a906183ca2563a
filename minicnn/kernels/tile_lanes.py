"""The weight gradient of a convolution with few output channels, in register tiles.

For a "gemm" layer, ∂loss/∂W (O, K) is Σ over the output positions t of dout[:, t] times the
window at t: with K = C·KH·KW rows of im2col, the product dout (O, HW) @ colsᵀ (HW, K). For
LeNet-5's second layer (O = 16, K = 150, HW = 100) BLAS took 5.1 µs per image on an Intel Xeon,
and the im2col matrix it reads 1.4 µs more to build: both operands are read along HW, the
layout BLAS is slowest at for such small matrices.

Here the O = 16 output channels are one vector (``LANES``), and each row k = (c, p, q) of the
gradient is a sum over t of x[window start of k + offset of t] · doutᵀ[t]: a broadcast of one
input value times the vector of the O channels' gradients at t, added to the row's vector of
sums. ``ROWS`` rows keep their sums in registers while t goes through the output positions, so
that each loaded vector of doutᵀ feeds ``ROWS`` fused multiply-adds. The input values are read
straight from the (padded, phased) input, where im2col would have copied them from: the
window of row k at output (i, j) starts at ``offsets[k] + i·row_step + j·column_step``. No
im2col matrix is built.

Each sum runs over t = (i, j) in order, i then j, one fused multiply-add per step where the
machine has it (``llvm.fmuladd``): the result does not depend on the threads, and differs from
BLAS's by rounding only (its own order of the same terms).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper
from .lanes_numba import (_I64, _LANE_NUMBERS, LANES, _check, _masked, _pointer, _splat,
                          _splat_bit, _splat_value, _vector)

#: rows of the weight gradient whose sums stay in registers at once: 12 vectors of sums (an
#: FMA's latency is 4 cycles and two issue per cycle: at least 8 independent sums keep both
#: busy), plus the loaded vector and the broadcasts, within AVX-512's 32 registers
ROWS = 12


@intrinsic
def _rows_tile(typingctx, sums, at, image, image_at, starts, k0, row_step, column_step, d, H, W,
               rows, count, accumulate):
    """sums[at + i·LANES + l] (+)= Σ over t = r·W + s, r < H, s < W, in order, of
    image[image_at + starts[k0 + i] + r·row_step + s·column_step] · d[t·LANES + l], for rows
    i < ``rows`` (at most ROWS) and lanes l < count; added onto what sums holds when
    ``accumulate`` (a uint64, 0 or 1), else onto 0."""
    _check(sums, image, at, image_at, k0, row_step, column_step, H, W, rows, count, accumulate)
    _check(sums, d)
    if not (isinstance(starts, types.Array) and starts.dtype == types.uint64
            and starts.ndim == 1):
        raise TypeError("tile_lanes: the starts are a 1-D uint64 array")

    def codegen(context, builder, signature, args):
        sums, at, image, image_at, starts, k0, row_step, column_step, d, H, W, rows, count, \
            accumulate = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fmuladd.v{LANES}{'f32' if vector.element == ir.FloatType() else 'f64'}")
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        zeros = ir.Constant(vector, [0.0] * LANES)
        keep = builder.icmp_unsigned("!=", accumulate, ir.Constant(_I64, 0))
        image_data = context.make_array(kinds[2])(context, builder, image).data
        starts_data = context.make_array(kinds[4])(context, builder, starts).data
        last = builder.sub(rows, ir.Constant(_I64, 1))
        first, partial = [], []
        for i in range(ROWS):
            # a row past ``rows`` repeats the last one (its loads stay inside the arrays) and
            # is not stored
            row = builder.select(builder.icmp_unsigned("<", ir.Constant(_I64, i), rows),
                                 ir.Constant(_I64, i), last)
            first.append(builder.add(image_at, builder.load(
                builder.gep(starts_data, [builder.add(k0, row)]))))
            partial.append(cgutils.alloca_once(builder, vector))    # registers, once LLVM is done
            builder.store(builder.call(load, [
                _pointer(context, builder, kinds[0], sums,
                         builder.add(at, ir.Constant(_I64, i * LANES)), vector),
                align, builder.and_(on, _splat_bit(builder, keep)), zeros]), partial[i])
        with cgutils.for_range(builder, H) as outer:
            r = outer.index
            with cgutils.for_range(builder, W) as inner:
                s = inner.index
                t = builder.add(builder.mul(r, W), s)
                values = builder.call(load, [
                    _pointer(context, builder, kinds[8], d,
                             builder.mul(t, ir.Constant(_I64, LANES)), vector),
                    align, on, zeros])
                shift = builder.add(builder.mul(r, row_step), builder.mul(s, column_step))
                for i in range(ROWS):
                    x = builder.load(builder.gep(image_data, [builder.add(first[i], shift)]))
                    builder.store(builder.call(fmuladd, [
                        _splat_value(builder, vector, x), values, builder.load(partial[i])]),
                        partial[i])
        for i in range(ROWS):
            with builder.if_then(builder.icmp_unsigned("<", ir.Constant(_I64, i), rows)):
                builder.call(store, [
                    builder.load(partial[i]),
                    _pointer(context, builder, kinds[0], sums,
                             builder.add(at, ir.Constant(_I64, i * LANES)), vector),
                    align, on])
    sig = types.void(sums, at, image, image_at, starts, k0, row_step, column_step, d, H, W, rows,
                     count, accumulate)
    return sig, codegen


@helper()
def weight_rows(sums, image, at, starts, row_step, column_step, d, H, W, channels,
                accumulate):
    """sums[k·LANES + o] (+)= Σ_t image[at + starts[k] + r·row_step + s·column_step] ·
    d[t·LANES + o] for every row k < len(starts) and channel o < ``channels`` (at most LANES),
    t = r·W + s over the H×W output positions in order: the weight gradient of one image,
    transposed and LANES wide (sums (K·LANES,) flat; d (H·W·LANES,) the output's gradient, its
    channels side by side at each position; starts the K windows' first values in the flat
    image, from ``at``), ``ROWS`` rows at a time. Added onto sums when ``accumulate``, else
    written."""
    u = np.uint64
    K, rows = u(starts.shape[0]), u(ROWS)
    for k0 in range(u(0), K, rows):
        _rows_tile(sums, k0 * u(LANES), image, u(at), starts, k0, u(row_step), u(column_step),
                   d, u(H), u(W), min(rows, K - k0), u(channels), u(1 if accumulate else 0))
