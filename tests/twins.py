"""The one shared helper: build a layer's twin in PyTorch or Keras, copy the weights, compare.

``compare(layer, x, framework)`` runs ``layer`` forward on ``x`` (NCHW) and backward with a
RANDOM upstream gradient ``dy``; builds the same layer in PyTorch (NCHW) or Keras (NHWC, the
input and gradients transposed at the border) holding the same weights; differentiates
``sum(y * dy)`` there with autograd / GradientTape; and compares output, input gradient and
every parameter gradient. ``compare_loss`` does the same for a loss. ``check_finite_differences``
checks the hand-written backward against central differences, without any framework.

Agreement means  max|ours − theirs| <= atol + rtol · max|theirs|  for each quantity: the error
is measured relative to the largest value of the reference, so entries near zero do not make
the check meaningless or flaky. A failure message names the quantity, the layer, the
configuration and the max error.
"""
import importlib.util
import os
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pytest

import minicnn.layers as L
import minicnn.losses as LS
from minicnn.layers import Sequential

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

try:
    import torch
    import torch.nn as tnn
    import torch.nn.functional as F
except ImportError:  # skipped cleanly by the tests' markers
    torch = None
else:
    _ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if _ROOT not in sys.path:  # reference/ sits beside tests/
        sys.path.insert(0, _ROOT)
    from reference.torch import resnet as torch_resnet  # torchvision's blocks, in plain PyTorch

_keras = None

HAVE_TORCH = torch is not None
HAVE_KERAS = (importlib.util.find_spec("keras") is not None
              and importlib.util.find_spec("tensorflow") is not None)
requires_torch = pytest.mark.skipif(not HAVE_TORCH, reason="torch is not installed "
                                    "(pip install -e .[reference])")
requires_keras = pytest.mark.skipif(not HAVE_KERAS, reason="keras/tensorflow is not installed "
                                    "(pip install -e .[reference])")


def keras():
    """Keras imported on first use (it takes seconds), or None when it is not installed."""
    global _keras
    if _keras is None:
        try:
            import keras as k
            _keras = k
        except ImportError:
            _keras = False
    return _keras or None


class Unsupported(Exception):
    """The framework has no twin for this configuration (e.g. Keras pads only "same"/"valid")."""


# ----------------------------------------------------------------------------------------
# comparing arrays
# ----------------------------------------------------------------------------------------
def assert_close(quantity, ours, theirs, *, rtol, atol=0.0, config=""):
    """Fail with a message naming ``quantity``, the configuration and the max error."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, (
        f"{quantity}: shape {ours.shape} != reference shape {theirs.shape} [{config}]")
    if ours.size == 0:
        return
    err = np.abs(ours.astype(np.float64) - theirs.astype(np.float64))
    scale = float(np.max(np.abs(theirs)))
    limit = atol + rtol * scale
    worst = float(err.max())
    assert np.all(np.isfinite(ours)), f"{quantity}: non-finite values in ours [{config}]"
    assert worst <= limit, (
        f"{quantity} differs [{config}]: max abs error {worst:.3e} at index "
        f"{np.unravel_index(int(err.argmax()), err.shape)} > allowed {limit:.3e} "
        f"(atol {atol:g} + rtol {rtol:g} x max|reference| {scale:.3e})")


# ----------------------------------------------------------------------------------------
# twins
# ----------------------------------------------------------------------------------------
@dataclass
class Twin:
    """A framework's version of one layer.

    forward: framework tensor in the framework's layout -> framework tensor
    params:  the framework's variables, in the order of ``layer.parameters()``
    grad_to_ours: per parameter, framework-layout gradient (NumPy) -> minicnn layout
    x_to_theirs / y_to_ours: layout conversion at the border (identity for torch)
    """
    forward: Callable
    params: list = field(default_factory=list)
    grad_to_ours: list = field(default_factory=list)
    x_to_theirs: Callable = lambda a: a
    x_to_ours: Callable = lambda a: a
    y_to_ours: Callable = lambda a: a
    y_to_theirs: Callable = lambda a: a
    module: object = None  # the framework's layer itself, when tests need its state (BatchNorm)


def nchw_to_nhwc(a):
    return np.transpose(a, (0, 2, 3, 1)) if a.ndim == 4 else a


def nhwc_to_nchw(a):
    return np.transpose(a, (0, 3, 1, 2)) if a.ndim == 4 else a


def _torch_param(p):
    return torch.tensor(p.data, requires_grad=True)


def _torch_weighted_twin(layer, mod, fwd):
    """Copy the layer's weight and bias into the torch module (same shapes, same dtype)."""
    mod.to(torch.from_numpy(layer.weight.data).dtype)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(layer.weight.data))
        if layer.bias is not None:
            mod.bias.copy_(torch.from_numpy(layer.bias.data))
    params = [mod.weight] + ([mod.bias] if layer.bias is not None else [])
    return Twin(fwd, params, [lambda g: g] * len(params))


