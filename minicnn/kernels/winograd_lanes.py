"""Winograd's input and output transforms in whole vector instructions (``conv_winograd``).

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
MaxPool2D(2) takes, so the full output is never written. The input transform V = Bᵀ d B is
the same story (15.7 µs per image of that layer as loops): ``input_tiles`` reads a 4×4 tile's
columns for 16 tiles at once, the even and odd columns of two vector loads split by a shuffle.
Together: that layer (with its ReLU and pool) predicts 10,000 images in 490 ms instead of
950, on 2 threads of the same Xeon.

The values are the loops' bits: the same additions in the same order, the ReLU
``0 if y <= 0 else y + 0`` and the strict ``>`` of ``pool_numba.max_2x2_plane`` (a NaN never
wins against the first value; the first of equal values keeps the gradient).
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from .jit import helper
from .lanes_numba import (_I32, _I64, _LANE_NUMBERS, LANES, _check, _masked, _pointer, _splat,
                          _splat_bit, _splat_value, _vector)


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
    b = _splat_value(builder, vector, bias)
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


@intrinsic
def _rows_lanes(typingctx, m, start, stride, count, bias, relu, out, at, width, second):
    """out[at + 2l + i] := y0i and, when ``second``, out[at + W + 2l + i] := y1i (W =
    ``second``) for the tiles l < count of m (see _outputs), only the output columns 2l + i
    < width."""
    _check(m, out, start, stride, count, relu, at, width, second)

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
    _check(m, out, start, stride, count, relu, at, W, keep)
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
            to = _pointer(context, builder, kinds[8], winner, at, integers)
            builder.call(_masked(builder, "store", integers), [where, to, ir.Constant(_I32, 8),
                                                               on])
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



def _columns(context, builder, kind, array, at, limit):
    """(even, odd): the values array[at + 2l] and array[at + 2l + 1] of the lanes l, read as
    two vectors (masked to the columns < limit, zeros past them) and split by a shuffle."""
    vector, align = _vector(context, kind)
    load = _masked(builder, "load", vector)
    halves = []
    for h in (0, 1):
        columns = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
        inside = builder.icmp_unsigned("<", columns, _splat(builder, limit))
        to = _pointer(context, builder, kind, array, builder.add(at, ir.Constant(_I64, h * LANES)),
                      vector)
        halves.append(builder.call(load, [to, align, inside, ir.Constant(vector, [0.0] * LANES)]))
    return [builder.shuffle_vector(halves[0], halves[1], ir.Constant(
        ir.VectorType(_I32, LANES), [2 * i + parity for i in range(LANES)])) for parity in (0, 1)]


@intrinsic
def _input_lanes(typingctx, x, at, W, limit, count, v, v_at, T):
    """v[v_at + (4k + i)·T + l] := (Bᵀ d B)[k, i] for the tiles l < count whose 4×4 input d
    starts at x[at + 2l] (rows W apart; only the columns < limit of each row are read), in
    conv_winograd._transform_input's order: Bᵀ down the columns, then B along the rows."""
    _check(x, v, at, W, limit, count, v_at, T)

    def codegen(context, builder, signature, args):
        x, at, W, limit, count, v, v_at, T = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        # d[r][q]: row r of the tiles, column 2l + q, for q = 0..3
        d = []
        for r in range(4):
            row_at = builder.add(at, builder.mul(ir.Constant(_I64, r), W))
            first = _columns(context, builder, kinds[0], x, row_at, limit)
            later = _columns(context, builder, kinds[0], x,
                             builder.add(row_at, ir.Constant(_I64, 2)),
                             builder.sub(limit, ir.Constant(_I64, 2)))
            d.append(first + later)
        f = builder
        rows = [[f.fsub(d[0][q], d[2][q]), f.fadd(d[1][q], d[2][q]), f.fsub(d[2][q], d[1][q]),
                 f.fsub(d[1][q], d[3][q])] for q in range(4)]         # rows[q][k]
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        store = _masked(builder, "store", vector)
        for k in range(4):
            r = [rows[q][k] for q in range(4)]
            values = [f.fsub(r[0], r[2]), f.fadd(r[1], r[2]), f.fsub(r[2], r[1]),
                      f.fsub(r[1], r[3])]
            for i, value in enumerate(values):
                to = _pointer(context, builder, kinds[5], v, builder.add(
                    v_at, builder.mul(ir.Constant(_I64, 4 * k + i), T)), vector)
                builder.call(store, [value, to, align, on])
    return types.void(x, at, W, limit, count, v, v_at, T), codegen


