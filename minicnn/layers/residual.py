"""Residual connections: Identity, Add, Residual, and ResNet's Bottleneck and BasicBlock.

A residual block computes y = activation(branch(x) + shortcut(x)). The shortcut is the
identity unless the branch changes the shape (a stride, or more channels), in which case a
1×1 convolution with the same stride and a BatchNorm (the "downsample") makes x fit.
Backward, the Add hands the same gradient to both paths, and the two input gradients add up:

    dx = branch.backward(dy') + shortcut.backward(dy')       (dy' = dy through the activation)

so even a branch whose gradient vanishes leaves dx = dy' through the shortcut: that is why
networks of 50 and more layers train when plain stacks of that depth do not.
"""
import numpy as np

from ..core.errors import ShapeError
from ..core.random import get_rng
from .. import kernels
from ..kernels import workspace
from .activations import ReLU
from . import fusion
from .base import Layer, as_float, children_repr, keeping_caches
from .container import Sequential
from .conv import Conv2D
from .norm import BatchNorm2D

_AXES = {4: ("N", "C", "H", "W"), 2: ("N", "features")}


def _axis_names(rank):
    return _AXES.get(rank, tuple(f"axis {i}" for i in range(rank)))


class Identity(Layer):
    """y = x; dx = dy. Any shape. The shortcut of a residual block that keeps the shape."""

    per_image = True

    def forward(self, x):
        return np.asarray(x)

    def backward(self, dy):
        return dy


class Add(Layer):
    """y = x0 + x1 + ...: inputs of exactly the same shape (no broadcasting), any rank.

    forward(*inputs):  k arrays of one shape S -> y of shape S
    backward(dy):      dy (S) -> a tuple of k gradients, each dy (the sum's derivative is 1
                       with respect to each input); copies, so no two paths share an array
    """

    per_image = True

    def __call__(self, *inputs):
        return self.forward(*inputs)

    def output_shape(self, *input_shapes):
        """The common shape of ``input_shapes`` (or of one list of shapes), else ShapeError."""
        if len(input_shapes) == 1 and all(isinstance(s, (tuple, list)) for s in input_shapes[0]):
            input_shapes = tuple(input_shapes[0])
        shapes = [tuple(s) for s in input_shapes]
        if not shapes:
            raise ShapeError(f"{self!r}: needs at least one input")
        for i, shape in enumerate(shapes[1:], 1):
            if shape != shapes[0]:
                raise ShapeError(f"{self!r}: every input must have the same shape (no "
                                 f"broadcasting), got input 0 {shapes[0]} and input {i} {shape}"
                                 f"{_differences(shapes[0], shape)}")
        return shapes[0]

    def forward(self, *inputs):
        inputs = [as_float(x) for x in inputs]
        self.output_shape(*[x.shape for x in inputs])
        # a fresh array in the first input's dtype (its memory reused batch after batch:
        # kernels.workspace), the first sum written straight into it
        y = inputs[0].copy() if len(inputs) == 1 else kernels.elementwise().add(
            inputs[0], inputs[1], workspace.empty_like(inputs[0]))
        for x in inputs[2:]:
            y += x
        self._count, self._shape = len(inputs), y.shape
        return y

    def backward(self, dy):
        if getattr(self, "_shape", None) is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        dy = np.asarray(dy)
        if dy.shape != self._shape:
            raise ShapeError(f"{self!r}: backward expected dy of the output's shape {self._shape}, "
                             f"got {dy.shape}")
        # a copy for each other input, so that a backward pass that writes into its dy does not
        # change another's (on reused memory: a fresh array is paged in at every batch)
        return (dy,) + tuple(_copy(dy) for _ in range(self._count - 1))


def _copy(a):
    """A copy of ``a`` on the kernels' reused memory (``kernels.workspace``)."""
    out = workspace.empty_like(a)
    np.copyto(out, a)
    return out


def _differences(a, b):
    """': they differ along C (256 vs 64), H (4 vs 8)' for two shapes of the same rank."""
    if len(a) != len(b):
        return f": ranks {len(a)} and {len(b)}"
    names = _axis_names(len(a))
    diff = [f"{names[i]} ({x} vs {y})" for i, (x, y) in enumerate(zip(a, b)) if x != y]
    return ": they differ along " + ", ".join(diff)


def _flow(path, shape):
    """[(name, layer, input shape, output shape)] along ``path``; ShapeError as the layer raises."""
    rows = []
    for name, layer in path:
        out = layer.output_shape(shape)
        rows.append((name, layer, shape, out))
        shape = out
    return rows


