"""minicnn <-> Keras (NHWC): ``to_keras`` and ``from_keras``, for chains and for ResNets.

On the way the layouts change:

    convolution   minicnn (out, in, kh, kw)     Keras kernel (kh, kw, in, out)
    dense         minicnn (out, in)             Keras kernel (in, out)
    flatten       minicnn (C, H, W) order       Keras (H, W, C) order: the first Dense after
                                                a Flatten has its columns permuted
    BatchNorm     weight, bias, running_mean, running_var = gamma, beta, moving_mean,
                  moving_variance

Two ways to match the layers:

- in order (a chain): the i-th Conv2D/Dense of minicnn with the i-th of the Keras model;
- by name (keras.applications.ResNet50 / 101 / 152, or a minicnn model with BatchNorm or
  residual blocks): ``names.keras_name`` translates torchvision's names, every trunk layer
  is checked against its twin (kernel, stride, padding, bias, eps, momentum), and what
  follows the trunk (the head) is matched in order.

Keras' ResNet is v1 (stride on the first 1x1 conv, conv biases, explicit ZeroPadding2D),
torchvision's v1.5: import a Keras ResNet into ``style="keras"``; crossing them is refused
with the layer that differs. torchvision's layout written in Keras with keras.applications'
names (reference/keras/resnet.py: no conv biases, a ZeroPadding2D before each strided layer
that pads) pairs with ``style="torch"``: a padding that minicnn does inside its conv or pool
is Keras' ZeroPadding2D before a "valid" one. Only weights and statistics travel, not ``trainable`` flags.
The architectures (which Keras layer computes what a minicnn layer does) are in
``keras_layers.py``. Keras is imported inside the functions only.
"""
import numpy as np

from .. import layers as L
from ..core.errors import ShapeError
from ..core.shapes import pair, resolve_padding
from ..layers import Sequential
from .keras_layers import (check_functional_chain, import_keras, keras_application, keras_layers,
                           keras_leaves, layers_from_keras, resnet_from_keras)
from .layouts import (assign, check_pairs, chw_columns, dtype_of, hwc_columns, mismatch,
                      sample_shape, walk)
from .names import (KERAS_TRUNK, has_blocks, keras_name, load_state, named_layers, needs_names,
                    trunk_layers, trunk_names)


def to_keras(model, keras_model=None, input_shape=None):
    """The minicnn ``model`` as Keras (NHWC), holding the same weights.

    keras_model=None: returns a new ``keras.Sequential`` on ``keras.Input((H, W, C))`` with one
    Keras layer per minicnn layer (plus ZeroPadding2D where Keras cannot pad inside the conv),
    in the model's dtype. ``input_shape`` (C, H, W) defaults to ``model.spec.input_shape``.
    keras_model=a built Keras model (e.g. ``reference.keras.models.build("lenet5")``): sets the
    weights of its Conv2D/Dense layers, matched in order, and returns it.
    Conv kernels are transposed to (kh, kw, in, out), dense weights to (in, out), and the first
    Dense after a Flatten gets its rows reordered from (C, H, W) to Keras' (H, W, C).
    A model with BatchNorm or residual blocks goes by name (``_to_keras_by_name``).
    """
    keras = import_keras()
    if needs_names(model):
        return _to_keras_by_name(model, keras_model, input_shape)
    if keras_model is None:
        shape = sample_shape(model, input_shape)
        if shape is None:
            raise ValueError("to_keras: pass input_shape=(C, H, W): a Keras model starts with "
                             "keras.Input((H, W, C))")
        dtype = str(dtype_of(model))
        nhwc = (shape[1], shape[2], shape[0]) if len(shape) == 3 else shape
        built = [keras.Input(shape=nhwc, dtype=dtype)]
        for step in walk(model, shape):
            built += keras_layers(step, dtype)
        keras_model = keras.Sequential(built, name=getattr(getattr(model, "spec", None), "name",
                                                           "minicnn"))
    pairs = _keras_pairs(model, keras_model)
    for step, (layer, hwc) in pairs:
        ours = step.layer
        if isinstance(ours, L.Conv2D):
            kernel = ours.weight.data.transpose(2, 3, 1, 0)  # (out, in, kh, kw) -> (kh, kw, in, out)
        else:
            kernel = _to_keras_dense(ours.weight.data, hwc)
        layer.set_weights([kernel] + ([ours.bias.data] if ours.bias is not None else []))
    return keras_model


