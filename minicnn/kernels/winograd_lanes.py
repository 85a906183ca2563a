"""Winograd's output transform in whole vector instructions (``conv_winograd``).

Y = Aᵀ M A turns each tile's 16 sums M into its 2×2 outputs. Written as loops, the compiler left
it scalar: a row of tiles is short (12 tiles for a 24-wide output, fewer than one turn of its
vectorised loop), and a loop that reads 16 rows of M and writes an output row needs more checks
that the rows do not overlap than the compiler makes (8): measured on an Intel Xeon, 35 µs per
image of mnist_cnn's second layer (64 channels of 24×24), a third of the layer's time, with the
ReLU and the 2×2 max-pool that follow another 8.

Here ``LANES`` tiles of a row go at once: 16 vector loads (one per ξ, the tiles' sums side by
side in M), additions in the loops' order, then either the two output rows (the columns of
each tile interleaved by a shuffle) or, with the pool, the maximum of each tile's four outputs
and where it was. The tiles are the pool's windows: an output's 2×2 tile is the window that
MaxPool2D(2) takes, so the full output is never written. The values are the loops' bits:
the same additions in the same order, the ReLU ``0 if y <= 0 else y + 0`` and the strict
``>`` of ``pool_numba.max_2x2_plane`` (a NaN never wins against the first value; the first of
equal values keeps the gradient).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper
from .lanes_numba import _I32, _I64, _LANE_NUMBERS, LANES, _masked, _pointer, _splat, _vector


def _check(m, out, integers):
    if not (isinstance(m, types.Array) and isinstance(out, types.Array)
            and m.ndim == out.ndim == 1 and m.dtype == out.dtype
            and m.dtype in (types.float32, types.float64)):
        raise TypeError("winograd_lanes: two 1-D float32 or float64 arrays of one dtype")
    if any(integer != types.uint64 for integer in integers):
        raise TypeError("winograd_lanes: the offsets, counts and flags are uint64")


def _outputs(context, builder, kinds, m, start, stride, count, bias, relu):
    """The vectors (y00, y01, y10, y11) of the tiles m[start + ξ·stride + l], lanes l <
    count: Aᵀ M A + bias, clipped at 0 when ``relu`` (an i1), in conv_winograd's order:
    each of Aᵀ's rows down the columns, ((m_k + m_4+k) + m_8+k) and ((m_4+k − m_8+k) −
    m_12+k), then along the rows ((s0 + s1) + s2) + b and ((s1 − s2) − s3) + b."""
    vector, align = _vector(context, kinds[0])
    on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
    load = _masked(builder, "load", vector)
    zeros = ir.Constant(vector, [0.0] * LANES)
    rows = [builder.call(load, [
        _pointer(context, builder, kinds[0], m,
                 builder.add(start, builder.mul(ir.Constant(_I64, xi), stride)), vector),
        align, on, zeros]) for xi in range(16)]
    top = [builder.fadd(builder.fadd(rows[k], rows[4 + k]), rows[8 + k]) for k in range(4)]
    bottom = [builder.fsub(builder.fsub(rows[4 + k], rows[8 + k]), rows[12 + k])
              for k in range(4)]
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), bias, ir.Constant(_I32, 0))
    b = builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))
    outputs = []
    for s in (top, bottom):
        outputs.append(builder.fadd(builder.fadd(builder.fadd(s[0], s[1]), s[2]), b))
        outputs.append(builder.fadd(builder.fsub(builder.fsub(s[1], s[2]), s[3]), b))
    clipped = []
    for y in outputs:       # 0 if y <= 0 else y + 0, as elementwise_numba.clip_at_zero
        at_most_zero = builder.fcmp_ordered("<=", y, zeros)
        clipped.append(builder.select(builder.and_(at_most_zero, _splat_bit(builder, relu)),
                                      zeros, builder.select(_splat_bit(builder, relu),
                                                            builder.fadd(y, zeros), y)))
    return clipped, on, align, vector


def _splat_bit(builder, bit):
    """A vector of LANES copies of the i1 ``bit``."""
    kind = ir.VectorType(ir.IntType(1), LANES)
    one = builder.insert_element(ir.Constant(kind, ir.Undefined), bit, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


@intrinsic
def _rows_lanes(typingctx, m, start, stride, count, bias, relu, out, at, width, second):
    """out[at + 2l + i] := y0i and, when ``second``, out[at + W + 2l + i] := y1i (W =
    ``second``) for the tiles l < count of m (see _outputs), only the output columns 2l + i
    < width."""
    _check(m, out, (start, stride, count, relu, at, width, second))

    def codegen(context, builder, signature, args):
        m, start, stride, count, bias, relu, out, at, width, second = args
        kinds = signature.args
        is_relu = builder.icmp_unsigned("!=", relu, ir.Constant(_I64, 0))
        (y00, y01, y10, y11), _, align, vector = _outputs(context, builder, kinds, m, start,
                                                          stride, count, bias, is_relu)
        store = _masked(builder, "store", vector)
        halves = [ir.Constant(ir.VectorType(_I32, LANES),
                              [h * LANES // 2 + i // 2 + (i % 2) * LANES for i in range(LANES)])
                  for h in (0, 1)]

        def write(left, right, row_at):
            for h, shuffle in enumerate(halves):
                columns = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
                inside = builder.icmp_unsigned("<", columns, _splat(builder, width))
                to = _pointer(context, builder, kinds[6], out,
                              builder.add(row_at, ir.Constant(_I64, h * LANES)), vector)
                builder.call(store, [builder.shuffle_vector(left, right, shuffle), to, align,
                                     inside])
        write(y00, y01, at)
        with builder.if_then(builder.icmp_unsigned("!=", second, ir.Constant(_I64, 0))):
            write(y10, y11, builder.add(at, second))
    sig = types.void(m, start, stride, count, bias, relu, out, at, width, second)
    return sig, codegen


@intrinsic
def _pool_lanes(typingctx, m, start, stride, count, bias, relu, out, at, winner, corner, W,
                keep):
    """out[at + l] := the maximum of (y00, y01, y10, y11) of the tiles l < count of m (see
    _outputs), the first of them on a tie (strictly greater replaces), and with ``keep``
    winner[at + l] := its flat position in the output plane of width W: corner + 2l, + 1,
    + W or + W + 1."""
    _check(m, out, (start, stride, count, relu, at, W, keep))
    if not (isinstance(winner, types.Array) and winner.dtype == types.int64
            and winner.ndim == 1 and corner == types.int64):
        raise TypeError("winograd_lanes: winner is a 1-D int64 array, corner an int64")

    def codegen(context, builder, signature, args):
        m, start, stride, count, bias, relu, out, at, winner, corner, W, keep = args
        kinds = signature.args
        is_relu = builder.icmp_unsigned("!=", relu, ir.Constant(_I64, 0))
        (y00, y01, y10, y11), on, align, vector = _outputs(context, builder, kinds, m, start,
                                                           stride, count, bias, is_relu)
        positions = builder.add(_splat(builder, corner),
                                builder.add(_LANE_NUMBERS, _LANE_NUMBERS))
        best, where = y00, positions
        for y, step in ((y01, builder.add(positions, _splat(builder, ir.Constant(_I64, 1)))),
                        (y10, builder.add(positions, _splat(builder, W))),
                        (y11, builder.add(positions, _splat(builder, builder.add(
                            W, ir.Constant(_I64, 1)))))):
            greater = builder.fcmp_ordered(">", y, best)
            best, where = builder.select(greater, y, best), builder.select(greater, step, where)
        builder.call(_masked(builder, "store", vector),
                     [best, _pointer(context, builder, kinds[6], out, at, vector), align, on])
        with builder.if_then(builder.icmp_unsigned("!=", keep, ir.Constant(_I64, 0))):
            integers = ir.VectorType(_I64, LANES)
            store = cgutils.get_or_insert_function(builder.module, ir.FunctionType(
                ir.VoidType(), [integers, integers.as_pointer(), _I32,
                                ir.VectorType(ir.IntType(1), LANES)]),
                f"llvm.masked.store.v{LANES}i64.p0")
            to = _pointer(context, builder, kinds[8], winner, at, integers)
            builder.call(store, [where, to, ir.Constant(_I32, 8), on])
    sig = types.void(m, start, stride, count, bias, relu, out, at, winner, corner, W, keep)
    return sig, codegen


@helper()
def output_plane(m, start, stride, bias, relu, out, at, TH, TW, H_out, W_out):
    """out[at:at + H_out·W_out] := the plane (H_out, W_out) Aᵀ M A + bias of one output
    channel, max(·, 0) with ``relu``: M's 16 rows of tiles at m[start + ξ·stride:][:TH·TW],
    the tiles row by row; outputs past H_out or W_out dropped."""
    u = np.uint64
    start, stride, at, relu = u(start), u(stride), u(at), u(relu)
    TH, TW, H_out, W_out = u(TH), u(TW), u(H_out), u(W_out)
    lanes, two, zero = u(LANES), u(2), u(0)
    for ti in range(TH):
        row_at = at + two * ti * W_out
        second = W_out if two * ti + u(1) < H_out else zero
        for j0 in range(zero, TW, lanes):
            _rows_lanes(m, start + ti * TW + j0, stride, min(lanes, TW - j0), bias, relu, out,
                        row_at + two * j0, W_out - two * j0, second)


@helper()
def pooled_plane(m, start, stride, bias, relu, out, at, winner, keep, TW, H_out, W_out):
    """out[at:at + PH·PW] := the 2×2, stride-2 maxima (PH, PW) = (⌊H_out/2⌋, ⌊W_out/2⌋) of the
    plane Aᵀ M A + bias (max(·, 0) with ``relu``), M as in output_plane (TW tiles a row); with
    ``keep``, winner[at:at + PH·PW] := each maximum's flat position h·W_out + w."""
    u = np.uint64
    start, stride, at, relu, keep = u(start), u(stride), u(at), u(relu), u(keep)
    TW, PH, PW = u(TW), u(H_out // 2), u(W_out // 2)
    lanes, zero = u(LANES), u(0)
    W = np.int64(W_out)
    for ti in range(PH):
        for j0 in range(zero, PW, lanes):
            _pool_lanes(m, start + ti * TW + j0, stride, min(lanes, PW - j0), bias, relu, out,
                        at + ti * PW + j0, winner, np.int64(2 * ti) * W + np.int64(2 * j0),
                        u(W), keep)

