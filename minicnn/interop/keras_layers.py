"""Which Keras layers compute what a minicnn layer computes, and back: the architectures.

    keras_layers(step, dtype)            minicnn layer -> [Keras layer] (NHWC; a ZeroPadding2D
                                         first where Keras' "valid"/"same" cannot pad)
    layers_from_keras(model, dtype)      a built Keras model (or list of layers) -> [minicnn layer]
    check_functional_chain(model)        a functional model must be one chain (keras.Input -> ...)
    resnet_from_keras(trunk, head)       keras.applications.ResNet50's layers -> a minicnn ResNet
    keras_application(model, shape, ..)  a minicnn ResNet-50/101/152 -> keras.applications' twin

The layers are built without weights; ``keras.py`` copies them. Keras (and TensorFlow) is
imported inside the functions only, through ``import_keras``.
"""
import os
import re

import numpy as np

from .. import layers as L
from .. import zoo
from ..core.shapes import resolve_padding
from ..layers import Sequential
from .layouts import nhwc_axis, pads, sample_shape
from .names import keras_name

#: minicnn activations and the name Keras gives each
_KERAS_ACTIVATIONS = {L.ReLU: "relu", L.Tanh: "tanh", L.Sigmoid: "sigmoid"}


def import_keras():
    """The keras module, on the TensorFlow backend unless the environment chose another."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def keras_layers(step, dtype):
    """The Keras layers (NHWC, weights not yet set) that compute what ``step.layer`` does."""
    k = import_keras().layers
    layer, kw = step.layer, {"dtype": dtype}
    if isinstance(layer, (L.Conv2D, L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        amounts = pads(step)
        hw = step.shape_in[2:]
        dilation = getattr(layer, "dilation", (1, 1))
        same = resolve_padding("same", hw, layer.kernel_size, layer.stride, dilation)
        mode = "valid" if amounts == ((0, 0), (0, 0)) else "same" if amounts == same else None
    if isinstance(layer, L.Conv2D):
        if max(layer.stride) > 1 and max(layer.dilation) > 1:
            raise ValueError(f"{step}: TensorFlow has no strided dilated convolution")
        conv = k.Conv2D(layer.out_channels, layer.kernel_size, strides=layer.stride,
                        padding=mode or "valid", dilation_rate=layer.dilation,
                        use_bias=layer.bias is not None, **kw)
        # Keras pads only "valid" or "same"; other amounts go into a padding layer first
        return [conv] if mode else [k.ZeroPadding2D(amounts, **kw), conv]
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        if isinstance(layer, L.AvgPool2D) and mode == "same" and layer.count_include_pad:
            mode = None  # Keras' "same" average leaves the padding out of the count
        if isinstance(layer, L.SumPool2D) and mode == "same":
            mode = None
        if mode is None:
            raise ValueError(f"{step}: Keras pools with padding 'valid' or 'same' (max; average "
                             f"without counting the padding) only, not {amounts}")
        cls = k.MaxPooling2D if isinstance(layer, L.MaxPool2D) else k.AveragePooling2D
        pool = cls(layer.kernel_size, layer.stride, padding=mode, **kw)
        if isinstance(layer, L.SumPool2D):  # Keras has no sum pool: the mean times the area
            return [pool, k.Rescaling(float(np.prod(layer.kernel_size)), **kw)]
        return [pool]
    if isinstance(layer, L.ZeroPadding2D):
        return [k.ZeroPadding2D(layer.padding, **kw)]
    if isinstance(layer, L.GlobalAvgPool2D):
        return [k.GlobalAveragePooling2D(**kw)]
    if isinstance(layer, L.Flatten):
        return [k.Flatten(**kw)]
    if isinstance(layer, L.Dense):
        if len(step.shape_in) != 2:
            raise ValueError(f"{step}: a Dense on a rank-{len(step.shape_in)} input acts on its "
                             f"last axis, W in NCHW but C in NHWC; flatten first")
        return [k.Dense(layer.out_features, use_bias=layer.bias is not None, **kw)]
    if type(layer) in _KERAS_ACTIVATIONS:
        return [k.Activation(_KERAS_ACTIVATIONS[type(layer)], **kw)]
    if isinstance(layer, L.Softmax):
        return [k.Softmax(axis=nhwc_axis(layer.axis, len(step.shape_in)), **kw)]
    if isinstance(layer, L.LogSoftmax):
        rank = len(step.shape_in)
        if nhwc_axis(layer.axis, rank) != rank - 1:
            raise ValueError(f"{step}: Keras' log_softmax runs along the last (NHWC) axis only")
        return [k.Activation("log_softmax", **kw)]
    if isinstance(layer, L.Dropout):
        return [k.Dropout(layer.p, **kw)]
    raise TypeError(f"{step}: no Keras layer for {type(layer).__name__}")


def keras_leaves(keras_model):
    """The layers of a Keras model in order, nested models opened, Input layers left out.
    A list of layers (a part of a model, as the head of a ResNet) is opened likewise."""
    keras = import_keras()
    out = []
    for layer in keras_model if isinstance(keras_model, list) else keras_model.layers:
        if isinstance(layer, keras.Model):
            out += keras_leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def check_functional_chain(keras_model):
    """TypeError naming the first layer of a functional model (keras.Input -> layers) that
    does not take exactly the previous layer's output: a branch, a sum, a gate, a layer used
    twice. minicnn reads a model as one chain of layers."""
    keras = import_keras()
    if isinstance(keras_model, keras.Sequential):
        return
    if len(keras_model.inputs or ()) != 1:
        inputs = len(getattr(keras_model, "inputs", None) or ())
        raise TypeError(f"from_keras: {keras_model.name!r} has {inputs} inputs; minicnn's models "
                        f"take one")
    previous = keras_model.inputs[0]
    for layer in keras_model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        where = f"from_keras: layer {layer.name!r} ({type(layer).__name__})"
        nodes = [n for n in layer._inbound_nodes if n.operation is layer]
        if len(nodes) != 1:
            raise TypeError(f"{where} is called {len(nodes)} times; minicnn reads one chain of "
                            f"layers, each used once")
        inputs = list(nodes[0].input_tensors)
        if len(inputs) != 1 or inputs[0] is not previous:
            names = [getattr(getattr(t, "_keras_history", None), "operation", None) for t in inputs]
            names = [getattr(op, "name", "an input") for op in names]
            raise TypeError(f"{where} takes {names}, not just the layer before it; minicnn reads "
                            f"a model as one chain of layers (no branches, sums or gates)")
        previous = nodes[0].output_tensors[0]
    if keras_model.outputs[0] is not previous:
        raise TypeError(f"from_keras: {keras_model.name!r} does not end with its last layer")


# ----------------------------------------------------------------------------------------
# Keras layers -> minicnn layers
# ----------------------------------------------------------------------------------------
def _keras_activation(name, rank, where):
    """minicnn layer for a Keras activation name ("relu", "softmax", ...); None for "linear"."""
    if name in (None, "linear"):
        return None
    simple = {"relu": L.ReLU, "tanh": L.Tanh, "sigmoid": L.Sigmoid}
    if name in simple:
        return simple[name]()
    if name in ("softmax", "log_softmax"):  # Keras' last axis: classes, or NHWC channels
        return (L.Softmax if name == "softmax" else L.LogSoftmax)(axis=1 if rank in (2, 4) else -1)
    raise TypeError(f"{where}: minicnn has no activation {name!r}")


def _activation_name(layer):
    act = layer.get_config().get("activation")
    return act if isinstance(act, str) or act is None else getattr(act, "__name__", str(act))


def layers_from_keras(keras_model, dtype):
    """minicnn layers for the layers of a (built) Keras model, NHWC -> NCHW."""
    kl = import_keras().layers
    leaves = keras_leaves(keras_model)
    built, i = [], 0

    def padding(value):
        return "same" if value == "same" else 0

    while i < len(leaves):
        layer = leaves[i]
        nxt = leaves[i + 1] if i + 1 < len(leaves) else None
        where = f"from_keras: layer {layer.name!r} {layer!r}"
        rank = len(layer.input.shape)
        i += 1
        if isinstance(layer, kl.ZeroPadding2D):
            if not (isinstance(nxt, kl.Conv2D) and nxt.padding == "valid"):
                raise TypeError(f"{where}: ZeroPadding2D is read as the padding of the Conv2D "
                                f"('valid') right after it, got {nxt!r}")
            layer, pad, i = nxt, tuple(tuple(p) for p in layer.padding), i + 1
        else:
            pad = None
        if isinstance(layer, kl.Conv2D):
            if layer.groups != 1 or layer.data_format != "channels_last":
                raise TypeError(f"{where}: only channels_last convolutions with groups=1")
            cin = layer.kernel.shape[2]
            built.append(L.Conv2D(cin, layer.filters, layer.kernel_size, layer.strides,
                                  pad if pad is not None else padding(layer.padding),
                                  layer.dilation_rate, bias=layer.use_bias, dtype=dtype))
            act = _keras_activation(_activation_name(layer), 4, where)
        elif isinstance(layer, (kl.MaxPooling2D, kl.AveragePooling2D)):
            args = (layer.pool_size, layer.strides, padding(layer.padding))
            if isinstance(layer, kl.MaxPooling2D):
                built.append(L.MaxPool2D(*args))
            elif (isinstance(nxt, kl.Rescaling) and layer.padding == "valid"
                  and float(nxt.offset) == 0 and float(nxt.scale) == float(np.prod(layer.pool_size))):
                built.append(L.SumPool2D(*args))  # the mean times the area: to_keras' sum pool
                i += 1
            else:
                built.append(L.AvgPool2D(*args))
            act = None
        elif isinstance(layer, kl.GlobalAveragePooling2D):
            if layer.keepdims or layer.data_format != "channels_last":
                raise TypeError(f"{where}: only keepdims=False, channels_last")
            built.append(L.GlobalAvgPool2D())
            act = None
        elif isinstance(layer, kl.Flatten):
            built.append(L.Flatten())
            act = None
        elif isinstance(layer, kl.Dense):
            if rank != 2:
                raise TypeError(f"{where}: a Dense on a rank-{rank} input acts on NHWC's channels; "
                                f"minicnn's Dense sees NCHW")
            cin, cout = layer.kernel.shape
            built.append(L.Dense(cin, cout, bias=layer.use_bias, dtype=dtype))
            act = _keras_activation(_activation_name(layer), 2, where)
        elif isinstance(layer, kl.Activation):
            act = _keras_activation(_activation_name(layer), rank, where)
            if act is None:
                continue
        elif isinstance(layer, kl.ReLU):
            cfg = layer.get_config()
            if cfg.get("max_value") is not None or cfg.get("negative_slope") or cfg.get("threshold"):
                raise TypeError(f"{where}: only the plain ReLU has a minicnn twin")
            act = L.ReLU()
        elif isinstance(layer, kl.Softmax):
            nchw = {1: 2, 2: 3, 3: 1} if rank == 4 else {}
            axis = layer.axis % rank
            act = L.Softmax(axis=nchw.get(axis, axis))
        elif isinstance(layer, kl.Dropout):
            act = L.Dropout(layer.rate)
        elif isinstance(layer, kl.BatchNormalization):
            if rank != 4 or layer.axis not in (-1, 3, [-1], [3]) or not (layer.center and layer.scale):
                raise TypeError(f"{where}: minicnn's BatchNorm2D is BatchNormalization over the "
                                f"channels of (N, H, W, C) feature maps, with center and scale")
            built.append(L.BatchNorm2D(int(layer.gamma.shape[0]), eps=float(layer.epsilon),
                                       momentum=float(layer.momentum), convention="keras",
                                       dtype=dtype))
            act = None
        else:
            raise TypeError(f"{where}: minicnn has no layer for {type(layer).__name__}")
        if act is not None:
            built.append(act)
    return built


# ----------------------------------------------------------------------------------------
# ResNets: keras.applications' names
# ----------------------------------------------------------------------------------------
def _head_from_keras(head, dtype):
    """[(name, layer)] for the Keras layers after the trunk: avgpool, then fc (a Dense, or a
    Sequential for a head of several layers), and the classifier's activation if it has one."""
    built = layers_from_keras(head, dtype)
    named = []
    if built and isinstance(built[0], L.GlobalAvgPool2D):
        named.append(("avgpool", built.pop(0)))
    if len(built) == 1 and isinstance(built[0], L.Dense):
        named.append(("fc", built[0]))
    elif (len(built) == 2 and isinstance(built[0], L.Dense)
          and isinstance(built[1], (L.Softmax, L.LogSoftmax, L.ReLU, L.Sigmoid, L.Tanh))):
        named += [("fc", built[0]), (type(built[1]).__name__.lower(), built[1])]
    elif built:
        named.append(("fc", Sequential(built)))
    return named