def torch_twin(layer, input_shape):
    """The PyTorch twin of ``layer`` (float64 or float32, as the layer), same weights."""
    if torch is None:
        raise Unsupported("torch is not installed")
    if isinstance(layer, _TORCH_MODULE_TYPES):
        mod = torch_module(layer, input_shape)
        by_name = dict(mod.named_parameters())
        return Twin(mod, [by_name[name] for name, _ in layer.named_parameters()],
                    [lambda g: g] * len(by_name), module=mod)
    if isinstance(layer, L.Conv2D):
        pads = layer.padding_for(input_shape[2], input_shape[3])
        (t, b), (l, r) = pads
        if t == b and l == r:
            mod = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, (t, l), layer.dilation, bias=layer.bias is not None)
            fwd = mod
        else:  # asymmetric ("same" with an odd total): pad first, as TensorFlow does
            mod = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                             layer.stride, 0, layer.dilation, bias=layer.bias is not None)
            fwd = lambda x: mod(F.pad(x, (l, r, t, b)))  # noqa: E731
        return _torch_weighted_twin(layer, mod, fwd)
    if isinstance(layer, L.Dense):
        mod = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        return _torch_weighted_twin(layer, mod, mod)
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        (t, b), (l, r) = layer.padding_for(input_shape[2], input_shape[3])
        k, s = layer.kernel_size, layer.stride
        symmetric = t == b and l == r and 2 * t <= k[0] and 2 * l <= k[1]
        if isinstance(layer, L.MaxPool2D):
            if symmetric:
                return Twin(tnn.MaxPool2d(k, s, (t, l)))
            return Twin(lambda x: F.max_pool2d(F.pad(x, (l, r, t, b), value=-float("inf")), k, s))
        if isinstance(layer, L.SumPool2D):
            if symmetric:
                return Twin(tnn.AvgPool2d(k, s, (t, l), count_include_pad=True, divisor_override=1))
            return Twin(lambda x: F.avg_pool2d(F.pad(x, (l, r, t, b)), k, s, divisor_override=1))
        if symmetric:
            return Twin(tnn.AvgPool2d(k, s, (t, l), count_include_pad=layer.count_include_pad))
        if layer.count_include_pad:
            return Twin(lambda x: F.avg_pool2d(F.pad(x, (l, r, t, b)), k, s))

        def avg_excluding_padding(x):
            total = F.avg_pool2d(F.pad(x, (l, r, t, b)), k, s, divisor_override=1)
            count = F.avg_pool2d(F.pad(torch.ones_like(x), (l, r, t, b)), k, s, divisor_override=1)
            return total / count
        return Twin(avg_excluding_padding)
    if isinstance(layer, L.GlobalAvgPool2D):
        return Twin(lambda x: x.mean(dim=(2, 3)))
    if isinstance(layer, L.Flatten):
        return Twin(tnn.Flatten())
    simple = {L.ReLU: tnn.ReLU, L.Tanh: tnn.Tanh, L.Sigmoid: tnn.Sigmoid}
    if type(layer) in simple:
        return Twin(simple[type(layer)]())
    if isinstance(layer, L.Softmax):
        return Twin(tnn.Softmax(dim=layer.axis))
    if isinstance(layer, L.LogSoftmax):
        return Twin(tnn.LogSoftmax(dim=layer.axis))
    raise Unsupported(f"no torch twin for {layer!r}")


# ----------------------------------------------------------------------------------------
# torch modules with torch's names: BatchNorm, padding, residual blocks, named Sequentials
# ----------------------------------------------------------------------------------------
_TORCH_MODULE_TYPES = (L.BatchNorm2D, L.ZeroPadding2D, L.Identity, L.Residual, L.Bottleneck,
                       L.BasicBlock, Sequential)