@helper()
def input_tiles(x, at, channel_step, W, TH, TW, C, v, T):
    """v[(16c + ξ)·T + t] := Bᵀ d B of every 4×4 tile d (two apart) of a padded image in x:
    channel c's plane (2·TH + 2 rows of W = 2·TW + 2) at x[at + c·channel_step:], the tiles
    t = ti·TW + tj row by row; v (C·16·T,) holds V (C, 16, tiles)."""
    u = np.uint64
    at, channel_step, W, TH, TW, T = u(at), u(channel_step), u(W), u(TH), u(TW), u(T)
    lanes, two, zero = u(LANES), u(2), u(0)
    for c in range(u(C)):
        for ti in range(TH):
            row_at = at + c * channel_step + two * ti * W
            for j0 in range(zero, TW, lanes):
                _input_lanes(x, row_at + two * j0, W, W - two * j0, min(lanes, TW - j0), v,
                             u(16) * c * T + ti * TW + j0, T)


@intrinsic
def _gradient_lanes(typingctx, dout, at, limit, below, below_limit, count, dm, dm_at, T):
    """dm[dm_at + (4k + i)·T + l] := (A dY Aᵀ)[k, i] for the tiles l < count whose 2×2
    gradient dY is dout[at + 2l:][:2] over dout[below + 2l:][:2]; a column ≥ limit
    (≥ below_limit in the second row: 0 when the row is missing) counts as 0. In
    conv_winograd's order: A down the columns, rows (a, a + c, a − c, −c); then Aᵀ along the
    rows, (p, p + q, p − q, −q)."""
    _check(dout, dm, at, limit, below, below_limit, count, dm_at, T)

    def codegen(context, builder, signature, args):
        dout, at, limit, below, below_limit, count, dm, dm_at, T = args
        kinds = signature.args
        a = _columns(context, builder, kinds[0], dout, at, limit)
        c = _columns(context, builder, kinds[0], dout, below, below_limit)
        _store_gradients(context, builder, kinds[6], a, c, count, dm, dm_at, T)
    return types.void(dout, at, limit, below, below_limit, count, dm, dm_at, T), codegen


def _store_gradients(context, builder, kind, a, c, count, dm, dm_at, T):
    """dm[dm_at + (4k + i)·T + l] := (A dY Aᵀ)[k, i], lanes l < count, for the tiles dY =
    [[a0, a1], [c0, c1]] (a and c: the vectors of the tiles' first and second columns): A down
    the columns, rows (a, a + c, a − c, −c); then Aᵀ along the rows, (p, p + q, p − q, −q)."""
    vector, align = _vector(context, kind)
    f = builder
    rows = [[a[q], f.fadd(a[q], c[q]), f.fsub(a[q], c[q]), f.fneg(c[q])] for q in (0, 1)]
    on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
    store = _masked(builder, "store", vector)
    for k in range(4):
        p, q = rows[0][k], rows[1][k]
        for i, value in enumerate((p, f.fadd(p, q), f.fsub(p, q), f.fneg(q))):
            to = _pointer(context, builder, kind, dm, builder.add(
                dm_at, builder.mul(ir.Constant(_I64, 4 * k + i), T)), vector)
            builder.call(store, [value, to, align, on])


@helper()
def output_gradient_tiles(dout, at, H_out, W_out, O, dm, T):
    """dm[(16o + ξ)·T + t] := A dY Aᵀ of every 2×2 tile dY of the output gradient planes
    (O, H_out, W_out) at dout[at:], the tiles t row by row (the gradient of M, since
    Y = Aᵀ M A); outputs past H_out or W_out count as 0 (the forward pass dropped them)."""
    u = np.uint64
    at, H_out, W_out, T = u(at), u(H_out), u(W_out), u(T)
    TH, TW = (H_out + u(1)) // u(2), (W_out + u(1)) // u(2)
    lanes, one, two, zero = u(LANES), u(1), u(2), u(0)
    for o in range(u(O)):
        for ti in range(TH):
            top = at + (o * H_out + two * ti) * W_out
            below_rows = W_out if two * ti + one < H_out else zero
            for j0 in range(zero, TW, lanes):
                columns = W_out - two * j0
                _gradient_lanes(dout, top + two * j0, columns, top + W_out + two * j0,
                                min(columns, below_rows), min(lanes, TW - j0), dm,
                                u(16) * o * T + ti * TW + j0, T)


