"""Short contiguous runs copied or added in whole vector instructions, for im2col and col2im.

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

The values are the same bits as the loops': a copy is a copy, and ``add_taps`` adds each
position's terms in the loops' order. Offsets are unsigned or signed integers, and nothing is
checked: as for every index inside the kernels, the caller keeps the runs inside the arrays.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from .jit import helper

LANES = 16      # one AVX-512 register of float32, two of float64

_I32, _I64 = ir.IntType(32), ir.IntType(64)
_LANE_NUMBERS = ir.Constant(ir.VectorType(_I64, LANES), list(range(LANES)))


def _splat(builder, value):
    """A vector of LANES copies of the 64-bit integer ``value``."""
    one = builder.insert_element(ir.Constant(ir.VectorType(_I64, LANES), ir.Undefined), value,
                                 ir.Constant(_I32, 0))
    return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(_I32, LANES), [0] * LANES))


def _vector(context, array_type):
    """The vector of LANES elements of the array's dtype, and its elements' alignment."""
    element = context.get_data_type(array_type.dtype)
    return ir.VectorType(element, LANES), ir.Constant(_I32, context.get_abi_sizeof(element))


def _pointer(context, builder, array_type, array, offset, vector):
    """&array[offset], as a pointer to ``vector``."""
    data = context.make_array(array_type)(context, builder, array).data
    return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())


def _masked(builder, kind, vector):
    """LLVM's llvm.masked.load or llvm.masked.store of ``vector``."""
    suffix = f"v{LANES}{'f32' if vector.element == ir.FloatType() else 'f64'}.p0"
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
        raise TypeError("runs_numba: two 1-D float32 or float64 arrays of one dtype")
    if any(integer != types.uint64 for integer in integers):
        raise TypeError("runs_numba: the offsets and counts are uint64")


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
