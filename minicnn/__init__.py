"""minicnn: a convolutional-network stack from scratch in NumPy and Numba, layout NCHW.

    import minicnn as mc
    model = mc.Sequential([mc.Conv2D(1, 6, 5, padding=2), mc.ReLU(), mc.AvgPool2D(2), ...])

The package is layered, each floor importing only the floors below it (tests/test_architecture.py
checks it): core → kernels → layers → losses, optim, zoo, data → train → interop, trace → apps.
"""
from .core import CheckpointError, DataError, NonFiniteError, Parameter, ShapeError, manual_seed
from .layers import (Add, AvgPool2D, BasicBlock, BatchNorm2D, Bottleneck, Conv2D, Dense, Dropout,
                     Flatten, GlobalAvgPool2D, Identity, Layer, LogSoftmax, MaxPool2D, ReLU,
                     Residual, Sequential, Sigmoid, Softmax, SumPool2D, Tanh, ZeroPadding2D)
from .losses import CategoricalCrossentropy, CrossEntropyLoss, NLLLoss
from . import data, kernels, losses, optim, train, zoo  # noqa: E402  (mc.optim.Adam, mc.zoo.lenet5)

__version__ = "0.1.0"
