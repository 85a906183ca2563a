"""ResNets between minicnn, PyTorch and Keras: every weight AND every BatchNorm statistic, by name.

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

and on the way the layouts change: a conv kernel (kh, kw, in, out) becomes (out, in, kh, kw),
a Dense kernel (in, out) becomes (out, in), BatchNormalization's gamma, beta, moving_mean and
moving_variance become weight, bias, running_mean and running_var.

The architectures differ too, so a network is checked layer by layer (kernel, stride,
padding) before anything is copied: torchvision's ResNet is "v1.5" (stride on the 3×3 conv,
no conv bias), Keras' is v1 (stride on the first 1×1 conv, conv biases, explicit
ZeroPadding2D). Import a Keras ResNet into ``style="keras"``, a torchvision one into
``style="torch"``; crossing them is refused with the layer that differs.

Only weights and statistics travel, not ``trainable`` flags: freeze in minicnn with
``model.trainable = False``.

The entry points are ``minicnn.interop.from_torch / to_torch / from_keras / to_keras``,
which send ResNets (and any network holding BatchNorm or residual blocks) here.
"""
import re
from collections import OrderedDict

import numpy as np

from . import layers as L
from .errors import ShapeError
from .model import Sequential
from .shapes import pair, resolve_padding


# ----------------------------------------------------------------------------------------
# names
# ----------------------------------------------------------------------------------------
_TORCH_BLOCK = re.compile(r"layer(\d+)\.(\d+)\.(?:(conv|bn)([123])|downsample\.([01]))$")
_KERAS_BLOCK = re.compile(r"conv(\d+)_block(\d+)_([0123])_(conv|bn)$")
_FIXED = {"conv1": "conv1_conv", "bn1": "conv1_bn", "fc": "predictions"}
#: the layers of a Keras ResNet before its head (classifier or your own)
_KERAS_TRUNK = re.compile(r"(conv1|pool1)_|conv\d+_block\d+_")


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


def _names_differ(ours, theirs, framework, optional=()):
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
    """
    ours = state(model)
    err = _names_differ(ours, values, framework, optional)
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


def _named_layers(model, where):
    """{dotted name: layer} of ``model``, refusing a generic Residual (no twin elsewhere)."""
    found = dict(model.named_modules())
    for name, layer in found.items():
        if isinstance(layer, L.Residual):
            raise TypeError(f"{where}: {name} is a Residual; only ResNet's Bottleneck and "
                            f"BasicBlock have PyTorch and Keras twins here")
    return found


# ----------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------
def is_torch_resnet(module):
    """True for torchvision's ResNet (or reference/torch/resnet.py's): conv1, bn1, maxpool,
    layer1..., avgpool and fc."""
    return all(hasattr(module, name) for name in ("conv1", "bn1", "maxpool", "layer1", "avgpool",
                                                   "fc"))


def _pads_of(layer):
    """((top, bottom), (left, right)) of a minicnn conv or pool whose padding is a number."""
    return layer.padding_for(10**6, 10**6)


def _check_against_torch(model, module, where):
    """Raise TypeError at the first layer whose kernel, stride or padding differ from the
    torch module of the same name, or that torch does not have. BatchNorm's eps and momentum
    are checked too; the weights' shapes are checked by ``load_state``."""
    from torch import nn
    torch_modules = dict(module.named_modules())
    for name, layer in _named_layers(model, where).items():
        kind = {L.Conv2D: nn.Conv2d, L.MaxPool2D: nn.MaxPool2d, L.BatchNorm2D: nn.BatchNorm2d,
                L.Dense: nn.Linear}.get(type(layer))
        if kind is None:
            continue
        m = torch_modules.get(name)
        if not isinstance(m, kind):
            raise TypeError(f"{where}: minicnn's {name} is {layer!r}; the PyTorch network has "
                            f"{'no module ' + repr(name) if m is None else repr(m) + ' there'}")
        if isinstance(layer, L.BatchNorm2D):
            momentum = 1 - layer.momentum if layer.convention == "keras" else layer.momentum
            if not (m.affine and m.track_running_stats and m.momentum is not None):
                raise TypeError(f"{where}: {name} {m!r}: only affine BatchNorm2d with running "
                                f"statistics and a momentum has a minicnn twin")
            if not (np.isclose(m.eps, layer.eps, rtol=1e-9) and np.isclose(m.momentum, momentum)):
                raise TypeError(f"{where}: {name} is {m!r} in PyTorch, {layer!r} in minicnn")
            continue
        if isinstance(layer, L.Dense):
            continue
        pads = _pads_of(layer)
        if any(a != b for a, b in pads):
            raise TypeError(f"{where}: {name} {layer!r} pads unevenly {pads}, which a PyTorch "
                            f"module of that name cannot")
        theirs = (pair(m.kernel_size), pair(m.stride), pair(m.padding), pair(m.dilation))
        ours = (layer.kernel_size, layer.stride, (pads[0][0], pads[1][0]),
                getattr(layer, "dilation", (1, 1)))
        if isinstance(m, nn.Conv2d):
            if m.groups != 1 or m.padding_mode != "zeros":
                raise TypeError(f"{where}: {name} {m!r}: only groups=1 with zero padding")
            if (m.bias is None) != (layer.bias is None):
                raise TypeError(f"{where}: {name} is {m!r} in PyTorch, {layer!r} in minicnn: "
                                f"one has a bias, the other not")
        elif m.ceil_mode:
            raise TypeError(f"{where}: {name} {m!r}: minicnn's pools have no ceil_mode")
        if ours != theirs:
            raise TypeError(f"{where}: {name} is {m!r} in PyTorch but {layer!r} in minicnn "
                            f"(kernel, stride, padding, dilation {theirs} vs {ours})")


