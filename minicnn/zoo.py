"""The articles' networks, by name: ``minicnn.zoo.lenet5()`` or ``minicnn.zoo.get("lenet5")``.

Every function returns a fresh ``Sequential``; its ``spec`` says what it eats and how it is trained:
the input shape without the batch (C, H, W), the loss, and the dataset of its article.
"""
import math
from dataclasses import dataclass, replace

import numpy as np

from .layers import (AvgPool2D, BasicBlock, BatchNorm2D, Bottleneck, Conv2D, Dense, Dropout,
                     Flatten, GlobalAvgPool2D, LogSoftmax, MaxPool2D, ReLU, Softmax, ZeroPadding2D)
from .model import Sequential
from .random import get_rng


@dataclass(frozen=True)
class Spec:
    """What a zoo model expects: input (C, H, W), the loss it is trained with, its dataset."""
    name: str
    input_shape: tuple
    loss: str          # "cross_entropy" (logits), "nll" (log-probabilities), "categorical" (probabilities)
    dataset: str
    article: str


_REGISTRY = {}


def _register(input_shape, loss, dataset, article):
    def wrap(fn):
        spec = Spec(fn.__name__, input_shape, loss, dataset, article)

        def build(**kwargs):
            # one generator for the whole model: an int seed given to every layer would restart
            # the same random stream in each layer, and their initial weights would be correlated
            kwargs["rng"] = get_rng(kwargs.get("rng"))
            model = fn(**kwargs)
            # a model built at another size (rps_cnn(image_size=64)) sets its own spec
            model.spec = vars(model).get("spec") or spec
            return model
        build.__name__, build.__doc__, build.spec = fn.__name__, fn.__doc__, spec
        _REGISTRY[fn.__name__] = build
        return build
    return wrap


@_register((1, 28, 28), "cross_entropy", "fashion-mnist", "LeNet-5 on Fashion-MNIST (PyTorch vs TensorFlow)")
def lenet5(num_classes=10, rng=None):
    """1×28×28 → conv 6@5×5 pad 2 → avg-pool → conv 16@5×5 → avg-pool → 400 → 120 → 84 → 10 logits."""
    return Sequential([
        Conv2D(1, 6, 5, padding=2, rng=rng), ReLU(), AvgPool2D(2),     # 6×28×28 → 6×14×14
        Conv2D(6, 16, 5, rng=rng), ReLU(), AvgPool2D(2),               # 16×10×10 → 16×5×5
        Flatten(),                                                     # 16·5·5 = 400
        Dense(400, 120, rng=rng), ReLU(),
        Dense(120, 84, rng=rng), ReLU(),
        Dense(84, num_classes, rng=rng),
    ])


@_register((1, 28, 28), "nll", "mnist", "the complete guide, PyTorch side")
def mnist_cnn(num_classes=10, rng=None):
    """1×28×28 → conv 32@3×3 → conv 64@3×3 → max-pool → 9216 → 128 → 10 log-probabilities (NLL)."""
    return Sequential([
        Conv2D(1, 32, 3, rng=rng), ReLU(),                             # 32×26×26
        Conv2D(32, 64, 3, rng=rng), ReLU(),                            # 64×24×24
        MaxPool2D(2),                                                  # 64×12×12
        Flatten(),                                                     # 64·12·12 = 9216
        Dense(9216, 128, rng=rng), ReLU(),
        Dense(128, num_classes, rng=rng),
        LogSoftmax(),
    ])


@_register((1, 28, 28), "categorical", "mnist", "the complete guide, Keras side")
def mnist_cnn_keras(num_classes=10, rng=None):
    """1×28×28 → conv 32@5×5 → max-pool → dropout 0.2 → 4608 → 128 → 10 probabilities (softmax)."""
    return Sequential([
        Conv2D(1, 32, 5, rng=rng), ReLU(),                             # 32×24×24
        MaxPool2D(2),                                                  # 32×12×12
        Dropout(0.2, seed=rng),
        Flatten(),                                                     # 32·12·12 = 4608
        Dense(4608, 128, rng=rng), ReLU(),
        Dense(128, num_classes, rng=rng),
        Softmax(),
    ])


