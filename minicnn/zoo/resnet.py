"""ResNets: named Sequentials whose parameter names are torchvision's (resnet50, resnet18, ...).

A ResNet takes any image size: its global average pooling turns whatever map the last stage
leaves into one number per channel. ``image_size=S`` only says so in the model's ``spec``
(3×S×S), so that the command line and the reference scripts feed it S×S photos.
"""
import math
from dataclasses import replace

import numpy as np

from ..layers import (BasicBlock, BatchNorm2D, Bottleneck, Conv2D, Dense, GlobalAvgPool2D,
                      MaxPool2D, ReLU, Sequential, ZeroPadding2D)
from .registry import register
from ..core.random import get_rng


# ----------------------------------------------------------------------------------------
STYLES = ("torch", "keras")


def resnet(block, blocks, num_classes=1000, width=64, style="torch", in_channels=3,
           dtype=np.float32, rng=None):
    """A ResNet: stem, ``len(blocks)`` stages of residual blocks, global average, fc (logits).

    (N, in_channels, H, W) -> (N, num_classes). H and W shrink by 4 in the stem and by 2 at
    the start of every stage after the first.

    block: "bottleneck" (1×1 → 3×3 → 1×1·4, ResNet-50) or "basic" (3×3 → 3×3, ResNet-18).
    blocks: blocks per stage, e.g. (3, 4, 6, 3); stage i has ``width·2^i`` channels inside
    its blocks (times 4 out of a Bottleneck).
    style="torch": torchvision's ResNet v1.5: conv 7×7 stride 2 padding 3, max-pool 3×3
    stride 2 padding 1, the stride of a Bottleneck on its 3×3 conv, convs without bias,
    BatchNorm eps 1e-5 and PyTorch's momentum 0.1; convs initialised as torchvision does
    (He normal, fan_out).
    style="keras": keras.applications.ResNet50: explicit ZeroPadding2D layers before a
    'valid' conv and pool, the stride on the FIRST 1×1 conv of a Bottleneck (the original
    paper, "v1"), convs with a bias, BatchNorm eps 1.001e-5 with Keras' momentum 0.99;
    Glorot-uniform kernels and zero biases, as Keras draws them.

    The names are torchvision's in both styles ("conv1.weight", "bn1.running_mean",
    "layer2.0.downsample.0.weight", "fc.bias", ...), so a torchvision state_dict maps one to
    one; ``minicnn.interop`` maps Keras' names ("conv3_block1_0_conv") onto them.
    """
    if style not in STYLES:
        raise ValueError(f"resnet: style must be one of {STYLES}, got {style!r}")
    if block not in ("bottleneck", "basic"):
        raise ValueError(f"resnet: block must be 'bottleneck' or 'basic', got {block!r}")
    rng = get_rng(rng)  # one stream for every layer (an int would restart it in each)
    keras = style == "keras"
    eps = 1.001e-5 if keras else 1e-5
    block_options = dict(conv_bias=keras, bn_eps=eps, bn_convention=style, dtype=dtype, rng=rng)
    if keras:
        stem = [("conv1_pad", ZeroPadding2D(3)),
                ("conv1", Conv2D(in_channels, width, 7, stride=2, bias=True, dtype=dtype, rng=rng))]
    else:
        stem = [("conv1", Conv2D(in_channels, width, 7, stride=2, padding=3, bias=False,
                                 dtype=dtype, rng=rng))]
    stem += [("bn1", BatchNorm2D(width, eps=eps, convention=style, dtype=dtype)), ("relu", ReLU())]
    if keras:
        # Keras pads the max-pool's input with ZEROS, not -inf. That is the same only because
        # the ReLU just before makes every input >= 0, so a zero never beats a real maximum.
        stem += [("pool1_pad", ZeroPadding2D(1)), ("maxpool", MaxPool2D(3, 2))]
    else:
        stem += [("maxpool", MaxPool2D(3, 2, padding=1))]

    stages, channels = [], width
    for i, count in enumerate(blocks):
        planes = width * 2 ** i
        chain = []
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            if block == "bottleneck":
                chain.append(Bottleneck(channels, planes, stride=stride, stride_in_1x1=keras,
                                        **block_options))
                channels = planes * 4
            else:
                chain.append(BasicBlock(channels, planes, stride=stride, **block_options))
                channels = planes
        stages.append((f"layer{i + 1}", Sequential(chain)))

    model = Sequential(stem + stages + [
        ("avgpool", GlobalAvgPool2D()),                         # (N, C, h, w) -> (N, C)
        ("fc", Dense(channels, num_classes, dtype=dtype, rng=rng)),
    ])
    _initialise(model, style, rng)
    return model


