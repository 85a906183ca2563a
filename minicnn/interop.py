"""The same weights in minicnn, PyTorch and Keras: convert a network, or copy its weights across.

    module = to_torch(model)                     # a torch.nn.Sequential (NCHW), same weights
    keras_model = to_keras(model)                # a keras.Sequential on keras.Input((H, W, C))
    model = from_torch(module)                   # and back: a minicnn Sequential
    model = from_keras(keras_model)

    to_torch(model, module=net)                  # copy into a network you already have
    from_keras(keras_model, model=mc.zoo.lenet5())   # ... in either direction

    model = from_torch(torchvision_resnet50)     # ResNets: weights AND running statistics
    model = from_keras(keras.applications.ResNet50(weights=None, classifier_activation=None))

Passing an existing network (``module=``, ``keras_model=``, ``model=``) copies the weights of
the layers that have some (Conv2D, Dense), matched IN ORDER: the i-th one of minicnn with the
i-th of the framework. That is how the idiomatic classes of ``reference/`` (an ``nn.Module``
whose ``forward`` calls ``F.relu``, a Keras model with ``activation="relu"``) take minicnn's
weights. A shape that does not fit raises a ShapeError naming both layers, before anything
is copied.

Networks with BatchNorm or residual blocks (the ResNets of the zoo, torchvision's, Keras')
are copied BY NAME instead, buffers included, in ``minicnn.interop_resnet``: the functions
below send them there.

What changes on the way (the layouts):

    convolution   minicnn, PyTorch (out, in, kh, kw)     Keras kernel (kh, kw, in, out)
    dense         minicnn, PyTorch (out, in)             Keras kernel (in, out)
    flatten       minicnn, PyTorch (C, H, W) order       Keras (H, W, C) order

The last line is the classic reason ported weights give different answers: Keras' feature
maps are NHWC, so its Flatten lists the channels of one pixel together, and the first Dense
after a Flatten sees its 400 (or 1568, 9216) inputs in a different order. Its weight columns
are permuted on the way in and out; every other weight is a plain transpose.

torch and tensorflow are imported inside the functions, never at import time: ``import
minicnn`` needs only NumPy.

``input_shape`` is one sample's shape without the batch, (C, H, W) as the zoo's specs give
it; it defaults to ``model.spec.input_shape``. Keras needs it for its Input; PyTorch only for
"same" padding with a stride above 1, whose amounts depend on the image size.
"""
import math
import os

import numpy as np

from . import interop_resnet as _resnet
from . import layers as L
from .errors import ShapeError
from .model import Sequential
from .shapes import resolve_padding

#: minicnn activations and the name Keras gives each
_KERAS_ACTIVATIONS = {L.ReLU: "relu", L.Tanh: "tanh", L.Sigmoid: "sigmoid"}


# ----------------------------------------------------------------------------------------
# walking a minicnn model with its shapes
# ----------------------------------------------------------------------------------------
class _Step:
    """One layer of a minicnn model (nested Sequentials opened): its name and input shape."""

    def __init__(self, name, layer, shape_in):
        self.name, self.layer, self.shape_in = name, layer, shape_in

    def __str__(self):
        return f"layer {self.name} {self.layer!r}"


def _leaves(model, prefix=""):
    """[(name, layer)] with nested Sequentials opened: names "3", "1.2" as in named_parameters."""
    out = []
    for i, layer in enumerate(model.layers if isinstance(model, Sequential) else [model]):
        name = f"{prefix}{i}"
        if isinstance(layer, Sequential):
            out += _leaves(layer, name + ".")
        else:
            out.append((name, layer))
    return out


def _sample_shape(model, input_shape):
    """One sample's input shape: ``input_shape`` or the zoo spec's, as a tuple (or None)."""
    if input_shape is None:
        spec = getattr(model, "spec", None)
        input_shape = getattr(spec, "input_shape", None)
    return None if input_shape is None else tuple(int(d) for d in input_shape)


def _walk(model, input_shape):
    """The model's layers as _Steps; shapes are None when no input shape is known."""
    shape = None if input_shape is None else (1,) + tuple(input_shape)
    steps = []
    for name, layer in _leaves(model):
        steps.append(_Step(name, layer, shape))
        shape = None if shape is None else layer.output_shape(shape)
    return steps