def _torch_bn(layer):
    """nn.BatchNorm2d doing what ``layer`` does in its current mode (torch convention only, or
    running statistics: Keras' update of the moving variance has no nn.BatchNorm2d twin)."""
    batch = layer.uses_batch_statistics()
    if layer.convention != "torch" and batch:
        raise Unsupported("Keras' moving-variance update (biased) has no torch twin")
    momentum = layer.momentum if layer.convention == "torch" else 1 - layer.momentum
    mod = tnn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=momentum, affine=layer.affine)
    # a frozen Keras-style BatchNorm normalises with its running statistics: torch's eval mode
    return mod.train(batch)


def torch_module(layer, input_shape=None):
    """A torch.nn.Module computing what ``layer`` computes, with the same parameter and buffer
    names (checked) and values, in the layer's dtype. Blocks are torchvision's code, re-typed."""
    if isinstance(layer, L.BatchNorm2D):
        mod = _torch_bn(layer)
    elif isinstance(layer, L.ZeroPadding2D):
        (t, b), (l, r) = layer.padding
        mod = tnn.ZeroPad2d((l, r, t, b))  # torch lists the width first
    elif isinstance(layer, L.Identity):
        mod = tnn.Identity()
    elif isinstance(layer, Sequential):
        shape, mods = input_shape, []
        for name, sub in layer.named_children():
            mods.append((name, torch_module(sub, shape)))
            shape = None if shape is None else sub.output_shape(shape)
        mod = tnn.Sequential(OrderedDict(mods))
    elif isinstance(layer, L.Residual):
        mod = TorchResidual(torch_module(layer.branch, input_shape),
                            None if layer.shortcut is None else torch_module(layer.shortcut, input_shape),
                            None if layer.activation is None else torch_module(layer.activation))
    elif isinstance(layer, L.Bottleneck):
        mod = TorchBottleneck(layer)
        for name in ("bn1", "bn2", "bn3"):
            setattr(mod, name, _torch_bn(getattr(layer, name)))
        if layer.downsample is not None:
            mod.downsample = torch_module(layer.downsample, input_shape)
    elif isinstance(layer, L.BasicBlock):
        mod = TorchBasicBlock(layer)
        for name in ("bn1", "bn2"):
            setattr(mod, name, _torch_bn(getattr(layer, name)))
        if layer.downsample is not None:
            mod.downsample = torch_module(layer.downsample, input_shape)
    elif isinstance(layer, L.Conv2D) and not isinstance(layer.padding, str):
        (t, b), (l, r) = layer.padding_for(10**6, 10**6)
        if t != b or l != r:
            raise Unsupported("asymmetric padding")
        mod = tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         (t, l), layer.dilation, bias=layer.bias is not None)
    elif isinstance(layer, L.Dense):
        mod = tnn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
    elif not layer.parameters():  # activations, pooling, flatten: their twin as a module
        if input_shape is None:
            input_shape = (1, 1, 1, 1)
        mod = _Lambda(torch_twin(layer, input_shape).forward)
    else:
        raise Unsupported(f"no torch module for {layer!r}")
    params = layer.parameters()
    dtype = params[0].data.dtype if params else getattr(layer, "dtype", None)
    mod.to(_TORCH_DTYPES[np.dtype(np.float64 if dtype is None else dtype)])
    copy_to_torch(layer, mod)
    return mod


def copy_to_torch(layer, mod):
    """Copy every parameter and buffer of ``layer`` into ``mod`` by name; the names and their
    order must be the same in both (torch's state_dict naming is the contract)."""
    ours_p = [name for name, _ in layer.named_parameters()]
    theirs_p = [name for name, _ in mod.named_parameters()]
    assert ours_p == theirs_p, f"parameter names differ: ours {ours_p}, torch {theirs_p}"
    ours_b = [name for name, _ in layer.named_buffers()]
    theirs_b = [name for name, _ in mod.named_buffers()]
    assert ours_b == theirs_b, f"buffer names differ: ours {ours_b}, torch {theirs_b}"
    state = dict(mod.named_parameters()) | dict(mod.named_buffers())
    with torch.no_grad():
        for name, value in (layer.named_parameters() + layer.named_buffers()):
            data = value.data if hasattr(value, "grad") else value
            state[name].copy_(torch.from_numpy(np.array(data)))