def _initialise(model, style, rng):
    """Draw the weights as torchvision (He normal on fan_out for convs, BatchNorm 1 and 0, the
    Linear as PyTorch's default, which Dense already is) or Keras (Glorot uniform, zero biases)."""
    for _, layer in model.named_modules():
        if not isinstance(layer, (Conv2D, Dense)):
            continue
        w = layer.weight.data
        receptive = math.prod(w.shape[2:])  # kh·kw for a conv, 1 for a Dense
        fan_out, fan_in = w.shape[0] * receptive, w.shape[1] * receptive
        if style == "keras":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w[...] = rng.uniform(-limit, limit, w.shape)
            if layer.bias is not None:
                layer.bias.data[...] = 0
        elif isinstance(layer, Conv2D):
            w[...] = rng.normal(0.0, math.sqrt(2.0 / fan_out), w.shape)


_AVP = "Alien vs Predator: transfer learning with ResNet-50 (PyTorch and Keras)"


@register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP)
def resnet50(num_classes=1000, style="torch", dtype=np.float32, rng=None, image_size=None):
    """3×224×224 → ResNet-50 (Bottlenecks [3, 4, 6, 3], width 64) → 2048 → num_classes logits.

    25,557,032 parameters at 1000 classes, as torchvision's. style="keras" for
    keras.applications.ResNet50's variant (see ``resnet``).
    """
    model = resnet("bottleneck", (3, 4, 6, 3), num_classes, 64, style, dtype=dtype, rng=rng)
    if style == "keras":  # the name that rebuilds this layout
        model.spec = resnet50_keras.spec
    return _sized(model, resnet50_keras.spec if style == "keras" else resnet50.spec, image_size)


@register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP + ", Keras side")
def resnet50_keras(num_classes=1000, dtype=np.float32, rng=None, image_size=None):
    """keras.applications.ResNet50 in minicnn: ``resnet50(style="keras")``.

    25,583,592 parameters at 1000 classes: torchvision's plus a bias in each of the 53 convs.
    Keras' summary says 25,636,712 because it counts the 53,120 moving means and variances too.
    """
    model = resnet("bottleneck", (3, 4, 6, 3), num_classes, 64, "keras", dtype=dtype, rng=rng)
    return _sized(model, resnet50_keras.spec, image_size)


@register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP + ", its lighter sibling")
def resnet18(num_classes=1000, dtype=np.float32, rng=None, image_size=None):
    """3×224×224 → ResNet-18 (BasicBlocks [2, 2, 2, 2], width 64) → 512 → num_classes logits."""
    model = resnet("basic", (2, 2, 2, 2), num_classes, 64, "torch", dtype=dtype, rng=rng)
    return _sized(model, resnet18.spec, image_size)


@register((3, 64, 64), "cross_entropy", "rock-paper-scissors", _AVP + ", CPU-sized")
def resnet_small(num_classes=3, width=8, style="torch", dtype=np.float32, rng=None,
                 image_size=None):
    """3×64×64 → ResNet-50's layout with one Bottleneck per stage and width 8 → 256 → logits.

    Stem 8@32×32 → 8@16×16, stages 32@16×16, 64@8×8, 128@4×4, 256@2×2; about 130 thousand
    parameters (at 3 classes), small enough to train and to check gradient by gradient.
    """
    model = resnet("bottleneck", (1, 1, 1, 1), num_classes, width, style, dtype=dtype, rng=rng)
    return _sized(model, resnet_small.spec, image_size)


def _sized(model, spec, image_size):
    """The model, its spec saying 3×S×S photos when ``image_size=S`` differs from the spec's."""
    if image_size is not None and image_size != spec.input_shape[1]:
        model.spec = replace(spec, input_shape=(spec.input_shape[0], image_size, image_size))
    return model


