"""The kinds of layer the checker grades: configurations, references, tolerances, hints.

A kind knows the minicnn class it compares with, draws configurations with hypothesis
(``configs()``), and runs one (``run(cls, cfg, against, used)``): it builds minicnn's layer and
the learner's with the same constructor arguments, copies minicnn's weights into the learner's
parameters, runs both forward on the same input and backward on the same random upstream
gradient ``dy``, and raises ``Mismatch`` (minicnn/check/outcome.py) at the first quantity that
differs from minicnn's, then from each framework's in ``against`` ("torch", "keras"), then from
central differences of the learner's own forward ("numeric", float64 only).

Tolerances. For the layers that only add products (convolution, dense, pooling) every entry
is a sum of at most n terms, and a sum computed in ANY order errs by at most about n·u·Σ|terms|
(u the unit roundoff; Higham, Accuracy and Stability of Numerical Algorithms, §3.1 and §4.2).
Σ|terms| per entry is what the reference computes from |x|, |w| and |dy|, so an entry may
differ by 4·n·u·(that): the learner's rounding plus the reference's, with a factor 2 to spare.
A right answer passes on any CPU and summation order; a wrong formula misses by far more.
BatchNorm, the loss and Adam divide, take roots and exponentials: their bounds are written
beside them.
"""
import math

import numpy as np

from .. import layers as L
from .. import losses as LS
from .. import optim
from ..core.parameter import Parameter
from ..core.shapes import resolve_padding, window_output_size
from ..kernels import conv_fast
from . import twins
from .compare import UNIT_ROUNDOFF, central_differences, check_quantity
from .outcome import Mismatch, call

FRAMEWORKS = ("torch", "keras")
NUMERIC_ENTRIES = 20  # entries per array checked by central differences


def _st():
    import hypothesis.strategies as st  # the checker's one runtime need beyond NumPy
    return st


def named_params(obj):
    """[(name, parameter)] of the learner's object: its named_parameters() when it has one,
    else every attribute holding something with .data and .grad."""
    if hasattr(obj, "named_parameters"):
        return list(obj.named_parameters())
    return [(k, v) for k, v in vars(obj).items() if hasattr(v, "data") and hasattr(v, "grad")]


def copy_weights(ref, mine, cfg):
    """Give the learner's layer minicnn's parameter values (copies), by name."""
    theirs = dict(named_params(mine))
    for name, p in ref.named_parameters():
        if name not in theirs:
            raise Mismatch("parameters", "minicnn", cfg,
                           f"no parameter {name!r}; yours are {sorted(theirs) or 'none'}",
                           hint=f"keep minicnn's names: self.{name} = Parameter(...)")
        theirs[name].data = p.data.copy()
        theirs[name].grad = np.zeros_like(p.data)


def _agrees(theirs, ref, tol):
    """Whether a framework's results agree with minicnn's reference within twice ``tol``."""
    return all(np.shape(theirs[q]) == np.shape(ref[q]) and np.all(
        np.abs(np.asarray(theirs[q], np.float64) - ref[q]) <= 2 * np.asarray(tol[q]))
        for q in theirs)


class Tally(set):
    """The references a check compared with, and how often a framework was skipped because it
    disagreed with minicnn's own layer (then it cannot tell right from wrong)."""

    def __init__(self):
        super().__init__()
        self.skipped = {}

    def skip(self, name):
        self.skipped[name] = self.skipped.get(name, 0) + 1


def _axis_reads(size, kernel, stride, pad_before, dilation, out):
    """How many (output position, tap) pairs read each input position along one axis."""
    reads = np.zeros(size, np.int64)
    for i in range(out):
        for p in range(kernel):
            h = i * stride + p * dilation - pad_before
            if 0 <= h < size:
                reads[h] += 1
    return reads