@_register((3, 28, 28), "cross_entropy", "rock-paper-scissors", "rock-paper-scissors from class folders")
def rps_cnn(num_classes=3, image_size=28, rng=None):
    """3×28×28 → conv 16@5×5 pad 2 → max-pool → conv 32@5×5 pad 2 → max-pool → 1568 → 3 logits.

    ``image_size=S`` takes 3×S×S photos instead: the convolutions keep S (pad 2 for 5×5), each
    pool halves it (rounding down), so the Dense layer takes 32·(S//2//2)² features (64 → 8192).
    """
    side = image_size // 2 // 2
    if side < 1:
        raise ValueError(f"rps_cnn: image_size {image_size} is too small: two 2×2 max-pools "
                         f"leave {image_size} // 2 // 2 = {side} pixels")
    model = Sequential([
        Conv2D(3, 16, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),    # 16×14×14
        Conv2D(16, 32, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),   # 32×7×7
        Flatten(),                                                     # 32·7·7 = 1568
        Dense(32 * side * side, num_classes, rng=rng),
    ])
    if image_size != 28:
        model.spec = replace(rps_cnn.spec, input_shape=(3, image_size, image_size))
    return model


@_register((3, 32, 32), "cross_entropy", "", "Keras vs PyTorch, the same block in both")
def convnet(rng=None):
    """3×32×32 → conv 64@3×3 → conv 64@3×3 → max-pool: the feature block both articles write."""
    return Sequential([
        Conv2D(3, 64, 3, rng=rng), ReLU(),                             # 64×30×30
        Conv2D(64, 64, 3, rng=rng), ReLU(),                            # 64×28×28
        MaxPool2D(2),                                                  # 64×14×14
    ])


# ----------------------------------------------------------------------------------------
# ResNets: named Sequentials whose parameter names are torchvision's
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


@_register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP)
def resnet50(num_classes=1000, style="torch", dtype=np.float32, rng=None):
    """3×224×224 → ResNet-50 (Bottlenecks [3, 4, 6, 3], width 64) → 2048 → num_classes logits.

    25,557,032 parameters at 1000 classes, as torchvision's. style="keras" for
    keras.applications.ResNet50's variant (see ``resnet``).
    """
    model = resnet("bottleneck", (3, 4, 6, 3), num_classes, 64, style, dtype=dtype, rng=rng)
    if style == "keras":  # the name that rebuilds this layout
        model.spec = resnet50_keras.spec
    return model


@_register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP + ", Keras side")
def resnet50_keras(num_classes=1000, dtype=np.float32, rng=None):
    """keras.applications.ResNet50 in minicnn: ``resnet50(style="keras")``.

    25,583,592 parameters at 1000 classes: torchvision's plus a bias in each of the 53 convs.
    Keras' summary says 25,636,712 because it counts the 53,120 moving means and variances too.
    """
    return resnet("bottleneck", (3, 4, 6, 3), num_classes, 64, "keras", dtype=dtype, rng=rng)


@_register((3, 224, 224), "cross_entropy", "alien-vs-predator", _AVP + ", its lighter sibling")
def resnet18(num_classes=1000, dtype=np.float32, rng=None):
    """3×224×224 → ResNet-18 (BasicBlocks [2, 2, 2, 2], width 64) → 512 → num_classes logits."""
    return resnet("basic", (2, 2, 2, 2), num_classes, 64, "torch", dtype=dtype, rng=rng)


@_register((3, 64, 64), "cross_entropy", "rock-paper-scissors", _AVP + ", CPU-sized")
def resnet_small(num_classes=3, width=8, style="torch", dtype=np.float32, rng=None):
    """3×64×64 → ResNet-50's layout with one Bottleneck per stage and width 8 → 256 → logits.

    Stem 8@32×32 → 8@16×16, stages 32@16×16, 64@8×8, 128@4×4, 256@2×2; about 130 thousand
    parameters (at 3 classes), small enough to train and to check gradient by gradient.
    """
    return resnet("bottleneck", (1, 1, 1, 1), num_classes, width, style, dtype=dtype, rng=rng)


