"""Prediction in fewer passes over memory: a convolution with the BatchNorm and the ReLU after it.

Under ``no_grad`` in evaluation mode nothing is kept for a backward pass, and a chain

    Conv2D -> BatchNorm2D (evaluation mode) -> ReLU

runs as one convolution. In evaluation mode BatchNorm is a fixed affine map per channel,

    y = s·x + t,    s = γ / √(running_var + ε),    t = β − s·running_mean,

so after a convolution it can be folded into the convolution's weights and bias:

    s·(W ∗ x + b) + t = (s·W) ∗ x + (s·b + t)

(what TensorFlow's graph optimiser does when Keras predicts, and PyTorch's inference
freezing). The ReLU then clips the convolution's own output in place: no array is written and
read again for either layer. A residual block's last ReLU clips the sum in place the same way.
Either half works alone: Conv2D -> ReLU (LeNet-5, mnist_cnn) and Conv2D -> BatchNorm2D.
``folding.folded(model)`` builds the network this computes, as layers; ``disabled()`` turns
fusing off.

The numbers: the ReLU in place gives the same bits. The folding rounds s·W and s·b + t instead
of the convolution's output and BatchNorm's steps, so the result moves by a few units in the
last place of each term's size; ``tests/test_fusion.py`` bounds it. Only these exact classes
fuse: a subclass may compute something else, and runs as itself.
"""
from contextlib import contextmanager

from .. import kernels
from .activations import ReLU
from .base import keeping_caches
from .conv import Conv2D
from .norm import BatchNorm2D


_enabled = True


@contextmanager
def disabled():
    """``with fusion.disabled(): model(x)``: layer by layer under no_grad too (to compare, or
    to time what fusing saves)."""
    global _enabled
    previous, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = previous


def fusing(layer):
    """Whether a pass of ``layer`` now may fuse: under no_grad, in evaluation mode."""
    return _enabled and not keeping_caches() and not layer.training


def relu_in_place(layer, y):
    """``layer(y)`` when ``layer`` is a ReLU that may clip y in place (y is an array no one else
    holds: a fresh output); None otherwise, and the caller runs the layer."""
    if type(layer) is ReLU and fusing(layer) and y.dtype.kind == "f":
        return kernels.elementwise().relu_forward(y, out=y)
    return None


def chain_length(layers, i):
    """How many of ``layers`` from index i run as one: 1 (the layer alone), or 2 to 3 for a
    Conv2D followed by a BatchNorm2D in evaluation mode and/or a ReLU."""
    conv = layers[i]
    if type(conv) is not Conv2D or not fusing(conv):
        return 1
    n = 1
    if i + n < len(layers) and folds(conv, layers[i + n]) and fusing(layers[i + n]):
        n += 1
    if i + n < len(layers) and type(layers[i + n]) is ReLU:
        n += 1
    return n


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
    conv, rest = layers[0], list(layers[1:])
    if rest and type(rest[0]) is BatchNorm2D:
        weight, bias = fold(conv, rest.pop(0))
    else:
        weight, bias = conv.weight.data, conv.bias.data if conv.bias is not None else None
    y = conv.forward_with(x, weight, bias)
    if rest:                                   # the ReLU
        kernels.elementwise().relu_forward(y, out=y)
    return y
