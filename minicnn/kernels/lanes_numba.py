"""Whole vector instructions where the compiler leaves a loop scalar, or its sums in memory.

Three helpers, written in LLVM's vector instructions (Numba ``intrinsic``s): ``copy_run`` and
``add_taps`` for im2col and col2im, ``taps_block`` for the direct convolution's sums.

im2col copies each row of a window, one output row long, into its matrix: LeNet-5's second
layer copies 1500 runs of 10 values per image. A loop of 10 is too short for the compiler's
vectorised loop (it takes 16 or 32 values per turn), so those copies ran one value at a time:
4.5 µs per image, more than the product that follows (4.2 µs, on an Intel Xeon).

``copy_run`` moves up to ``LANES`` values per step with one masked vector load and one masked
store (LLVM's ``llvm.masked.load`` / ``llvm.masked.store``): the lanes past the run's end are
neither read nor written, so a run may end at the end of its array. With AVX-512 (or AVX2)
each is one instruction; elsewhere LLVM does it value by value, with the same results.

col2im adds the runs back, and there a vector add per run is slower than the scalar loop
(measured, LeNet-5's second layer, 64 images on 2 threads: 306 µs against 148): the runs of
the KW taps of a window row overlap, shifted by one, and each vector load waits for the store
of the run before it. ``add_taps`` adds the KW shifted runs of one row in a register and
writes the row once: 107 µs.

The direct convolution's loops kept each output's sum in memory, a load and a store per four
multiply-adds. ``taps_block`` keeps 32 positions × 8 output channels of sums in 16 vector
registers while it goes through the taps: each vector load of a tap's run feeds 8 fused
multiply-adds (``conv_direct``). For fewer channels it keeps 32 positions × 6 or 48 × 4
(``_BLOCKS``): LeNet-5's first layer has 6, and 8 channels spent a quarter of its
multiply-adds on two channels of zeros.

The values are the same bits as the loops': a copy is a copy, and ``add_taps`` adds each
position's terms in the loops' order. ``taps_block`` adds the taps one after the other onto
the bias, each a fused multiply-add where the machine has one (``llvm.fmuladd``, as the
kernels' ``FMA`` lets the compiler do). Offsets are unsigned or signed integers, and nothing is
checked: as for every index inside the kernels, the caller keeps the runs inside the arrays.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper

LANES = 16      # one AVX-512 register of float32, two of float64


def _fast_masked_stores():
    """Whether Numba makes machine code for AVX-512 (``avx512f``), where a masked store is one
    instruction. With AVX2 only, LLVM makes it of ``vmaskmov`` stores, microcoded and slow on
    AMD's Zen 2 and 3; without AVX2, of one store per value. Code made for another machine
    (``NUMBA_CPU_NAME``): assumed not."""
    from numba.core import config
    if config.CPU_NAME:
        return False
    import llvmlite.binding
    return bool(llvmlite.binding.get_host_cpu_features().get("avx512f", False))


#: whether masked stores are fast here: the kernels then use ``copy_run`` and ``add_taps``,
#: else their plain loops (the same bits); ``taps_block`` stores a whole vector where it can
MASKED_STORES = _fast_masked_stores()

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_LANE_NUMBERS = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))


def _splat(builder, value):
    """A vector of LANES copies of the 64-bit integer ``value``."""
    return _splat_value(builder, ir.VectorType(_I64, LANES), value)


def _splat_value(builder, vector, value):
    """A vector of type ``vector`` holding LANES copies of the scalar ``value``."""
    one = builder.insert_element(ir.Constant(vector, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _splat_bit(builder, bit):
    """A vector of LANES copies of the i1 ``bit``."""
    return _splat_value(builder, ir.VectorType(ir.IntType(1), LANES), bit)


def _vector(context, array_type):
    """The vector of LANES elements of the array's dtype, and its elements' alignment."""
    element = context.get_data_type(array_type.dtype)
    return ir.VectorType(element, LANES), ir.Constant(_I32, context.get_abi_sizeof(element))


def _pointer(context, builder, array_type, array, offset, vector):
    """&array[offset], as a pointer to ``vector``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())