class LayerKind:
    """A layer kind: forward(x) -> y, backward(dy) -> dx, parameter gradients in .grad."""

    name = ""
    reference = None
    quantities = "output, dx"

    # -- what subclasses say ------------------------------------------------------------
    def configs(self):
        raise NotImplementedError

    def smoke(self):
        raise NotImplementedError

    def constructor(self, cfg):
        raise NotImplementedError

    def input_shape(self, cfg):
        raise NotImplementedError

    def terms(self, cfg, y_shape):
        """The most terms any entry of any quantity sums (for the tolerance)."""
        raise NotImplementedError

    def context(self, cfg, x, dy, y_shape):
        """What the hints may use (minicnn/check/hints.py)."""
        return {}

    def build(self, cfg, seed):
        kwargs = self.constructor(cfg)
        if "dtype" in kwargs:  # layers with weights draw them from their own generator
            kwargs["rng"] = seed
        return self.reference(**kwargs)

    def make_input(self, cfg, rng):
        return rng.standard_normal(self.input_shape(cfg)).astype(cfg["dtype"])

    def numeric_ok(self, cfg):
        return True

    # -- one configuration --------------------------------------------------------------
    def tolerances(self, cfg, x, dy, y_shape):
        """{quantity: allowed |mine − theirs| per entry}: 4·n·u·(the reference on |x|, |w|, |dy|)."""
        ref = self.build(cfg, cfg["seed"])
        for p in ref.parameters():
            p.data = np.abs(p.data)
        scale = 4 * self.terms(cfg, y_shape) * UNIT_ROUNDOFF[np.dtype(cfg["dtype"])]
        y = ref.forward(self.abs_input(x))
        dx = ref.backward(np.abs(dy))
        tol = {"output": scale * np.abs(y), "dx": scale * np.abs(dx)}
        for name, p in ref.named_parameters():
            tol[f"{name}.grad"] = scale * np.abs(p.grad)
        return tol

    def abs_input(self, x):
        return np.abs(x)

    def run(self, cls, cfg, against, used):
        dtype = np.dtype(cfg["dtype"])
        rng = np.random.default_rng(cfg["seed"])
        ref = self.build(cfg, cfg["seed"])
        self.prepare(ref, rng)
        mine = call(cls, None, cfg, **self.constructor(cfg))
        copy_weights(ref, mine, cfg)
        x = self.make_input(cfg, rng)
        self.before_forward(cls, mine, ref, x, cfg)
        y_ref = ref.forward(x.copy())
        dy = rng.standard_normal(y_ref.shape).astype(dtype)
        dx_ref = ref.backward(dy.copy())
        grads_ref = {f"{name}.grad": p.grad.copy() for name, p in ref.named_parameters()}
        tol = self.tolerances(cfg, x, dy, y_ref.shape)
        ctx = self.context(cfg, x, dy, y_ref.shape)
        y = call(mine, "forward", cfg, x.copy())
        check_quantity("output", y, y_ref, tol["output"], against="minicnn", cfg=cfg, ctx=ctx,
                       dtype=dtype)
        dx = call(mine, "backward", cfg, dy.copy())
        check_quantity("dx", dx, dx_ref, tol["dx"], against="minicnn", cfg=cfg, ctx=ctx, dtype=dtype)
        own = dict(named_params(mine))
        grads = {f"{name}.grad": np.array(own[name].grad) for name, _ in ref.named_parameters()}
        for q, g in grads.items():
            check_quantity(q, g, grads_ref[q], tol[q], against="minicnn", cfg=cfg, ctx=ctx,
                           dtype=dtype)
        used.add("minicnn")
        for fw in [f for f in against if f in FRAMEWORKS]:
            try:
                y_f, dx_f, g_f = twins.framework_results(ref, x.copy(), dy.copy(), fw)
            except twins.Unsupported:
                continue
            theirs = {"output": y_f, "dx": dx_f}
            theirs.update(zip(grads, g_f))
            if not _agrees(theirs, {"output": y_ref, "dx": dx_ref, **grads_ref}, tol):
                used.skip(fw)  # the framework errs here (TensorFlow's float32 convolution with
                continue       # a stride wider than the input returns zeros): no reference
            used.add(fw)
            mine_all = {"output": y, "dx": dx, **grads}
            for q, value in theirs.items():
                check_quantity(q, mine_all[q], np.asarray(value, dtype), tol[q], against=fw,
                               cfg=cfg, ctx=ctx)
        if "numeric" in against and dtype == np.float64 and self.numeric_ok(cfg):
            used.add("numeric")
            self.numeric(mine, cfg, x, dy, dx, grads, rng)

    def prepare(self, ref, rng):
        """Change the reference's fresh weights before the copy (BatchNorm: not ones and zeros)."""

    def before_forward(self, cls, mine, ref, x, cfg):
        """Checks before the passes (im2col compares its columns here)."""

    def numeric(self, mine, cfg, x, dy, dx, grads, rng):
        """Central differences of sum(mine.forward(x) · dy) against mine's dx and gradients.

        Error of (f(a + ε) − f(a − ε)) / 2ε: ε²/6·|f'''| (zero for the piecewise-linear
        layers) plus the rounding of f, about u·Σ|terms|/ε; with ε = 1e-6 and float64 both are
        far below 1e-6 of the largest gradient, the allowance (as tests/twins.py)."""
        xw = x.copy()

        def objective():
            return float(np.sum(np.asarray(call(mine, "forward", cfg, xw.copy()), np.float64) * dy))

        arrays = [("dx", xw, dx)] + [(q, dict(named_params(mine))[q[:-5]].data, g)
                                     for q, g in grads.items()]
        for q, array, grad in arrays:
            picks = rng.choice(array.size, size=min(NUMERIC_ENTRIES, array.size), replace=False)
            numeric = np.zeros(array.shape)
            mask = np.zeros(array.shape, bool)
            numeric.reshape(-1)[picks] = central_differences(objective, array, picks)
            mask.reshape(-1)[picks] = True
            limit = 1e-9 + 1e-6 * np.max(np.abs(numeric))
            shown = np.where(mask, np.asarray(grad, np.float64), 0.0)
            check_quantity(q, shown, numeric, limit, against="numeric (central differences of "
                           "your forward)", cfg=cfg)


# ----------------------------------------------------------------------------------------
# windows: convolution and pooling
# ----------------------------------------------------------------------------------------
def _padding_strategy(st, max_pad):
    pads = st.integers(0, max_pad)
    return st.one_of(pads, st.tuples(pads, pads), st.sampled_from(["valid", "same"]),
                     st.tuples(st.tuples(pads, pads), st.tuples(pads, pads)))


