"""Trace a Keras 3 model: one real call on a dummy batch, every layer call recorded.

``keras.layers.Layer.__call__`` is wrapped for the duration of the call, so Sequential,
functional and subclassed models all report the shapes each layer really received and
returned: a subclassed model's layers never show "multiple", and a layer called twice gets a
row per call. Keras is channels-last: the shapes are [N, H, W, C].

Keras (and TensorFlow) are imported here, and this module is imported only to trace a Keras
model.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from .. import explain  # noqa: E402
from ..records import Recorder, Trace, Window, finish, to_pair  # noqa: E402
from ..records import _KINDS  # noqa: E402

_WINDOW_POOLS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_MACS = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense)


def sublayers(layer):
    """The layers directly inside ``layer`` (a Sequential's, or a subclassed model's attributes)."""
    flatten = getattr(layer, "_flatten_layers", None)
    if flatten is not None:
        return list(flatten(include_self=False, recursive=False))
    return list(getattr(layer, "layers", []))


def _size(variables):
    return sum(int(np.prod(v.shape)) for v in variables)


def _itemsize(dtype):
    return np.dtype(keras.backend.standardize_dtype(dtype)).itemsize


def _shape(t):
    return tuple(int(d) for d in t.shape)


def _tensors(value):
    return [t for t in keras.tree.flatten(value)
            if hasattr(t, "shape") and hasattr(t, "dtype") and not isinstance(t, (bool, int))]


def _window(layer):
    if isinstance(layer, keras.layers.Conv2D):
        return Window(to_pair(layer.kernel_size), to_pair(layer.strides), layer.padding,
                      to_pair(layer.dilation_rate))
    if isinstance(layer, _WINDOW_POOLS):
        return Window(to_pair(layer.pool_size), to_pair(layer.strides), layer.padding)
    return None


def _activation_name(layer):
    act = getattr(layer, "activation", None)
    return getattr(act, "__name__", "") if act is not None else ""


def _own_weights(layer):
    inner = {id(v) for sub in sublayers(layer) for v in sub.weights}
    own = [v for v in layer.trainable_weights if id(v) not in inner]
    frozen = [v for v in layer.non_trainable_weights if id(v) not in inner]
    return own, frozen


def _diagnose(trace, row, layer, err):
    shape = row.input_shape
    name = f"{type(layer).__name__} {layer.name!r}" if layer is not None else row.label
    if isinstance(layer, keras.layers.Dense) and layer.built and shape:
        expected = int(layer.kernel.shape[0])
        if shape[-1] != expected:
            return explain.dense_failure(trace, row, name, expected, err, "keras")
    if isinstance(layer, keras.layers.Conv2D) and layer.built and shape and len(shape) == 4:
        expected = int(layer.kernel.shape[-2]) * int(getattr(layer, "groups", 1) or 1)
        got = shape[-1] if layer.data_format == "channels_last" else shape[1]
        if got != expected:
            return explain.channel_failure(trace, row, name, expected, err, "keras")
    if explain.window_too_small(trace, row):
        return explain.window_failure(trace, row, name, err)
    return explain.generic_failure(row, name, err)


def trace(model, input_shape, batch=1, name=None, seed=0):
    """Call ``model`` on a random (batch, *input_shape) array and return the Trace.

    input_shape: (H, W, C) without the batch (Keras' channels-last). The call runs with
    ``training=False`` (Dropout off). A model that was never built is called once first,
    untraced, so that building it does not produce rows of its own.
    """
    dtype = np.dtype(keras.backend.standardize_dtype(getattr(model, "compute_dtype", "float32")))
    x = np.random.default_rng(seed).standard_normal((batch,) + tuple(input_shape)).astype(dtype)
    if not model.built:
        try:
            model(x, training=False)
        except Exception:  # noqa: BLE001 - the traced call below reports it
            pass
    layout = "NHWC" if keras.config.image_data_format() == "channels_last" else "NCHW"

    rec = Recorder()
    layer_of = {}
    first_error = []
    Layer = keras.layers.Layer
    original = Layer.__call__

    def call(layer, *args, **kwargs):
        inputs = _tensors(args)
        row = rec.open(layer.name, type(layer).__name__, [_shape(t) for t in inputs],
                       window=_window(layer))
        layer_of[row.index] = layer
        try:
            out = original(layer, *args, **kwargs)
        except Exception as err:
            if rec.failed is None:
                first_error.append(err)
            rec.fail(row)
            raise
        outs = _tensors(out)
        own, frozen = _own_weights(layer)
        row.trainable, row.frozen = _size(own), _size(frozen)
        if outs and isinstance(layer, _MACS):
            kernel = layer.kernel
            row.macs = int(np.prod(outs[0].shape)) * (_size([kernel]) // int(kernel.shape[-1]))
        if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
            act = _activation_name(layer)
            row.fused = "" if act in ("", "linear") else act
        elif isinstance(layer, keras.layers.Activation):
            act = _activation_name(layer)
            row.kind = _KINDS.get(act, act)
        row.shared = bool(outs) and any(o is i for o in outs[:1] for i in inputs)
        row.memory = 0 if row.shared else sum(int(np.prod(t.shape)) * _itemsize(t.dtype)
                                              for t in outs)
        rec.close(row, [_shape(t) for t in outs])
        return out

    error = None
    Layer.__call__ = call
    try:
        model(x, training=False)
    except Exception as err:  # noqa: BLE001 - any failure becomes the trace's failure row
        error = err
    finally:
        Layer.__call__ = original

    for row in rec.rows:
        if row.container:
            row.nested_params = _size(layer_of[row.index].weights)
        elif row.status != "ok" and row.index in layer_of:
            own, frozen = _own_weights(layer_of[row.index])
            row.trainable, row.frozen = _size(own), _size(frozen)
    weights = model.weights
    result = Trace(name or model.name, "keras", layout, x.shape, str(dtype), dtype.itemsize,
                   rec.rows, trainable=_size(model.trainable_weights),
                   frozen=_size(model.non_trainable_weights),
                   param_bytes=sum(int(np.prod(v.shape)) * _itemsize(v.dtype) for v in weights))
    finish(rec.rows, layout)
    if error is not None:
        row = rec.failed_row(error, x.shape)
        result.failure = _diagnose(result, row, layer_of.get(row.index),
                                   first_error[0] if first_error else error)
    return result


def is_model(obj):
    return isinstance(obj, keras.layers.Layer)