def _torch_state(module):
    return {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}


def from_torch(module, model=None):
    """A torchvision-style PyTorch ResNet into minicnn: weights and running statistics.

    model=None: builds ``minicnn.zoo.resnet`` with the module's blocks, stages, width, input
    channels and dtype; its ``fc`` may be a Linear or an nn.Sequential of layers minicnn has
    (the transfer-learning head ``nn.Sequential(nn.Linear(2048, 128), nn.ReLU(),
    nn.Linear(128, 2))`` becomes a Sequential named fc, with names fc.0 and fc.2 as in torch).
    model=a minicnn model with the same names: copies into it. Returns the model, in the
    module's train/eval mode when built here.
    """
    from torch import nn
    where = "from_torch"
    if model is None:
        from . import zoo
        from .interop import _from_torch_layers
        stages = []
        while hasattr(module, f"layer{len(stages) + 1}"):
            stages.append(getattr(module, f"layer{len(stages) + 1}"))
        first = stages[0][0]
        block = "bottleneck" if hasattr(first, "conv3") else "basic"
        dtype = module.conv1.weight.detach().cpu().numpy().dtype
        pool = module.avgpool
        if not (isinstance(pool, nn.AdaptiveAvgPool2d) and pool.output_size in (1, (1, 1))):
            raise TypeError(f"{where}: avgpool is {pool!r}; only AdaptiveAvgPool2d(1) (then "
                            f"flattened, as torchvision's forward does) has a minicnn twin")
        fc = module.fc
        if not isinstance(fc, (nn.Linear, nn.Sequential)):
            raise TypeError(f"{where}: fc is {fc!r}; a Linear or an nn.Sequential is expected")
        num_classes = fc.out_features if isinstance(fc, nn.Linear) else 1
        # rng=0: the weights are overwritten, so do not consume the user's global stream
        model = zoo.resnet(block, [len(s) for s in stages], num_classes,
                           width=module.conv1.out_channels, style="torch",
                           in_channels=module.conv1.in_channels, dtype=dtype, rng=0)
        if isinstance(fc, nn.Sequential):
            names, head = [n for n, _ in fc.named_children()], _from_torch_layers(fc, dtype)
            if len(names) != len(head):
                raise TypeError(f"{where}: fc {fc!r}: only a head with one minicnn layer per "
                                f"module keeps PyTorch's names")
            model["fc"] = Sequential(list(zip(names, head)))
        for bn_name, bn in model.named_modules():  # eps and momentum as the module has them
            m = module.get_submodule(bn_name) if isinstance(bn, L.BatchNorm2D) else None
            if isinstance(m, nn.BatchNorm2d) and m.momentum is not None:
                bn.eps, bn.momentum = float(m.eps), float(m.momentum)
        model.train(module.training)
    _check_against_torch(model, module, where)
    return load_state(model, _torch_state(module), "PyTorch")


