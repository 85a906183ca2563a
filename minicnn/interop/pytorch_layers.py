"""Which PyTorch modules compute what a minicnn layer computes, and back: the architectures.

    torch_modules(step)              minicnn layer -> [nn.Module] (a padding module first where
                                     PyTorch cannot pad inside: uneven "same", -inf for max)
    torch_tree(name, layer, where)   a named minicnn model (ResNet) -> a module tree with the
                                     same names; a block gets torchvision's forward
    layers_from_torch(module, dtype) the leaves of an nn.Sequential -> [minicnn layer]
    resnet_from_torch(module, where) a torchvision-style ResNet -> minicnn.zoo.resnet(...)

The modules are built without weights; ``pytorch.py`` copies them. torch is imported inside
the functions only.
"""
import math
from collections import OrderedDict

from .. import layers as L
from .. import zoo
from ..layers import Sequential
from .layouts import Step, pads


def torch_modules(step):
    """The PyTorch modules (NCHW, weights not yet copied) that compute what ``step.layer`` does."""
    from torch import nn
    layer = step.layer
    if isinstance(layer, (L.Conv2D, L.MaxPool2D, L.AvgPool2D, L.SumPool2D)):
        (t, b), (left, r) = pads(step)
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


# ----------------------------------------------------------------------------------------
# named models: ResNets and their blocks
# ----------------------------------------------------------------------------------------
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


def torch_tree(name, layer, where):
    """The PyTorch module computing minicnn's ``layer``, its children under the same names."""
    from torch import nn
    if isinstance(layer, Sequential):
        return nn.Sequential(OrderedDict(
            (n, torch_tree(f"{name}.{n}" if name else n, child, where))
            for n, child in layer.named_children()))
    if isinstance(layer, (L.Bottleneck, L.BasicBlock)):
        count = 3 if isinstance(layer, L.Bottleneck) else 2
        pairs = [(torch_tree(f"{name}.conv{i}", layer.get_layer(f"conv{i}"), where),
                  torch_tree(f"{name}.bn{i}", layer.get_layer(f"bn{i}"), where))
                 for i in range(1, count + 1)]
        down = layer.downsample
        down = None if down is None else torch_tree(f"{name}.downsample", down, where)
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
    modules = torch_modules(Step(name, layer, None))
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)


def resnet_from_torch(module, where):
    """``minicnn.zoo.resnet`` with the torchvision-style ResNet ``module``'s blocks, stages,
    width, input channels, dtype, head, BatchNorm eps/momentum and train/eval mode (weights
    not yet copied). An ``fc`` that is an nn.Sequential becomes a Sequential named fc whose
    layers keep PyTorch's names (fc.0, fc.2, ...)."""
    from torch import nn
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
        names, head = [n for n, _ in fc.named_children()], layers_from_torch(fc, dtype)
        if len(names) != len(head):
            raise TypeError(f"{where}: fc {fc!r}: only a head with one minicnn layer per "
                            f"module keeps PyTorch's names")
        model["fc"] = Sequential(list(zip(names, head)))
    for bn_name, bn in model.named_modules():  # eps and momentum as the module has them
        m = module.get_submodule(bn_name) if isinstance(bn, L.BatchNorm2D) else None
        if isinstance(m, nn.BatchNorm2d) and m.momentum is not None:
            bn.eps, bn.momentum = float(m.eps), float(m.momentum)
    return model.train(module.training)


# ----------------------------------------------------------------------------------------
# PyTorch modules -> minicnn layers
# ----------------------------------------------------------------------------------------
def _torch_pad(m):
    """((top, bottom), (left, right)) and the value of an nn.ZeroPad2d / nn.ConstantPad2d."""
    left, r, t, b = m.padding
    return ((t, b), (left, r)), float(getattr(m, "value", 0.0))


def layers_from_torch(module, dtype):
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
            amounts, value = _torch_pad(m)
            if isinstance(nxt, nn.Conv2d) and value == 0 and nxt.padding in ((0, 0), "valid"):
                built.append(_conv_from_torch(nxt, amounts, dtype))
            elif isinstance(nxt, nn.MaxPool2d) and value == -math.inf and nxt.padding in (0, (0, 0)):
                built.append(L.MaxPool2D(nxt.kernel_size, nxt.stride, amounts))
            elif isinstance(nxt, nn.AvgPool2d) and value == 0 and nxt.padding in (0, (0, 0)):
                built.append(_avg_from_torch(nxt, amounts, where))
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