if torch is not None:
    _TORCH_DTYPES = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}

    class _Lambda(tnn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

        def forward(self, x):
            return self.fn(x)

    class TorchResidual(tnn.Module):
        def __init__(self, branch, shortcut, activation):
            super().__init__()
            self.branch, self.shortcut, self.activation = branch, shortcut, activation

        def forward(self, x):
            y = self.branch(x) + (x if self.shortcut is None else self.shortcut(x))
            return y if self.activation is None else self.activation(y)

    def TorchBottleneck(block):
        """torchvision's Bottleneck (reference/torch/resnet.py) configured as the minicnn block:
        where the stride goes, convolution biases."""
        if block.expansion != 4:
            raise Unsupported(f"torchvision's Bottleneck expands by 4, not {block.expansion}")
        return torch_resnet.Bottleneck(block.in_channels, block.width, block.stride,
                                       stride_in_1x1=block.stride_in_1x1, bias=block.conv_bias)

    def TorchBasicBlock(block):
        """torchvision's BasicBlock (reference/torch/resnet.py) configured as the minicnn block."""
        return torch_resnet.BasicBlock(block.in_channels, block.out_channels, block.stride,
                                       bias=block.conv_bias)


def keras_twin(layer, input_shape):
    """The Keras twin of ``layer`` working in NHWC, same weights (transposed to Keras' layout)."""
    k = keras()
    if k is None:
        raise Unsupported("keras is not installed")
    dtype = str(layer.weight.data.dtype) if getattr(layer, "weight", None) is not None else "float64"
    nhwc = dict(x_to_theirs=nchw_to_nhwc, x_to_ours=nhwc_to_nchw,
                y_to_ours=nhwc_to_nchw, y_to_theirs=nchw_to_nhwc)
    if isinstance(layer, L.BatchNorm2D):
        if layer.convention != "keras" and layer.uses_batch_statistics():
            raise Unsupported("PyTorch's running-variance update (unbiased) has no Keras twin")
        momentum = layer.momentum if layer.convention == "keras" else 1 - layer.momentum
        bn = k.layers.BatchNormalization(axis=-1, momentum=momentum, epsilon=layer.eps,
                                         center=layer.affine, scale=layer.affine,
                                         dtype=str(layer.dtype))
        bn.build((None,) + tuple(input_shape[2:]) + (input_shape[1],))
        weights = [layer.weight.data, layer.bias.data] if layer.affine else []
        bn.set_weights(weights + [layer.running_mean, layer.running_var])
        # Keras 3: a layer with trainable=False runs in inference mode even when training=True
        bn.trainable = layer.trainable or layer.frozen_uses_batch_stats
        training = layer.training
        params = [bn.gamma, bn.beta] if layer.affine else []
        return Twin(lambda x: bn(x, training=training), params, [lambda g: g] * len(params),
                    module=bn, **nhwc)
    if isinstance(layer, L.ZeroPadding2D):
        return Twin(k.layers.ZeroPadding2D(layer.padding, dtype="float64"), **nhwc)
    if isinstance(layer, L.Conv2D):
        if max(layer.stride) > 1 and max(layer.dilation) > 1:
            raise Unsupported("TensorFlow has no strided dilated convolution")
        pads = layer.padding_for(input_shape[2], input_shape[3])
        same = layer.padding == "same"
        conv = k.layers.Conv2D(layer.out_channels, layer.kernel_size, strides=layer.stride,
                               padding="same" if same else "valid", dilation_rate=layer.dilation,
                               use_bias=layer.bias is not None, dtype=dtype)
        pad = None
        if not same and any(sum(p) for p in pads):
            pad = k.layers.ZeroPadding2D(pads, dtype=dtype)
        h, w = input_shape[2] + sum(pads[0]), input_shape[3] + sum(pads[1])
        conv.build((None, h, w, layer.in_channels) if pad else
                   (None, input_shape[2], input_shape[3], layer.in_channels))
        weights = [layer.weight.data.transpose(2, 3, 1, 0)]  # (O, C, kh, kw) -> (kh, kw, C, O)
        if layer.bias is not None:
            weights.append(layer.bias.data)
        conv.set_weights(weights)
        fwd = (lambda x: conv(pad(x))) if pad else conv
        params = [conv.kernel] + ([conv.bias] if layer.bias is not None else [])
        to_ours = [lambda g: g.transpose(3, 2, 0, 1), lambda g: g]
        return Twin(fwd, params, to_ours[:len(params)], **nhwc)
    if isinstance(layer, L.Dense):
        dense = k.layers.Dense(layer.out_features, use_bias=layer.bias is not None, dtype=dtype)
        dense.build((None, layer.in_features))
        weights = [layer.weight.data.T] + ([layer.bias.data] if layer.bias is not None else [])
        dense.set_weights(weights)
        params = [dense.kernel] + ([dense.bias] if layer.bias is not None else [])
        return Twin(dense, params, [lambda g: g.T, lambda g: g][:len(params)])
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        pads = layer.padding_for(input_shape[2], input_shape[3])
        if layer.padding == "same":
            mode = "same"
            if isinstance(layer, L.AvgPool2D) and layer.count_include_pad and any(sum(p) for p in pads):
                raise Unsupported("Keras' 'same' average pooling excludes the padding")
            if isinstance(layer, L.SumPool2D) and any(sum(p) for p in pads):
                raise Unsupported("Keras has no sum pooling over padded windows")
        elif any(sum(p) for p in pads):
            raise Unsupported("Keras pools only with 'valid' or 'same' padding")
        else:
            mode = "valid"
        cls = k.layers.MaxPooling2D if isinstance(layer, L.MaxPool2D) else k.layers.AveragePooling2D
        pool = cls(layer.kernel_size, layer.stride, padding=mode, dtype="float64")
        if isinstance(layer, L.SumPool2D):
            area = layer.kernel_size[0] * layer.kernel_size[1]
            return Twin(lambda x: pool(x) * area, **nhwc)
        return Twin(pool, **nhwc)
    if isinstance(layer, L.GlobalAvgPool2D):
        return Twin(k.layers.GlobalAveragePooling2D(dtype="float64"), **nhwc)
    if isinstance(layer, L.Flatten):
        # Keras flattens NHWC in (H, W, C) order; ours flattens NCHW in (C, H, W) order.
        n, c, h, w = input_shape

        def chw_order(a):  # Keras' (N, H·W·C) -> ours (N, C·H·W)
            return a.reshape(n, h, w, c).transpose(0, 3, 1, 2).reshape(n, -1)

        def hwc_order(a):
            return a.reshape(n, c, h, w).transpose(0, 2, 3, 1).reshape(n, -1)
        return Twin(k.layers.Flatten(dtype="float64"), x_to_theirs=nchw_to_nhwc,
                    x_to_ours=nhwc_to_nchw, y_to_ours=chw_order, y_to_theirs=hwc_order)
    acts = {L.ReLU: "relu", L.Tanh: "tanh", L.Sigmoid: "sigmoid"}
    if type(layer) in acts:
        return Twin(k.layers.Activation(acts[type(layer)], dtype="float64"), **nhwc)
    if isinstance(layer, (L.Softmax, L.LogSoftmax)):
        axis = -1 if (len(input_shape) == 4 and layer.axis == 1) else layer.axis
        if isinstance(layer, L.Softmax):
            return Twin(k.layers.Softmax(axis=axis, dtype="float64"), **nhwc)
        return Twin(lambda x: k.ops.log_softmax(x, axis=axis), **nhwc)
    raise Unsupported(f"no keras twin for {layer!r}")


# ----------------------------------------------------------------------------------------
# the comparison
# ----------------------------------------------------------------------------------------
def _ours(layer, x, seed):
    y = layer.forward(x)
    dy = np.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype)
    dx = layer.backward(dy)
    return y, dy, dx, [p.grad.copy() for p in layer.parameters()]