_TORCH_BLOCK_CLASS = None


def _torch_block_class():
    """torch.nn.Module for minicnn's Bottleneck / BasicBlock: torchvision's names and forward
    (defined on first use so that importing minicnn never imports torch)."""
    global _TORCH_BLOCK_CLASS
    if _TORCH_BLOCK_CLASS is None:
        from torch import nn

        class ResidualBlock(nn.Module):
            """relu(bn_k(conv_k(... relu(bn1(conv1(x))) ...)) + shortcut(x)), as torchvision."""

            def __init__(self, pairs, downsample):
                super().__init__()
                self.pairs = len(pairs)
                for i, (conv, bn) in enumerate(pairs, 1):
                    self.add_module(f"conv{i}", conv)
                    self.add_module(f"bn{i}", bn)
                self.relu = nn.ReLU()
                self.downsample = downsample

            def forward(self, x):
                out = x
                for i in range(1, self.pairs + 1):
                    out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
                    if i < self.pairs:
                        out = self.relu(out)
                identity = x if self.downsample is None else self.downsample(x)
                return self.relu(out + identity)

        _TORCH_BLOCK_CLASS = ResidualBlock
    return _TORCH_BLOCK_CLASS


def _torch_module(name, layer, where):
    """The PyTorch module computing minicnn's ``layer``, its children under the same names."""
    from torch import nn

    from .interop import _Step, _torch_modules
    if isinstance(layer, Sequential):
        return nn.Sequential(OrderedDict(
            (n, _torch_module(f"{name}.{n}" if name else n, child, where))
            for n, child in layer.named_children()))
    if isinstance(layer, (L.Bottleneck, L.BasicBlock)):
        count = 3 if isinstance(layer, L.Bottleneck) else 2
        pairs = [(_torch_module(f"{name}.conv{i}", layer.get_layer(f"conv{i}"), where),
                  _torch_module(f"{name}.bn{i}", layer.get_layer(f"bn{i}"), where))
                 for i in range(1, count + 1)]
        down = layer.downsample
        down = None if down is None else _torch_module(f"{name}.downsample", down, where)
        return _torch_block_class()(pairs, down)
    if isinstance(layer, L.BatchNorm2D):
        # Keras' momentum 0.99 is PyTorch's 0.01; in training Keras moves its variance with the
        # biased batch variance, PyTorch with the unbiased one (evaluation is the same)
        momentum = 1 - layer.momentum if layer.convention == "keras" else layer.momentum
        return nn.BatchNorm2d(layer.num_features, eps=layer.eps, momentum=momentum,
                              affine=layer.affine)
    if isinstance(layer, L.Residual):
        raise TypeError(f"{where}: {name} is a Residual; only ResNet's Bottleneck and BasicBlock "
                        f"have PyTorch twins here")
    modules = _torch_modules(_Step(name, layer, None))
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def to_torch(model, module=None):
    """minicnn's ResNet (or any model with BatchNorm / blocks) as PyTorch, by name.

    module=None: a new torch module tree with the model's names (a block becomes a module
    with torchvision's forward), in the model's dtype and train/eval mode.
    module=e.g. ``reference.torch.resnet.resnet50()`` or torchvision's: loads the weights and
    running statistics into it (``load_state_dict``, strict) after checking every layer.
    """
    import torch
    where = "to_torch"
    if module is None:
        params = model.parameters()
        dtype = params[0].data.dtype if params else np.dtype(np.float32)
        module = _torch_module("", model, where)
        module.to(torch.from_numpy(np.zeros(0, dtype)).dtype)
        module.train(model.training)
    _check_against_torch(model, module, where)
    theirs = module.state_dict()
    err = _names_differ(theirs, state(model), "minicnn")
    if err:
        raise err
    values = state(model)
    for name, t in theirs.items():
        if tuple(t.shape) != values[name].shape:
            raise ShapeError(f"{where}: {name} has shape {values[name].shape} in minicnn, "
                             f"{tuple(t.shape)} in PyTorch")
    module.load_state_dict({name: torch.from_numpy(np.array(v)) for name, v in values.items()},
                           strict=True)
    return module


