"""The layers, one family per file; each has forward(x) and backward(dy) and says its shapes."""
from .activations import LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .base import Layer, no_grad
from .container import Sequential
from .conv import Conv2D
from .dense import Dense
from .dropout import Dropout
from .norm import BatchNorm2D
from .padding import ZeroPadding2D
from .pool import AvgPool2D, GlobalAvgPool2D, MaxPool2D, SumPool2D
from .reshape import Flatten
from .residual import Add, BasicBlock, Bottleneck, Identity, Residual
