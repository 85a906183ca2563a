"""torchvision's ResNet (what ``minicnn.zoo.resnet50``, ``resnet18`` and ``resnet_small``
build by default) written in Keras, NHWC: the twin of reference/torch/resnet.py.

It is torchvision's "ResNet v1.5", not keras.applications.ResNet50 (``resnet50_keras``): the
stride of a Bottleneck sits on its 3×3 conv, convolutions have no bias, BatchNorm has eps 1e-5
and momentum 0.9 (Keras' name for PyTorch's 0.1). PyTorch pads both sides of a strided 3×3 or
7×7 window by the same amount, where Keras' ``"same"`` with stride 2 puts the extra row at the
bottom only: every strided layer that pads is a ``"valid"`` one behind an explicit
ZeroPadding2D, as keras.applications.ResNet50 writes its stem, so that both frameworks see the
same windows at any input size. Unstrided 3×3 convs are ``"same"``, which is one row each side.

Layer names are keras.applications' ("conv1_conv", "conv3_block1_2_conv", "conv3_block1_0_bn"
for the shortcut, "predictions"; the padding before a conv is its name with "_pad"), so
``minicnn.interop.to_keras`` / ``from_keras`` pair them with minicnn's torchvision names.

    from reference.keras.resnet import resnet_small
    model = resnet_small()      # a keras.Model; input (N, 64, 64, 3), output (N, 3) logits
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402

EPS = 1e-5        # PyTorch's BatchNorm2d default
MOMENTUM = 0.9    # Keras keeps 0.9 of the old running statistic where PyTorch moves it by 0.1


def conv_bn(x, filters, kernel, stride, name, relu=True):
    """Conv (no bias, PyTorch's padding kernel // 2 on each side) → BatchNorm [→ ReLU].

    x: (N, H, W, C) -> (N, ceil(H / stride), ceil(W / stride), filters) for an odd kernel.
    """
    pad = kernel // 2
    if stride > 1 and pad:
        x = layers.ZeroPadding2D(pad, name=f"{name}_pad")(x)
        padding = "valid"
    else:  # stride 1: "same" pads kernel // 2 on each side; a 1×1 pads nothing
        padding = "same" if pad else "valid"
    x = layers.Conv2D(filters, kernel, strides=stride, padding=padding, use_bias=False,
                      name=f"{name}_conv")(x)
    x = layers.BatchNormalization(axis=3, epsilon=EPS, momentum=MOMENTUM, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x) if relu else x


def bottleneck(x, planes, stride, name):
    """1×1 (to ``planes``) → 3×3 (with the stride) → 1×1 (×4), plus the shortcut, then ReLU.

    The shortcut is a 1×1 conv (with the stride) + BatchNorm when the shape changes."""
    out_channels = planes * 4
    shortcut = x
    if stride != 1 or x.shape[-1] != out_channels:
        shortcut = conv_bn(x, out_channels, 1, stride, f"{name}_0", relu=False)
    x = conv_bn(x, planes, 1, 1, f"{name}_1")
    x = conv_bn(x, planes, 3, stride, f"{name}_2")
    x = conv_bn(x, out_channels, 1, 1, f"{name}_3", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def basic_block(x, planes, stride, name):
    """3×3 (with the stride) → 3×3, plus the shortcut (1×1 conv + BatchNorm when the shape
    changes), then ReLU: resnet18's block."""
    shortcut = x
    if stride != 1 or x.shape[-1] != planes:
        shortcut = conv_bn(x, planes, 1, stride, f"{name}_0", relu=False)
    x = conv_bn(x, planes, 3, stride, f"{name}_1")
    x = conv_bn(x, planes, 3, 1, f"{name}_2", relu=False)
    x = layers.Add(name=f"{name}_add")([shortcut, x])
    return layers.ReLU(name=f"{name}_out")(x)


def resnet(block, blocks, num_classes=1000, width=64, image_size=224, in_channels=3,
           name="resnet"):
    """Stem, ``len(blocks)`` stages of ``block`` ("bottleneck" or "basic"), average, logits.

    (N, image_size, image_size, in_channels) -> (N, num_classes). Stage i has ``width·2^i``
    channels inside its blocks; every stage after the first halves H and W in its first block.
    """
    make = {"bottleneck": bottleneck, "basic": basic_block}[block]
    inputs = keras.Input(shape=(image_size, image_size, in_channels))
    x = conv_bn(inputs, width, 7, 2, "conv1")                       # (N, H/2, W/2, width)
    # PyTorch pads the max-pool with -inf; zeros give the same maxima here because the ReLU
    # just before makes every input >= 0 (keras.applications.ResNet50 does the same)
    x = layers.ZeroPadding2D(1, name="pool1_pad")(x)
    x = layers.MaxPooling2D(3, strides=2, name="pool1_pool")(x)     # (N, H/4, W/4, width)
    for i, count in enumerate(blocks):
        for j in range(count):
            stride = 2 if i > 0 and j == 0 else 1
            x = make(x, width * 2 ** i, stride, f"conv{i + 2}_block{j + 1}")
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name=name)


def resnet18(num_classes=1000, image_size=224):
    """minicnn.zoo.resnet18: BasicBlocks [2, 2, 2, 2], width 64; 11.7 M parameters at 1000."""
    return resnet("basic", (2, 2, 2, 2), num_classes, 64, image_size, name="resnet18")


def resnet50(num_classes=1000, image_size=224):
    """minicnn.zoo.resnet50 (torchvision's v1.5): Bottlenecks [3, 4, 6, 3], width 64."""
    return resnet("bottleneck", (3, 4, 6, 3), num_classes, 64, image_size, name="resnet50")


def resnet_small(num_classes=3, width=8, image_size=64):
    """minicnn.zoo.resnet_small: one Bottleneck per stage, width 8: 64×64×3 → 256 → logits."""
    return resnet("bottleneck", (1, 1, 1, 1), num_classes, width, image_size,
                  name="resnet_small")