def _window_context(cfg, y_shape, kernel, stride, dilation, pads, channels_reading):
    """Hints for a windowed layer: wrong output sizes, overlaps, the stride ignored in dx."""
    n, c, h, w = cfg["N"], cfg["C"], cfg["H"], cfg["W"]
    h_out, w_out = y_shape[2:]
    lead = tuple(y_shape[:2])
    shapes = []
    sizes = {}
    for a, size in ((0, h), (1, w)):
        (top, bottom) = pads[a]
        one_side = {window_output_size(size, kernel[a], stride[a], (top + bottom, 0), dilation[a]),
                    window_output_size(size, kernel[a], stride[a], (top, 0), dilation[a]),
                    window_output_size(size, kernel[a], stride[a], (0, bottom), dilation[a])}
        sizes[a] = one_side - {y_shape[2 + a]}
    for hh in sizes[0] | {h_out}:
        for ww in sizes[1] | {w_out}:
            if (hh, ww) != (h_out, w_out) and min(hh, ww) > 0:
                shapes.append((lead + (hh, ww), "the output size is off: pad BOTH sides (top and "
                               "bottom, left and right), then H_out = ⌊(H + top + bottom − "
                               "D·(kh − 1) − 1)/S⌋ + 1"))
    for dh in (-1, 1):
        for dw in (-1, 0, 1):
            for shape in (lead + (h_out + dh, w_out + dw), lead + (h_out + dw, w_out + dh)):
                shapes.append((shape, "the output size is off by one: H_out = ⌊(H + top + bottom "
                               "− D·(kh − 1) − 1)/S⌋ + 1 (the + 1 counts the first window)"))
    reads_h = _axis_reads(h, kernel[0], stride[0], pads[0][0], dilation[0], h_out)
    reads_w = _axis_reads(w, kernel[1], stride[1], pads[1][0], dilation[1], w_out)
    reads = channels_reading * np.broadcast_to(np.outer(reads_h, reads_w), (n, c, h, w))
    ctx = {"shapes": {"output": shapes}, "reads": {"dx": reads}, "stride_reach": {}}
    if max(stride) > 1:
        reach = [h_out + (kernel[0] - 1) * dilation[0] - pads[0][0] if stride[0] > 1 else h,
                 w_out + (kernel[1] - 1) * dilation[1] - pads[1][0] if stride[1] > 1 else w]
        ctx["stride_reach"]["dx"] = tuple(max(r, 0) for r in reach)
    return ctx


class Conv2DKind(LayerKind):
    name = "conv2d"
    reference = L.Conv2D
    quantities = "output, dx, weight.grad, bias.grad"

    def configs(self):
        st = _st()

        @st.composite
        def draw(d):
            k = (d(st.integers(1, 3)), d(st.integers(1, 3)))
            stride = (d(st.integers(1, 3)), d(st.integers(1, 3)))
            dilation = (d(st.integers(1, 2)), d(st.integers(1, 2)))
            padding = d(_padding_strategy(st, 2))
            eff = [dl * (kk - 1) + 1 for dl, kk in zip(dilation, k)]
            return dict(N=d(st.integers(1, 3)), C=d(st.integers(1, 3)), O=d(st.integers(1, 3)),
                        H=eff[0] + d(st.integers(0, 5)), W=eff[1] + d(st.integers(0, 5)),
                        kernel_size=k, stride=stride, padding=padding, dilation=dilation,
                        bias=d(st.booleans()), dtype=d(st.sampled_from(["float64", "float32"])),
                        seed=d(st.integers(0, 2**16)))
        return draw()

    def smoke(self):
        return dict(N=2, C=2, O=2, H=5, W=5, kernel_size=(3, 3), stride=(2, 2), padding=1,
                    dilation=(1, 1), bias=True, dtype="float64", seed=0)

    def constructor(self, cfg):
        return dict(in_channels=cfg["C"], out_channels=cfg["O"], kernel_size=cfg["kernel_size"],
                    stride=cfg["stride"], padding=cfg["padding"], dilation=cfg["dilation"],
                    bias=cfg["bias"], dtype=np.dtype(cfg["dtype"]))

    def input_shape(self, cfg):
        return (cfg["N"], cfg["C"], cfg["H"], cfg["W"])

    def pads(self, cfg):
        return resolve_padding(cfg["padding"], (cfg["H"], cfg["W"]), cfg["kernel_size"],
                               cfg["stride"], cfg["dilation"])

    def terms(self, cfg, y_shape):
        kh, kw = cfg["kernel_size"]
        return (cfg["C"] + cfg["O"]) * kh * kw + cfg["N"] * y_shape[2] * y_shape[3] + 2

    def context(self, cfg, x, dy, y_shape):
        ctx = _window_context(cfg, y_shape, cfg["kernel_size"], cfg["stride"], cfg["dilation"],
                              self.pads(cfg), cfg["O"])
        n, positions = cfg["N"], y_shape[2] * y_shape[3]
        batch = "a mean over the batch where a sum belongs: the loss already divided by N; " \
                "the layer SUMS every sample's contribution"
        ctx["factors"] = {
            "weight.grad": [(1 / n, batch), (1 / (n * positions), "weight.grad is averaged over "
                            "the batch and the positions: it is a SUM over (n, i, j)")],
            "bias.grad": [(1 / n, batch), (1 / (n * positions), "bias.grad is averaged: it is the "
                          "SUM of dy over (N, H_out, W_out)"), (1 / positions, "bias.grad is "
                          "averaged over positions: it is the SUM of dy over (N, H_out, W_out)")],
            "dx": [(1 / n, batch)],
        }
        flipped = self.build(cfg, cfg["seed"])
        flipped.weight.data = np.ascontiguousarray(flipped.weight.data[:, :, ::-1, ::-1])
        if not np.array_equal(flipped.weight.data, self.build(cfg, cfg["seed"]).weight.data):
            ctx["alternatives"] = {"output": [(
                "the kernel is turned by 180°: that is the textbook convolution; deep-learning "
                "layers compute a cross-correlation, y[i] = Σ_p x[i·S + p·D] · w[p]",
                flipped.forward(x))]}
        return ctx


