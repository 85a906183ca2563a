"""The articles' networks that are one chain of layers, and the transfer-learning base and head.

Every function returns a fresh ``Sequential``; its ``spec`` says what it eats and how it is trained.
"""
from dataclasses import replace

import numpy as np

from ..core.random import get_rng
from ..layers import (AvgPool2D, BatchNorm2D, Conv2D, Dense, Dropout, Flatten, LogSoftmax,
                      MaxPool2D, ReLU, Sequential, Softmax)
from .registry import register


@register((1, 28, 28), "cross_entropy", "fashion-mnist", "LeNet-5 on Fashion-MNIST (PyTorch vs TensorFlow)")
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


@register((1, 28, 28), "nll", "mnist", "the complete guide, PyTorch side")
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


@register((1, 28, 28), "categorical", "mnist", "the complete guide, Keras side")
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


@register((3, 28, 28), "cross_entropy", "rock-paper-scissors", "rock-paper-scissors from class folders")
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


@register((3, 32, 32), "cross_entropy", "", "Keras vs PyTorch, the same block in both")
def convnet(rng=None):
    """3×32×32 → conv 64@3×3 → conv 64@3×3 → max-pool: the feature block both articles write."""
    return Sequential([
        Conv2D(3, 64, 3, rng=rng), ReLU(),                             # 64×30×30
        Conv2D(64, 64, 3, rng=rng), ReLU(),                            # 64×28×28
        MaxPool2D(2),                                                  # 64×14×14
    ])


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
