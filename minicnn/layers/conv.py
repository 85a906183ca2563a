"""The 2-D convolution layer (NCHW), PyTorch's Conv2d with Keras' "same"/"valid" padding."""
import math

import numpy as np

from .. import kernels
from ..core.errors import ShapeError
from ..core.parameter import Parameter
from ..core.random import get_rng
from ..core.shapes import check_window_fits, pair, resolve_padding, window_formula
from .base import Layer, check_padding, positive_int, positive_pair


class Conv2D(Layer):
    """2-D convolution (a cross-correlation, as in every deep-learning library).

    Conv2D(in_channels=C, out_channels=O, kernel_size=(kh, kw), stride=S, padding=P, dilation=D)

    input  x:      (N, C, H, W)
    weight:        (O, C, kh, kw)
    bias:          (O,)  (or None with bias=False)
    output y:      (N, O, H_out, W_out)

        y[n, o, i, j] = bias[o] + Σ_{c, p, q} x_pad[n, c, i·S_h + p·D_h, j·S_w + q·D_w] · weight[o, c, p, q]
        H_out = floor((H + P_top + P_bottom − D_h·(kh − 1) − 1)/S_h) + 1     (W_out likewise)

    kernel_size, stride, dilation: an int or a pair (rows, columns).
    padding: an int or a pair (the same on both sides, as PyTorch), a pair of pairs
    ((top, bottom), (left, right)), "valid" (no padding) or "same" (Keras/TensorFlow: the output
    has ceil(H/S) rows; when the total padding is odd the extra row/column goes at the
    bottom/right).
    The weights are initialised as PyTorch does: U(−1/√fan_in, 1/√fan_in) with fan_in = C·kh·kw,
    for the weight and the bias, drawn from ``minicnn.random.get_rng(rng)``.
    The layer computes in ``dtype`` (float32 by default); inputs are cast to it.
    """

    per_image = True

    skips_input_grad = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, dtype=np.float32, rng=None):
        super().__init__()
        self.in_channels = positive_int("Conv2D", in_channels, "in_channels")
        self.out_channels = positive_int("Conv2D", out_channels, "out_channels")
        self.kernel_size = positive_pair("Conv2D", kernel_size, "kernel_size")
        self.stride = positive_pair("Conv2D", stride, "stride")
        self.dilation = positive_pair("Conv2D", dilation, "dilation")
        self.padding = check_padding("Conv2D", padding)
        dtype = np.dtype(dtype)
        if not np.issubdtype(dtype, np.floating):
            raise ValueError(f"Conv2D: dtype must be a floating type, got {dtype}")

        rng = get_rng(rng)
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        # PyTorch's kaiming_uniform_(a=√5): gain √(2/(1 + 5)) · √(3/fan_in) = 1/√fan_in
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels) + self.kernel_size
        self.weight = Parameter(rng.uniform(-bound, bound, shape).astype(dtype), "weight")
        self.bias = (Parameter(rng.uniform(-bound, bound, self.out_channels).astype(dtype), "bias")
                     if bias else None)
        self._cache = None
        self._kernels = None
        self._out_shape = None

    @property
    def dtype(self):
        """The layer computes in its weight's dtype."""
        return self.weight.data.dtype

    def padding_for(self, H, W):
        """((top, bottom), (left, right)) for an input of H rows and W columns."""
        return resolve_padding(self.padding, (H, W), self.kernel_size, self.stride, self.dilation)

    # -- shapes ---------------------------------------------------------------------------
    def output_shape(self, input_shape):
        shape = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        n, c, h, w = shape
        if c != self.in_channels:
            raise ShapeError(
                f"{self!r}: expected {self.in_channels} input channel"
                f"{'s' if self.in_channels != 1 else ''}: input "
                f"(N, {self.in_channels}, H, W), got {shape}")
        pads = self.padding_for(h, w)
        try:
            h_out = check_window_fits(self, "H", h, self.kernel_size[0], self.stride[0], pads[0],
                                      self.dilation[0])
            w_out = check_window_fits(self, "W", w, self.kernel_size[1], self.stride[1], pads[1],
                                      self.dilation[1])
        except ShapeError as err:
            # the smallest input the window fits, so the message says what was expected
            need = [d * (k - 1) + 1 - sum(p)
                    for d, k, p in zip(self.dilation, self.kernel_size, pads)]
            raise ShapeError(f"{err}\n  expected input (N, {self.in_channels}, H >= {need[0]}, "
                             f"W >= {need[1]}), got {shape}") from None
        return (n, self.out_channels, h_out, w_out)

    def explain(self, input_shape):
        """['H: (28 + 2·2 − 5)/1 + 1 = 28', 'W: ...'] for input_shape (N, C, H, W)."""
        shape = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        h, w = shape[2:]
        pads = self.padding_for(h, w)
        return [f"{axis}: " + window_formula(size, k, s, p, d)
                for axis, size, k, s, p, d in zip("HW", (h, w), self.kernel_size, self.stride,
                                                   pads, self.dilation)]

    # -- the two passes ---------------------------------------------------------------------
    def forward(self, x, relu=False, pool=None):
        """x (N, C, H, W) -> y (N, O, H_out, W_out); with ``relu`` (``layers.fusion``, for the
        ReLU after this layer) max(y, 0), applied as y is written. ``pool``: the 2×2 pool
        after this layer (and its ReLU), run in the kernel: returns its output, (N, O,
        ⌊H_out/2⌋, ⌊W_out/2⌋). A MaxPool2D(2) gets what its backward pass needs
        (``MaxPool2D.computed``), unless the kernels take its gradient themselves (Winograd's,
        ``conv_numba.takes_max_gradient``); after those, and after an AvgPool2D(2) or
        SumPool2D(2), backward takes the pool's gradient and spreads it itself
        (``spread_by_conv``)."""
        x = self._check_input(x)
        pads = self.padding_for(x.shape[2], x.shape[3])
        self._clip = self._spread = None
        # remembered so that backward uses the kernels whose cache it receives
        self._kernels = kernels.conv()
        bias = self.bias.data if self.bias is not None else None
        kind = False if pool is None else pool.kernel_pool
        y, self._cache = self._kernels.forward(x, self.weight.data, bias, self.stride, pads,
                                               self.dilation, relu=relu, pool=kind)
        self._out_shape = self.output_shape(x.shape) if kind == "max" else y.shape
        takes_max = getattr(self._kernels, "takes_max_gradient", None)
        if kind == "max" and takes_max is not None and takes_max(self._cache[0]):
            # this layer's backward takes the pool's gradient and spreads it itself
            self._cache, pool_cache = self._cache
            self._spread = self._kernels.MaxSpread((pool_cache, y if relu else None))
            self._out_shape = y.shape
            pool.spread_by_conv(y)
        elif kind == "max":
            self._cache, pool_cache = self._cache
            pool.computed(y, pool_cache, kernels.pool(), clipped=relu)
        elif kind:
            self._cache, self._spread = self._cache
            pool.spread_by_conv(y)
        return y

    def forward_with(self, x, weight, bias, relu=False, pool=False):
        """This layer's convolution of x (N, C, H, W) with other weights (O, C, KH, KW) and bias
        (O,) or None (``layers.fusion``: BatchNorm folded in), for prediction: nothing is kept
        for a backward pass. Returns y (N, O, H_out, W_out), max(y, 0) with ``relu``; with
        ``pool`` ("max", "mean" or "sum": a pool's ``kernel_pool``) the maxima, means or sums
        of its 2×2, stride-2 windows (N, O, ⌊H_out/2⌋, ⌊W_out/2⌋)."""
        x = self._check_input(x)
        pads = self.padding_for(x.shape[2], x.shape[3])
        y, _ = kernels.conv().forward(x, weight, bias, self.stride, pads, self.dilation,
                                      relu=relu, pool=pool, need_cache=False)
        return y

    _CACHES = ("_cache", "_x", "_clip", "_spread")

    def clips_input_gradient(self, x):
        """x, this layer's input in the last forward pass, is a ReLU's output (``layers.fusion``):
        backward then returns dx where x > 0, else 0, the ReLU's gradient too, applied as dx is
        written (``ReLU.applied_later``)."""
        self._clip = x

    def backward(self, dy, need_input_grad=True):
        """dy (N, O, H_out, W_out) -> dx (N, C, H, W); writes weight.grad and bias.grad.
        With ``need_input_grad=False`` dx is not computed and None is returned. After a
        forward pass that ran the AvgPool2D(2) or SumPool2D(2) after this layer (or the
        MaxPool2D(2), with Winograd), dy is that pool's gradient (N, O, ⌊H_out/2⌋,
        ⌊W_out/2⌋), spread back here."""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        dy = np.asarray(dy, dtype=self.dtype)
        if dy.shape != self._out_shape:
            raise ShapeError(f"{self!r}: backward expected dy of the output's shape "
                             f"{self._out_shape}, got {dy.shape}")
        dx, dw, db = self._kernels.backward(dy, self._cache, need_dx=need_input_grad,
                                            clip=getattr(self, "_clip", None),
                                            spread=getattr(self, "_spread", None))
        self.weight.grad = dw
        if self.bias is not None:
            self.bias.grad = db
        return dx

    def __repr__(self):
        parts = [f"{self.in_channels}, {self.out_channels}", f"kernel_size={self.kernel_size}",
                 f"stride={self.stride}"]
        if isinstance(self.padding, str):
            if self.padding != "valid":
                parts.append(f"padding={self.padding!r}")
        elif isinstance(self.padding, (tuple, list)) and isinstance(self.padding[0], (tuple, list)):
            parts.append(f"padding={tuple(tuple(p) for p in self.padding)}")
        elif pair(self.padding) != (0, 0):
            parts.append(f"padding={pair(self.padding)}")
        if self.dilation != (1, 1):
            parts.append(f"dilation={self.dilation}")
        if self.bias is None:
            parts.append("bias=False")
        return f"Conv2D({', '.join(parts)})"