class Im2ColKind(Conv2DKind):
    """A Conv2D whose forward goes through the learner's ``im2col(x_pad) -> cols``: the columns
    are compared first (exactly: im2col only copies), then the layer as a convolution."""

    name = "im2col"
    quantities = "cols, output, dx, weight.grad, bias.grad"

    def before_forward(self, cls, mine, ref, x, cfg):
        (top, bottom), (left, right) = self.pads(cfg)
        x_pad = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
        cols_ref, h_out, w_out = conv_fast.im2col(x_pad, cfg["kernel_size"], cfg["stride"],
                                                  cfg["dilation"])
        cols = call(mine, "im2col", cfg, x_pad.copy())
        n, c = x.shape[:2]
        kh, kw = cfg["kernel_size"]
        rows = cols_ref.reshape(n, h_out, w_out, c, kh, kw)
        flat = (n * h_out * w_out, c * kh * kw)
        ctx = {"alternatives": {"cols": [
            ("each row lists the taps as (kh, kw, C); the weight matrix is (O, C·kh·kw), C first, "
             "so the row must be (C, kh, kw) too", rows.transpose(0, 1, 2, 4, 5, 3).reshape(flat)),
            ("the rows are in (i, j, n) order; they must be (n, i, j): sample first, then the "
             "output row, then the column", rows.transpose(1, 2, 0, 3, 4, 5).reshape(flat))]},
            "shapes": {"cols": []}}
        for sh, sw in ((1, 1), (1, cfg["stride"][1]), (cfg["stride"][0], 1)):
            h1 = window_output_size(x_pad.shape[2], kh, sh, (0, 0), cfg["dilation"][0])
            w1 = window_output_size(x_pad.shape[3], kw, sw, (0, 0), cfg["dilation"][1])
            if (sh, sw) != tuple(cfg["stride"]):
                ctx["shapes"]["cols"].append(((n * h1 * w1, c * kh * kw), "the stride is ignored: "
                                              "window (i, j) starts at row i·S, column j·S"))
        check_quantity("cols", cols, cols_ref, 0.0, against="minicnn", cfg=cfg, ctx=ctx,
                       dtype=x.dtype)


class _PoolKind(LayerKind):
    quantities = "output, dx"

    def configs(self):
        st = _st()
        kind = self

        @st.composite
        def draw(d):
            k = (d(st.integers(1, 3)), d(st.integers(1, 3)))
            stride = d(st.one_of(st.none(), st.tuples(st.integers(1, 3), st.integers(1, 3))))
            pads = st.integers(0, min(k) - 1)
            padding = d(st.one_of(pads, st.tuples(st.integers(0, k[0] - 1), st.integers(0, k[1] - 1)),
                                  st.sampled_from(["valid", "same"])))
            cfg = dict(N=d(st.integers(1, 2)), C=d(st.integers(1, 2)),
                       H=k[0] + d(st.integers(0, 5)), W=k[1] + d(st.integers(0, 5)),
                       kernel_size=k, stride=stride, padding=padding,
                       dtype=d(st.sampled_from(["float64", "float32"])))
            cfg.update(kind.extra(d, st))
            cfg["seed"] = d(st.integers(0, 2**16))
            return cfg
        return draw()

    def extra(self, d, st):
        return {}

    def smoke(self):
        return dict(N=1, C=2, H=4, W=4, kernel_size=(2, 2), stride=None, padding=0,
                    dtype="float64", seed=0, **self.smoke_extra())

    def smoke_extra(self):
        return {}

    def constructor(self, cfg):
        return dict(kernel_size=cfg["kernel_size"], stride=cfg["stride"], padding=cfg["padding"])

    def input_shape(self, cfg):
        return (cfg["N"], cfg["C"], cfg["H"], cfg["W"])

    def stride(self, cfg):
        return cfg["kernel_size"] if cfg["stride"] is None else cfg["stride"]

    def pads(self, cfg):
        return resolve_padding(cfg["padding"], (cfg["H"], cfg["W"]), cfg["kernel_size"],
                               self.stride(cfg))

    def terms(self, cfg, y_shape):
        return cfg["kernel_size"][0] * cfg["kernel_size"][1] + 2

    def context(self, cfg, x, dy, y_shape):
        return _window_context(cfg, y_shape, cfg["kernel_size"], self.stride(cfg), (1, 1),
                               self.pads(cfg), 1)


