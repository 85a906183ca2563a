"""minicnn <-> PyTorch: ``to_torch`` and ``from_torch``, for chains and for ResNets.

Both layouts are NCHW, so a weight crosses as it is: conv (out, in, kh, kw), Linear
(out, in). Two ways to match the layers:

- in order (a chain: LeNet-5, the MNIST CNN, ...): the i-th Conv2D/Dense of minicnn with the
  i-th Conv2d/Linear of the module, whatever the module's class or forward();
- by name (a model with BatchNorm or residual blocks: the zoo's ResNets, torchvision's):
  minicnn uses torchvision's names, so ``state_dict`` maps key by key, running statistics
  included, after every layer's kernel, stride and padding are checked.

The architectures themselves (which module computes what a layer does) are in
``pytorch_layers.py``. torch is imported inside the functions only.
"""
import numpy as np

from .. import layers as L
from ..core.errors import ShapeError
from ..core.shapes import pair
from ..layers import Sequential
from .layouts import assign, check_pairs, dtype_of, fixed_pads, mismatch, sample_shape, walk
from .names import load_state, named_layers, names_differ, needs_names, state
from .pytorch_layers import layers_from_torch, resnet_from_torch, torch_modules, torch_tree
from .torch_fx import sequential_from_fx


def to_torch(model, module=None, input_shape=None):
    """The minicnn ``model`` as PyTorch, holding the same weights (copies, in the same dtype).

    module=None: returns a new ``torch.nn.Sequential``, one PyTorch module per minicnn layer
    (two where PyTorch needs a padding module first), in the model's train/eval mode.
    module=an nn.Module (e.g. ``reference.torch.models.build("lenet5")``): copies the weights
    into it, matching Conv2D/Dense with its Conv2d/Linear modules in order, and returns it.
    Raises ShapeError naming the layer when a shape differs; nothing is copied then.
    A model with BatchNorm or residual blocks goes by name (``_to_torch_by_name``).
    """
    import torch
    if needs_names(model):
        return _to_torch_by_name(model, module)
    if module is not None:
        pairs = _torch_pairs(model, module)
        with torch.no_grad():
            for step, (_, m) in pairs:
                m.weight.copy_(torch.from_numpy(step.layer.weight.data))
                if m.bias is not None:
                    m.bias.copy_(torch.from_numpy(step.layer.bias.data))
        return module
    steps = walk(model, sample_shape(model, input_shape))
    net = torch.nn.Sequential(*[m for step in steps for m in torch_modules(step)])
    net.to(torch.from_numpy(np.zeros(0, dtype_of(model))).dtype)  # float32 or float64, as ours
    to_torch(model, net)
    return net.train(model.training)


def from_torch(module, model=None):
    """PyTorch weights into minicnn.

    model=None: returns a new minicnn Sequential with the same layers and weights, in the
    module's mode. An ``nn.Sequential``'s layers in order ARE the network; any other module
    (a class whose forward() calls F.relu, F.max_pool2d, x.view(x.size(0), -1), ...) is read
    through ``torch.fx`` (``torch_fx.sequential_from_fx``), which names the call and the line
    of forward() that minicnn has no layer for.
    model=a minicnn model: copies the Conv2d/Linear weights of any ``nn.Module`` (e.g. a class
    whose forward() calls F.relu, which a Sequential cannot see) into it, in order, and returns
    it. Raises ShapeError naming both layers when a shape differs; nothing is copied then.
    A torchvision-style ResNet (or a model with BatchNorm / residual blocks) goes by name,
    running statistics included (``_from_torch_by_name``).
    """
    import torch
    if not isinstance(module, torch.nn.Module):
        kind = type(module)
        if any(k.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")
               for k in kind.__mro__):
            raise TypeError(f"from_torch: got a Keras model ({kind.__name__}); use "
                            f"minicnn.interop.from_keras for Keras models")
        raise TypeError(f"from_torch: expected a torch.nn.Module, got "
                        f"{kind.__module__}.{kind.__name__}")
    if (model is None and is_torch_resnet(module)
            or model is not None and needs_names(model)):
        return _from_torch_by_name(module, model)
    if model is None:
        if not isinstance(module, torch.nn.Sequential):
            # a class whose forward() calls F.relu, x.view, ...: read through torch.fx
            module = sequential_from_fx(module)
        params = list(module.parameters())
        dtype = params[0].detach().numpy().dtype if params else np.float32
        model = Sequential(layers_from_torch(module, dtype)).train(module.training)
    pairs = _torch_pairs(model, module)
    for step, (name, m) in pairs:
        assign(step.layer.weight, m.weight.detach().cpu().numpy(), f"{step} <- {name!r}")
        if m.bias is not None:
            assign(step.layer.bias, m.bias.detach().cpu().numpy(), f"{step} <- {name!r}")
    return model


