"""The network a prediction runs: a copy of a model with its BatchNorms folded into the
convolutions before them (``fusion`` computes this on the fly under no_grad)."""
import copy
import types

from . import fusion
from .container import Sequential
from .conv import Conv2D
from .residual import Identity, _ResidualBlock


def folded(model):
    """A copy of ``model`` with every BatchNorm2D that follows a Conv2D folded into it: the
    Conv2D gets the weights and bias of ``fusion.fold`` and the BatchNorm2D becomes an
    Identity: the network a prediction really runs, to look at or test. Under no_grad in
    evaluation mode the two compute the same bits; so does the twin's plain forward pass, on a
    batch that ``Sequential`` does not cut into slices (fewer than ``SLICE_MIN`` images: a
    matrix product's last bits may depend on its number of rows)."""
    # a layer names the kernel module that ran it (a module is shared, not copied)
    shared = {id(v): v for _, layer in model.named_modules() for v in vars(layer).values()
              if isinstance(v, types.ModuleType)}
    twin = copy.deepcopy(model, shared)
    twin.eval()
    for _, layer in twin.named_modules():
        if isinstance(layer, Sequential):
            paths = [[(name, layer, name) for name in layer.names]]
        elif isinstance(layer, _ResidualBlock):
            paths = [[(name, layer, name) for name, _ in path]
                     for path in (layer._branch(), layer._shortcut())]
        else:
            continue
        for path in paths:
            for (_, parent, conv_key), (_, _, norm_key) in zip(path, path[1:]):
                conv, norm = _child(parent, conv_key), _child(parent, norm_key)
                if type(conv) is Conv2D and fusion.folds(conv, norm):   # the twin is in eval mode
                    weight, bias = fusion.fold(conv, norm)
                    new = Conv2D(conv.in_channels, conv.out_channels, conv.kernel_size,
                                 conv.stride, conv.padding, conv.dilation, bias=True,
                                 dtype=weight.dtype)
                    new.weight.data, new.bias.data = weight, bias
                    new.eval()
                    _replace(parent, conv_key, new)
                    _replace(parent, norm_key, Identity())
    return twin


def _child(parent, key):
    return parent[key] if hasattr(parent, "layers") else getattr(parent, key)


def _replace(parent, key, layer):
    if hasattr(parent, "layers"):
        parent[key] = layer
    else:
        setattr(parent, key, layer)