class MaxPool2DKind(_PoolKind):
    name = "maxpool2d"
    reference = L.MaxPool2D

    def extra(self, d, st):
        return dict(ties=d(st.booleans()))

    def smoke_extra(self):
        return dict(ties=True)

    def make_input(self, cfg, rng):
        if cfg["ties"]:  # few distinct values: windows with several maxima
            return rng.integers(-1, 2, self.input_shape(cfg)).astype(cfg["dtype"])
        return super().make_input(cfg, rng)

    def abs_input(self, x):
        return x  # the max picks the same entry; |dy| then bounds the sums in dx

    def numeric_ok(self, cfg):
        return not cfg["ties"]  # at a tie the max has no derivative

    def context(self, cfg, x, dy, y_shape):
        ctx = super().context(cfg, x, dy, y_shape)
        if cfg["ties"]:
            ctx["alternatives"] = {"dx": [(
                "on ties the gradient went to every tied entry; the max is ONE entry: send dy to "
                "the first maximum of the window (row-major order, as PyTorch and minicnn)",
                self.every_tie(x, dy, cfg))]}
        return ctx

    def every_tie(self, x, dy, cfg):
        """dx when each window's dy goes to all its maxima (the mistake the hint names)."""
        (top, bottom), (left, right) = self.pads(cfg)
        (kh, kw), (sh, sw) = cfg["kernel_size"], self.stride(cfg)
        xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (top, bottom), (left, right)),
                    constant_values=-np.inf)
        dxp = np.zeros_like(xp)
        for i in range(dy.shape[2]):
            for j in range(dy.shape[3]):
                win = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]
                mask = win == win.max(axis=(2, 3), keepdims=True)
                dxp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw] += mask * dy[:, :, i, j, None, None]
        return dxp[:, :, top:top + x.shape[2], left:left + x.shape[3]]


class AvgPool2DKind(_PoolKind):
    name = "avgpool2d"
    reference = L.AvgPool2D

    def extra(self, d, st):
        return dict(count_include_pad=d(st.sampled_from([None, True, False])))

    def smoke_extra(self):
        return dict(count_include_pad=None)

    def constructor(self, cfg):
        return dict(super().constructor(cfg), count_include_pad=cfg["count_include_pad"])

    def context(self, cfg, x, dy, y_shape):
        ctx = super().context(cfg, x, dy, y_shape)
        area = cfg["kernel_size"][0] * cfg["kernel_size"][1]
        ctx["factors"] = {"dx": [(area, "dx is kh·kw times too large: the forward divided by the "
                                  "window's size, so the backward divides dy by it too")]}
        return ctx


class SumPool2DKind(_PoolKind):
    name = "sumpool2d"
    reference = L.SumPool2D

    def context(self, cfg, x, dy, y_shape):
        ctx = super().context(cfg, x, dy, y_shape)
        area = cfg["kernel_size"][0] * cfg["kernel_size"][1]
        ctx["factors"] = {"dx": [(1 / area, "dx is divided by kh·kw: a sum passes dy on unchanged "
                                  "to every entry of its window (that division is average pooling)")]}
        return ctx


class DenseKind(LayerKind):
    name = "dense"
    reference = L.Dense
    quantities = "output, dx, weight.grad, bias.grad"

    def configs(self):
        st = _st()
        return st.fixed_dictionaries(dict(
            N=st.integers(1, 4), in_features=st.integers(1, 5), out_features=st.integers(1, 5),
            bias=st.booleans(), dtype=st.sampled_from(["float64", "float32"]),
            seed=st.integers(0, 2**16)))

    def smoke(self):
        return dict(N=3, in_features=4, out_features=2, bias=True, dtype="float64", seed=0)

    def constructor(self, cfg):
        return dict(in_features=cfg["in_features"], out_features=cfg["out_features"],
                    bias=cfg["bias"], dtype=np.dtype(cfg["dtype"]))

    def input_shape(self, cfg):
        return (cfg["N"], cfg["in_features"])

    def terms(self, cfg, y_shape):
        return cfg["in_features"] + cfg["out_features"] + cfg["N"] + 2

    def context(self, cfg, x, dy, y_shape):
        batch = ("a mean over the batch where a sum belongs: the loss already divided by N; "
                 "the layer SUMS every sample's contribution")
        return {"factors": {"weight.grad": [(1 / cfg["N"], batch)],
                            "bias.grad": [(1 / cfg["N"], batch)]}}


