"""The zoo's networks written the way Keras code usually writes them (NHWC, channels last).

Each function builds the architecture of ``minicnn.zoo.<name>`` as a ``keras.Sequential`` on
a ``keras.Input`` of shape (H, W, C): same layers, same parameter counts. The ResNets are
functional ``keras.Model``s: ``resnet50_keras`` is keras.applications.ResNet50, and
``resnet50``, ``resnet18`` and ``resnet_small`` are torchvision's layout (``resnet.py``).
Activations are given to Conv2D and Dense (``activation="relu"``), as the articles do, rather
than written as layers of their own; PyTorch's ``padding=2`` around a 5×5 kernel is Keras'
``"same"``.

    from reference.keras.models import build
    model = build("lenet5")          # a keras.Sequential; input (N, 28, 28, 1)
"""
import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
from keras import layers  # noqa: E402


def lenet5(num_classes=10):
    """28×28×1 → conv 6@5×5 same → avg-pool → conv 16@5×5 → avg-pool → 400 → 120 → 84 → 10."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(6, 5, padding="same", activation="relu"),      # (N, 28, 28, 6)
        layers.AveragePooling2D(2),                                  # (N, 14, 14, 6)
        layers.Conv2D(16, 5, activation="relu"),                     # (N, 10, 10, 16)
        layers.AveragePooling2D(2),                                  # (N, 5, 5, 16)
        layers.Flatten(),                                            # 5·5·16 = 400
        layers.Dense(120, activation="relu"),
        layers.Dense(84, activation="relu"),
        layers.Dense(num_classes),
    ], name="lenet5")


def mnist_cnn(num_classes=10):
    """28×28×1 → conv 32@3×3 → conv 64@3×3 → max-pool → 9216 → 128 → 10 log-probabilities."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, 3, activation="relu"),                     # (N, 26, 26, 32)
        layers.Conv2D(64, 3, activation="relu"),                     # (N, 24, 24, 64)
        layers.MaxPooling2D(2),                                      # (N, 12, 12, 64)
        layers.Flatten(),                                            # 12·12·64 = 9216
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes),
        layers.Activation("log_softmax"),
    ], name="mnist_cnn")


def mnist_cnn_keras(num_classes=10):
    """The Keras article's MNIST net: conv 32@5×5 → max-pool → dropout → 4608 → 128 → softmax."""
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(32, (5, 5), activation="relu"),                # (N, 24, 24, 32)
        layers.MaxPooling2D(pool_size=(2, 2)),                       # (N, 12, 12, 32)
        layers.Dropout(0.2),
        layers.Flatten(),                                            # 12·12·32 = 4608
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ], name="mnist_cnn_keras")


def rps_cnn(num_classes=3, image_size=28):
    """Rock-paper-scissors: 28×28×3 → (conv 5×5 same → max-pool) × 2 → 1568 → 3 logits
    (``image_size=S``: S×S×3 → 32·(S//4)² features)."""
    return keras.Sequential([
        keras.Input(shape=(image_size, image_size, 3)),
        layers.Conv2D(16, 5, padding="same", activation="relu"),     # (N, 28, 28, 16)
        layers.MaxPooling2D(2),                                      # (N, 14, 14, 16)
        layers.Conv2D(32, 5, padding="same", activation="relu"),     # (N, 14, 14, 32)
        layers.MaxPooling2D(2),                                      # (N, 7, 7, 32)
        layers.Flatten(),                                            # 7·7·32 = 1568
        layers.Dense(num_classes),
    ], name="rps_cnn")


def convnet():
    """The Keras-vs-PyTorch article's block: 32×32×3 → conv 64@3×3 → conv 64@3×3 → max-pool."""
    return keras.Sequential([
        keras.Input(shape=(32, 32, 3)),
        layers.Conv2D(64, (3, 3), activation="relu"),                # (N, 30, 30, 64)
        layers.Conv2D(64, (3, 3), activation="relu"),                # (N, 28, 28, 64)
        layers.MaxPooling2D(pool_size=(2, 2)),                       # (N, 14, 14, 64)
    ], name="convnet")


def resnet50_keras(num_classes=1000, image_size=224):
    """keras.applications.ResNet50 untrained, ending in logits: what ``zoo.resnet50_keras`` mirrors
    (stride 2 on each stage's first 1×1 conv, biased convs, BatchNorm eps 1.001e-5)."""
    return keras.applications.ResNet50(weights=None, input_shape=(image_size, image_size, 3),
                                       classes=num_classes, classifier_activation=None)


from .resnet import resnet18, resnet50, resnet_small  # noqa: E402  (torchvision's layout)

MODELS = {"lenet5": lenet5, "mnist_cnn": mnist_cnn, "mnist_cnn_keras": mnist_cnn_keras,
          "rps_cnn": rps_cnn, "convnet": convnet, "resnet50_keras": resnet50_keras,
          "resnet50": resnet50, "resnet18": resnet18, "resnet_small": resnet_small}


def build(name, **kwargs):
    """A fresh Keras model for a ``minicnn.zoo`` name; ValueError listing the names otherwise."""
    try:
        fn = MODELS[name]
    except KeyError:
        raise ValueError(f"no Keras version of {name!r}; there are: {', '.join(MODELS)}") from None
    return fn(**kwargs)