def _masked(builder, kind, vector):
    """LLVM's llvm.masked.load or llvm.masked.store of ``vector`` (float32, float64 or int64
    lanes)."""
    element = {ir.FloatType(): "f32", ir.DoubleType(): "f64", _I64: "i64"}[vector.element]
    suffix = f"v{LANES}{element}.p0"
    mask = ir.VectorType(ir.IntType(1), LANES)
    if kind == "load":      # (pointer, alignment, mask, values of the lanes masked off)
        signature = ir.FunctionType(vector, [vector.as_pointer(), _I32, mask, vector])
    else:                   # (values, pointer, alignment, mask)
        signature = ir.FunctionType(ir.VoidType(), [vector, vector.as_pointer(), _I32, mask])
    return cgutils.get_or_insert_function(builder.module, signature, f"llvm.masked.{kind}.{suffix}")


def _check(target, source, *integers):
    if not (isinstance(target, types.Array) and isinstance(source, types.Array)
            and target.ndim == source.ndim == 1 and target.dtype == source.dtype
            and target.dtype in (types.float32, types.float64)):
        raise TypeError("lanes_numba: two 1-D float32 or float64 arrays of one dtype")
    if any(integer != types.uint64 for integer in integers):
        raise TypeError("lanes_numba: the offsets and counts are uint64")


@intrinsic
def _copy_lanes(typingctx, target, at, source, start, count):
    """target[at : at + count] = source[start : start + count], count <= LANES."""
    _check(target, source, at, start, count)

    def codegen(context, builder, signature, args):
        target, at, source, start, count = args
        vector, align = _vector(context, signature.args[0])
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        values = builder.call(_masked(builder, "load", vector), [
            _pointer(context, builder, signature.args[2], source, start, vector), align, on,
            ir.Constant(vector, ir.Undefined)])
        builder.call(_masked(builder, "store", vector), [
            values, _pointer(context, builder, signature.args[0], target, at, vector), align, on])
    return types.void(target, at, source, start, count), codegen


@helper()
def copy_run(target, at, source, start, n):
    """target[at : at + n] = source[start : start + n] (1-D arrays of one float dtype),
    LANES values per step."""
    # unsigned throughout: a signed and an unsigned integer would add up to a float in Numba
    u = np.uint64
    at, start, n, lanes, done = u(at), u(start), u(n), u(LANES), u(0)
    while n - done > lanes:
        _copy_lanes(target, at + done, source, start + done, lanes)
        done += lanes
    _copy_lanes(target, at + done, source, start + done, n - done)


@intrinsic
def _every_other_lanes(typingctx, target, at, source, start, count):
    """target[at : at + count] = source[start : start + 2·count − 1 : 2], count <= LANES: two
    masked loads of the pairs, the first of each pair picked by a shuffle."""
    _check(target, source, at, start, count)

    def codegen(context, builder, signature, args):
        target, at, source, start, count = args
        vector, align = _vector(context, signature.args[0])
        load = _masked(builder, "load", vector)
        reach = builder.sub(builder.add(count, count), ir.Constant(_I64, 1))
        halves = []
        for h in (0, 1):
            lanes = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
            halves.append(builder.call(load, [
                _pointer(context, builder, signature.args[2], source,
                         builder.add(start, ir.Constant(_I64, h * LANES)), vector), align,
                builder.icmp_unsigned("<", lanes, _splat(builder, reach)),
                ir.Constant(vector, ir.Undefined)]))
        evens = builder.shuffle_vector(halves[0], halves[1], ir.Constant(
            ir.VectorType(_I32, LANES), [2 * i for i in range(LANES)]))
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        builder.call(_masked(builder, "store", vector), [
            evens, _pointer(context, builder, signature.args[0], target, at, vector), align, on])
    return types.void(target, at, source, start, count), codegen


