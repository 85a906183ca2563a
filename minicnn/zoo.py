"""The articles' networks, by name: ``minicnn.zoo.lenet5()`` or ``minicnn.zoo.get("lenet5")``.

Every function returns a fresh ``Sequential``; its ``spec`` says what it eats and how it is trained:
the input shape without the batch (C, H, W), the loss, and the dataset of its article.
"""
from dataclasses import dataclass

from .layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, LogSoftmax, MaxPool2D, ReLU, Softmax
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
            model.spec = spec
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
def rps_cnn(num_classes=3, rng=None):
    """3×28×28 → conv 16@5×5 pad 2 → max-pool → conv 32@5×5 pad 2 → max-pool → 1568 → 3 logits."""
    return Sequential([
        Conv2D(3, 16, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),    # 16×14×14
        Conv2D(16, 32, 5, padding=2, rng=rng), ReLU(), MaxPool2D(2),   # 32×7×7
        Flatten(),                                                     # 32·7·7 = 1568
        Dense(1568, num_classes, rng=rng),
    ])


@_register((3, 32, 32), "cross_entropy", "", "Keras vs PyTorch, the same block in both")
def convnet(rng=None):
    """3×32×32 → conv 64@3×3 → conv 64@3×3 → max-pool: the feature block both articles write."""
    return Sequential([
        Conv2D(3, 64, 3, rng=rng), ReLU(),                             # 64×30×30
        Conv2D(64, 64, 3, rng=rng), ReLU(),                            # 64×28×28
        MaxPool2D(2),                                                  # 64×14×14
    ])


NAMES = tuple(_REGISTRY)


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