def compare(layer, x, framework, *, rtol=None, atol=None, seed=0, config=None):
    """Compare ``layer`` with its twin in ``framework`` ("torch" or "keras") on input ``x``.

    The random upstream gradient is seeded by ``seed``. Raises ``Unsupported`` when the
    framework cannot express the configuration.
    """
    config = config or repr(layer)
    # Each compared value is a sum that the twin adds in its own order (its SIMD width, threads,
    # FMA: whatever the CPU). The tests' shapes keep every sum at n <= ~1,000 terms (a weight
    # gradient over N·OH·OW = 3·18·18); rounding of a sum of n mixed-sign terms grows as
    # sqrt(n)·u: 2e-6 of the largest value in float32 (u = 6e-8), 4e-15 in float64 (u = 1e-16),
    # five and 25,000 times below the default rtol
    if rtol is None:
        rtol = 1e-10 if x.dtype == np.float64 else 1e-5
    if atol is None:
        atol = 1e-12 if x.dtype == np.float64 else 1e-6
    twin = (torch_twin if framework == "torch" else keras_twin)(layer, x.shape)
    y, dy, dx, grads = _ours(layer, x, seed)
    if framework == "torch":
        xt = torch.tensor(x, requires_grad=True)
        yt = twin.forward(xt)
        (yt * torch.from_numpy(dy)).sum().backward()
        y_ref, dx_ref = yt.detach().numpy(), xt.grad.numpy()
        grads_ref = [g(p.grad.numpy()) for p, g in zip(twin.params, twin.grad_to_ours)]
    else:
        import tensorflow as tf
        xt = tf.Variable(twin.x_to_theirs(x))
        with tf.GradientTape() as tape:
            yt = twin.forward(xt)
            loss = tf.reduce_sum(yt * tf.constant(twin.y_to_theirs(dy), dtype=yt.dtype))
        got = tape.gradient(loss, [xt] + [p.value if hasattr(p, "value") else p for p in twin.params])
        y_ref = twin.y_to_ours(np.asarray(yt))
        dx_ref = twin.x_to_ours(np.asarray(got[0]))
        grads_ref = [g(np.asarray(v)) for v, g in zip(got[1:], twin.grad_to_ours)]
    where = f"{framework}, {config}, input {x.shape} {x.dtype}"
    assert_close("output", y, y_ref, rtol=rtol, atol=atol, config=where)
    assert_close("input gradient", dx, dx_ref, rtol=rtol, atol=atol, config=where)
    assert len(grads) == len(grads_ref), f"parameter count differs [{where}]"
    for p, g, g_ref in zip(layer.parameters(), grads, grads_ref):
        assert_close(f"gradient of {p.name or 'parameter'}", g, g_ref, rtol=rtol, atol=atol,
                     config=where)


