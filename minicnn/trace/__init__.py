"""The shape of every tensor at every layer, for minicnn, PyTorch and Keras models.

    python -m minicnn.trace lenet5 --batch 64 --explain
    python -m minicnn.trace lenet5 --framework all          # minicnn, PyTorch, Keras side by side
    python -m minicnn.trace path/to/net.py:Net --input-shape 1,28,28

    import minicnn.trace
    rows = minicnn.trace.summary(model, (1, 28, 28), batch=64)   # prints the table, returns a Trace
    with minicnn.trace.tracing():                                # prints shapes as data flows
        loss = loss_fn(model(x), y)

Shapes come from a real forward pass on a dummy input, so functional calls inside a PyTorch
``forward`` (F.relu, torch.flatten, x.view) get rows of their own, and a model that fails
still shows every row up to the failing layer, with what it expected, what it received and
the fix. torch and Keras are imported only when a model of theirs is traced.
"""
import sys

from .live import tracing
from .records import Failure, Row, Trace, Window

__all__ = ["summary", "trace", "tracing", "framework_of", "Row", "Trace", "Failure", "Window"]


def framework_of(model):
    """"minicnn", "torch" or "keras" for a model object; None for anything else.

    torch and Keras are looked up only if already imported: a model of theirs cannot exist
    otherwise.
    """
    from ..layers.base import Layer
    if isinstance(model, Layer):
        return "minicnn"
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        return "torch"
    keras = sys.modules.get("keras")
    if keras is not None and isinstance(model, keras.layers.Layer):
        return "keras"
    return None


def trace(model, input_shape=None, batch=1, name=None):
    """The Trace of ``model`` (minicnn, torch.nn.Module or Keras) without printing it.

    input_shape: one sample's shape, WITHOUT the batch: (C, H, W) for minicnn and PyTorch,
    (H, W, C) for Keras. It may be left out when the model knows it (a zoo model's
    ``spec.input_shape``, a Keras model built on ``keras.Input``).
    """
    framework = framework_of(model)
    if framework is None:
        raise TypeError(f"minicnn.trace: {type(model).__name__} is not a minicnn, PyTorch or "
                        f"Keras model")
    if input_shape is None:
        input_shape = default_input_shape(model, framework)
        if input_shape is None:
            raise ValueError("minicnn.trace: give the input shape without the batch, e.g. "
                             "(1, 28, 28) (Keras: (28, 28, 1))")
    input_shape = tuple(int(d) for d in input_shape)
    if batch < 1:
        raise ValueError(f"minicnn.trace: batch must be >= 1, got {batch}")
    if framework == "minicnn":
        from .tracers import minicnn as tracer
    elif framework == "torch":
        from .tracers import torch as tracer
    else:
        from .tracers import keras as tracer
    return tracer.trace(model, input_shape, batch, name=name)


def default_input_shape(model, framework):
    """The model's own idea of one sample's shape, or None."""
    spec = getattr(model, "spec", None)
    if spec is not None and getattr(spec, "input_shape", None):
        return tuple(spec.input_shape)
    if framework == "keras":
        try:
            inputs = model.inputs
        except (AttributeError, ValueError):
            return None
        if inputs and all(d is not None for d in inputs[0].shape[1:]):
            return tuple(int(d) for d in inputs[0].shape[1:])
    return None


def summary(model, input_shape=None, batch=1, explain=False, format="text", file=None,
            name=None):
    """Print the table of ``model``'s shapes and return the Trace (iterate it for the rows).

    A model that fails does not raise: the table shows the rows up to the failing layer and
    the fix; ``trace.ok`` is False and ``trace.failure`` holds the details.
    """
    result = trace(model, input_shape, batch, name=name)
    print(result.render(format, explain), end="", file=file or sys.stdout)
    return result