@intrinsic
def _pooled_lanes(typingctx, dpool, at, pooled, winner, corner, W, clipped, clip, count, dm,
                  dm_at, T):
    """As _gradient_lanes, for a convolution's output whose 2×2 max-pool (its tiles) had the
    gradient dpool: tile l < pooled gets g = 0 + dpool[at + l] (0 where ``clip`` and
    clipped[at + l], the pooled output, is not > 0: the ReLU's gradient) at its maximum,
    winner[at + l] (corner + 2l, + 1, + W or + W + 1 in the output plane of width W), 0 at its
    other three outputs: what ``pool_numba.max_backward`` writes into zeros. Tiles pooled <= l <
    count get 0 (the pool dropped them)."""
    _check(dpool, dm, at, pooled, W, clip, count, dm_at, T)
    if not (isinstance(winner, types.Array) and winner.dtype == types.int64
            and winner.ndim == 1 and corner == types.int64 and clipped == dpool):
        raise TypeError("winograd_lanes: winner 1-D int64, corner int64, clipped as dpool")

    def codegen(context, builder, signature, args):
        dpool, at, pooled, winner, corner, W, clipped, clip, count, dm, dm_at, T = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load = _masked(builder, "load", vector)
        zeros = ir.Constant(vector, [0.0] * LANES)
        inside = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, pooled))
        g = builder.call(load, [_pointer(context, builder, kinds[0], dpool, at, vector), align,
                                inside, zeros])
        clipping = _splat_bit(builder, builder.icmp_unsigned("!=", clip, ir.Constant(_I64, 0)))
        y = builder.call(load, [_pointer(context, builder, kinds[6], clipped, at, vector), align,
                                builder.and_(inside, clipping), zeros])
        g = builder.select(builder.or_(builder.not_(clipping), builder.fcmp_ordered(">", y, zeros)),
                           g, zeros)
        g = builder.fadd(zeros, g)
        integers = ir.VectorType(_I64, LANES)
        where = builder.call(_masked(builder, "load", integers), [
            _pointer(context, builder, kinds[3], winner, at, integers), ir.Constant(_I32, 8),
            inside, ir.Constant(integers, [0] * LANES)])
        offset = builder.sub(where, builder.add(_splat(builder, corner),
                                                builder.add(_LANE_NUMBERS, _LANE_NUMBERS)))
        one = _splat(builder, ir.Constant(_I64, 1))
        at_w = _splat(builder, W)
        values = [builder.select(builder.icmp_signed("==", offset, position), g, zeros)
                  for position in (_splat(builder, ir.Constant(_I64, 0)), one, at_w,
                                   builder.add(at_w, one))]
        _store_gradients(context, builder, kinds[9], values[:2], values[2:], count, dm, dm_at, T)
    sig = types.void(dpool, at, pooled, winner, corner, W, clipped, clip, count, dm, dm_at, T)
    return sig, codegen


@helper()
def pooled_gradient_tiles(dpool, at, clipped, clip, winner, H_out, W_out, O, dm, T):
    """dm[(16o + ξ)·T + t] := A dY Aᵀ of every 2×2 tile dY of the gradient of the output planes
    (O, H_out, W_out) whose 2×2 max-pool (O, ⌊H_out/2⌋, ⌊W_out/2⌋) had the gradient
    dpool[at:] (with ``clip``, only where clipped[at:], the pooled output, is > 0; the maxima
    at winner[at:]): the output's gradient never written (``_pooled_lanes``)."""
    u = np.uint64
    at, clip, H_out, W_out, T = u(at), u(clip), u(H_out), u(W_out), u(T)
    TH, TW = (H_out + u(1)) // u(2), (W_out + u(1)) // u(2)
    PH, PW = H_out // u(2), W_out // u(2)
    lanes, two, zero = u(LANES), u(2), u(0)
    W = np.int64(W_out)
    for o in range(u(O)):
        for ti in range(TH):
            for j0 in range(zero, TW, lanes):
                pooled = min(lanes, PW - j0) if ti < PH and j0 < PW else zero
                _pooled_lanes(dpool, at + (o * PH + ti) * PW + j0, pooled, winner,
                              np.int64(two * ti) * W + np.int64(two * j0), u(W), clipped, clip,
                              min(lanes, TW - j0), dm, u(16) * o * T + ti * TW + j0, T)