def _pads(step):
    """((top, bottom), (left, right)) of a windowed layer. Without an input shape only the
    paddings that do not depend on the image size can be resolved."""
    layer = step.layer
    if step.shape_in is not None:
        return layer.padding_for(*step.shape_in[2:])
    if isinstance(layer.padding, str) and max(layer.stride) > 1:
        raise ValueError(f"{step}: padding {layer.padding!r} with a stride above 1 depends on "
                         f"the image size; pass input_shape=(C, H, W)")
    # "valid", explicit numbers, or "same" at stride 1: the same for every size
    return layer.padding_for(10**6, 10**6)


def _dtype(model):
    params = model.parameters()
    return params[0].data.dtype if params else np.dtype(np.float32)


def _hwc_columns(w, chw):
    """Dense weight (out, C·H·W) with columns in NCHW flatten order -> columns in (H, W, C) order."""
    c, h, wd = chw
    return w.reshape(len(w), c, h, wd).transpose(0, 2, 3, 1).reshape(len(w), -1)


def _chw_columns(w, chw):
    """The inverse: Dense weight (out, H·W·C) in Keras' flatten order -> (C, H, W) order."""
    c, h, wd = chw
    return w.reshape(len(w), h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1)


def _assign(param, value, where):
    """Copy ``value`` into a minicnn Parameter in place (the optimizer keeps a reference)."""
    value = np.asarray(value)
    if value.shape != param.data.shape:
        raise ShapeError(f"{where}: {param.name} has shape {param.data.shape} in minicnn, "
                         f"got {value.shape}")
    param.data[...] = value


def _check_pairs(ours, theirs, framework, describe):
    """The i-th weighted layer of minicnn with the i-th of the framework; ValueError if the
    counts differ (the message lists both sides)."""
    if len(ours) != len(theirs):
        mine = "\n".join(f"    {s}" for s in ours) or "    (none)"
        other = "\n".join(f"    {describe(t)}" for t in theirs) or "    (none)"
        raise ValueError(f"the minicnn model has {len(ours)} layers with weights, the {framework} "
                         f"model {len(theirs)}; they are matched in order:\n  minicnn:\n{mine}\n"
                         f"  {framework}:\n{other}")
    return list(zip(ours, theirs))


def _mismatch(step, what, ours, framework, name, theirs_layer, theirs):
    return ShapeError(f"{step} does not fit {framework} layer {name!r} {theirs_layer!r}: {what} "
                      f"is {tuple(ours)} in minicnn, {tuple(theirs)} there (converted to "
                      f"minicnn's layout)")


# ----------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------
def _torch():
    import torch
    return torch


def _torch_modules(step):
    """The PyTorch modules (NCHW, weights not yet copied) that compute what ``step.layer`` does."""
    from torch import nn
    layer = step.layer
    if isinstance(layer, (L.Conv2D, L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        (t, b), (left, r) = _pads(step)
        symmetric = t == b and left == r
        unpadded = {"left": left, "right": r, "top": t, "bottom": b}  # for the messages
    if isinstance(layer, L.Conv2D):
        conv = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         (t, left) if symmetric else 0, layer.dilation, bias=layer.bias is not None)
        # PyTorch pads both sides alike; TensorFlow's "same" can put one more row at the bottom
        return [conv] if symmetric else [nn.ZeroPad2d((left, r, t, b)), conv]
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        k, s = layer.kernel_size, layer.stride
        # PyTorch's pools accept at most half the kernel as padding, on both sides alike
        inside = symmetric and 2 * t <= k[0] and 2 * left <= k[1]
        pad = (t if t == left else (t, left)) if inside else 0
        if isinstance(layer, L.MaxPool2D):
            pool = nn.MaxPool2d(k, s, pad)
            return [pool] if inside else [nn.ConstantPad2d((left, r, t, b), -math.inf), pool]
        if isinstance(layer, L.SumPool2D):
            pool = nn.AvgPool2d(k, s, pad, divisor_override=1)  # a sum: divided by 1
            return [pool] if inside else [nn.ZeroPad2d((left, r, t, b)), pool]
        pool = nn.AvgPool2d(k, s, pad, count_include_pad=layer.count_include_pad)
        if inside:
            return [pool]
        if layer.count_include_pad:
            return [nn.ZeroPad2d((left, r, t, b)), pool]
        raise ValueError(f"{step}: PyTorch has no module for an average over windows padded "
                         f"unevenly {unpadded} that leaves the padding out of the count")
    if isinstance(layer, L.ZeroPadding2D):
        (t, b), (left, r) = layer.padding
        return [nn.ZeroPad2d((left, r, t, b))]  # PyTorch lists the width first
    if isinstance(layer, L.GlobalAvgPool2D):
        return [nn.AdaptiveAvgPool2d(1), nn.Flatten()]  # (N, C, 1, 1) -> (N, C)
    if isinstance(layer, L.Flatten):
        return [nn.Flatten()]
    if isinstance(layer, L.Dense):
        return [nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)]
    simple = {L.ReLU: nn.ReLU, L.Tanh: nn.Tanh, L.Sigmoid: nn.Sigmoid}
    if type(layer) in simple:
        return [simple[type(layer)]()]
    if isinstance(layer, L.Softmax):
        return [nn.Softmax(dim=layer.axis)]
    if isinstance(layer, L.LogSoftmax):
        return [nn.LogSoftmax(dim=layer.axis)]
    if isinstance(layer, L.Dropout):
        return [nn.Dropout(layer.p)]
    raise TypeError(f"{step}: no PyTorch module for {type(layer).__name__}")


