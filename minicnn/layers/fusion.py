"""Fewer passes over memory: a convolution with the BatchNorm, ReLU and max-pool after it.

A convolution followed by a ReLU writes its output already clipped at 0: the kernel clips each
image's output as soon as it is written, while it is in the cache (``relu=True``), instead of a
second pass over the whole batch's output, which is larger than the cache, and a fresh array
for the ReLU. That holds in training too: the convolution's backward pass reads its input, not
its output, and the ReLU's reads the clipped output (the ReLU keeps it, ``ReLU.computed``), so
both layers keep what they keep unfused, and every number is the same bits.

A BatchNorm2D followed by a ReLU (every stage of a ResNet, in training) clips its output the
same way, each plane as it is written; in training its backward pass then takes the ReLU's
gradient as it reads dy (dy where the output is > 0), and the ReLU passes dy on
(``BatchNorm2D.clips_output_gradient``, ``ReLU.applied_later``): one pass fewer, the same bits.

In training, a Conv2D whose input is a ReLU's output (mnist_cnn's second) applies that ReLU's
gradient itself: its input gradient is kept only where its input is > 0, the ReLU's rule, as
the kernel writes it (Winograd's; the others afterwards), and the ReLU passes its dy on
(``hand_relu_gradient``): one pass over the full-size gradient fewer, the same bits. An
AvgPool2D or SumPool2D after a ReLU (LeNet-5's) does the same as it spreads its gradient back
(2×2 windows as it writes; others afterwards).

A 2×2 max-pool after the ReLU joins in (mnist_cnn's Conv2D -> ReLU -> MaxPool2D(2)): the kernel
takes the maxima of each image's clipped output while it is in the cache, and writes only the
pooled output, a quarter of the size, and where each maximum was (Winograd's kernel does; the
others pool the batch's output afterwards, the same numbers). In training the ReLU's gradient
is then taken by the MaxPool2D, at the maxima, before it spreads the gradient back
(``MaxPool2D.computed``, ``ReLU.applied_later``): the same numbers, since everywhere else the
spread gradient is 0. Winograd's backward pass goes further: it takes the pool's gradient
and puts each one at its window's maximum (with the ReLU's gradient) as it makes the
gradients of its 2×2 tiles, which are the pool's windows; the pool and the ReLU pass dy on
(``MaxPool2D.spread_by_conv``, ``conv_numba.takes_max_gradient``), and the output's gradient,
four times the pool's, is never written.

So does a 2×2 average or sum pool (LeNet-5's Conv2D -> ReLU -> AvgPool2D(2), twice): the
"direct" and "gemm" kernels write each image's clipped output and the means of its windows
while it is in the cache (the others pool afterwards). In training the convolution then
spreads the pool's gradient itself, with the ReLU's gradient, as its backward pass lays out
the gradient of its output image by image ("gemm": into a buffer of its thread, "direct": onto
its grid), and the pool and the ReLU pass dy on (``_SpreadingPool.spread_by_conv``,
``ReLU.applied_later``): the output's gradient of the whole batch is never written, nor read
again, and the two layers' Python calls are gone. The same bits as unfused: the same sums in
the same order, the same shares.

Under ``no_grad`` in evaluation mode nothing is kept for a backward pass, and a chain

    Conv2D -> BatchNorm2D (evaluation mode) -> ReLU [-> MaxPool2D(2)]

runs as one convolution (any of the three may be missing). In evaluation mode BatchNorm is a
fixed affine map per channel,

    y = s·x + t,    s = γ / √(running_var + ε),    t = β − s·running_mean,

so after a convolution it can be folded into the convolution's weights and bias:

    s·(W ∗ x + b) + t = (s·W) ∗ x + (s·b + t)

(what TensorFlow's graph optimiser does when Keras predicts, and PyTorch's inference
freezing). The ReLU then clips the convolution's output as it is written: no array is written
and read again for either layer. A residual block's last ReLU clips the sum in place.
Either half works alone: Conv2D -> ReLU (LeNet-5, mnist_cnn) and Conv2D -> BatchNorm2D.
``folding.folded(model)`` builds the network this computes, as layers; ``disabled()`` turns
fusing off.

The numbers: the clipped and the pooled outputs are the same bits. The folding rounds s·W and
s·b + t instead of the convolution's output and BatchNorm's steps, so the result moves by a few
units in the last place of each term's size; ``tests/test_fusion.py`` bounds it. Only these
exact classes fuse: a subclass may compute something else, and runs as itself, as does a
layer whose forward or backward was replaced on the layer itself (a hook). Nothing fuses while
``Layer.__call__`` is wrapped (``minicnn.trace`` records each layer's call): every layer is
then called, to be seen.
"""

