"""minicnn: a convolutional-network stack from scratch in NumPy and Numba, layout NCHW.

    import minicnn as mc
    model = mc.Sequential([mc.Conv2D(1, 6, 5, padding=2), mc.ReLU(), mc.AvgPool2D(2), ...])
"""
from .errors import ShapeError
from .layers import (Add, AvgPool2D, BasicBlock, BatchNorm2D, Bottleneck, Conv2D, Dense, Dropout,
                     Flatten, GlobalAvgPool2D, Identity, Layer, LogSoftmax, MaxPool2D, ReLU,
                     Residual, Sigmoid, Softmax, SumPool2D, Tanh, ZeroPadding2D)
from .losses import CategoricalCrossentropy, CrossEntropyLoss, NLLLoss
from .model import Sequential
from .parameter import Parameter
from .random import manual_seed
from . import data, kernels, optim, zoo  # noqa: E402  (submodules users reach as mc.optim.Adam)

__version__ = "0.1.0"
