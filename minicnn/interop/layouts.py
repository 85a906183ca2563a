"""What every framework's copy needs, and no framework: the model walk and the layouts.

A minicnn model is walked as a flat list of Steps (nested Sequentials opened), each with the
shape its layer sees, so that a padding that depends on the image size can be resolved.
Weights move between layouts here:

    NCHW (minicnn, PyTorch)        NHWC (Keras)
    flatten order (C, H, W)        flatten order (H, W, C)

The second line is the classic reason ported weights give different answers: the first Dense
after a Flatten sees its inputs in another order, so its weight columns are permuted
(``hwc_columns`` / ``chw_columns``). Nothing here imports torch or tensorflow.
"""
import numpy as np

from ..core.errors import ShapeError
from ..layers import Sequential


class Step:
    """One layer of a minicnn model (nested Sequentials opened): its name and input shape."""

    def __init__(self, name, layer, shape_in):
        self.name, self.layer, self.shape_in = name, layer, shape_in

    def __str__(self):
        return f"layer {self.name} {self.layer!r}"


def leaves(model, prefix=""):
    """[(name, layer)] with nested Sequentials opened: names "3", "1.2" as in named_parameters."""
    out = []
    for i, layer in enumerate(model.layers if isinstance(model, Sequential) else [model]):
        name = f"{prefix}{i}"
        if isinstance(layer, Sequential):
            out += leaves(layer, name + ".")
        else:
            out.append((name, layer))
    return out


def sample_shape(model, input_shape):
    """One sample's input shape: ``input_shape`` or the zoo spec's, as a tuple (or None)."""
    if input_shape is None:
        spec = getattr(model, "spec", None)
        input_shape = getattr(spec, "input_shape", None)
    return None if input_shape is None else tuple(int(d) for d in input_shape)


def walk(model, input_shape):
    """The model's layers as Steps; ``input_shape`` is one sample's (C, H, W) or None, and
    the Steps' shapes (N=1, C, H, W) are None when no input shape is known."""
    shape = None if input_shape is None else (1,) + tuple(input_shape)
    steps = []
    for name, layer in leaves(model):
        steps.append(Step(name, layer, shape))
        shape = None if shape is None else layer.output_shape(shape)
    return steps


def fixed_pads(layer):
    """((top, bottom), (left, right)) of a conv or pool whose padding does not depend on the
    image size ("valid", explicit numbers, or "same" at stride 1)."""
    return layer.padding_for(10**6, 10**6)


def pads(step):
    """((top, bottom), (left, right)) of a windowed layer. Without an input shape only the
    paddings that do not depend on the image size can be resolved."""
    layer = step.layer
    if step.shape_in is not None:
        return layer.padding_for(*step.shape_in[2:])
    if isinstance(layer.padding, str) and max(layer.stride) > 1:
        raise ValueError(f"{step}: padding {layer.padding!r} with a stride above 1 depends on "
                         f"the image size; pass input_shape=(C, H, W)")
    return fixed_pads(layer)


def dtype_of(model):
    """The dtype of the model's weights (float32 for a model without any)."""
    params = model.parameters()
    return params[0].data.dtype if params else np.dtype(np.float32)


def nhwc_axis(axis, rank):
    """The Keras (NHWC) axis of minicnn's (NCHW) ``axis`` for an input of ``rank`` dimensions."""
    axis = axis % rank
    return {0: 0, 1: 3, 2: 1, 3: 2}[axis] if rank == 4 else axis


def hwc_columns(w, chw):
    """Dense weight (out, C·H·W) with columns in NCHW flatten order -> columns in (H, W, C) order."""
    c, h, wd = chw
    return w.reshape(len(w), c, h, wd).transpose(0, 2, 3, 1).reshape(len(w), -1)


def chw_columns(w, chw):
    """The inverse: Dense weight (out, H·W·C) in Keras' flatten order -> (C, H, W) order."""
    c, h, wd = chw
    return w.reshape(len(w), h, wd, c).transpose(0, 3, 1, 2).reshape(len(w), -1)


def assign(param, value, where):
    """Copy ``value`` into a minicnn Parameter in place (the optimizer keeps a reference)."""
    value = np.asarray(value)
    if value.shape != param.data.shape:
        raise ShapeError(f"{where}: {param.name} has shape {param.data.shape} in minicnn, "
                         f"got {value.shape}")
    param.data[...] = value


def check_pairs(ours, theirs, framework, describe):
    """The i-th weighted layer of minicnn with the i-th of the framework: [(ours, theirs)];
    ValueError if the counts differ (the message lists both sides, ``describe`` names theirs)."""
    if len(ours) != len(theirs):
        mine = "\n".join(f"    {s}" for s in ours) or "    (none)"
        other = "\n".join(f"    {describe(t)}" for t in theirs) or "    (none)"
        raise ValueError(f"the minicnn model has {len(ours)} layers with weights, the {framework} "
                         f"model {len(theirs)}; they are matched in order:\n  minicnn:\n{mine}\n"
                         f"  {framework}:\n{other}")
    return list(zip(ours, theirs))


def mismatch(step, what, ours, framework, name, theirs_layer, theirs):
    """The ShapeError for a weight whose shape differs between ``step`` and the framework's layer."""
    return ShapeError(f"{step} does not fit {framework} layer {name!r} {theirs_layer!r}: {what} "
                      f"is {tuple(ours)} in minicnn, {tuple(theirs)} there (converted to "
                      f"minicnn's layout)")
