"""Trace a minicnn model: one real forward pass on a dummy input, every Layer call recorded.

``Layer.__call__`` is wrapped for the duration of the pass (and restored after), so every
layer, nested Sequentials included, reports the shapes it really received and returned.
"""
import numpy as np

from ...layers import AvgPool2D, Conv2D, Dense, MaxPool2D, SumPool2D
from ...layers.base import Layer
from ...layers import Sequential
from .. import explain
from ..records import Recorder, Trace, Window, finish

_POOLS = (MaxPool2D, AvgPool2D, SumPool2D)


def sublayers(layer):
    """[(name, layer), ...]: a Sequential's items by index, else Layer attributes and lists."""
    if isinstance(layer, Sequential):
        return layer.named_children()  # "0", "1", ... or the names given
    found = []
    for attr, value in vars(layer).items():
        if isinstance(value, Layer):
            found.append((attr, value))
        elif isinstance(value, (list, tuple)):
            found += [(f"{attr}.{i}", v) for i, v in enumerate(value) if isinstance(v, Layer)]
    return found


def named_layers(model):
    """{id(layer): dotted name} for the model and every layer inside it, PyTorch-style names."""
    names = {id(model): ""}

    def visit(layer, prefix):
        for key, sub in sublayers(layer):
            if id(sub) not in names:
                names[id(sub)] = prefix + key
                visit(sub, prefix + key + ".")
    visit(model, "")
    return names


def all_layers(model):
    seen, todo = {}, [model]
    while todo:
        layer = todo.pop()
        if id(layer) not in seen:
            seen[id(layer)] = layer
            todo += [sub for _, sub in sublayers(layer)]
    return list(seen.values())


def _params(layers):
    unique = {}
    for layer in layers:
        for p in layer.parameters():
            unique[id(p)] = p
    return list(unique.values())


def _window(layer):
    if isinstance(layer, Conv2D):
        return Window(layer.kernel_size, layer.stride, layer.padding, layer.dilation)
    if isinstance(layer, _POOLS):
        return Window(layer.kernel_size, layer.stride, layer.padding)
    return None


def _own_params(layer):
    """The layer's parameters that none of its sublayers owns."""
    inner = {id(p) for _, sub in sublayers(layer) for p in sub.parameters()}
    return [p for p in layer.parameters() if id(p) not in inner]


def _diagnose(trace, row, layer, err):
    shape = row.input_shape
    if isinstance(layer, Dense) and shape and len(shape) >= 2 and shape[-1] != layer.in_features:
        return explain.dense_failure(trace, row, repr(layer), layer.in_features, err, "minicnn")
    if isinstance(layer, Conv2D) and shape and len(shape) == 4 and shape[1] != layer.in_channels:
        return explain.channel_failure(trace, row, repr(layer), layer.in_channels, err, "minicnn")
    if explain.window_too_small(trace, row):
        return explain.window_failure(trace, row, repr(layer), err)
    return explain.generic_failure(row, repr(layer), err)


def trace(model, input_shape, batch=1, name=None, seed=0):
    """Run ``model`` on a random (batch, *input_shape) input and return the Trace.

    input_shape: (C, H, W) without the batch. The model runs in eval mode (Dropout off) and
    is put back in the mode each layer had. A layer that raises ends the pass: the rows up
    to it are kept, it is marked failed and ``trace.failure`` explains.
    """
    layers = all_layers(model)
    params = _params(layers)
    dtype = np.dtype(params[0].data.dtype if params else np.float32)
    x = np.random.default_rng(seed).standard_normal((batch,) + tuple(input_shape)).astype(dtype)
    names = named_layers(model)
    rec = Recorder()
    layer_of = {}  # row index -> the layer it called
    first_error = []
    original = Layer.__call__

    def call(layer, inputs):
        arr = np.asarray(inputs)
        row = rec.open(names.get(id(layer), type(layer).__name__) or type(layer).__name__,
                       type(layer).__name__, [arr.shape], window=_window(layer))
        layer_of[row.index] = layer
        own = _own_params(layer)
        row.trainable = sum(p.size for p in own if p.trainable)
        row.frozen = sum(p.size for p in own if not p.trainable)
        try:
            out = original(layer, inputs)
        except Exception as err:
            if rec.failed is None:
                first_error.append(err)  # the layer's own message, before any re-wrapping
            rec.fail(row)
            raise
        out_arr = np.asarray(out)
        if isinstance(layer, (Conv2D, Dense)):
            w = layer.weight.data
            row.macs = out_arr.size * (w.size // w.shape[0])
        row.shared = np.shares_memory(out_arr, arr)
        row.memory = 0 if row.shared else out_arr.nbytes
        if not sublayers(layer):
            try:
                row.explain = list(layer.explain(arr.shape))
            except ValueError:  # ShapeError included: an explanation is never worth a failure
                pass
        rec.close(row, [out_arr.shape])
        return out

    modes = {id(layer): layer.training for layer in layers}
    model.eval()
    error = None
    Layer.__call__ = call
    try:
        model(x)
    except Exception as err:  # noqa: BLE001 - any failure becomes the trace's failure row
        error = err
    finally:
        Layer.__call__ = original
        for layer in layers:
            layer.training = modes[id(layer)]

    for row in rec.rows:
        if row.container:
            row.nested_params = sum(p.size for p in layer_of[row.index].parameters())
    result = Trace(name or type(model).__name__, "minicnn", "NCHW", x.shape, str(dtype),
                   dtype.itemsize, rec.rows,
                   trainable=sum(p.size for p in params if p.trainable),
                   frozen=sum(p.size for p in params if not p.trainable),
                   param_bytes=sum(p.data.nbytes for p in params))
    finish(rec.rows, "NCHW")
    if error is not None:
        row = rec.failed_row(error, x.shape)
        result.failure = _diagnose(result, row, layer_of.get(row.index),
                                   first_error[0] if first_error else error)
    return result


def is_model(obj):
    return isinstance(obj, Layer)