@intrinsic
def _band_lanes(typingctx, dv, at, T, count, first, bands, band_at, stride):
    """Along the rows of B dV Bᵀ, for the tiles l < count of one row of tiles, channel c:
    bands[band_at + k·stride + 2l] := g0 + ((p1 + p2) − p0) and
    bands[band_at + k·stride + 2l + 1] := ((g1 − g2) + g3) − p3, g_i = dv[at + (4k + i)·T + l]
    the tile's and p_i the one before's (dv[... − 1]); with ``first``, lane 0 starts the row:
    g0 and (g1 − g2) + g3 (conv_winograd's order)."""
    _check(dv, bands, at, T, count, first, band_at, stride)

    def codegen(context, builder, signature, args):
        dv, at, T, count, first, bands, band_at, stride = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        f, zeros = builder, ir.Constant(vector, [0.0] * LANES)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))
        starts = builder.and_(builder.icmp_unsigned("==", _LANE_NUMBERS, _splat(
            builder, ir.Constant(_I64, 0))), _splat_bit(builder, builder.icmp_unsigned(
                "!=", first, ir.Constant(_I64, 0))))
        before = builder.and_(on, builder.not_(starts))
        interleave = [ir.Constant(ir.VectorType(_I32, LANES),
                                  [h * LANES // 2 + i // 2 + (i % 2) * LANES
                                   for i in range(LANES)]) for h in (0, 1)]
        for k in range(4):
            row = [builder.add(at, builder.mul(ir.Constant(_I64, 4 * k + i), T))
                   for i in range(4)]
            g = [builder.call(load, [_pointer(context, builder, kinds[0], dv, row[i], vector),
                                     align, on, zeros]) for i in range(4)]
            p = [builder.call(load, [_pointer(context, builder, kinds[0], dv, builder.sub(
                row[i], ir.Constant(_I64, 1)), vector), align, before, zeros]) for i in range(4)]
            odd_start = f.fadd(f.fsub(g[1], g[2]), g[3])
            even = builder.select(starts, g[0], f.fadd(g[0], f.fsub(f.fadd(p[1], p[2]), p[0])))
            odd = builder.select(starts, odd_start, f.fsub(odd_start, p[3]))
            to_row = builder.add(band_at, builder.mul(ir.Constant(_I64, k), stride))
            for h, shuffle in enumerate(interleave):
                columns = builder.add(_LANE_NUMBERS, _splat(builder, ir.Constant(_I64, h * LANES)))
                inside = builder.icmp_unsigned("<", columns, _splat(builder, builder.add(
                    count, count)))
                to = _pointer(context, builder, kinds[5], bands,
                              builder.add(to_row, ir.Constant(_I64, h * LANES)), vector)
                builder.call(store, [builder.shuffle_vector(even, odd, shuffle), to, align,
                                     inside])
    return types.void(dv, at, T, count, first, bands, band_at, stride), codegen


