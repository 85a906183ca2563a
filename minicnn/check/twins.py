"""A minicnn layer's twin in PyTorch or Keras, holding the same weights, and what it computes.

``torch_twin(layer, input_shape)`` / ``keras_twin(layer, input_shape)`` build the framework's
version of ``layer`` with the layer's weights copied in; ``framework_results(layer, x, dy,
framework)`` runs it forward on ``x`` (NCHW) and differentiates ``sum(y · dy)`` with autograd
or a GradientTape, returning the output, the input gradient and every parameter gradient in
minicnn's layouts. Keras works in NHWC: inputs and gradients are transposed at the border.
The same for losses: ``framework_loss_results``.

torch, tensorflow and keras are imported inside the functions, on first use: this module
imports without them, and a framework that is missing raises ``Unsupported``.
"""
import importlib.util
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from .. import layers as L
from .. import losses as LS
from ..layers import Sequential

_keras = None
_torch_parts = None

#: layer type -> function(layer, input_shape) -> torch module with the layer's parameter names,
#: for blocks whose torch version lives outside the package (tests/twins.py adds torchvision's)
TORCH_MODULE_BUILDERS = {}


def have_torch():
    return importlib.util.find_spec("torch") is not None


def have_keras():
    return (importlib.util.find_spec("keras") is not None
            and importlib.util.find_spec("tensorflow") is not None)


def keras():
    """Keras imported on first use (it takes seconds), or None when it is not installed."""
    global _keras
    if _keras is None:
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            import keras as k
            _keras = k
        except ImportError:
            _keras = False
    return _keras or None


class Unsupported(Exception):
    """The framework has no twin for this configuration (e.g. Keras pads only "same"/"valid")."""


def torch_parts():
    """(torch, torch.nn, torch.nn.functional, helpers), imported on first use; Unsupported when
    torch is not installed. ``helpers`` holds the small modules defined here."""
    global _torch_parts
    if _torch_parts is None:
        try:
            import torch
            import torch.nn as tnn
            import torch.nn.functional as F
        except ImportError:
            raise Unsupported("torch is not installed (pip install torch)") from None

        class Lambda(tnn.Module):
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

        dtypes = {np.dtype(np.float64): torch.float64, np.dtype(np.float32): torch.float32}
        helpers = dict(Lambda=Lambda, TorchResidual=TorchResidual, dtypes=dtypes)
        _torch_parts = (torch, tnn, F, helpers)
    return _torch_parts


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


def _torch_weighted_twin(layer, mod, fwd):
    """Copy the layer's weight and bias into the torch module (same shapes, same dtype)."""
    torch = torch_parts()[0]
    mod.to(torch.from_numpy(layer.weight.data).dtype)
    with torch.no_grad():
        mod.weight.copy_(torch.from_numpy(layer.weight.data))
        if layer.bias is not None:
            mod.bias.copy_(torch.from_numpy(layer.bias.data))
    params = [mod.weight] + ([mod.bias] if layer.bias is not None else [])
    return Twin(fwd, params, [lambda g: g] * len(params))


def torch_twin(layer, input_shape):
    """The PyTorch twin of ``layer`` (float64 or float32, as the layer), same weights."""
    torch, tnn, F, _ = torch_parts()
    if isinstance(layer, _TORCH_MODULE_TYPES) or type(layer) in TORCH_MODULE_BUILDERS:
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
_TORCH_MODULE_TYPES = (L.BatchNorm2D, L.ZeroPadding2D, L.Identity, L.Residual, Sequential)


def torch_bn(layer):
    """nn.BatchNorm2d doing what ``layer`` does in its current mode (torch convention only, or
    running statistics: Keras' update of the moving variance has no nn.BatchNorm2d twin)."""
    tnn = torch_parts()[1]
    batch = layer.uses_batch_statistics()
    if layer.convention != "torch" and batch:
        raise Unsupported("Keras' moving-variance update (biased) has no torch twin")
    momentum = layer.momentum if layer.convention == "torch" else 1 - layer.momentum
    mod = tnn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=momentum, affine=layer.affine)
    # a frozen Keras-style BatchNorm normalises with its running statistics: torch's eval mode
    return mod.train(batch)