def _flow_lines(label, path, shape):
    """Lines showing ``path`` turning ``shape`` into its output, with each layer's arithmetic."""
    if not path:
        return [f"{label}: identity, {shape} -> {shape}"]
    lines = [f"{label}:"]
    for name, layer, shape_in, shape_out in _flow(path, shape):
        lines.append(f"  {name}: {type(layer).__name__} {shape_in} -> {shape_out}")
        lines += ["      " + line for line in layer.explain(shape_in)]
    return lines


class _ResidualBlock(Layer):
    """y = final(add(branch(x), shortcut(x))), the branch and the shortcut each a path of layers.

    Subclasses provide ``_branch()`` and ``_shortcut()`` ([(name, layer)], applied in order;
    an empty shortcut is the identity), ``_final()`` ((name, layer) or None), ``describe()``.
    """

    per_image = True

    def describe(self):
        return type(self).__name__

    def _final(self):
        return None

    def _run(self, name, layers, x):
        """``layers`` on x: one layer, or a chain that ``fusion`` runs as one (named ``name``,
        after its first layer)."""
        try:
            y = layers[0](x) if len(layers) == 1 else fusion.run_chain(layers, x)
            if not keeping_caches():
                for layer in layers:
                    layer.forget()
            return y
        except ShapeError as err:
            raise ShapeError(f"{err}\n  in {self.describe()}, layer {name!r}, input shape "
                             f"{tuple(x.shape)}") from None

    def forward(self, x):
        """x (N, C, H, W) -> y (the branch's output shape, equal to the shortcut's)."""
        x = np.asarray(x)
        h = self._run_path(self._branch(), x)
        s = self._run_path(self._shortcut(), x)
        if h.shape != s.shape:
            self.output_shape(x.shape)  # raises the message with both paths' arithmetic
        y = self.add(h, s)
        final = self._final()
        if final is None:
            return y
        clipped = fusion.relu_in_place(final[1], y)   # the sum is fresh: under no_grad, in place
        if clipped is None:
            return self._run(final[0], [final[1]], y)
        final[1].forget()
        return clipped

    def _run_path(self, path, x):
        """The layers of ``path`` [(name, layer)] one after the other on x; under no_grad in
        eval mode, Conv2D -> BatchNorm2D -> ReLU as one (``fusion``)."""
        layers = [layer for _, layer in path]
        i = 0
        while i < len(path):
            n = fusion.chain_length(layers, i)
            x = self._run(path[i][0], layers[i:i + n], x)
            i += n
        return x

    def backward(self, dy):
        """dy (output shape) -> dx (input shape): the branch's dx plus the shortcut's dx."""
        final = self._final()
        if final:
            dy = final[1].backward(dy)
        d_branch, d_shortcut = self.add.backward(dy)
        for _, layer in reversed(self._branch()):
            d_branch = layer.backward(d_branch)
        for _, layer in reversed(self._shortcut()):
            d_shortcut = layer.backward(d_shortcut)
        if d_branch.shape != d_shortcut.shape or d_branch.dtype != d_shortcut.dtype:
            return d_branch + d_shortcut
        return kernels.elementwise().add(d_branch, d_shortcut, workspace.empty_like(d_branch))

    def output_shape(self, input_shape):
        input_shape = tuple(input_shape)
        try:
            branch = _flow(self._branch(), input_shape)
            shortcut = _flow(self._shortcut(), input_shape)
        except ShapeError as err:
            raise ShapeError(f"{err}\n  in {self.describe()}, input shape {input_shape}") from None
        b_out = branch[-1][3] if branch else input_shape
        s_out = shortcut[-1][3] if shortcut else input_shape
        if b_out != s_out:
            lines = [f"{self.describe()}: the branch and the shortcut must give the same shape to "
                     f"be added, got branch {b_out} and shortcut {s_out}{_differences(b_out, s_out)}"]
            lines += ["  " + line for line in self.explain(input_shape)]
            hint = self._mismatch_hint(input_shape, b_out, s_out)
            if hint:
                lines.append("  " + hint)
            raise ShapeError("\n".join(lines))
        final = self._final()
        return final[1].output_shape(b_out) if final else b_out

    def _mismatch_hint(self, input_shape, b_out, s_out):
        if len(b_out) == 4 and len(input_shape) == 4 and not self._shortcut():
            sh, sw = (-(-input_shape[2] // b_out[2]), -(-input_shape[3] // b_out[3]))
            stride = sh if sh == sw else (sh, sw)
            return (f"a shortcut Conv2D({input_shape[1]}, {b_out[1]}, kernel_size=1, "
                    f"stride={stride}) followed by BatchNorm2D({b_out[1]}) would make them match")
        return None

    def explain(self, input_shape):
        input_shape = tuple(input_shape)
        try:
            return (_flow_lines("branch", self._branch(), input_shape)
                    + _flow_lines("shortcut", self._shortcut(), input_shape))
        except ShapeError:
            return []

    def __repr__(self):
        return children_repr(type(self).__name__, self.named_children())


class Residual(_ResidualBlock):
    """y = activation(branch(x) + shortcut(x)); shortcut=None is the identity.

    Residual(branch, shortcut=None, activation=None): ``branch`` and ``shortcut`` are layers
    (a Sequential for several); ``activation`` a layer, "relu", or None for none.

    forward:  x (N, C, H, W) -> y, the branch's output shape (the shortcut must give the same)
    backward: dy -> dx = branch.backward(dy') + shortcut.backward(dy'), dy' = dy through the
              activation; parameters are named "branch.0.weight", "shortcut.weight", ...
    """

    def __init__(self, branch, shortcut=None, activation=None):
        super().__init__()
        if activation == "relu":
            activation = ReLU()
        for what, layer in (("branch", branch), ("shortcut", shortcut), ("activation", activation)):
            if layer is not None and not isinstance(layer, Layer):
                raise TypeError(f"Residual: {what} is {layer!r}, not a minicnn layer")
        if branch is None:
            raise TypeError("Residual: branch is required")
        self.branch = branch
        self.shortcut = shortcut
        self.add = Add()
        self.activation = activation

    def _branch(self):
        return [("branch", self.branch)]

    def _shortcut(self):
        return [("shortcut", self.shortcut)] if self.shortcut is not None else []

    def _final(self):
        return ("activation", self.activation) if self.activation is not None else None


def _needs_downsample(in_channels, out_channels, stride):
    return tuple(np.broadcast_to(stride, 2)) != (1, 1) or in_channels != out_channels


def _downsample(downsample, in_channels, out_channels, stride, conv_bias, bn, dtype, rng):
    """The shortcut: None/"auto" -> made when needed, False -> none, True -> made, or a layer."""
    if isinstance(downsample, Layer):
        return downsample
    if downsample is None or downsample == "auto":
        downsample = _needs_downsample(in_channels, out_channels, stride)
    if downsample is True:
        return Sequential([Conv2D(in_channels, out_channels, 1, stride=stride, bias=conv_bias,
                                  dtype=dtype, rng=rng), bn(out_channels)])
    if downsample is False:
        return None
    raise ValueError(f"downsample must be None or 'auto' (made when needed), True, False or a "
                     f"layer, got {downsample!r}")


class Bottleneck(_ResidualBlock):
    """ResNet-50's block, as torchvision's Bottleneck (ResNet v1.5), children named like it.

    Bottleneck(in_channels, width, stride=1, downsample=None, expansion=4, ...)

        conv1 1×1 (in_channels -> width), bn1, relu
        conv2 3×3 padding 1, stride (width -> width), bn2, relu
        conv3 1×1 (width -> width·expansion), bn3
        + shortcut: x, or downsample(x) = bn(conv 1×1 stride (in_channels -> width·expansion))
        relu

    input (N, in_channels, H, W) -> output (N, width·expansion, H_out, W_out), H_out =
    ⌊(H − 1)/stride⌋ + 1. ``downsample``: None or "auto" makes one exactly when the shapes
    differ (stride != 1 or in_channels != width·expansion), as torchvision's ResNet does;
    True always, False never, or a layer of your own. Parameter names are torchvision's:
    "conv1.weight", "bn1.weight", "bn1.bias", ..., "downsample.0.weight", "downsample.1.weight";
    buffers "bn1.running_mean", ...
    stride_in_1x1=True puts the stride on conv1 instead of conv2 (the original ResNet and Keras'
    ResNet50); conv_bias=True gives every convolution a bias (Keras' ResNet50, with bn_eps
    1.001e-5). bn_convention / bn_eps / bn_momentum are passed to every BatchNorm2D.
    """

    def __init__(self, in_channels, width, stride=1, downsample=None, expansion=4,
                 stride_in_1x1=False, conv_bias=False, bn_eps=1e-5, bn_momentum=None,
                 bn_convention="torch", dtype=np.float32, rng=None):
        super().__init__()
        rng = get_rng(rng)
        self.in_channels, self.width, self.stride = in_channels, width, stride
        self.expansion, self.stride_in_1x1, self.conv_bias = expansion, stride_in_1x1, conv_bias
        self.bn_eps, self.bn_momentum, self.bn_convention = bn_eps, bn_momentum, bn_convention
        self.dtype = np.dtype(dtype)
        out = width * expansion
        s1, s2 = (stride, 1) if stride_in_1x1 else (1, stride)

        def bn(c):
            return BatchNorm2D(c, eps=bn_eps, momentum=bn_momentum, convention=bn_convention,
                               dtype=dtype)
        self.conv1 = Conv2D(in_channels, width, 1, stride=s1, bias=conv_bias, dtype=dtype, rng=rng)
        self.bn1 = bn(width)
        self.relu1 = ReLU()
        self.conv2 = Conv2D(width, width, 3, stride=s2, padding=1, bias=conv_bias, dtype=dtype,
                            rng=rng)
        self.bn2 = bn(width)
        self.relu2 = ReLU()
        self.conv3 = Conv2D(width, out, 1, bias=conv_bias, dtype=dtype, rng=rng)
        self.bn3 = bn(out)
        self.downsample = _downsample(downsample, in_channels, out, stride, conv_bias, bn, dtype, rng)
        self.add = Add()
        self.relu3 = ReLU()

    @property
    def out_channels(self):
        return self.width * self.expansion

    def describe(self):
        return (f"Bottleneck(in_channels={self.in_channels}, width={self.width}, "
                f"stride={self.stride}, out_channels={self.out_channels})")

    def _branch(self):
        return [(name, getattr(self, name)) for name in
                ("conv1", "bn1", "relu1", "conv2", "bn2", "relu2", "conv3", "bn3")]

    def _shortcut(self):
        return [("downsample", self.downsample)] if self.downsample is not None else []

    def _final(self):
        return ("relu3", self.relu3)


class BasicBlock(_ResidualBlock):
    """ResNet-18/34's block, as torchvision's BasicBlock, children named like it.

    BasicBlock(in_channels, out_channels, stride=1, downsample=None, ...)

        conv1 3×3 padding 1, stride (in_channels -> out_channels), bn1, relu
        conv2 3×3 padding 1 (out_channels -> out_channels), bn2
        + shortcut: x, or downsample(x) = bn(conv 1×1 stride (in_channels -> out_channels))
        relu

    input (N, in_channels, H, W) -> output (N, out_channels, ⌊(H − 1)/stride⌋ + 1, ...).
    ``downsample`` as in Bottleneck (None/"auto": made when stride != 1 or the channels change).
    """

    expansion = 1

    def __init__(self, in_channels, out_channels, stride=1, downsample=None, conv_bias=False,
                 bn_eps=1e-5, bn_momentum=None, bn_convention="torch", dtype=np.float32, rng=None):
        super().__init__()
        rng = get_rng(rng)
        self.in_channels, self.out_channels, self.stride = in_channels, out_channels, stride
        self.conv_bias, self.bn_eps, self.bn_momentum = conv_bias, bn_eps, bn_momentum
        self.bn_convention = bn_convention
        self.dtype = np.dtype(dtype)

        def bn(c):
            return BatchNorm2D(c, eps=bn_eps, momentum=bn_momentum, convention=bn_convention,
                               dtype=dtype)
        self.conv1 = Conv2D(in_channels, out_channels, 3, stride=stride, padding=1, bias=conv_bias,
                            dtype=dtype, rng=rng)
        self.bn1 = bn(out_channels)
        self.relu1 = ReLU()
        self.conv2 = Conv2D(out_channels, out_channels, 3, padding=1, bias=conv_bias, dtype=dtype,
                            rng=rng)
        self.bn2 = bn(out_channels)
        self.downsample = _downsample(downsample, in_channels, out_channels, stride, conv_bias, bn,
                                      dtype, rng)
        self.add = Add()
        self.relu2 = ReLU()

    def describe(self):
        return (f"BasicBlock(in_channels={self.in_channels}, out_channels={self.out_channels}, "
                f"stride={self.stride})")

    def _branch(self):
        return [(name, getattr(self, name)) for name in ("conv1", "bn1", "relu1", "conv2", "bn2")]

    def _shortcut(self):
        return [("downsample", self.downsample)] if self.downsample is not None else []

    def _final(self):
        return ("relu2", self.relu2)