# ----------------------------------------------------------------------------------------
# Keras
# ----------------------------------------------------------------------------------------
def is_keras_resnet(keras_model):
    """True for a Keras model holding keras.applications' ResNet v1 trunk (conv1_conv, ...)."""
    from .interop import _keras_leaves
    names = {layer.name for layer in _keras_leaves(keras_model)}
    return "conv1_conv" in names and "conv2_block1_1_conv" in names


def _split_keras(keras_model, where):
    """(trunk {name: layer}, head [layers]) of a Keras ResNet: the head is whatever follows the
    last block (avg_pool and predictions, or a transfer-learning head of your own)."""
    from .interop import _keras_leaves
    leaves = _keras_leaves(keras_model)
    if any(layer.name == "post_bn" or layer.name.endswith("_preact_bn") for layer in leaves):
        raise TypeError(f"{where}: a pre-activation ResNet (ResNet50V2) has no minicnn twin; "
                        f"keras.applications.ResNet50 / 101 / 152 do")
    last = max(i for i, layer in enumerate(leaves) if _KERAS_TRUNK.match(layer.name))
    for layer in leaves[:last]:
        if not _KERAS_TRUNK.match(layer.name):
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
    import keras
    kl = keras.layers
    twins = {"conv1_pad": "conv1_pad", "pool1_pad": "pool1_pad", "maxpool": "pool1_pool"}
    top = {n for n, _ in model.named_children()[:_trunk_length(model)]}
    for name, layer in _named_layers(model, where).items():
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
            theirs = (size, pair(k.strides),
                      resolve_padding(k.padding.lower(), hw, size, pair(k.strides)))
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
    ours = {keras_name(name) for name, _ in _trunk_layers(model)}
    extra = [n for n, k in trunk.items()
             if isinstance(k, (kl.Conv2D, kl.BatchNormalization)) and n not in ours]
    if extra:
        more = " ..." if len(extra) > 6 else ""
        raise TypeError(f"{where}: Keras layers {', '.join(extra[:6])}{more} have no twin in the "
                        f"minicnn model (another number of blocks?)")


def _head_pairs(model, head):
    """[(minicnn Dense name, Keras Dense, (H, W, C) or None)] in order for the layers after
    the trunk; the third item is the shape a Flatten flattened just before (Keras' order)."""
    import keras
    from .interop import _keras_weighted
    theirs = _keras_weighted(head)
    trunk = {n for n, _ in model.named_children()[:_trunk_length(model)]}
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


def _trunk_length(model):
    """How many of the model's top-level layers belong to the trunk (up to the last stage)."""
    names = [n for n, _ in model.named_children()]
    stages = [i for i, n in enumerate(names) if re.fullmatch(r"layer\d+", n)]
    if not stages:
        raise TypeError("the model has no stages named layer1, layer2, ...: not a minicnn ResNet")
    return stages[-1] + 1


def _trunk_layers(model):
    """[(name, layer)] of the convolutions and BatchNorms before the head, which Keras names."""
    trunk = {n for n, _ in model.named_children()[:_trunk_length(model)]}
    return [(name, layer) for name, layer in model.named_modules()
            if isinstance(layer, (L.Conv2D, L.BatchNorm2D)) and name.split(".")[0] in trunk]


def _keras_values(model, trunk, head):
    """{minicnn name: array in minicnn's layout} read from the Keras layers."""
    from .interop import _keras_to_ours
    values = {}
    for name, layer in _trunk_layers(model):
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