def from_keras(keras_model, model=None):
    """Keras weights (NHWC) into minicnn (NCHW).

    model=None: returns a new minicnn Sequential with the Keras model's layers (an activation
    given to Conv2D/Dense becomes a layer of its own) and weights. A keras.Sequential, or a
    model of Keras' functional API (``keras.Input`` -> layers -> ``keras.Model``) that is one
    chain; a branch, sum or gate raises TypeError naming the layer.
    model=a minicnn model: copies the Conv2D/Dense/BatchNormalization weights into it, in
    order, and returns it; a BatchNormalization's moving mean and variance become the
    BatchNorm2D's running statistics.
    The Keras model must be built (on a keras.Input) so that its Flatten's input is known.
    Raises ShapeError naming both layers when a shape differs; nothing is copied then.
    keras.applications.ResNet50 / 101 / 152 (or a minicnn model with residual blocks) go
    by name, moving statistics included (``_from_keras_by_name``). A torch module is a
    TypeError that says to use from_torch.
    """
    check_is_keras(keras_model, "from_keras")
    if is_keras_resnet(keras_model) or model is not None and has_blocks(model):
        return _from_keras_by_name(keras_model, model)
    if model is None:
        check_functional_chain(keras_model)  # keras.Input -> layers: read in order, as a Sequential
        weights = keras_model.weights
        dtype = np.dtype(weights[0].dtype) if weights else np.dtype(np.float32)
        model = Sequential(layers_from_keras(keras_model, dtype))
    pairs = _keras_pairs(model, keras_model)
    for step, (layer, hwc) in pairs:
        values = _keras_to_ours(layer, hwc)
        where = f"{step} <- Keras layer {layer.name!r}"
        assign(step.layer.weight, values[0], where)
        if step.layer.bias is not None:
            assign(step.layer.bias, values[1], where)
        if isinstance(step.layer, L.BatchNorm2D):  # the moving statistics travel too
            step.layer.load_buffer("running_mean", values[2])
            step.layer.load_buffer("running_var", values[3])
    return model


def check_is_keras(keras_model, where):
    """TypeError unless ``keras_model`` is a Keras model or layer (a torch module says so)."""
    kind = type(keras_model)
    module = kind.__module__.split(".")[0]
    if module == "torch" or any(k.__module__.startswith("torch.") for k in kind.__mro__):
        raise TypeError(f"{where}: got a PyTorch module ({kind.__name__}); use "
                        f"minicnn.interop.from_torch for PyTorch models")
    if not hasattr(keras_model, "weights") or not hasattr(keras_model, "get_config"):
        raise TypeError(f"{where}: expected a Keras model, got {kind.__module__}.{kind.__name__}")


# ----------------------------------------------------------------------------------------
# in order: the i-th weighted layer with the i-th
# ----------------------------------------------------------------------------------------
def _keras_weighted(keras_model):
    """[(layer, (H, W, C) or None)] for each Keras layer with weights; the second item is the
    shape a Flatten flattened just before this Dense (Keras' flatten order), else None."""
    keras = import_keras()
    out, pending = [], None
    for layer in keras_leaves(keras_model):
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


def _to_keras_dense(w, hwc):
    """minicnn's Dense weight (out, in) as a Keras kernel (in, out); ``hwc`` is the (H, W, C)
    a Flatten flattened just before it in Keras, or None."""
    if hwc is not None:
        w = hwc_columns(w, (hwc[2], hwc[0], hwc[1]))
    return w.T  # (out, in) -> (in, out)


def _keras_to_ours(layer, hwc):
    """A Keras layer's weights in minicnn's layout: [weight, bias?]."""
    keras = import_keras()
    values = [np.asarray(v) for v in layer.get_weights()]
    if isinstance(layer, keras.layers.BatchNormalization):
        return values  # gamma, beta, moving_mean, moving_variance: per channel, no layout
    if isinstance(layer, keras.layers.Conv2D):
        values[0] = values[0].transpose(3, 2, 0, 1)  # (kh, kw, in, out) -> (out, in, kh, kw)
    else:
        values[0] = values[0].T  # (in, out) -> (out, in)
        if hwc is not None:
            values[0] = chw_columns(values[0], (hwc[2], hwc[0], hwc[1]))
    return values