# ----------------------------------------------------------------------------------------
# in order: the i-th weighted layer with the i-th
# ----------------------------------------------------------------------------------------
def _torch_weighted(module):
    """[(name, submodule)] of the modules that hold parameters themselves, in registration order."""
    return [(name or type(module).__name__, m) for name, m in module.named_modules()
            if any(True for _ in m.parameters(recurse=False))]


def _torch_pairs(model, module):
    """[(Step, (name, nn.Conv2d or nn.Linear))]: minicnn's weighted layers with the module's,
    in order, every kind, bias and shape checked."""
    from torch import nn
    ours = [s for s in walk(model, None) if s.layer.parameters()]
    theirs = _torch_weighted(module)
    for name, m in theirs:
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"PyTorch module {name!r} {m!r} has weights, but minicnn has no such "
                            f"layer (only Conv2d and Linear weights are copied)")
    pairs = check_pairs(ours, theirs, "PyTorch", lambda t: f"{t[0]}: {t[1]!r}")
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
                raise mismatch(step, attr, ours_p.data.shape, "PyTorch", name, m, theirs_p.shape)
    return pairs


# ----------------------------------------------------------------------------------------
# by name: ResNets, BatchNorm statistics included
# ----------------------------------------------------------------------------------------
def is_torch_resnet(module):
    """True for torchvision's ResNet (or reference/torch/resnet.py's): conv1, bn1, maxpool,
    layer1..., avgpool and fc."""
    return all(hasattr(module, name) for name in ("conv1", "bn1", "maxpool", "layer1", "avgpool",
                                                   "fc"))


def _check_against_torch(model, module, where):
    """Raise TypeError at the first layer whose kernel, stride or padding differ from the
    torch module of the same name, or that torch does not have. BatchNorm's eps and momentum
    are checked too; the weights' shapes are checked by ``load_state``."""
    from torch import nn
    by_name = dict(module.named_modules())
    for name, layer in named_layers(model, where).items():
        kind = {L.Conv2D: nn.Conv2d, L.MaxPool2D: nn.MaxPool2d, L.BatchNorm2D: nn.BatchNorm2d,
                L.Dense: nn.Linear}.get(type(layer))
        if kind is None:
            continue
        m = by_name.get(name)
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
        pads = fixed_pads(layer)
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


def _from_torch_by_name(module, model=None):
    """A torchvision-style PyTorch ResNet into minicnn: weights and running statistics.

    model=None: builds ``minicnn.zoo.resnet`` with the module's blocks, stages, width, input
    channels and dtype; its ``fc`` may be a Linear or an nn.Sequential of layers minicnn has
    (the transfer-learning head ``nn.Sequential(nn.Linear(2048, 128), nn.ReLU(),
    nn.Linear(128, 2))`` becomes a Sequential named fc, with names fc.0 and fc.2 as in torch).
    model=a minicnn model with the same names: copies into it. Returns the model, in the
    module's train/eval mode when built here.
    """
    where = "from_torch"
    if model is None:
        model = resnet_from_torch(module, where)
    _check_against_torch(model, module, where)
    values = {name: t.detach().cpu().numpy() for name, t in module.state_dict().items()}
    return load_state(model, values, "PyTorch")


def _to_torch_by_name(model, module=None):
    """minicnn's ResNet (or any model with BatchNorm / blocks) as PyTorch, by name.

    module=None: a new torch module tree with the model's names (a block becomes a module
    with torchvision's forward), in the model's dtype and train/eval mode.
    module=e.g. ``reference.torch.resnet.resnet50()`` or torchvision's: loads the weights and
    running statistics into it (``load_state_dict``, strict) after checking every layer.
    """
    import torch
    where = "to_torch"
    if module is None:
        module = torch_tree("", model, where)
        module.to(torch.from_numpy(np.zeros(0, dtype_of(model))).dtype)
        module.train(model.training)
    _check_against_torch(model, module, where)
    theirs = module.state_dict()
    err = names_differ(theirs, state(model), "minicnn")
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