class BatchNorm2DKind(LayerKind):
    """BatchNorm2D in training mode: the batch's statistics, so dx has the two extra terms."""

    name = "batchnorm2d"
    reference = L.BatchNorm2D
    quantities = "output, dx, weight.grad, bias.grad"

    def configs(self):
        st = _st()

        @st.composite
        def draw(d):
            cfg = dict(N=d(st.integers(1, 3)), C=d(st.integers(1, 3)), H=d(st.integers(1, 3)),
                       W=d(st.integers(1, 3)), convention=d(st.sampled_from(["torch", "keras"])),
                       dtype=d(st.sampled_from(["float64", "float32"])), seed=d(st.integers(0, 2**16)))
            if cfg["N"] * cfg["H"] * cfg["W"] < 2:  # a variance needs two values per channel
                cfg["N"] = 2
            return cfg
        return draw()

    def smoke(self):
        return dict(N=2, C=2, H=2, W=2, convention="torch", dtype="float64", seed=0)

    def constructor(self, cfg):
        return dict(num_features=cfg["C"], convention=cfg["convention"],
                    dtype=np.dtype(cfg["dtype"]))

    def build(self, cfg, seed):
        return self.reference(**self.constructor(cfg))

    def prepare(self, ref, rng):
        ref.weight.data = (1 + 0.5 * rng.standard_normal(ref.num_features)).astype(ref.dtype)
        ref.bias.data = rng.standard_normal(ref.num_features).astype(ref.dtype)

    def input_shape(self, cfg):
        return (cfg["N"], cfg["C"], cfg["H"], cfg["W"])

    def tolerances(self, cfg, x, dy, y_shape):
        """Per channel, the mean and variance are sums of n = N·H·W terms: x̂ = (x − mean)·s,
        s = 1/sqrt(var + eps), errs by about n·u·(|x| + |mean|)·s. y = γ·x̂ + β inherits it;
        dγ = Σ dy·x̂ and dβ = Σ dy are sums of n terms; dx = γ·s·(dy − mean(dy) − x̂·mean(dy·x̂))
        holds three terms of size at most |γ|·s·(|dy| + mean|dy| + |x̂|·mean|dy·x̂|), each with
        the error of x̂ on top. The allowance is 16·n·u times those magnitudes: the learner's
        error and the reference's, with a factor 2 (or more) to spare."""
        u = UNIT_ROUNDOFF[np.dtype(cfg["dtype"])]
        axes = (0, 2, 3)
        xd = x.astype(np.float64)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        ref = self.build(cfg, cfg["seed"])
        self.prepare(ref, np.random.default_rng(cfg["seed"]))
        gamma = np.abs(ref.weight.data.astype(np.float64))[None, :, None, None]
        mean = xd.mean(axis=axes, keepdims=True)
        s = 1 / np.sqrt(xd.var(axis=axes, keepdims=True) + ref.eps)
        x_hat = (xd - mean) * s
        spread = (np.abs(xd) + np.abs(mean)) * s  # what x̂'s error scales with
        ady = np.abs(dy.astype(np.float64))
        k = 16 * (n + 4) * u
        return {"output": k * (gamma * (np.abs(x_hat) + spread) + np.abs(ref.bias.data)[None, :, None, None]),
                "dx": k * gamma * s * (ady + ady.mean(axis=axes, keepdims=True)
                                       + (np.abs(x_hat) + spread.max()) * (ady * (np.abs(x_hat) + spread)).mean(axis=axes, keepdims=True)
                                       + spread.max() * ady.mean(axis=axes, keepdims=True)),
                "weight.grad": k * (ady * (np.abs(x_hat) + spread)).sum(axis=axes),
                "bias.grad": k * ady.sum(axis=axes)}

    def context(self, cfg, x, dy, y_shape):
        axes = (0, 2, 3)
        xd = x.astype(np.float64)
        ref = self.build(cfg, cfg["seed"])
        self.prepare(ref, np.random.default_rng(cfg["seed"]))
        s = 1 / np.sqrt(xd.var(axis=axes, keepdims=True) + ref.eps)
        constant = dy * ref.weight.data[None, :, None, None] * s
        positions = x.shape[0] * x.shape[2] * x.shape[3]
        averaged = ("averaged over (N, H, W) where it is a SUM: the loss already divided by N")
        return {"alternatives": {"dx": [(
            "dx treats the mean and the variance as constants (dx = dy·γ/sqrt(var + eps)); in "
            "training mode they are computed from x, which adds −mean(g) − x̂·mean(g·x̂), "
            "g = dy·γ", constant)]},
            "factors": {"weight.grad": [(1 / positions, "weight.grad is " + averaged),
                                        (1 / x.shape[0], "weight.grad is divided by N: it is a SUM")],
                        "bias.grad": [(1 / positions, "bias.grad is " + averaged),
                                      (1 / x.shape[0], "bias.grad is divided by N: it is a SUM")]}}