@intrinsic
def _input_row_lanes(typingctx, bands, rows_at, above_at, stride, odd, count, dx, dx_at, clip,
                     x):
    """Down the columns of B dV Bᵀ, one row of the input's gradient, lanes l < count:
    dx[dx_at + l] := r0 + ((a1 + a2) − a0) (``odd`` 0) or ((r1 − r2) + r3) − a3, r_k =
    bands[rows_at + k·stride + l] this band's and a_k = bands[above_at + k·stride + l] the one
    before's; with ``clip``, 0 where x[dx_at + l] > 0 does not hold."""
    _check(bands, dx, rows_at, above_at, stride, odd, count, dx_at, clip)
    if x != dx:
        raise TypeError("winograd_lanes: x is an array like dx")

    def codegen(context, builder, signature, args):
        bands, rows_at, above_at, stride, odd, count, dx, dx_at, clip, x = args
        kinds = signature.args
        vector, align = _vector(context, kinds[0])
        load, store = _masked(builder, "load", vector), _masked(builder, "store", vector)
        f, zeros = builder, ir.Constant(vector, [0.0] * LANES)
        on = builder.icmp_unsigned("<", _LANE_NUMBERS, _splat(builder, count))

        def band(start, k):
            return builder.call(load, [_pointer(context, builder, kinds[0], bands, builder.add(
                start, builder.mul(ir.Constant(_I64, k), stride)), vector), align, on, zeros])
        r = [band(rows_at, k) for k in range(4)]
        a = [band(above_at, k) for k in range(4)]
        even_value = f.fadd(r[0], f.fsub(f.fadd(a[1], a[2]), a[0]))
        odd_value = f.fsub(f.fadd(f.fsub(r[1], r[2]), r[3]), a[3])
        value = builder.select(_splat_bit(builder, builder.icmp_unsigned(
            "!=", odd, ir.Constant(_I64, 0))), odd_value, even_value)
        clipping = _splat_bit(builder, builder.icmp_unsigned("!=", clip, ir.Constant(_I64, 0)))
        x_values = builder.call(load, [_pointer(context, builder, kinds[9], x, dx_at, vector),
                                       align, builder.and_(on, clipping), zeros])
        kept = builder.or_(builder.not_(clipping), builder.fcmp_ordered(">", x_values, zeros))
        builder.call(store, [builder.select(kept, value, zeros),
                             _pointer(context, builder, kinds[6], dx, dx_at, vector), align, on])
    sig = types.void(bands, rows_at, above_at, stride, odd, count, dx, dx_at, clip, x)
    return sig, codegen


@helper()
def input_gradient_planes(dv, T, dx, at, H, W, C, pad_top, pad_left, TH, TW, bands, clip, x):
    """dx[at:] (C, H, W) := the inside (from row pad_top, column pad_left) of Σ over the tiles
    of B dV Bᵀ, each 4×4 result at its tile of the padded image, tiles two apart; dv (C·16·T,)
    holds dV (C, 16, tiles). With ``clip``, 0 where x[at:] (C, H, W) is not > 0 (the gradient
    of the ReLU whose output x is). bands (2·4·stride,), stride ≥ 2·TW + 2: two bands of four
    rows, this row of tiles' and the one before's (conv_winograd._untransform_input)."""
    u = np.uint64
    T, at, H, W, pad_top, pad_left = u(T), u(at), u(H), u(W), u(pad_top), u(pad_left)
    TH, TW, clip = u(TH), u(TW), u(clip)
    lanes, one, two, four, zero = u(LANES), u(1), u(2), u(4), u(0)
    stride = u(bands.size) // u(8)
    band_size = four * stride
    last = TW - one
    for c in range(u(C)):
        bands[band_size:] = 0                       # the band before the first
        for ti in range(TH + one):
            rows_at, above_at = (ti % two) * band_size, ((ti + one) % two) * band_size
            if ti < TH:
                first = u(16) * c * T + ti * TW
                for j0 in range(zero, TW, lanes):
                    _band_lanes(dv, first + j0, T, min(lanes, TW - j0), u(j0 == zero), bands,
                                rows_at + two * j0, stride)
                for k in range(four):
                    g = first + u(4) * k * T + last
                    bands[rows_at + k * stride + two * TW] = (dv[g + T] + dv[g + two * T]) - dv[g]
                    bands[rows_at + k * stride + two * TW + one] = -dv[g + u(3) * T]
            else:
                bands[rows_at:rows_at + band_size] = 0    # the band after the last
            for half in range(two):                 # padded rows 2·ti and 2·ti + 1
                h = two * ti + half
                if pad_top <= h < pad_top + H:
                    row = at + (c * H + h - pad_top) * W
                    for s0 in range(zero, W, lanes):
                        _input_row_lanes(bands, rows_at + pad_left + s0, above_at + pad_left + s0,
                                         stride, half, min(lanes, W - s0), dx, row + s0, clip, x)