def _head_from_keras(head, dtype):
    """[(name, layer)] for the Keras layers after the trunk: avgpool, then fc (a Dense, or a
    Sequential for a head of several layers), and the classifier's activation if it has one."""
    from .interop import _from_keras_layers
    built = _from_keras_layers(head, dtype)
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


def from_keras(keras_model, model=None):
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
        from . import zoo
        conv1 = trunk["conv1_conv"]
        blocks = []
        while f"conv{len(blocks) + 2}_block1_out" in trunk:
            stage = len(blocks) + 2
            blocks.append(sum(1 for n in trunk if re.fullmatch(rf"conv{stage}_block\d+_out", n)))
        block = "bottleneck" if "conv2_block1_3_conv" in trunk else "basic"
        dtype = np.dtype(conv1.kernel.dtype)
        built = zoo.resnet(block, blocks, 1, width=conv1.filters, style="keras",
                           in_channels=int(conv1.kernel.shape[2]), dtype=dtype, rng=0)
        named = [(n, layer) for n, layer in built.named_children() if n not in ("avgpool", "fc")]
        model = Sequential(named + _head_from_keras(head, dtype))
        for name, bn in model.named_modules():  # eps and momentum as Keras has them
            k = trunk.get(keras_name(name)) if isinstance(bn, L.BatchNorm2D) else None
            if k is not None:
                bn.eps, bn.momentum = float(k.epsilon), float(k.momentum)
    _check_against_keras(model, trunk, where)
    return load_state(model, _keras_values(model, trunk, head), "Keras",
                      optional=("num_batches_tracked",))


def to_keras(model, keras_model=None, input_shape=None):
    """minicnn's Keras-style ResNet into Keras: weights and moving statistics, by name.

    keras_model=None: builds keras.applications.ResNet50 / 101 / 152 (stages [3, 4, 6, 3],
    [3, 4, 23, 3], [3, 8, 36, 3], width 64, avgpool + fc head) with ``weights=None``,
    ``classifier_activation=None`` on ``input_shape`` (C, H, W; default the zoo spec's).
    keras_model=a Keras ResNet v1 with the same layers: sets its weights.
    """
    where = "to_keras"
    if keras_model is None:
        keras_model = _keras_application(model, input_shape, where)
    trunk, head = _split_keras(keras_model, where)
    _check_against_keras(model, trunk, where)
    updates = []
    for name, layer in _trunk_layers(model):
        k = trunk[keras_name(name)]
        if isinstance(layer, L.Conv2D):
            new = [layer.weight.data.transpose(2, 3, 1, 0)] + (
                [layer.bias.data] if layer.bias is not None else [])
        else:
            new = [layer.weight.data, layer.bias.data, layer.running_mean, layer.running_var]
        updates.append((name, k, new))
    for name, layer, k, hwc in _head_pairs(model, head):
        w = layer.weight.data
        if hwc is not None:
            from .interop import _hwc_columns
            w = _hwc_columns(w, (hwc[2], hwc[0], hwc[1]))
        updates.append((name, k, [w.T] + ([layer.bias.data] if layer.bias is not None else [])))
    for name, k, new in updates:
        current = [tuple(v.shape) for v in k.get_weights()]
        if current != [v.shape for v in new]:
            raise ShapeError(f"{where}: minicnn's {name} has weights of shapes "
                             f"{[v.shape for v in new]} in Keras' layout, Keras layer {k.name!r} "
                             f"{current}")
    for _, k, new in updates:
        k.set_weights(new)
    return keras_model


_APPLICATIONS = {(3, 4, 6, 3): "ResNet50", (3, 4, 23, 3): "ResNet101", (3, 8, 36, 3): "ResNet152"}


def _keras_application(model, input_shape, where):
    import keras

    from .interop import _sample_shape
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
    shape = _sample_shape(model, input_shape)
    if shape is None:
        raise ValueError(f"{where}: pass input_shape=(C, H, W)")
    c, h, w = shape
    return getattr(keras.applications, app)(weights=None, input_shape=(h, w, c),
                                            classes=fc.out_features, classifier_activation=None)