# ----------------------------------------------------------------------------------------
# the loss: softmax and cross-entropy, fused
# ----------------------------------------------------------------------------------------
class CrossEntropyKind:
    """forward(z, target) -> loss (a float), backward() -> dz; minicnn's CrossEntropyLoss."""

    name = "cross_entropy"
    reference = LS.CrossEntropyLoss
    quantities = "loss, dz"

    def configs(self):
        st = _st()
        return st.fixed_dictionaries(dict(
            N=st.integers(1, 5), classes=st.integers(2, 6),
            reduction=st.sampled_from(["mean", "sum"]), scale=st.sampled_from([1.0, 10.0, 1000.0]),
            dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2**16)))

    def smoke(self):
        return dict(N=3, classes=4, reduction="mean", scale=1.0, dtype="float64", seed=0)

    def numeric_ok(self, cfg):
        return cfg["scale"] < 100

    def run(self, cls, cfg, against, used):
        dtype = np.dtype(cfg["dtype"])
        rng = np.random.default_rng(cfg["seed"])
        n, c = cfg["N"], cfg["classes"]
        z = (cfg["scale"] * rng.standard_normal((n, c))).astype(dtype)
        t = rng.integers(0, c, n)
        ref = self.reference(reduction=cfg["reduction"])
        loss_ref = ref.forward(z.copy(), t.copy())
        dz_ref = ref.backward()
        w = 1 / n if cfg["reduction"] == "mean" else 1.0
        # log-sum-exp and the softmax: the shift z − max is exact up to u·|z|, exp() turns an
        # absolute error δ of its argument into a relative error δ, and the C-term sums add
        # C·u; so entries of dz err by about (C + range(z))·u·w, the loss by
        # (C + N)·u·(max|z| + log C) — allowed 8 times that.
        u = UNIT_ROUNDOFF[dtype]
        zr = float(np.ptp(z.astype(np.float64), axis=1).max()) + float(np.abs(z).max())
        tol_dz = 8 * (c + 2 + zr) * u * w
        tol_loss = 8 * (c + n + 2) * u * (zr + math.log(c) + 1) * (n if w == 1.0 else 1)
        mine = call(cls, None, cfg, reduction=cfg["reduction"])
        loss = call(mine, "forward", cfg, z.copy(), t.copy())
        ctx = {"nonfinite": "large logits overflow exp(): subtract each row's maximum first",
               "alternatives": {"dz": [
            ("dz is the softmax alone: subtract 1 at each row's target class, "
             "dz = (softmax(z) − onehot(y))·w", (dz_ref * (1 / w) + np.eye(c)[t]) * w)]},
            "factors": {
                "dz": [(n, "dz is N times too large: with reduction='mean' the loss is the MEAN "
                        "over the batch, so every row of dz is divided by N"),
                       (1 / n, "dz is divided by N: with reduction='sum' nothing is averaged")],
                "loss": [(n, "the loss is the sum over the batch: reduction='mean' divides by N"),
                         (1 / n, "the loss is divided by N: reduction='sum' adds the samples")]}}
        loss_value = None if loss is None else np.float64(loss)
        check_quantity("loss", loss_value, np.float64(loss_ref), tol_loss, against="minicnn",
                       cfg=cfg, ctx=ctx)
        dz = call(mine, "backward", cfg)
        check_quantity("dz", dz, dz_ref, tol_dz, against="minicnn", cfg=cfg, ctx=ctx, dtype=dtype)
        used.add("minicnn")
        for fw in [f for f in against if f in FRAMEWORKS]:
            try:
                value_f, dz_f = twins.framework_loss_results(ref, z.copy(), t.copy(), fw)
            except twins.Unsupported:
                continue
            used.add(fw)
            check_quantity("loss", loss_value, np.float64(value_f), tol_loss, against=fw,
                           cfg=cfg, ctx=ctx)
            check_quantity("dz", dz, np.asarray(dz_f), tol_dz, against=fw, cfg=cfg, ctx=ctx)
        if "numeric" in against and dtype == np.float64 and self.numeric_ok(cfg):
            used.add("numeric")
            zw = z.copy()
            numeric = central_differences(
                lambda: float(call(mine, "forward", cfg, zw.copy(), t.copy())), zw,
                np.arange(z.size)).reshape(z.shape)
            # see LayerKind.numeric for the allowance
            check_quantity("dz", dz, numeric, 1e-9 + 1e-6 * np.abs(numeric).max(),
                           against="numeric (central differences of your forward)", cfg=cfg)