@helper()
def copy_every_other(target, at, source, start, n):
    """target[at : at + n] = source[start : start + 2n − 1 : 2] (1-D arrays of one float
    dtype), LANES values per step: a stride-2 convolution's input split into its column
    phases (``conv_direct``)."""
    u = np.uint64
    at, start, n, lanes, done = u(at), u(start), u(n), u(LANES), u(0)
    while n - done > lanes:
        _every_other_lanes(target, at + done, source, start + done + done, lanes)
        done += lanes
    _every_other_lanes(target, at + done, source, start + done + done, n - done)


@intrinsic
def _window_max_lanes(typingctx, plane, start, W, rows, KW, count, out, out_at, winner, first,
                      keep):
    """For the windows l < count whose top-left element is plane[start + 2l] (columns two
    apart, ``rows`` rows W apart, KW columns): out[out_at + l] := the window's maximum, its
    elements visited row by row, a later one taking over only when strictly greater (as
    pool_numba's loops: the first of equal maxima wins, a NaN only when first); with ``keep``,
    winner[out_at + l] := its position first + 2l + r·W + q."""
    _check(plane, out, start, W, rows, KW, count, out_at, keep)
    if not (isinstance(winner, types.Array) and winner.dtype == types.int64
            and winner.ndim == 1 and first == types.int64):
        raise TypeError("lanes_numba: winner is a 1-D int64 array, first an int64")

    def codegen(context, builder, signature, args):
        plane, start, W, rows, KW, count, out, out_at, winner, first, keep = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load = _masked(builder, "load", vector)
        integers = ir.VectorType(_I64, LANES)
        reach = _splat(builder, builder.sub(builder.add(count, count), ir.Constant(_I64, 1)))
        evens = ir.Constant(ir.VectorType(_I32, LANES), [2 * i for i in range(LANES)])
        doubled = builder.add(_LANE_NUMBERS, _LANE_NUMBERS)

        def column(at):
            """The values plane[at + 2l], l < count: evens of two masked loads."""
            halves = []
            for h in (0, 1):
                lanes = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
                halves.append(builder.call(load, [
                    _pointer(context, builder, kinds[0], plane,
                             builder.add(at, ir.Constant(_I64, h * LANES)), vector), align,
                    builder.icmp_unsigned("<", lanes, reach), ir.Constant(vector, ir.Undefined)]))
            return builder.shuffle_vector(halves[0], halves[1], evens)

        best = cgutils.alloca_once(builder, vector)          # registers, once LLVM is done
        where = cgutils.alloca_once(builder, integers)
        builder.store(column(start), best)
        builder.store(builder.add(_splat(builder, first), doubled), where)
        with cgutils.for_range(builder, rows) as row:
            offset = builder.mul(row.index, W)
            with cgutils.for_range(builder, KW) as q:
                step = builder.add(offset, q.index)
                value = column(builder.add(start, step))
                greater = builder.fcmp_ordered(">", value, builder.load(best))
                builder.store(builder.select(greater, value, builder.load(best)), best)
                position = builder.add(builder.add(_splat(builder, first), doubled),
                                       _splat(builder, step))
                builder.store(builder.select(greater, position, builder.load(where)), where)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        builder.call(_masked(builder, "store", vector), [
            builder.load(best), _pointer(context, builder, kinds[6], out, out_at, vector), align,
            on])
        with builder.if_then(builder.icmp_unsigned("!=", keep, ir.Constant(_I64, 0))):
            builder.call(_masked(builder, "store", integers), [builder.load(where),
                                 _pointer(context, builder, kinds[8], winner, out_at, integers),
                                 ir.Constant(_I32, 8), on])
    sig = types.void(plane, start, W, rows, KW, count, out, out_at, winner, first, keep)
    return sig, codegen