def _torch_weighted(module):
    """[(name, submodule)] of the modules that hold parameters themselves, in registration order."""
    return [(name or type(module).__name__, m) for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def _torch_pairs(model, module):
    from torch import nn
    ours = [s for s in _walk(model, None) if s.layer.parameters()]
    theirs = _torch_weighted(module)
    for name, m in theirs:
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"PyTorch module {name!r} {m!r} has weights, but minicnn has no such "
                            f"layer (only Conv2d and Linear weights are copied)")
    pairs = _check_pairs(ours, theirs, "PyTorch", lambda t: f"{t[0]}: {t[1]!r}")
    for step, (name, m) in pairs:
        expected = nn.Conv2d if isinstance(step.layer, L.Conv2D) else nn.Linear
        if not isinstance(m, expected):
            raise ShapeError(f"{step} is matched with PyTorch module {name!r} {m!r}, which is "
                             f"not an nn.{expected.__name__}")
        layer = step.layer
        for attr in ("weight", "bias"):
            ours_p, theirs_p = getattr(layer, attr), getattr(m, attr)
            if (ours_p is None) != (theirs_p is None):
                has = "has" if ours_p is not None else "has no"
                raise ShapeError(f"{step} {has} a bias, PyTorch module {name!r} {m!r} does "
                                 f"the opposite")
            if ours_p is not None and tuple(theirs_p.shape) != ours_p.data.shape:
                raise _mismatch(step, attr, ours_p.data.shape, "PyTorch", name, m, theirs_p.shape)
    return pairs


def to_torch(model, module=None, input_shape=None):
    """The minicnn ``model`` as PyTorch, holding the same weights (copies, in the same dtype).

    module=None: returns a new ``torch.nn.Sequential``, one PyTorch module per minicnn layer
    (two where PyTorch needs a padding module first), in the model's train/eval mode.
    module=an nn.Module (e.g. ``reference.torch.models.build("lenet5")``): copies the weights
    into it, matching Conv2D/Dense with its Conv2d/Linear modules in order, and returns it.
    Raises ShapeError naming the layer when a shape differs; nothing is copied then.
    """
    torch = _torch()
    if _resnet.needs_names(model):
        return _resnet.to_torch(model, module)
    if module is not None:
        pairs = _torch_pairs(model, module)
        with torch.no_grad():
            for step, (_, m) in pairs:
                m.weight.copy_(torch.from_numpy(step.layer.weight.data))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(step.layer.bias.data))
        return module
    steps = _walk(model, _sample_shape(model, input_shape))
    net = torch.nn.Sequential(*[m for step in steps for m in _torch_modules(step)])
    net.to(torch.from_numpy(np.zeros(0, _dtype(model))).dtype)  # float32 or float64, as ours
    to_torch(model, net)
    return net.train(model.training)


def _torch_pad(m):
    """((top, bottom), (left, right)) and the value of an nn.ZeroPad2d / nn.ConstantPad2d."""
    left, r, t, b = m.padding
    return ((t, b), (left, r)), float(getattr(m, "value", 0.0))