def _keras_pairs(model, keras_model):
    """[(Step, (Keras Conv2D or Dense, (H, W, C) or None))]: minicnn's weighted layers with the
    Keras model's, in order, every kind, bias and shape checked."""
    keras = import_keras()
    ours = [s for s in walk(model, None) if s.layer.parameters()]
    theirs = _keras_weighted(keras_model)
    kinds = {L.Conv2D: keras.layers.Conv2D, L.Dense: keras.layers.Dense,
             L.BatchNorm2D: keras.layers.BatchNormalization}
    for layer, _ in theirs:
        if not isinstance(layer, tuple(kinds.values())):
            raise TypeError(f"Keras layer {layer.name!r} {layer!r} has weights, but minicnn has "
                            f"no such layer (only Conv2D, Dense and BatchNormalization weights "
                            f"are copied)")
        if isinstance(layer, keras.layers.Conv2D) and layer.data_format != "channels_last":
            raise TypeError(f"Keras layer {layer.name!r}: only channels_last (NHWC) is supported")
    pairs = check_pairs(ours, theirs, "Keras", lambda t: f"{t[0].name}: {t[0]!r}")
    for step, (layer, hwc) in pairs:
        expected = kinds.get(type(step.layer))
        if expected is None or not isinstance(layer, expected):
            raise ShapeError(f"{step} is matched with Keras layer {layer.name!r} {layer!r}, "
                             f"which is not a {getattr(expected, '__name__', 'twin')}")
        if isinstance(layer, keras.layers.BatchNormalization):
            if tuple(layer.gamma.shape) != step.layer.weight.data.shape:
                raise mismatch(step, "weight", step.layer.weight.data.shape, "Keras", layer.name,
                               layer, tuple(layer.gamma.shape))
            continue
        if (step.layer.bias is not None) != layer.use_bias:
            raise ShapeError(f"{step} and Keras layer {layer.name!r}: one has a bias, the other not")
        kernel = tuple(layer.kernel.shape)
        if isinstance(layer, keras.layers.Conv2D):
            theirs_shape = (kernel[3], kernel[2], kernel[0], kernel[1])
        else:
            theirs_shape = (kernel[1], kernel[0])
        if theirs_shape != step.layer.weight.data.shape:
            raise mismatch(step, "weight", step.layer.weight.data.shape, "Keras", layer.name,
                           layer, theirs_shape)
    return pairs


# ----------------------------------------------------------------------------------------
# by name: ResNets, BatchNorm statistics included
# ----------------------------------------------------------------------------------------
def is_keras_resnet(keras_model):
    """True for a Keras model holding keras.applications' ResNet v1 trunk (conv1_conv, ...)."""
    names = {layer.name for layer in keras_leaves(keras_model)}
    return "conv1_conv" in names and "conv2_block1_1_conv" in names


def _split_keras(keras_model, where):
    """(trunk {name: layer}, head [layers]) of a Keras ResNet: the head is whatever follows the
    last block (avg_pool and predictions, or a transfer-learning head of your own)."""
    leaves = keras_leaves(keras_model)
    if any(layer.name == "post_bn" or layer.name.endswith("_preact_bn") for layer in leaves):
        raise TypeError(f"{where}: a pre-activation ResNet (ResNet50V2) has no minicnn twin; "
                        f"keras.applications.ResNet50 / 101 / 152 do")
    last = max(i for i, layer in enumerate(leaves) if KERAS_TRUNK.match(layer.name))
    for layer in leaves[:last]:
        if not KERAS_TRUNK.match(layer.name):
            raise TypeError(f"{where}: layer {layer.name!r} {layer!r} sits inside the ResNet "
                            f"trunk; only keras.applications' layers can be read there")
    return {layer.name: layer for layer in leaves[:last + 1]}, leaves[last + 1:]


def _keras_hw(layer):
    """(H, W) of a Keras layer's input when the model was built on a known size, else None."""
    try:
        shape = tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return None
    return shape[1:3] if len(shape) == 4 and None not in shape[1:3] else None