@helper()
def window_max_row(plane, start, W, rows, KW, n, out, out_at, winner, first, keep):
    """out[out_at : out_at + n] := the maxima of n windows two columns apart (a stride-2 max
    pool's output row, its windows inside the plane), ``rows`` × KW elements each from
    plane[start + 2j] (rows W apart); with ``keep``, winner likewise := each maximum's position
    first + 2j + r·W + q; LANES windows at a time (``_window_max_lanes``)."""
    u = np.uint64
    start, W, rows, KW, n, out_at, keep = u(start), u(W), u(rows), u(KW), u(n), u(out_at), u(keep)
    lanes, done = u(LANES), u(0)
    while done < n:
        count = min(lanes, n - done)
        _window_max_lanes(plane, start + done + done, W, rows, KW, count, out, out_at + done,
                          winner, np.int64(first) + np.int64(done + done), keep)
        done += count


@intrinsic
def _spread_lanes(typingctx, d, d_at, count, divisor, clip, k0_at, k1_at, clipping, target,
                  r0_at, r1_at):
    """The gradient of count 2×2 sums side by side: share_l = 0 + d[d_at + l] / divisor, and
    target[r0_at + 2l + q] and target[r1_at + 2l + q] := share_l (q = 0, 1), with
    ``clipping`` only where clip[k0_at + 2l + q] (clip[k1_at + ...] for the second row) > 0,
    else 0: ``pool_numba.spread_2x2``'s arithmetic, its shares doubled by a shuffle."""
    _check(target, d, d_at, count, k0_at, k1_at, clipping, r0_at, r1_at)
    if clip != d or divisor != d.dtype:
        raise TypeError("lanes_numba: clip is an array like d, divisor a scalar of its dtype")

    def codegen(context, builder, signature, args):
        d, d_at, count, divisor, clip, k0_at, k1_at, clipping, target, r0_at, r1_at = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        zeros = ir.Constant(vector, [0.0] * LANES)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        divisors = _splat_value(builder, vector, divisor)
        values = builder.call(load, [_pointer(context, builder, kinds[0], d, d_at, vector),
                                     align, on, zeros])
        share = builder.fadd(zeros, builder.fdiv(values, divisors))
        clipping_bit = builder.icmp_unsigned("!=", clipping, ir.Constant(_I64, 0))
        for h in (0, 1):
            doubled = builder.shuffle_vector(share, share, ir.Constant(
                ir.VectorType(_I32, LANES), [h * LANES // 2 + i // 2 for i in range(LANES)]))
            columns = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
            inside = builder.icmp_unsigned("<", columns, _splat(builder, builder.add(count,
                                                                                     count)))
            for k_at, r_at in ((k0_at, r0_at), (k1_at, r1_at)):
                offset = ir.Constant(_I64, h * LANES)
                kept = builder.call(load, [_pointer(context, builder, kinds[4], clip,
                                                    builder.add(k_at, offset), vector), align,
                                           builder.and_(inside, _splat_bit(builder,
                                                                          clipping_bit)),
                                           zeros])
                keep = builder.or_(_splat_bit(builder, builder.not_(clipping_bit)),
                                   builder.fcmp_ordered(">", kept, zeros))
                builder.call(store, [builder.select(keep, doubled, zeros),
                                     _pointer(context, builder, kinds[8], target,
                                              builder.add(r_at, offset), vector),
                                     align, inside])
    sig = types.void(d, d_at, count, divisor, clip, k0_at, k1_at, clipping, target, r0_at, r1_at)
    return sig, codegen


@helper()
def spread_rows(d, d_at, n, divisor, clip, k0_at, k1_at, clipping, target, r0_at, r1_at):
    """``_spread_lanes`` for n shares (a row of a 2×2 pool's gradient), LANES at a time."""
    u = np.uint64
    d_at, n, k0_at, k1_at = u(d_at), u(n), u(k0_at), u(k1_at)
    clipping, r0_at, r1_at = u(clipping), u(r0_at), u(r1_at)
    lanes, done = u(LANES), u(0)
    while done < n:
        count = min(lanes, n - done)
        _spread_lanes(d, d_at + done, count, divisor, clip, k0_at + done + done,
                      k1_at + done + done, clipping, target, r0_at + done + done,
                      r1_at + done + done)
        done += count


@intrinsic
def _add_taps_lanes(typingctx, target, at, count, source, start, first, run, taps, tap_step):
    """target[at + l] += Σ_q source[start + q·tap_step + first + l − q] for lanes l < count,
    q = 0, 1, ..., taps − 1 in that order, each term only where 0 <= first + l − q < run (the
    other lanes of its load are masked off and add 0); the sum is kept in a register and the
    target written once."""
    _check(target, source, at, count, start, first, run, taps, tap_step)

    def codegen(context, builder, signature, args):
        target, at, count, source, start, first, run, taps, tap_step = args
        vector, align = _vector(context, signature.args[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        to = _pointer(context, builder, signature.args[0], target, at, vector)
        total = cgutils.alloca_once(builder, vector)        # a register, once LLVM is done
        builder.store(builder.call(load, [to, align, on, ir.Constant(vector, ir.Undefined)]),
                      total)
        zeros, run = ir.Constant(vector, [0.0] * LANES), _splat(builder, run)
        with cgutils.for_range(builder, taps) as loop:
            q = loop.index
            shift = builder.sub(first, q)                   # first − q: may wrap below 0
            inside = builder.icmp_unsigned("<", builder.add(_LANE_NUMBERS,
                                                            _splat(builder, shift)), run)
            at_q = builder.add(builder.add(start, builder.mul(q, tap_step)), shift)
            term = builder.call(load, [
                _pointer(context, builder, signature.args[3], source, at_q, vector), align,
                builder.and_(on, inside), zeros])
            builder.store(builder.fadd(builder.load(total), term), total)
        builder.call(store, [builder.load(total), to, align, on])
    sig = types.void(target, at, count, source, start, first, run, taps, tap_step)
    return sig, codegen


@helper()
def add_taps(target, at, width, source, start, run, taps, tap_step):
    """target[at + t] += Σ_q source[start + q·tap_step + t − q] for t < width, q < taps, each
    term only where 0 <= t − q < run: the KW runs of one output row of col2im, each shifted by
    its tap q, added onto one row of the input's gradient. Per position in the order q = 0, 1,
    ..., as adding one run after the other does; each position is written once."""
    u = np.uint64
    at, width, start, run, taps, tap_step = u(at), u(width), u(start), u(run), u(taps), u(tap_step)
    lanes = u(LANES)
    for t0 in range(u(0), width, lanes):
        _add_taps_lanes(target, at + t0, min(lanes, width - t0), source, start, t0, run, taps,
                        tap_step)


@intrinsic
def _window_rows_lanes(typingctx, target, at, count, source, start, first, run, taps, tap_step,
                       rows, row_step):
    """target[at + l] := Σ_r Σ_q source[start + r·row_step + q·tap_step + first + l − q] for
    lanes l < count, r < rows then q < taps in that order, each term only where 0 <= first +
    l − q < run, the sum begun at 0 and kept in a register (``_add_taps_lanes`` for several
    rows of window taps, the target not read)."""
    _check(target, source, at, count, start, first, run, taps, tap_step, rows, row_step)

    def codegen(context, builder, signature, args):
        target, at, count, source, start, first, run, taps, tap_step, rows, row_step = args
        vector, align = _vector(context, signature.args[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        zeros, run = ir.Constant(vector, [0.0] * LANES), _splat(builder, run)
        total = cgutils.alloca_once(builder, vector)        # a register, once LLVM is done
        builder.store(zeros, total)
        with cgutils.for_range(builder, rows) as outer:
            row = builder.add(start, builder.mul(outer.index, row_step))
            with cgutils.for_range(builder, taps) as loop:
                q = loop.index
                shift = builder.sub(first, q)               # first − q: may wrap below 0
                inside = builder.icmp_unsigned("<", builder.add(_LANE_NUMBERS,
                                                                _splat(builder, shift)), run)
                at_q = builder.add(builder.add(row, builder.mul(q, tap_step)), shift)
                term = builder.call(load, [
                    _pointer(context, builder, signature.args[3], source, at_q, vector), align,
                    builder.and_(on, inside), zeros])
                builder.store(builder.fadd(builder.load(total), term), total)
        to = _pointer(context, builder, signature.args[0], target, at, vector)
        builder.call(store, [builder.load(total), to, align, on])
    sig = types.void(target, at, count, source, start, first, run, taps, tap_step, rows,
                     row_step)
    return sig, codegen


@helper()
def window_rows(target, at, width, source, start, run, taps, tap_step, rows, row_step):
    """target[at + t] := Σ_r Σ_q source[start + r·row_step + q·tap_step + t − q] for t <
    width, r < rows, q < taps, each term only where 0 <= t − q < run: a whole row of col2im's
    output (the input's gradient), the KW shifted runs of each of the ``rows`` window rows
    that land on it, summed in a register in the order r, then q, and written once, without
    reading the row first (``add_taps`` for a row that several window rows reach)."""
    u = np.uint64
    at, width, start, run, taps, tap_step = u(at), u(width), u(start), u(run), u(taps), u(tap_step)
    lanes, rows, row_step = u(LANES), u(rows), u(row_step)
    for t0 in range(u(0), width, lanes):
        _window_rows_lanes(target, at + t0, min(lanes, width - t0), source, start, t0, run,
                           taps, tap_step, rows, row_step)


#: output channels whose sums ``taps_block`` keeps in registers at once, at most: each tap's
#: input vector loaded once for the 8 (the fused multiply-adds of independent sums also hide
#: each other's latency); the weights' layout (``conv_direct.blocked``)
CHANNELS = 8


def _taps_block_of(registers, vectors):
    """``_taps_block`` for ``registers`` output channels (at most CHANNELS) of LANES·``vectors``
    positions: registers × vectors sums in vector registers."""
    @intrinsic
    def _taps_block(typingctx, rows, length, image, offsets, weights, bias, k0, count, channels):
        """rows[o·length + k0 + l] := bias[o] + Σ_t weights[t·CHANNELS + o] · image[offsets[t]
        + k0 + l] for lanes l < count (at most LANES·vectors) and channels o < ``channels``
        (at most ``registers``), t = 0, 1, ... in order, each step one fused multiply-add
        where the machine has it (llvm.fmuladd)."""
        _check(rows, image, length, k0, count, channels)
        _check(weights, bias)
        if not (isinstance(offsets, types.Array) and offsets.dtype == types.uint64
                and offsets.ndim == 1):
            raise TypeError("lanes_numba: the offsets are a 1-D uint64 array")

        def codegen(context, builder, signature, args):
            rows, length, image, offsets, weights, bias, k0, count, channels = args
            kinds = signature.args
            vector, align = _vector(context, kinds[0])
            load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
            fmuladd = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vector, [vector] * 3),
                f"llvm.fmuladd.v{LANES}{'f32' if vector.element == ir.FloatType() else 'f64'}")
            on, whole = [], []
            for v in range(vectors):
                first = ir.Constant(_I64, v * LANES)
                on.append(builder.icmp_unsigned("<", builder.add(_LANE_NUMBERS, _splat(
                    builder, first)), _splat(builder, count)))
                whole.append(builder.icmp_unsigned(">=", count,
                                                   ir.Constant(_I64, (v + 1) * LANES)))
            array = context.make_array
            weights_data = array(kinds[4])(context, builder, weights).data
            bias_data = array(kinds[5])(context, builder, bias).data
            offsets_array = array(kinds[3])(context, builder, offsets)
            taps = builder.extract_value(offsets_array.shape, 0)

            def broadcast(pointer):
                return _splat_value(builder, vector, builder.load(pointer))

            sums = []
            for o in range(registers):                      # registers, once LLVM is done
                start = broadcast(builder.gep(bias_data, [ir.Constant(_I64, o)]))
                sums.append([cgutils.alloca_once(builder, vector) for _ in range(vectors)])
                for v in range(vectors):
                    builder.store(start, sums[o][v])
            with cgutils.for_range(builder, taps) as loop:
                t = loop.index
                offset = builder.add(builder.load(builder.gep(offsets_array.data, [t])), k0)
                values = [builder.call(load, [
                    _pointer(context, builder, kinds[2], image,
                             builder.add(offset, ir.Constant(_I64, v * LANES)), vector),
                    align, on[v], ir.Constant(vector, [0.0] * LANES)]) for v in range(vectors)]
                base = builder.mul(t, ir.Constant(_I64, CHANNELS))
                for o in range(registers):
                    weight = broadcast(builder.gep(weights_data,
                                                   [builder.add(base, ir.Constant(_I64, o))]))
                    for v in range(vectors):
                        builder.store(builder.call(fmuladd, [weight, values[v],
                                                             builder.load(sums[o][v])]),
                                      sums[o][v])
            for o in range(registers):
                wanted = builder.icmp_unsigned("<", ir.Constant(_I64, o), channels)
                with builder.if_then(wanted):
                    for v in range(vectors):
                        at = builder.add(builder.add(builder.mul(ir.Constant(_I64, o), length),
                                                     k0), ir.Constant(_I64, v * LANES))
                        to = _pointer(context, builder, kinds[0], rows, at, vector)
                        with builder.if_else(whole[v]) as (plain, masked):
                            with plain:         # every vector but a row's last: no mask needed
                                builder.store(builder.load(sums[o][v]), to, align=align.constant)
                            with masked:        # (nothing where the lanes start past count)
                                builder.call(store, [builder.load(sums[o][v]), to, align, on[v]])
        sig = types.void(rows, length, image, offsets, weights, bias, k0, count, channels)
        return sig, codegen
    return _taps_block


#: (output channels, vectors of LANES positions) of the register blocks: 8 × 2 for 7 or 8
#: channels, 6 × 2 and 4 × 3 for fewer (12 sums: no multiply-add spent on a channel that is
#: not there). Measured on an Intel Xeon, 2 threads, forward of 64 images: LeNet-5's first
#: layer (6 channels) 165 µs with 8 × 1, 136 with 6 × 2; resnet_small's first (8) 885 µs with
#: 8 × 1, 840 with 8 × 2
_BLOCKS = ((4, 3), (6, 2), (CHANNELS, 2))
_TAPS_BLOCKS = tuple(_taps_block_of(*shape) for shape in _BLOCKS)
_taps_4x3, _taps_6x2, _taps_8x2 = _TAPS_BLOCKS


@helper()
def taps_block(rows, length, image, offsets, weights, bias, channels):
    """rows[o·length + k] := bias[o] + Σ_t weights[t·CHANNELS + o] · image[offsets[t] + k]
    for k < length and o < channels (at most CHANNELS): the direct convolution's sums of
    ``channels`` output channels over the grid of one image (``conv_direct``), a block of
    positions times channels at a time in registers (``_BLOCKS``), the taps t in order.
    weights (T·CHANNELS,) holds tap t's weights of the CHANNELS channels side by side (zeros
    past ``channels``), bias (CHANNELS,) likewise."""
    u = np.uint64
    length, channels, lanes = u(length), u(channels), u(LANES)
    if channels <= u(4):
        for k0 in range(u(0), length, u(3) * lanes):
            _taps_4x3(rows, length, image, offsets, weights, bias, k0,
                      min(u(3) * lanes, length - k0), channels)
    elif channels <= u(6):
        for k0 in range(u(0), length, u(2) * lanes):
            _taps_6x2(rows, length, image, offsets, weights, bias, k0,
                      min(u(2) * lanes, length - k0), channels)
    else:
        for k0 in range(u(0), length, u(2) * lanes):
            _taps_8x2(rows, length, image, offsets, weights, bias, k0,
                      min(u(2) * lanes, length - k0), channels)