from .. import kernels
from ..core.switch import Switch
from .activations import ReLU
from .base import Layer, keeping_caches
from .conv import Conv2D
from .norm import BatchNorm2D
from .pool import AvgPool2D, MaxPool2D, SumPool2D


_SWITCH = Switch()
_PLAIN_CALL = Layer.__call__


def _watched():
    """Whether ``Layer.__call__`` is wrapped (``minicnn.trace`` records every layer's call that
    way): then every layer runs as itself, to be seen."""
    return Layer.__call__ is not _PLAIN_CALL


def disabled():
    """``with fusion.disabled(): model(x)``: layer by layer under no_grad too (to compare, or
    to time what fusing saves)."""
    return _SWITCH.off()


def fusing(layer):
    """Whether a pass of ``layer`` now may fuse: under no_grad, in evaluation mode."""
    return _SWITCH.on and not keeping_caches() and not layer.training and not _watched()


def relu_in_place(layer, y):
    """``layer(y)`` when ``layer`` is a ReLU that may clip y in place (y is an array no one else
    holds: a fresh output); None otherwise, and the caller runs the layer."""
    if type(layer) is ReLU and fusing(layer) and y.dtype.kind == "f":
        return kernels.elementwise().relu_forward(y, out=y)
    return None


def chain_length(layers, i):
    """How many of ``layers`` from index i run as one: 1 (the layer alone), 2 for a Conv2D
    followed by a ReLU, 3 with a 2×2 pool after that (``pools``), 2 for a BatchNorm2D
    followed by a ReLU while caches are kept (under no_grad in evaluation mode the BatchNorm
    folds into the convolution before it instead), or, under no_grad in evaluation mode, 2 to
    4 for a Conv2D followed by a BatchNorm2D in evaluation mode and/or a ReLU and/or a 2×2
    pool. A layer whose forward or backward was replaced on the layer itself (a hook)
    ends the chain before it: it must be called, as itself."""
    n = _length(layers, i)
    for k in range(n):
        if _hooked(layers[i + k]):
            return max(k, 1)
    return n


def _hooked(layer):
    """Whether ``layer.forward`` or ``layer.backward`` is an attribute of the layer itself."""
    return "forward" in vars(layer) or "backward" in vars(layer)


def _length(layers, i):
    """``chain_length`` before hooks are looked at."""
    conv = layers[i]
    if not _SWITCH.on or _watched():
        return 1
    if type(conv) is BatchNorm2D:
        relu_next = i + 1 < len(layers) and type(layers[i + 1]) is ReLU
        return 2 if relu_next and not fusing(conv) else 1
    if type(conv) is not Conv2D:
        return 1
    if not fusing(conv):            # training, or caches kept: the ReLU and a 2×2 pool
        n = 1
        if i + n < len(layers) and type(layers[i + n]) is ReLU:
            n += 1
        if n == 2 and i + n < len(layers) and pools(layers[i + n]):
            n += 1
        return n
    n = 1
    if i + n < len(layers) and folds(conv, layers[i + n]) and fusing(layers[i + n]):
        n += 1
    if i + n < len(layers) and type(layers[i + n]) is ReLU:
        n += 1
    if i + n < len(layers) and pools(layers[i + n]) and fusing(layers[i + n]):
        n += 1
    return n


