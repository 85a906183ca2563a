"""The layers, one file per family. Every layer: forward(x), backward(dy), output_shape(shape)."""
from .activations import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm2D
from .padding import ZeroPadding2D
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D, SumPool2D
from .reshape import Flatten
from .residual import Add, BasicBlock, Bottleneck, Identity, Residual

__all__ = ["Layer", "Conv2D", "MaxPool2D", "AvgPool2D", "SumPool2D", "GlobalAvgPool2D", "Flatten",
           "Dense", "ReLU", "Tanh", "Sigmoid", "Softmax", "LogSoftmax", "Dropout",
           "BatchNorm2D", "ZeroPadding2D", "Identity", "Add", "Residual", "Bottleneck", "BasicBlock"]