def _check_against_keras(model, trunk, where):
    """Raise TypeError at the first minicnn trunk layer whose Keras twin (by name) is missing
    or computes something else: kernel, stride and padding, bias, BatchNorm eps/momentum."""
    kl = import_keras().layers
    twins = {"conv1_pad": "conv1_pad", "pool1_pad": "pool1_pad", "maxpool": "pool1_pool"}
    top = trunk_names(model)
    named = named_layers(model, where)
    own_pads = {twins.get(n, n) for n, layer in named.items() if isinstance(layer, L.ZeroPadding2D)}
    for name, layer in named.items():
        if (not isinstance(layer, (L.Conv2D, L.BatchNorm2D, L.MaxPool2D, L.ZeroPadding2D))
                or name.split(".")[0] not in top):
            continue
        theirs_name = twins.get(name) or keras_name(name)
        k = trunk.get(theirs_name)
        expected = {L.Conv2D: kl.Conv2D, L.BatchNorm2D: kl.BatchNormalization,
                    L.MaxPool2D: kl.MaxPooling2D, L.ZeroPadding2D: kl.ZeroPadding2D}[type(layer)]
        if not isinstance(k, expected):
            raise TypeError(f"{where}: minicnn's {name} {layer!r} has no Keras twin: "
                            f"{'no layer ' + repr(theirs_name) if k is None else repr(k)}")
        problem = None
        if isinstance(layer, L.BatchNorm2D):
            momentum = layer.momentum if layer.convention == "keras" else 1 - layer.momentum
            if not (k.center and k.scale) or k.axis not in (-1, 3, [3], [-1]):
                problem = "only BatchNormalization over the channels (NHWC), with center and scale"
            elif not (np.isclose(k.epsilon, layer.eps, rtol=1e-9)
                      and np.isclose(k.momentum, momentum)):
                problem = f"eps {k.epsilon} and momentum {k.momentum} there"
        elif isinstance(layer, L.ZeroPadding2D):
            if tuple(tuple(p) for p in k.padding) != layer.padding:
                problem = f"padding {k.padding} there"
        else:
            hw = _keras_hw(k) or (64, 65)  # the padding of "same" with a stride depends on it
            size = pair(k.kernel_size if isinstance(k, kl.Conv2D) else k.pool_size)
            pads = resolve_padding(k.padding.lower(), hw, size, pair(k.strides))
            before = _padding_before(k, own_pads)
            if before is not None:  # PyTorch's symmetric padding, written as Keras must write it
                hw = tuple(n - a - b for n, (a, b) in zip(hw, before))
                pads = tuple((a + c, b + d) for (a, b), (c, d) in zip(pads, before))
            theirs = (size, pair(k.strides), pads)
            ours = (layer.kernel_size, layer.stride, layer.padding_for(*hw))
            if theirs != ours:
                problem = f"kernel, stride, padding {theirs} there, {ours} here (input {hw})"
            elif isinstance(k, kl.Conv2D) and (k.use_bias != (layer.bias is not None)
                                               or pair(k.dilation_rate) != layer.dilation
                                               or k.groups != 1):
                problem = f"bias {k.use_bias}, dilation {k.dilation_rate}, groups {k.groups} there"
        if problem:
            raise TypeError(f"{where}: minicnn's {name} {layer!r} differs from Keras layer "
                            f"{theirs_name!r}: {problem}")
    ours = {keras_name(name) for name, _ in trunk_layers(model)}
    extra = [n for n, k in trunk.items()
             if isinstance(k, (kl.Conv2D, kl.BatchNormalization)) and n not in ours]
    if extra:
        more = " ..." if len(extra) > 6 else ""
        raise TypeError(f"{where}: Keras layers {', '.join(extra[:6])}{more} have no twin in the "
                        f"minicnn model (another number of blocks?)")


def _padding_before(k, own_pads):
    """((top, bottom), (left, right)) of the Keras ZeroPadding2D whose output is the input of
    Keras layer ``k``, when minicnn has no layer of its own for it (``own_pads``: the Keras
    names of minicnn's ZeroPadding2D twins); else None.

    A minicnn layer that pads inside itself (torchvision's conv1, padding 3) has a Keras twin
    that pads before a "valid" layer: Keras' "same" with a stride pads the bottom and right
    only. For a max-pool, zeros and PyTorch's -inf give the same maxima only after a ReLU,
    which is where a ResNet pools."""
    history = getattr(getattr(k, "input", None), "_keras_history", None)
    previous = getattr(history, "operation", None)
    if not isinstance(previous, import_keras().layers.ZeroPadding2D) or previous.name in own_pads:
        return None
    return tuple(tuple(int(p) for p in side) for side in previous.padding)