def pools(layer):
    """Whether ``layer`` is a MaxPool2D, AvgPool2D or SumPool2D of 2×2 windows, stride 2, no
    padding: the pools the kernels take (``pool=layer.kernel_pool``)."""
    return (type(layer) in _KERNEL_POOLS and layer.kernel_size == (2, 2)
            and layer.stride == (2, 2) and layer.padding != "same"
            and layer.padding_for(2, 2) == ((0, 0), (0, 0)))


_KERNEL_POOLS = (MaxPool2D, AvgPool2D, SumPool2D)


def folds(conv, norm):
    """Whether ``norm`` is a BatchNorm2D in evaluation mode that ``fold`` folds into ``conv``."""
    return (type(norm) is BatchNorm2D and not norm.training
            and norm.num_features == conv.out_channels)


def fold(conv, norm):
    """(weight (O, C, KH, KW), bias (O,)): the one convolution that computes ``norm(conv(x))``
    with ``norm`` (a BatchNorm2D) in evaluation mode: s·W and s·b + t."""
    scale, shift = norm.eval_affine()
    weight = conv.weight.data * scale[:, None, None, None]
    bias = shift if conv.bias is None else conv.bias.data * scale + shift
    return weight, bias


def run_chain(layers, x):
    """``layers`` (a chain from ``chain_length``) on x (N, C, H, W) -> their output."""
    if type(layers[0]) is BatchNorm2D:       # BatchNorm2D -> ReLU
        norm, relu = layers
        y = norm.forward(x, relu=True)
        if not keeping_caches():
            return relu.computed(y)
        norm.clips_output_gradient(y)       # its backward pass takes the ReLU's gradient
        relu.applied_later(y.shape, y.dtype)
        return y
    conv, rest = layers[0], list(layers[1:])
    if not fusing(conv):            # Conv2D -> ReLU [-> a 2×2 pool], each keeping its cache
        if len(rest) == 1:
            return rest[0].computed(conv.forward(x, relu=True))
        relu, pool = rest
        out_shape = conv.output_shape(x.shape)
        pool.output_shape(out_shape)    # the pool's own error when its window does not fit
        y = conv.forward(x, relu=True, pool=pool)
        # the ReLU's backward pass sees what the pool's passes on: the gradient of the whole
        # output after a max-pool, the pool's own where the Conv2D spreads it (an average,
        # and a max-pool in Winograd's kernel)
        spread = conv._spread is not None
        relu.applied_later(out_shape if pool.kernel_pool == "max" and not spread else y.shape,
                           y.dtype)
        return y
    if rest and type(rest[0]) is BatchNorm2D:
        weight, bias = fold(conv, rest.pop(0))
    else:
        weight, bias = conv.weight.data, conv.bias.data if conv.bias is not None else None
    pool = bool(rest) and type(rest[-1]) in _KERNEL_POOLS and rest[-1].kernel_pool
    if pool:        # the pool's own error when its window does not fit the convolution's output
        rest[-1].output_shape(conv.output_shape(x.shape))
    relu = bool(rest) and type(rest[0]) is ReLU
    return conv.forward_with(x, weight, bias, relu=relu, pool=pool)


def hand_relu_gradient(before, layer, x):
    """After ``layer``'s forward pass on x, in training: when ``before`` (the layer before it)
    is a ReLU, x its output, and ``layer`` a Conv2D, an AvgPool2D or a SumPool2D, ``layer``
    applies the ReLU's gradient to its dx and the ReLU passes dy on. Not when x had to change
    dtype for a Conv2D (the test x > 0 is the ReLU's on its own output; a pool computes in x's
    own dtype), nor when either layer is hooked (each must then compute its own gradient)."""
    if (type(before) is ReLU and type(layer) in _TAKE_RELU_GRADIENT and _SWITCH.on
            and not _watched() and keeping_caches() and not _hooked(before)
            and not _hooked(layer)
            and (type(layer) is not Conv2D or getattr(x, "dtype", None) == layer.dtype)):
        layer.clips_input_gradient(x)
        before.applied_later(x.shape, x.dtype)


#: the layers that take the gradient of a ReLU before them (``hand_relu_gradient``)
_TAKE_RELU_GRADIENT = (Conv2D, AvgPool2D, SumPool2D)