def torch_module(layer, input_shape=None):
    """A torch.nn.Module computing what ``layer`` computes, with the same parameter and buffer
    names (checked) and values, in the layer's dtype."""
    torch, tnn, F, helpers = torch_parts()
    if type(layer) in TORCH_MODULE_BUILDERS:
        mod = TORCH_MODULE_BUILDERS[type(layer)](layer, input_shape)
    elif isinstance(layer, L.BatchNorm2D):
        mod = torch_bn(layer)
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
        mod = helpers["TorchResidual"](
            torch_module(layer.branch, input_shape),
            None if layer.shortcut is None else torch_module(layer.shortcut, input_shape),
            None if layer.activation is None else torch_module(layer.activation))
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
        mod = helpers["Lambda"](torch_twin(layer, input_shape).forward)
    else:
        raise Unsupported(f"no torch module for {layer!r}")
    params = layer.parameters()
    dtype = params[0].data.dtype if params else getattr(layer, "dtype", None)
    mod.to(helpers["dtypes"][np.dtype(np.float64 if dtype is None else dtype)])
    copy_to_torch(layer, mod)
    return mod


def copy_to_torch(layer, mod):
    """Copy every parameter and buffer of ``layer`` into ``mod`` by name; the names and their
    order must be the same in both (torch's state_dict naming is the contract)."""
    torch = torch_parts()[0]
    ours_p = [name for name, _ in layer.named_parameters()]
    theirs_p = [name for name, _ in mod.named_parameters()]
    if ours_p != theirs_p:
        raise ValueError(f"parameter names differ: ours {ours_p}, torch {theirs_p}")
    ours_b = [name for name, _ in layer.named_buffers()]
    theirs_b = [name for name, _ in mod.named_buffers()]
    if ours_b != theirs_b:
        raise ValueError(f"buffer names differ: ours {ours_b}, torch {theirs_b}")
    state = dict(mod.named_parameters()) | dict(mod.named_buffers())
    with torch.no_grad():
        for name, value in (layer.named_parameters() + layer.named_buffers()):
            data = value.data if hasattr(value, "grad") else value
            state[name].copy_(torch.from_numpy(np.array(data)))


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


def make_twin(layer, input_shape, framework):
    """``torch_twin`` or ``keras_twin``, by name."""
    return (torch_twin if framework == "torch" else keras_twin)(layer, input_shape)


def framework_results(layer, x, dy, framework, twin=None):
    """What ``framework`` ("torch" or "keras") computes for ``layer`` on ``x`` (NCHW) with the
    upstream gradient ``dy``: (y, dx, [gradient of each of layer.parameters()]), NumPy arrays
    in minicnn's layouts. The layer's current weights are copied in; the layer is not run.
    Raises ``Unsupported`` when the framework cannot express the configuration. ``twin``: one
    built earlier (before a forward pass moved the layer's running statistics)."""
    if twin is None:
        twin = make_twin(layer, x.shape, framework)
    if framework == "torch":
        torch = torch_parts()[0]
        xt = torch.tensor(x, requires_grad=True)
        yt = twin.forward(xt)
        (yt * torch.from_numpy(np.asarray(dy))).sum().backward()
        return (yt.detach().numpy(), xt.grad.numpy(),
                [g(p.grad.numpy()) for p, g in zip(twin.params, twin.grad_to_ours)])
    import tensorflow as tf
    xt = tf.Variable(twin.x_to_theirs(x))
    with tf.GradientTape() as tape:
        yt = twin.forward(xt)
        loss = tf.reduce_sum(yt * tf.constant(twin.y_to_theirs(dy), dtype=yt.dtype))
    got = tape.gradient(loss, [xt] + [p.value if hasattr(p, "value") else p for p in twin.params])
    return (twin.y_to_ours(np.asarray(yt)), twin.x_to_ours(np.asarray(got[0])),
            [g(np.asarray(v)) for v, g in zip(got[1:], twin.grad_to_ours)])


# ----------------------------------------------------------------------------------------
# losses
# ----------------------------------------------------------------------------------------
def torch_loss_twin(loss, target):
    """(function of the input tensor -> scalar) for a minicnn loss, in PyTorch."""
    torch, _, F, _ = torch_parts()
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
    if k is None:
        raise Unsupported("keras is not installed")
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


def framework_loss_results(loss, z, target, framework):
    """(loss value as a float, gradient with respect to ``z``) computed by ``framework``."""
    if framework == "torch":
        torch = torch_parts()[0]
        fn = torch_loss_twin(loss, target)
        zt = torch.tensor(z, requires_grad=True)
        out = fn(zt)
        out.backward()
        return out.item(), zt.grad.numpy()
    fn = keras_loss_twin(loss, target)
    import tensorflow as tf
    zt = tf.Variable(z)
    with tf.GradientTape() as tape:
        out = fn(zt)
    return float(out), np.asarray(tape.gradient(out, zt))