def check_finite_differences(layer, x, *, eps=1e-6, rtol=1e-6, atol=1e-9, seed=0, before_forward=None,
                       max_entries=60):
    """Central differences of  sum(layer(x) · dy)  against the hand-written backward (float64).

    Checks up to ``max_entries`` randomly chosen entries of the input and of every parameter.
    ``before_forward`` is called before every forward (e.g. to fix a dropout mask).
    """
    rng = np.random.default_rng(seed)
    if before_forward:
        before_forward()
    y = layer.forward(x)
    dy = rng.standard_normal(y.shape)
    dx = layer.backward(dy)
    analytic = [("input", x, dx)] + [(p.name or "parameter", p.data, p.grad.copy())
                                      for p in layer.parameters()]

    def objective():
        if before_forward:
            before_forward()
        return float(np.sum(layer.forward(x) * dy))

    check_numeric_gradients(objective, analytic, rng, eps=eps, rtol=rtol, atol=atol,
                            max_entries=max_entries, config=repr(layer))


def check_numeric_gradients(objective, analytic, rng, *, eps=1e-6, rtol=1e-6, atol=1e-9,
                            max_entries=60, config=""):
    """Compare each (name, array, gradient) of ``analytic`` with central differences of
    ``objective()`` (a float), perturbing up to ``max_entries`` random entries of each array in place.
    """
    for name, array, grad in analytic:
        flat = array.reshape(-1)
        picks = rng.choice(flat.size, size=min(max_entries, flat.size), replace=False)
        numeric = np.empty(len(picks))
        for j, i in enumerate(picks):
            old = flat[i]
            flat[i] = old + eps
            up = objective()
            flat[i] = old - eps
            down = objective()
            flat[i] = old
            numeric[j] = (up - down) / (2 * eps)
        assert_close(f"gradient of {name} vs finite differences", grad.reshape(-1)[picks], numeric,
                     rtol=rtol, atol=atol, config=config)


# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------
def torch_loss_twin(loss, target):
    """(function of the input tensor -> scalar) for a minicnn loss, in PyTorch."""
    red = loss.reduction
    t = torch.from_numpy(np.asarray(target))
    if isinstance(loss, LS.CrossEntropyLoss):
        return lambda z: F.cross_entropy(z, t, reduction=red)
    if isinstance(loss, LS.NLLLoss):
        return lambda z: F.nll_loss(z, t, reduction=red)
    if isinstance(loss, LS.CategoricalCrossentropy):
        eps = loss.epsilon

        def cce(p):
            if t.ndim == 2:  # Keras' categorical_crossentropy: renormalise, clip, -sum(y · log p)
                p = p / p.sum(dim=1, keepdim=True)
                p = torch.clamp(p, eps, 1 - eps)
                per_sample = -(t.to(p.dtype) * torch.log(p)).sum(dim=1)
            else:  # Keras' sparse_categorical_crossentropy: clip, then log-softmax of log p
                logq = torch.log_softmax(torch.log(torch.clamp(p, eps, 1 - eps)), dim=1)
                per_sample = -logq.gather(1, t[:, None])[:, 0]
            return per_sample.sum() if red == "sum" else per_sample.mean()
        return cce
    raise Unsupported(f"no torch twin for {loss!r}")


def keras_loss_twin(loss, target):
    """(function of the input tensor -> scalar) for a minicnn loss, in Keras."""
    k = keras()
    red = "sum" if loss.reduction == "sum" else "sum_over_batch_size"
    target = np.asarray(target)

    def dtype_of(z):  # a Keras loss casts its input to its dtype, float32 unless told
        return k.backend.standardize_dtype(z.dtype)

    if isinstance(loss, LS.CrossEntropyLoss):
        return lambda z: k.losses.SparseCategoricalCrossentropy(
            from_logits=True, reduction=red, dtype=dtype_of(z))(target, z)
    if isinstance(loss, LS.NLLLoss):  # Keras has no NLL loss: the formula with keras.ops
        def nll(logp):  # (take_along_axis fails on a tf.Variable: pick with a one-hot mask)
            onehot = np.eye(logp.shape[1], dtype=k.backend.standardize_dtype(logp.dtype))[target]
            picked = -k.ops.sum(logp * onehot, axis=1)
            return k.ops.sum(picked) if red == "sum" else k.ops.mean(picked)
        return nll
    if isinstance(loss, LS.CategoricalCrossentropy):
        if loss.epsilon != k.backend.epsilon():
            raise Unsupported(f"Keras clips at backend.epsilon() = {k.backend.epsilon()}")
        cls = (k.losses.CategoricalCrossentropy if target.ndim == 2
               else k.losses.SparseCategoricalCrossentropy)
        return lambda p: cls(reduction=red, dtype=dtype_of(p))(target, p)
    raise Unsupported(f"no keras twin for {loss!r}")


def compare_loss(loss, z, target, framework, *, rtol=None, atol=None, config=None):
    """Compare a loss's value and input gradient with PyTorch or Keras."""
    rtol = rtol if rtol is not None else (1e-10 if z.dtype == np.float64 else 1e-5)
    atol = atol if atol is not None else (1e-12 if z.dtype == np.float64 else 1e-6)
    value = loss.forward(z, target)
    grad = loss.backward()
    if framework == "torch":
        fn = torch_loss_twin(loss, target)
        zt = torch.tensor(z, requires_grad=True)
        out = fn(zt)
        out.backward()
        value_ref, grad_ref = out.item(), zt.grad.numpy()
    else:
        import tensorflow as tf
        fn = keras_loss_twin(loss, target)
        zt = tf.Variable(z)
        with tf.GradientTape() as tape:
            out = fn(zt)
        value_ref, grad_ref = float(out), np.asarray(tape.gradient(out, zt))
    where = f"{framework}, {config or repr(loss)}, input {z.shape} {z.dtype}"
    assert_close("loss value", np.float64(value), np.float64(value_ref), rtol=rtol, atol=atol,
                 config=where)
    assert_close("input gradient", grad, grad_ref, rtol=rtol, atol=atol, config=where)


def check_finite_differences_loss(loss, z, target, *, eps=1e-6, rtol=1e-6, atol=1e-9):
    """Central differences of the loss against its backward (float64), every entry of z."""
    loss.forward(z, target)
    grad = loss.backward()
    numeric = np.empty(z.size)
    flat = z.reshape(-1)
    for i in range(z.size):
        old = flat[i]
        flat[i] = old + eps
        up = loss.forward(z, target)
        flat[i] = old - eps
        down = loss.forward(z, target)
        flat[i] = old
        numeric[i] = (up - down) / (2 * eps)
    assert_close("loss gradient vs finite differences", grad.reshape(-1), numeric, rtol=rtol,
                 atol=atol, config=repr(loss))