def _from_torch_layers(module, dtype):
    """minicnn layers for the leaves of an nn.Sequential (nested Sequentials opened)."""
    from torch import nn

    def leaves(m, prefix):
        out = []
        for name, child in m.named_children():
            if isinstance(child, nn.Sequential):
                out += leaves(child, f"{prefix}{name}.")
            elif not list(child.children()):
                out.append((f"{prefix}{name}", child))
            else:
                raise TypeError(f"from_torch: {prefix}{name} is a {type(child).__name__} with its "
                                f"own forward(); pass model=... to copy its weights instead")
        return out

    mods = leaves(module, "")
    built, i = [], 0
    while i < len(mods):
        name, m = mods[i]
        nxt = mods[i + 1][1] if i + 1 < len(mods) else None
        where = f"from_torch: module {name!r} {m!r}"
        if isinstance(m, (nn.ZeroPad2d, nn.ConstantPad2d)):
            pads, value = _torch_pad(m)
            if isinstance(nxt, nn.Conv2d) and value == 0 and nxt.padding in ((0, 0), "valid"):
                built.append(_conv_from_torch(nxt, pads, dtype))
            elif isinstance(nxt, nn.MaxPool2d) and value == -math.inf and nxt.padding in (0, (0, 0)):
                built.append(L.MaxPool2D(nxt.kernel_size, nxt.stride, pads))
            elif isinstance(nxt, nn.AvgPool2d) and value == 0 and nxt.padding in (0, (0, 0)):
                built.append(_avg_from_torch(nxt, pads, where))
            else:
                raise TypeError(f"{where}: a padding module must be followed by the Conv2d or "
                                f"pool it pads (zeros; -inf before a max-pool), got {nxt!r}")
            i += 2
            continue
        i += 1
        if isinstance(m, nn.Conv2d):
            built.append(_conv_from_torch(m, m.padding, dtype))
        elif isinstance(m, nn.MaxPool2d):
            if m.dilation not in (1, (1, 1)) or m.ceil_mode or m.return_indices:
                raise TypeError(f"{where}: minicnn's MaxPool2D has no dilation, ceil_mode or "
                                f"return_indices")
            built.append(L.MaxPool2D(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.AvgPool2d):
            built.append(_avg_from_torch(m, m.padding, where))
        elif isinstance(m, nn.AdaptiveAvgPool2d):
            if m.output_size not in (1, (1, 1)) or not isinstance(nxt, nn.Flatten):
                raise TypeError(f"{where}: only AdaptiveAvgPool2d(1) followed by Flatten (a "
                                f"global average pool) has a minicnn twin")
            built.append(L.GlobalAvgPool2D())
            i += 1  # the Flatten is part of it: GlobalAvgPool2D already returns (N, C)
        elif isinstance(m, nn.Flatten):
            if m.start_dim != 1 or m.end_dim != -1:
                raise TypeError(f"{where}: minicnn's Flatten keeps dimension 0 only")
            built.append(L.Flatten())
        elif isinstance(m, nn.Linear):
            dense = L.Dense(m.in_features, m.out_features, bias=m.bias is not None, dtype=dtype)
            built.append(dense)
        elif type(m) in (nn.ReLU, nn.Tanh, nn.Sigmoid):
            built.append({nn.ReLU: L.ReLU, nn.Tanh: L.Tanh, nn.Sigmoid: L.Sigmoid}[type(m)]())
        elif isinstance(m, (nn.Softmax, nn.LogSoftmax)):
            if m.dim is None:
                raise TypeError(f"{where}: give the softmax its dim (dim=1 for classes)")
            built.append((L.Softmax if isinstance(m, nn.Softmax) else L.LogSoftmax)(axis=m.dim))
        elif isinstance(m, nn.Dropout):
            built.append(L.Dropout(m.p))
        elif isinstance(m, nn.Identity):
            continue
        else:
            raise TypeError(f"{where}: minicnn has no layer for {type(m).__name__}")
    return built


def _conv_from_torch(m, padding, dtype):
    if m.groups != 1 or m.padding_mode != "zeros":
        raise TypeError(f"from_torch: {m!r}: minicnn's Conv2D has groups=1 and zero padding only")
    return L.Conv2D(m.in_channels, m.out_channels, m.kernel_size, m.stride,
                    padding if isinstance(padding, str) else tuple(padding), m.dilation,
                    bias=m.bias is not None, dtype=dtype)


def _avg_from_torch(m, padding, where):
    if m.ceil_mode:
        raise TypeError(f"{where}: minicnn's pools have no ceil_mode")
    if m.divisor_override == 1:
        return L.SumPool2D(m.kernel_size, m.stride, padding)
    if m.divisor_override is not None:
        raise TypeError(f"{where}: divisor_override={m.divisor_override} has no minicnn twin "
                        f"(1 is SumPool2D)")
    return L.AvgPool2D(m.kernel_size, m.stride, padding, count_include_pad=m.count_include_pad)


def from_torch(module, model=None):
    """PyTorch weights into minicnn.

    model=None: ``module`` must be an ``nn.Sequential`` (its layers in order ARE the network);
    returns a new minicnn Sequential with the same layers and weights, in the module's mode.
    model=a minicnn model: copies the Conv2d/Linear weights of any ``nn.Module`` (e.g. a class
    whose forward() calls F.relu, which a Sequential cannot see) into it, in order, and returns
    it. Raises ShapeError naming both layers when a shape differs; nothing is copied then.
    A torchvision-style ResNet (or a model with BatchNorm / residual blocks) goes by name,
    running statistics included: see ``minicnn.interop_resnet.from_torch``.
    """
    torch = _torch()
    if (model is None and _resnet.is_torch_resnet(module)
            or model is not None and _resnet.needs_names(model)):
        return _resnet.from_torch(module, model)
    if model is None:
        if not isinstance(module, torch.nn.Sequential):
            raise TypeError(f"from_torch: {type(module).__name__} computes in its own forward(), "
                            f"which cannot be read off its modules (F.relu, x.view, ... leave no "
                            f"trace); build the minicnn model and pass it: from_torch(module, "
                            f"model=minicnn.zoo.get(name))")
        params = list(module.parameters())
        dtype = params[0].detach().numpy().dtype if params else np.float32
        model = Sequential(_from_torch_layers(module, dtype)).train(module.training)
    pairs = _torch_pairs(model, module)
    for step, (name, m) in pairs:
        _assign(step.layer.weight, m.weight.detach().cpu().numpy(), f"{step} <- {name!r}")
        if m.bias is not None:
            _assign(step.layer.bias, m.bias.detach().cpu().numpy(), f"{step} <- {name!r}")
    return model


# ----------------------------------------------------------------------------------------
# Keras (NHWC)
# ----------------------------------------------------------------------------------------
def _keras():
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    return keras


def _nhwc_axis(axis, rank):
    """The Keras (NHWC) axis of minicnn's (NCHW) ``axis`` for an input of ``rank`` dimensions."""
    axis = axis % rank
    return {0: 0, 1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis


def _keras_layers(step, dtype):
    """The Keras layers (NHWC, weights not yet set) that compute what ``step.layer`` does."""
    k = _keras().layers
    layer, kw = step.layer, {"dtype": dtype}
    if isinstance(layer, (L.Conv2D, L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        pads = _pads(step)
        hw = step.shape_in[2:]
        dilation = getattr(layer, "dilation", (1, 1))
        same = resolve_padding("same", hw, layer.kernel_size, layer.stride, dilation)
        mode = "valid" if pads == ((0, 0), (0, 0)) else "same" if pads == same else None
    if isinstance(layer, L.Conv2D):
        if max(layer.stride) > 1 and max(layer.dilation) > 1:
            raise ValueError(f"{step}: TensorFlow has no strided dilated convolution")
        conv = k.Conv2D(layer.out_channels, layer.kernel_size, strides=layer.stride,
                        padding=mode or "valid", dilation_rate=layer.dilation,
                        use_bias=layer.bias is not None, **kw)
        # Keras pads only "valid" or "same"; other amounts go into a padding layer first
        return [conv] if mode else [k.ZeroPadding2D(pads, **kw), conv]
    if isinstance(layer, (L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        if isinstance(layer, L.AvgPool2D) and mode == "same" and layer.count_include_pad:
            mode = None  # Keras' "same" average leaves the padding out of the count
        if isinstance(layer, L.SumPool2D) and mode == "same":
            mode = None
        if mode is None:
            raise ValueError(f"{step}: Keras pools with padding 'valid' or 'same' (max; average "
                             f"without counting the padding) only, not {pads}")
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
        return [k.Softmax(axis=_nhwc_axis(layer.axis, len(step.shape_in)), **kw)]
    if isinstance(layer, L.LogSoftmax):
        rank = len(step.shape_in)
        if _nhwc_axis(layer.axis, rank) != rank - 1:
            raise ValueError(f"{step}: Keras' log_softmax runs along the last (NHWC) axis only")
        return [k.Activation("log_softmax", **kw)]
    if isinstance(layer, L.Dropout):
        return [k.Dropout(layer.p, **kw)]
    raise TypeError(f"{step}: no Keras layer for {type(layer).__name__}")


def _keras_leaves(keras_model):
    """The layers of a Keras model in order, nested models opened, Input layers left out.
    A list of layers (a part of a model, as interop_resnet reads a head) is opened likewise."""
    keras = _keras()
    out = []
    for layer in keras_model if isinstance(keras_model, list) else keras_model.layers:
        if isinstance(layer, keras.Model):
            out += _keras_leaves(layer)
        elif not isinstance(layer, keras.layers.InputLayer):
            out.append(layer)
    return out


def _keras_weighted(keras_model):
    """[(layer, (H, W, C) or None)] for each Keras layer with weights; the second item is the
    shape a Flatten flattened just before this Dense (Keras' flatten order), else None."""
    keras = _keras()
    out, pending = [], None
    for layer in _keras_leaves(keras_model):
        if isinstance(layer, keras.layers.Flatten):
            try:
                shape = tuple(layer.input.shape)
            except (AttributeError, ValueError):
                raise ValueError(f"Keras layer {layer.name!r} {layer!r}: its input shape is unknown; "
                                 f"build the model on a keras.Input first") from None
            if len(shape) == 4:
                if layer.data_format == "channels_first":
                    pending = None  # flattens in (C, H, W) order, as minicnn does
                else:
                    pending = shape[1:]
        if layer.weights:
            out.append((layer, pending if isinstance(layer, keras.layers.Dense) else None))
            pending = None
    return out


def _keras_to_ours(layer, hwc):
    """A Keras layer's weights in minicnn's layout: [weight, bias?]."""
    keras = _keras()
    values = [np.asarray(v) for v in layer.get_weights()]
    if isinstance(layer, keras.layers.Conv2D):
        values[0] = values[0].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    else:
        values[0] = values[0].T  # (in, out) -> (out, in)
        if hwc is not None:
            values[0] = _chw_columns(values[0], (hwc[2], hwc[0], hwc[1]))
    return values


def _keras_pairs(model, keras_model):
    keras = _keras()
    ours = [s for s in _walk(model, None) if s.layer.parameters()]
    theirs = _keras_weighted(keras_model)
    for layer, _ in theirs:
        if not isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            raise TypeError(f"Keras layer {layer.name!r} {layer!r} has weights, but minicnn has "
                            f"no such layer (only Conv2D and Dense weights are copied)")
        if isinstance(layer, keras.layers.Conv2D) and layer.data_format != "channels_last":
            raise TypeError(f"Keras layer {layer.name!r}: only channels_last (NHWC) is supported")
    pairs = _check_pairs(ours, theirs, "Keras", lambda t: f"{t[0].name}: {t[0]!r}")
    for step, (layer, hwc) in pairs:
        expected = keras.layers.Conv2D if isinstance(step.layer, L.Conv2D) else keras.layers.Dense
        if not isinstance(layer, expected):
            raise ShapeError(f"{step} is matched with Keras layer {layer.name!r} {layer!r}, "
                             f"which is not a {expected.__name__}")
        if (step.layer.bias is not None) != layer.use_bias:
            raise ShapeError(f"{step} and Keras layer {layer.name!r}: one has a bias, the other not")
        kernel = tuple(layer.kernel.shape)
        if isinstance(layer, keras.layers.Conv2D):
            theirs_shape = (kernel[3], kernel[2], kernel[0], kernel[1])
        else:
            theirs_shape = (kernel[1], kernel[0])
        if theirs_shape != step.layer.weight.data.shape:
            raise _mismatch(step, "weight", step.layer.weight.data.shape, "Keras", layer.name,
                            layer, theirs_shape)
    return pairs


def to_keras(model, keras_model=None, input_shape=None):
    """The minicnn ``model`` as Keras (NHWC), holding the same weights.

    keras_model=None: returns a new ``keras.Sequential`` on ``keras.Input((H, W, C))`` with one
    Keras layer per minicnn layer (plus ZeroPadding2D where Keras cannot pad inside the conv),
    in the model's dtype. ``input_shape`` (C, H, W) defaults to ``model.spec.input_shape``.
    keras_model=a built Keras model (e.g. ``reference.keras.models.build("lenet5")``): sets the
    weights of its Conv2D/Dense layers, matched in order, and returns it.
    Conv kernels are transposed to (kh, kw, in, out), dense weights to (in, out), and the first
    Dense after a Flatten gets its rows reordered from (C, H, W) to Keras' (H, W, C).
    """
    keras = _keras()
    if _resnet.needs_names(model):
        return _resnet.to_keras(model, keras_model, input_shape)
    if keras_model is None:
        shape = _sample_shape(model, input_shape)
        if shape is None:
            raise ValueError("to_keras: pass input_shape=(C, H, W): a Keras model starts with "
                             "keras.Input((H, W, C))")
        dtype = str(_dtype(model))
        nhwc = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
        built = [keras.Input(shape=nhwc, dtype=dtype)]
        for step in _walk(model, shape):
            built += _keras_layers(step, dtype)
        keras_model = keras.Sequential(built, name=getattr(getattr(model, "spec", None), "name",
                                                           "minicnn"))
    pairs = _keras_pairs(model, keras_model)
    for step, (layer, hwc) in pairs:
        ours = step.layer
        if isinstance(ours, L.Conv2D):
            kernel = ours.weight.data.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
        else:
            w = ours.weight.data
            if hwc is not None:
                w = _hwc_columns(w, (hwc[2], hwc[0], hwc[1]))
            kernel = w.T  # (out, in) -> (in, out)
        layer.set_weights([kernel] + ([ours.bias.data] if ours.bias is not None else []))
    return keras_model


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


def _from_keras_layers(keras_model, dtype):
    """minicnn layers for the layers of a (built) Keras model, NHWC -> NCHW."""
    keras = _keras()
    kl = keras.layers
    leaves = _keras_leaves(keras_model)
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
        else:
            raise TypeError(f"{where}: minicnn has no layer for {type(layer).__name__}")
        if act is not None:
            built.append(act)
    return built


def from_keras(keras_model, model=None):
    """Keras weights (NHWC) into minicnn (NCHW).

    model=None: returns a new minicnn Sequential with the Keras model's layers (an activation
    given to Conv2D/Dense becomes a layer of its own) and weights.
    model=a minicnn model: copies the Conv2D/Dense weights into it, in order, and returns it.
    The Keras model must be built (on a keras.Input) so that its Flatten's input is known.
    Raises ShapeError naming both layers when a shape differs; nothing is copied then.
    keras.applications.ResNet50 / 101 / 152 (or a model with BatchNorm / residual blocks) go
    by name, moving statistics included: see ``minicnn.interop_resnet.from_keras``.
    """
    if (model is None and _resnet.is_keras_resnet(keras_model)
            or model is not None and _resnet.needs_names(model)):
        return _resnet.from_keras(keras_model, model)
    if model is None:
        weights = keras_model.weights
        dtype = np.dtype(weights[0].dtype) if weights else np.dtype(np.float32)
        model = Sequential(_from_keras_layers(keras_model, dtype))
    pairs = _keras_pairs(model, keras_model)
    for step, (layer, hwc) in pairs:
        values = _keras_to_ours(layer, hwc)
        where = f"{step} <- Keras layer {layer.name!r}"
        _assign(step.layer.weight, values[0], where)
        if step.layer.bias is not None:
            _assign(step.layer.bias, values[1], where)
    return model


# ----------------------------------------------------------------------------------------
def count_parameters(net):
    """Trainable numbers in a minicnn, PyTorch or Keras model (the table's "parameters")."""
    if isinstance(net, L.Layer):
        return int(sum(p.data.size for p in net.parameters()))
    if hasattr(net, "count_params"):
        return int(sum(math.prod(v.shape) for v in net.trainable_weights))
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))