NAMES = tuple(_REGISTRY)
#: the networks made of residual blocks (copied between frameworks by name, buffers included)
RESNETS = ("resnet50", "resnet50_keras", "resnet18", "resnet_small")
#: the networks that are one chain of layers, each with a twin in reference/torch and
#: reference/keras, which the layer-by-layer tools and tests take one after the other
CHAINS = tuple(name for name in NAMES if name not in RESNETS)


def get(name, **kwargs):
    """A fresh model by name; ValueError listing the names when it is unknown."""
    try:
        return _REGISTRY[name](**kwargs)
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(NAMES)}") from None


def spec(name):
    """The Spec of a model name, without building it."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(NAMES)}")
    return _REGISTRY[name].spec


# ----------------------------------------------------------------------------------------
# transfer learning (minicnn.transfer, lesson 14): a convolutional base and a head, by name
# ----------------------------------------------------------------------------------------
def transfer_base(in_channels=1, batch_norm=True, rng=None, dtype=np.float32):
    """The convolutional base: C×S×S → (conv 3×3 pad 1 → BatchNorm → ReLU → max-pool) × 2 → flat.

    (N, C, S, S) -> (N, 32·(S//4)²): 16 then 32 channels; each max-pool halves S (rounding
    down), so Fashion-MNIST's 28×28 gives 32·7·7 = 1568 features. Without ``batch_norm``
    the convolutions get a bias instead (a BatchNorm's β makes a conv's bias redundant).
    ``dtype``: what every layer computes in (float64 gives the same digits on every CPU).
    """
    rng = get_rng(rng)
    layers = []
    for i, (c_in, c_out) in enumerate(((in_channels, 16), (16, 32)), start=1):
        conv = Conv2D(c_in, c_out, 3, padding=1, bias=not batch_norm, dtype=dtype, rng=rng)
        layers.append((f"conv{i}", conv))
        if batch_norm:
            layers.append((f"bn{i}", BatchNorm2D(c_out, dtype=dtype)))
        layers += [(f"relu{i}", ReLU()), (f"pool{i}", MaxPool2D(2))]
    return Sequential(layers + [("flatten", Flatten())])


def transfer_head(in_features, num_classes, hidden=128, rng=None, dtype=np.float32):
    """The Alien-vs-Predator article's head: Dense ``hidden`` → ReLU → Dense ``num_classes`` (logits)."""
    rng = get_rng(rng)
    return Sequential([("fc1", Dense(in_features, hidden, dtype=dtype, rng=rng)), ("relu", ReLU()),
                       ("fc2", Dense(hidden, num_classes, dtype=dtype, rng=rng))])


def transfer_cnn(num_classes=5, in_channels=1, image_size=28, batch_norm=True, hidden=128, rng=None,
                 dtype=np.float32):
    """Sequential(features=transfer_base(...), head=transfer_head(...)): (N, C, S, S) -> (N, classes).

    The two parts have names so that transfer learning reads as it does in Keras or PyTorch:
    ``model.features.trainable = False`` freezes the base, ``model["head"] = transfer_head(...)``
    puts a new head on it. It ends in logits (cross-entropy). Not in ``NAMES``: its input
    (C, S, S) is whatever the transfer run feeds it, so it has no fixed ``spec``.
    """
    rng = get_rng(rng)
    side = image_size // 2 // 2
    if side < 1:
        raise ValueError(f"transfer_cnn: image_size {image_size} is too small: two 2×2 max-pools "
                         f"leave {image_size} // 2 // 2 = {side} pixels")
    return Sequential([("features", transfer_base(in_channels, batch_norm, rng, dtype)),
                       ("head", transfer_head(32 * side * side, num_classes, hidden, rng, dtype))])
