"""Copying by name: torchvision's layer names, keras.applications' names, and {name: array}.

A minicnn ResNet (``minicnn.zoo.resnet50`` and the others) is a named Sequential with
torchvision's names, so a PyTorch ``state_dict`` maps onto it key by key:

    conv1.weight   bn1.weight bn1.bias bn1.running_mean bn1.running_var bn1.num_batches_tracked
    layer1.0.conv1.weight ...  layer1.0.downsample.0.weight  layer1.0.downsample.1.running_var
    fc.weight fc.bias

keras.applications.ResNet50 (and 101, 152) names its layers another way; one rule translates:

    conv1_conv / conv1_bn                     conv1 / bn1
    conv{s}_block{b}_{k}_conv / _{k}_bn       layer{s-1}.{b-1}.conv{k} / .bn{k}     (k = 1, 2, 3)
    conv{s}_block{b}_0_conv / _0_bn           layer{s-1}.{b-1}.downsample.0 / .1   (the shortcut)
    predictions                               fc

A network with BatchNorm or residual blocks (``needs_names``) is copied this way, buffers
included, because matching weighted layers in order cannot handle it. Nothing here imports
torch or tensorflow.
"""
import re

import numpy as np

from .. import layers as L
from ..core.errors import ShapeError

_TORCH_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(?:(conv|bn)([123])|downsample\.([01]))$")
_KERAS_BLOCK = re.compile(r"conv(\d+)_block(\d+)_([0123])_(conv|bn)$")
_FIXED = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
#: the layers of a Keras ResNet before its head (classifier or your own)
KERAS_TRUNK = re.compile(r"(conv1|pool1)_|conv\d+_block\d+_")


def keras_name(name):
    """The Keras layer name of a minicnn (torchvision) layer name.

    >>> keras_name("layer2.0.conv1"), keras_name("layer1.0.downsample.1")
    ('conv3_block1_1_conv', 'conv2_block1_0_bn')
    """
    if name in _FIXED:
        return _FIXED[name]
    m = _TORCH_BLOCK.match(name)
    if m is None:
        raise KeyError(f"{name!r} has no layer in keras.applications' ResNets")
    stage, block, kind, k, down = m.groups()
    if down is not None:
        kind, k = ("conv", "0") if down == "0" else ("bn", "0")
    return f"conv{int(stage) + 1}_block{int(block) + 1}_{k}_{kind}"


def torch_name(keras_layer_name):
    """The minicnn (torchvision) name of a Keras ResNet layer: the inverse of ``keras_name``.

    >>> torch_name("conv3_block1_1_conv"), torch_name("conv2_block1_0_bn")
    ('layer2.0.conv1', 'layer1.0.downsample.1')
    """
    for ours, theirs in _FIXED.items():
        if keras_layer_name == theirs:
            return ours
    m = _KERAS_BLOCK.match(keras_layer_name)
    if m is None:
        raise KeyError(f"{keras_layer_name!r} is not a convolution or BatchNorm of a Keras ResNet")
    stage, block, k, kind = m.groups()
    prefix = f"layer{int(stage) - 1}.{int(block) - 1}"
    if k == "0":
        return f"{prefix}.downsample.{0 if kind == 'conv' else 1}"
    return f"{prefix}.{kind}{k}"


# ----------------------------------------------------------------------------------------
# state: {dotted name: array} of parameters and buffers
# ----------------------------------------------------------------------------------------
def state(model):
    """{name: array} for every parameter and buffer of ``model`` (the arrays themselves)."""
    found = {name: p.data for name, p in model.named_parameters()}
    found.update(model.named_buffers())
    return found


def names_differ(ours, theirs, framework, optional=()):
    """The ValueError for two sets of names that should be equal (``optional`` may be missing
    on the framework's side), or None."""
    missing = sorted(n for n in set(ours) - set(theirs) if n.rpartition(".")[2] not in optional)
    unexpected = sorted(set(theirs) - set(ours))
    if not missing and not unexpected:
        return None

    def some(names):
        return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")
    lines = [f"the minicnn model and the {framework} network do not have the same weights:"]
    if missing:
        lines.append(f"  only in minicnn: {some(missing)}")
    if unexpected:
        lines.append(f"  only in {framework}: {some(unexpected)}")
    return ValueError("\n".join(lines))


def load_state(model, values, framework, optional=()):
    """Copy ``values`` {name: array in minicnn's layout} into the model's parameters and buffers.

    Every name of the model must be given (except buffers named in ``optional``, e.g. Keras
    has no num_batches_tracked) and no other. All shapes are checked before anything is
    copied: a ShapeError names the layer and both shapes. Values are cast to the model's dtype.
    Returns the model.
    """
    ours = state(model)
    err = names_differ(ours, values, framework, optional)
    if err:
        raise err
    for name, value in values.items():
        value = np.asarray(value)
        if value.shape != ours[name].shape:
            raise ShapeError(f"{name} has shape {ours[name].shape} in minicnn, {value.shape} in "
                             f"{framework} (converted to minicnn's layout)")
    params = dict(model.named_parameters())
    for name, value in values.items():
        if name in params:
            params[name].data[...] = value
        else:
            model.load_buffer(name, value)
    return model


def needs_names(model):
    """True when a model must be copied by name: it holds buffers (BatchNorm) or residual
    blocks, which matching weighted layers in order cannot handle."""
    return any(isinstance(layer, (L.BatchNorm2D, L.Residual, L.Bottleneck, L.BasicBlock))
               for _, layer in model.named_modules())


def has_blocks(model):
    """True when a model holds residual blocks: only names can pair those with another framework's."""
    return any(isinstance(layer, (L.Residual, L.Bottleneck, L.BasicBlock))
               for _, layer in model.named_modules())


def named_layers(model, where):
    """{dotted name: layer} of ``model``, refusing a generic Residual (no twin elsewhere)."""
    found = dict(model.named_modules())
    for name, layer in found.items():
        if isinstance(layer, L.Residual):
            raise TypeError(f"{where}: {name} is a Residual; only ResNet's Bottleneck and "
                            f"BasicBlock have PyTorch and Keras twins here")
    return found


# ----------------------------------------------------------------------------------------
# trunk and head of a minicnn ResNet: the trunk is what keras.applications names
# ----------------------------------------------------------------------------------------
def trunk_length(model):
    """How many of the model's top-level layers belong to the trunk (up to the last stage)."""
    names = [n for n, _ in model.named_children()]
    stages = [i for i, n in enumerate(names) if re.fullmatch(r"layer\d+", n)]
    if not stages:
        raise TypeError("the model has no stages named layer1, layer2, ...: not a minicnn ResNet")
    return stages[-1] + 1


def trunk_names(model):
    """The names of the model's top-level layers that belong to the trunk."""
    return {n for n, _ in model.named_children()[:trunk_length(model)]}


def trunk_layers(model):
    """[(name, layer)] of the convolutions and BatchNorms before the head, which Keras names."""
    trunk = trunk_names(model)
    return [(name, layer) for name, layer in model.named_modules()
            if isinstance(layer, (L.Conv2D, L.BatchNorm2D)) and name.split(".")[0] in trunk]
