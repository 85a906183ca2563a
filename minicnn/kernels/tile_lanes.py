"""The output and the weights' gradient of a convolution with few output channels, in register
tiles (conv_numba's "gemm" layers of at most LANES output channels: LeNet-5's second layer).

With im2col, the output of an image is W (O, K) @ cols (K, HW) and the weights' gradient
dout (O, HW) @ colsᵀ, K = C·KH·KW rows and HW output positions. For LeNet-5's second layer
(O = 16, K = 150, HW = 100) BLAS took 3.4 µs for the first and 5.1 µs for the second per image
on an Intel Xeon (both operands read along HW, the layout BLAS is slowest at for such small
matrices), and building cols 1.4 µs more, each time.

Here the O channels are one vector (``LANES`` = 16 of float32) and both products are the same
sum, turned around: row k of a tile is Σ_t x[starts[k] + steps[t]] · D[t], a broadcast input
value times a vector of D's O channels. For the weights' gradient k runs over the rows of
im2col and t over the output positions (D = doutᵀ, (HW, LANES)); for the output, k over the
output positions and t over the rows of im2col (D = Wᵀ, (K, LANES)). ``starts`` and
``steps`` hold the offsets in the padded (and phased) input where im2col would have copied
from, so no im2col matrix is built. ``ROWS`` rows keep their sums in registers while t goes
by: each vector of D loaded feeds ROWS fused multiply-adds. Measured, LeNet-5's second layer,
per image: 3.0 µs for the output, 3.2 µs for the weights' gradient.

The offsets come from arrays rather than from a stride and a count: with counts known only
at run time, LLVM compiled the nested loops over output rows and columns 1.6 times slower
than this one loop. ``transpose`` turns dout (O, HW) into doutᵀ and the tiles' output back,
16 × 16 blocks in registers (a strided scalar loop took 0.7 µs per image, this 0.1).

Each sum runs over t in order, one fused multiply-add per step where the machine has it
(``llvm.fmuladd``): the result does not depend on the threads, and differs from BLAS's by
rounding only (its own order of the same terms).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper
from .lanes_numba import (_I32, _I64, _LANE_NUMBERS, LANES, _check, _masked, _pointer,
                          _splat, _splat_bit, _splat_value, _vector)

#: rows of the weight gradient whose sums stay in registers at once: 12 vectors of sums (an
#: FMA's latency is 4 cycles and two issue per cycle: at least 8 independent sums keep both
#: busy), plus the loaded vector and the broadcasts, within AVX-512's 32 registers
ROWS = 12


@intrinsic
def _rows_tile(typingctx, sums, at, image, image_at, starts, k0, steps, d, rows, count,
               accumulate):
    """sums[at + i·LANES + l] (+)= Σ over t < len(steps), in order, of
    image[image_at + starts[k0 + i] + steps[t]] · d[t·LANES + l], for rows i < ``rows`` (at
    most ROWS) and lanes l < count; added onto what sums holds when ``accumulate`` (a uint64,
    0 or 1), else onto 0."""
    _check(sums, image, at, image_at, k0, rows, count, accumulate)
    _check(sums, d)
    for offsets in (starts, steps):
        if not (isinstance(offsets, types.Array) and offsets.dtype == types.uint64
                and offsets.ndim == 1):
            raise TypeError("tile_lanes: the offsets are 1-D uint64 arrays")

    def codegen(context, builder, signature, args):
        sums, at, image, image_at, starts, k0, steps, d, rows, count, accumulate = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        fmuladd = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(vector, [vector] * 3),
            f"llvm.fmuladd.v{LANES}{'f32' if vector.element == ir.FloatType() else 'f64'}")
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        zeros = ir.Constant(vector, [0.0] * LANES)
        keep = builder.icmp_unsigned("!=", accumulate, ir.Constant(_I64, 0))
        array = context.make_array
        image_data = array(kinds[2])(context, builder, image).data
        starts_data = array(kinds[4])(context, builder, starts).data
        steps_array = array(kinds[6])(context, builder, steps)
        last = builder.sub(rows, ir.Constant(_I64, 1))
        first, partial = [], []
        for i in range(ROWS):
            # a row past ``rows`` repeats the last one (its loads stay inside the arrays) and
            # is not stored
            row = builder.select(builder.icmp_unsigned("<", ir.Constant(_I64, i), rows),
                                 ir.Constant(_I64, i), last)
            first.append(builder.gep(image_data, [builder.add(image_at, builder.load(
                builder.gep(starts_data, [builder.add(k0, row)])))]))
            partial.append(cgutils.alloca_once(builder, vector))    # registers, once LLVM is done
            builder.store(builder.call(load, [
                _pointer(context, builder, kinds[0], sums,
                         builder.add(at, ir.Constant(_I64, i * LANES)), vector),
                align, builder.and_(on, _splat_bit(builder, keep)), zeros]), partial[i])
        with cgutils.for_range(builder, builder.extract_value(steps_array.shape, 0)) as loop:
            t = loop.index
            step = builder.load(builder.gep(steps_array.data, [t]))
            values = builder.call(load, [
                _pointer(context, builder, kinds[7], d,
                         builder.mul(t, ir.Constant(_I64, LANES)), vector), align, on, zeros])
            for i in range(ROWS):
                x = builder.load(builder.gep(first[i], [step]))
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
    sig = types.void(sums, at, image, image_at, starts, k0, steps, d, rows, count, accumulate)
    return sig, codegen


@helper()
def tiled_rows(sums, image, at, starts, steps, d, channels, accumulate):
    """sums[k·LANES + o] (+)= Σ_t image[at + starts[k] + steps[t]] · d[t·LANES + o] for every
    row k < len(starts) and channel o < ``channels`` (at most LANES), t < len(steps) in order,
    ``ROWS`` rows k at a time; added onto sums when ``accumulate``, else written. sums is
    (K·LANES,) flat, d (T·LANES,): LANES channels side by side at each t.

    The weights' gradient of one image, transposed: k the rows of im2col (starts: each
    window's first value in the flat image), t the output positions (steps: their offsets
    from a window's first value), d the output's gradient. The output itself, transposed: k
    the output positions, t the taps (the same two arrays, swapped), d the weights. (The
    offsets come from arrays, not from a stride and a count: with counts known only at run
    time, LLVM's nested loops took 5.1 µs per image of LeNet-5's second layer, this one loop
    3.2.)"""
    u = np.uint64
    K, rows = u(starts.shape[0]), u(ROWS)
    for k0 in range(u(0), K, rows):
        _rows_tile(sums, k0 * u(LANES), image, u(at), starts, k0, steps, d, min(rows, K - k0),
                   u(channels), u(1 if accumulate else 0))


@intrinsic
def _transpose_lanes(typingctx, target, at, target_step, source, start, source_step, rows, count,
                     bias, adding):
    """target[at + j·target_step + i] := source[start + i·source_step + j] (+ bias[j] when
    ``adding``), for i < rows and j < count (both at most LANES): a LANES × LANES block turned
    around in registers: LANES vector loads, four rounds of LANES shuffles that swap the
    off-diagonal blocks of 8, 4, 2 and 1, LANES stores. Nothing else is read or written (masked
    loads and stores); bias is read only when ``adding`` (a uint64, 0 or 1)."""
    _check(target, source, at, target_step, start, source_step, rows, count, adding)
    _check(target, bias)

    def codegen(context, builder, signature, args):
        target, at, target_step, source, start, source_step, rows, count, bias, adding = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        zeros = ir.Constant(vector, [0.0] * LANES)
        columns = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        lanes_on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, rows))
        block = []
        for i in range(LANES):
            wanted = builder.and_(columns, _splat_bit(builder, builder.icmp_unsigned(
                "<", ir.Constant(_I64, i), rows)))
            at_i = builder.add(start, builder.mul(ir.Constant(_I64, i), source_step))
            block.append(builder.call(load, [
                _pointer(context, builder, kinds[3], source, at_i, vector), align, wanted,
                zeros]))
        size = LANES // 2
        while size:
            for i in range(LANES):
                if (i // size) % 2:
                    continue
                a, b = block[i], block[i + size]
                low = [j if (j // size) % 2 == 0 else LANES + j - size for j in range(LANES)]
                high = [j + size if (j // size) % 2 == 0 else LANES + j for j in range(LANES)]
                block[i] = builder.shuffle_vector(a, b, ir.Constant(ir.VectorType(_I32, LANES),
                                                                    low))
                block[i + size] = builder.shuffle_vector(
                    a, b, ir.Constant(ir.VectorType(_I32, LANES), high))
            size //= 2
        bias_data = context.make_array(kinds[8])(context, builder, bias).data
        add = builder.icmp_unsigned("!=", adding, ir.Constant(_I64, 0))
        value = cgutils.alloca_once(builder, vector)
        for j in range(LANES):
            with builder.if_then(builder.icmp_unsigned("<", ir.Constant(_I64, j), count)):
                builder.store(block[j], value)
                with builder.if_then(add):
                    shift = builder.load(builder.gep(bias_data, [ir.Constant(_I64, j)]))
                    builder.store(builder.fadd(block[j], _splat_value(builder, vector, shift)),
                                  value)
                at_j = builder.add(at, builder.mul(ir.Constant(_I64, j), target_step))
                builder.call(store, [builder.load(value), _pointer(
                    context, builder, kinds[0], target, at_j, vector), align, lanes_on])
    sig = types.void(target, at, target_step, source, start, source_step, rows, count, bias,
                     adding)
    return sig, codegen


@helper()
def transpose(target, at, target_step, source, start, source_step, rows, columns, bias,
              adding):
    """target[at + j·target_step + i] := source[start + i·source_step + j] (+ bias[j] when
    ``adding``) for i < rows and j < columns, rows at most LANES: a (rows, columns) block of
    the flat source written turned around, LANES columns at a time (``_transpose_lanes``)."""
    u = np.uint64
    at, target_step, start, source_step = u(at), u(target_step), u(start), u(source_step)
    rows, columns, lanes = u(rows), u(columns), u(LANES)
    for j0 in range(u(0), columns, lanes):
        _transpose_lanes(target, at + j0 * target_step, target_step, source, start + j0,
                         source_step, rows, min(lanes, columns - j0), bias[j0:] if adding else bias,
                         u(1 if adding else 0))


@intrinsic
def bias_relu_lanes(typingctx, sums, at, bias, adding, relu):
    """sums[at + l] := v + bias[l] when ``adding``, then ``0 if v <= 0 else v + 0`` when
    ``relu`` (``clip_at_zero``'s), for LANES lanes l (both flags uint64, 0 or 1): one
    position's LANES channels of a tiled output, in place."""
    _check(sums, bias, at, adding, relu)

    def codegen(context, builder, signature, args):
        sums, at, bias, adding, relu = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        zeros = ir.Constant(vector, [0.0] * LANES)
        to = _pointer(context, builder, kinds[0], sums, at, vector)
        v = builder.load(to, align=align.constant)
        shift = builder.load(_pointer(context, builder, kinds[2], bias, ir.Constant(_I64, 0),
                                      vector), align=align.constant)
        add = _splat_bit(builder, builder.icmp_unsigned("!=", adding, ir.Constant(_I64, 0)))
        clip = _splat_bit(builder, builder.icmp_unsigned("!=", relu, ir.Constant(_I64, 0)))
        v = builder.select(add, builder.fadd(v, shift), v)
        low = builder.and_(clip, builder.fcmp_ordered("<=", v, zeros))
        v = builder.select(low, zeros, builder.select(clip, builder.fadd(v, zeros), v))
        builder.store(v, to, align=align.constant)
    return types.void(sums, at, bias, adding, relu), codegen


@intrinsic
def pool_lanes(typingctx, target, at, source, first, second, third, fourth, divisor):
    """target[at + l] := ((((0 + source[first + l]) + source[second + l]) + source[third + l])
    + source[fourth + l]) / divisor for LANES lanes l (``sum_2x2_plane``'s order): one 2×2
    window's LANES channels of a tiled output."""
    _check(target, source, at, first, second, third, fourth)

    def codegen(context, builder, signature, args):
        target, at, source, first, second, third, fourth, divisor = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        total = ir.Constant(vector, [0.0] * LANES)
        for k in (first, second, third, fourth):
            total = builder.fadd(total, builder.load(
                _pointer(context, builder, kinds[2], source, k, vector), align=align.constant))
        total = builder.fdiv(total, _splat_value(builder, vector, divisor))
        builder.store(total, _pointer(context, builder, kinds[0], target, at, vector),
                      align=align.constant)
    return types.void(target, at, source, first, second, third, fourth, divisor), codegen
