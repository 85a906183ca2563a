"""The articles' networks, by name: ``minicnn.zoo.lenet5()`` or ``minicnn.zoo.get("lenet5")``.

* ``registry``: ``get``, ``spec`` and the Spec of each model (input shape, loss, dataset);
* ``chains``: lenet5, mnist_cnn, mnist_cnn_keras, rps_cnn, convnet, and the transfer-learning
  base and head;
* ``resnet``: resnet50 (torch or keras style), resnet50_keras, resnet18, resnet_small.
"""
from .chains import (convnet, lenet5, mnist_cnn, mnist_cnn_keras, rps_cnn, transfer_base,
                     transfer_cnn, transfer_head)
from .registry import Spec, get, names, spec
from .resnet import STYLES, resnet, resnet18, resnet50, resnet50_keras, resnet_small

NAMES = names()
#: the networks made of residual blocks (copied between frameworks by name, buffers included)
RESNETS = ("resnet50", "resnet50_keras", "resnet18", "resnet_small")
#: the networks that are one chain of layers, each with a twin in reference/torch and
#: reference/keras, which the layer-by-layer tools and tests take one after the other
CHAINS = tuple(name for name in NAMES if name not in RESNETS)