def resnet_from_keras(trunk, head):
    """``minicnn.zoo.resnet(..., style="keras")`` with the stages, width, input channels,
    dtype and BatchNorm eps/momentum of a Keras ResNet's ``trunk`` {name: layer}, followed by
    the minicnn twin of its ``head`` [layers] (weights not yet copied). A trunk whose convs
    have no bias is torchvision's layout written in Keras (reference/keras/resnet.py):
    ``style="torch"`` then."""
    conv1 = trunk["conv1_conv"]
    style = "keras" if conv1.use_bias else "torch"
    blocks = []
    while f"conv{len(blocks) + 2}_block1_out" in trunk:
        stage = len(blocks) + 2
        blocks.append(sum(1 for n in trunk if re.fullmatch(rf"conv{stage}_block\d+_out", n)))
    block = "bottleneck" if "conv2_block1_3_conv" in trunk else "basic"
    dtype = np.dtype(conv1.kernel.dtype)
    built = zoo.resnet(block, blocks, 1, width=conv1.filters, style=style,
                       in_channels=int(conv1.kernel.shape[2]), dtype=dtype, rng=0)
    named = [(n, layer) for n, layer in built.named_children() if n not in ("avgpool", "fc")]
    model = Sequential(named + _head_from_keras(head, dtype))
    for name, bn in model.named_modules():  # eps and momentum as Keras has them
        k = trunk.get(keras_name(name)) if isinstance(bn, L.BatchNorm2D) else None
        if k is not None:  # PyTorch's momentum is the weight of the new statistic, Keras' the old
            momentum = float(k.momentum) if bn.convention == "keras" else 1 - float(k.momentum)
            bn.eps = float(k.epsilon)
            if not np.isclose(bn.momentum, momentum):  # keep 0.1 exact, not 1 - 0.9
                bn.momentum = momentum
    return model