def _head_pairs(model, head):
    """[(minicnn Dense name, Dense, Keras Dense, (H, W, C) or None)] in order for the layers
    after the trunk; the last item is the shape a Flatten flattened just before (Keras' order)."""
    keras = import_keras()
    theirs = _keras_weighted(head)
    trunk = trunk_names(model)
    ours = [(name, layer) for name, layer in model.named_modules()
            if isinstance(layer, (L.Conv2D, L.Dense)) and name.split(".")[0] not in trunk]
    if len(ours) != len(theirs):
        raise ValueError(f"the head after the ResNet blocks has {len(ours)} layers with weights "
                         f"in minicnn ({', '.join(n for n, _ in ours) or 'none'}), "
                         f"{len(theirs)} in Keras "
                         f"({', '.join(k.name for k, _ in theirs) or 'none'})")
    for (name, layer), (k, _) in zip(ours, theirs):
        if not isinstance(k, keras.layers.Dense) or not isinstance(layer, L.Dense):
            raise TypeError(f"head: minicnn's {name} {layer!r} is paired with Keras layer "
                            f"{k.name!r} {k!r}; only Dense layers are read in a head")
    return [(name, layer, k, hwc) for (name, layer), (k, hwc) in zip(ours, theirs)]


def _keras_values(model, trunk, head):
    """{minicnn name: array in minicnn's layout} read from the Keras layers."""
    values = {}
    for name, layer in trunk_layers(model):
        k = trunk[keras_name(name)]
        if isinstance(layer, L.Conv2D):
            values[f"{name}.weight"] = np.asarray(k.kernel).transpose(3, 2, 0, 1)
            if k.use_bias:
                values[f"{name}.bias"] = np.asarray(k.bias)
        else:
            values[f"{name}.weight"] = np.asarray(k.gamma)
            values[f"{name}.bias"] = np.asarray(k.beta)
            values[f"{name}.running_mean"] = np.asarray(k.moving_mean)
            values[f"{name}.running_var"] = np.asarray(k.moving_variance)
    for name, layer, k, hwc in _head_pairs(model, head):
        converted = _keras_to_ours(k, hwc)
        values[f"{name}.weight"] = converted[0]
        if layer.bias is not None:
            values[f"{name}.bias"] = converted[1]
    return values


def _from_keras_by_name(keras_model, model=None):
    """keras.applications.ResNet50 (101, 152) into minicnn: weights and moving statistics.

    model=None: builds ``minicnn.zoo.resnet(..., style="keras")`` with the Keras model's stages,
    width, input channels and dtype, and what follows the trunk: ``avg_pool`` + ``predictions``
    (include_top=True; a softmax becomes a Softmax layer named "softmax"), nothing
    (include_top=False), or a head of your own (a Sequential named fc).
    model=a minicnn ResNet in Keras' style: copies into it.
    Every trunk layer is checked against its Keras twin before anything is copied.
    """
    where = "from_keras"
    trunk, head = _split_keras(keras_model, where)
    if model is None:
        model = resnet_from_keras(trunk, head)
    _check_against_keras(model, trunk, where)
    return load_state(model, _keras_values(model, trunk, head), "Keras",
                      optional=("num_batches_tracked",))


def _to_keras_by_name(model, keras_model=None, input_shape=None):
    """minicnn's Keras-style ResNet into Keras: weights and moving statistics, by name.

    keras_model=None: builds keras.applications.ResNet50 / 101 / 152 (stages [3, 4, 6, 3],
    [3, 4, 23, 3], [3, 8, 36, 3], width 64, avgpool + fc head) with ``weights=None``,
    ``classifier_activation=None`` on ``input_shape`` (C, H, W; default the zoo spec's).
    keras_model=a Keras ResNet v1 with the same layers: sets its weights.
    """
    where = "to_keras"
    if keras_model is None:
        keras_model = keras_application(model, input_shape, where)
    trunk, head = _split_keras(keras_model, where)
    _check_against_keras(model, trunk, where)
    updates = []
    for name, layer in trunk_layers(model):
        k = trunk[keras_name(name)]
        if isinstance(layer, L.Conv2D):
            new = [layer.weight.data.transpose(2, 3, 1, 0)] + (
                [layer.bias.data] if layer.bias is not None else [])
        else:
            new = [layer.weight.data, layer.bias.data, layer.running_mean, layer.running_var]
        updates.append((name, k, new))
    for name, layer, k, hwc in _head_pairs(model, head):
        new = [_to_keras_dense(layer.weight.data, hwc)]
        updates.append((name, k, new + ([layer.bias.data] if layer.bias is not None else [])))
    for name, k, new in updates:
        current = [tuple(v.shape) for v in k.get_weights()]
        if current != [v.shape for v in new]:
            raise ShapeError(f"{where}: minicnn's {name} has weights of shapes "
                             f"{[v.shape for v in new]} in Keras' layout, Keras layer {k.name!r} "
                             f"{current}")
    for _, k, new in updates:
        k.set_weights(new)
    return keras_model