# ----------------------------------------------------------------------------------------
# the optimizer: Adam, 20 steps
# ----------------------------------------------------------------------------------------
class AdamKind:
    """Adam(params, lr, betas, eps, weight_decay) with ``step()``, as minicnn.optim.Adam; the
    parameters are compared after each of 20 steps with minicnn's and torch.optim.Adam's."""

    name = "adam"
    reference = optim.Adam
    quantities = "the parameters after each of 20 steps"
    steps = 20

    def configs(self):
        st = _st()
        shape = st.tuples(st.integers(1, 3), st.integers(1, 3))
        return st.fixed_dictionaries(dict(
            shapes=st.lists(shape, min_size=1, max_size=2).map(tuple),
            lr=st.sampled_from([1e-3, 1e-2, 0.1]),
            betas=st.sampled_from([(0.9, 0.999), (0.8, 0.99), (0.5, 0.9)]),
            eps=st.sampled_from([1e-8, 1e-3]), weight_decay=st.sampled_from([0.0, 0.01]),
            dtype=st.sampled_from(["float64", "float32"]), seed=st.integers(0, 2**16)))

    def smoke(self):
        return dict(shapes=((2, 3),), lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                    dtype="float64", seed=0)

    def run(self, cls, cfg, against, used):
        dtype = np.dtype(cfg["dtype"])
        rng = np.random.default_rng(cfg["seed"])
        names = ["weight", "bias", "extra"][:len(cfg["shapes"])]
        start = [rng.standard_normal(s).astype(dtype) for s in cfg["shapes"]]
        grads = [[rng.standard_normal(s).astype(dtype) for s in cfg["shapes"]]
                 for _ in range(self.steps)]
        kwargs = dict(lr=cfg["lr"], betas=cfg["betas"], eps=cfg["eps"],
                      weight_decay=cfg["weight_decay"])

        def params():
            return [Parameter(a.copy(), name) for a, name in zip(start, names)]

        mine_p, ref_p = params(), params()
        mine = call(cls, None, cfg, mine_p, **kwargs)
        ref = self.reference(ref_p, **kwargs)
        torch_run = None
        if "torch" in against:
            torch_run = self.torch_steps(start, grads, kwargs)
            if torch_run is not None:
                used.add("torch")
        alternatives = self.mistakes(start, grads, cfg)
        used.add("minicnn")
        u = UNIT_ROUNDOFF[dtype]
        sizes = np.zeros(len(start))
        for t in range(1, self.steps + 1):
            for p, q, g in zip(mine_p, ref_p, grads[t - 1]):
                p.grad, q.grad = g.copy(), g.copy()
            before = [q.data.astype(np.float64).copy() for q in ref_p]
            call(mine, "step", cfg)
            ref.step()
            for i, (p, q) in enumerate(zip(mine_p, ref_p)):
                # each step computes the update with ~20 rounded operations, a relative error
                # of at most ~20·u of the step, and rounds p: the errors of t steps add up to
                # 32·u·(t·max|p| + Σ max|step|), allowed twice over
                sizes[i] += np.abs(q.data - before[i]).max()
                tol = 64 * u * (t * np.abs(q.data).max() + sizes[i])
                quantity = f"{names[i]} after step {t}"
                ctx = {"alternatives": {quantity: [(text, run[t - 1][i])
                                                   for text, run in alternatives]}}
                check_quantity(quantity, p.data, q.data, tol, against="minicnn", cfg=cfg,
                               ctx=ctx, dtype=dtype)
                if torch_run is not None:
                    check_quantity(quantity, p.data, torch_run[t - 1][i].astype(dtype), tol,
                                   against="torch (torch.optim.Adam)", cfg=cfg, ctx=ctx)

    def torch_steps(self, start, grads, kwargs):
        """torch.optim.Adam's parameters after each step, or None without torch."""
        try:
            torch = twins.torch_parts()[0]
        except twins.Unsupported:
            return None
        ts = [torch.tensor(a.copy(), requires_grad=True) for a in start]
        opt = torch.optim.Adam(ts, **kwargs)
        out = []
        for gs in grads:
            for tensor, g in zip(ts, gs):
                tensor.grad = torch.from_numpy(g.copy())
            opt.step()
            out.append([tensor.detach().numpy().copy() for tensor in ts])
        return out

    def mistakes(self, start, grads, cfg):
        """[(hint, [[params after step t]])] for Adam written with a known mistake."""
        b1, b2 = cfg["betas"]
        lr, eps, wd = cfg["lr"], cfg["eps"], cfg["weight_decay"]
        variants = {
            "the bias correction is missing: divide m by (1 − β1^t) and v by (1 − β2^t) before "
            "the step (both start at zero, so early steps would be too small or too large)":
                lambda m, v, t: m / (np.sqrt(v) + eps),
            "ε is added to the uncorrected sqrt(v) (Keras' Adam); torch.optim.Adam adds it to "
            "sqrt(v̂), v̂ = v / (1 − β2^t)":
                lambda m, v, t: (m / (1 - b1 ** t)) * math.sqrt(1 - b2 ** t) / (np.sqrt(v) + eps),
            "v is updated with g instead of g²: v = β2·v + (1 − β2)·g²":
                None,
        }
        out = []
        for text, step in variants.items():
            ps = [a.astype(np.float64).copy() for a in start]
            ms = [np.zeros_like(p) for p in ps]
            vs = [np.zeros_like(p) for p in ps]
            run = []
            for t, gs in enumerate(grads, 1):
                for p, m, v, g in zip(ps, ms, vs, gs):
                    g = g + wd * p
                    m[...] = b1 * m + (1 - b1) * g
                    if step is None:
                        v[...] = b2 * v + (1 - b2) * g
                        with np.errstate(invalid="ignore"):
                            p -= lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
                    else:
                        v[...] = b2 * v + (1 - b2) * g * g
                        p -= lr * step(m, v, t)
                run.append([p.copy() for p in ps])
            out.append((text, run))
        return out


KINDS = {k.name: k for k in (Conv2DKind(), Im2ColKind(), MaxPool2DKind(), AvgPool2DKind(),
                             SumPool2DKind(), DenseKind(), BatchNorm2DKind(), CrossEntropyKind(),
                             AdamKind())}