_APPLICATIONS = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}


def keras_application(model, input_shape, where):
    """The keras.applications ResNet (weights=None, no classifier activation) with the
    architecture of the minicnn Keras-style ResNet-50/101/152 ``model``, on ``input_shape``
    (C, H, W; default the zoo spec's)."""
    keras = import_keras()
    names = dict(model.named_children())
    stages = tuple(len(names[f"layer{i}"]) for i in range(1, 5) if f"layer{i}" in names)
    first = names["layer1"][0] if "layer1" in names else None
    app = _APPLICATIONS.get(stages)
    fc = names.get("fc")
    layout = ["conv1_pad", "conv1", "bn1", "relu", "pool1_pad", "maxpool", "layer1", "layer2",
              "layer3", "layer4", "avgpool", "fc"]
    if (app is None or not isinstance(first, L.Bottleneck) or first.width != 64
            or list(names) != layout or not isinstance(fc, L.Dense)):
        raise ValueError(f"{where}: only a minicnn.zoo ResNet-50/101/152 with style='keras' and "
                         f"its avgpool + fc head maps onto keras.applications; pass keras_model=")
    shape = sample_shape(model, input_shape)
    if shape is None:
        raise ValueError(f"{where}: pass input_shape=(C, H, W)")
    c, h, w = shape
    return getattr(keras.applications, app)(weights=None, input_shape=(h, w, c),
                                            classes=fc.out_features, classifier_activation=None)
