"""The same weights in minicnn, PyTorch and Keras: convert a network, or copy its weights across.

    module = to_torch(model)                     # a torch.nn.Sequential (NCHW), same weights
    keras_model = to_keras(model)                # a keras.Sequential on keras.Input((H, W, C))
    model = from_torch(module)                   # and back: a minicnn Sequential (an
                                                 # nn.Sequential, or a class read with torch.fx)
    model = from_keras(keras_model)

    to_torch(model, module=net)                  # copy into a network you already have
    from_keras(keras_model, model=mc.zoo.lenet5())   # ... in either direction

    model = from_torch(torchvision_resnet50)     # ResNets: weights AND running statistics
    model = from_keras(keras.applications.ResNet50(weights=None, classifier_activation=None))

Passing an existing network (``module=``, ``keras_model=``, ``model=``) copies the weights of
the layers that have some (Conv2D, Dense), matched IN ORDER: the i-th one of minicnn with the
i-th of the framework. That is how the idiomatic classes of ``reference/`` (an ``nn.Module``
whose ``forward`` calls ``F.relu``, a Keras model with ``activation="relu"``) take minicnn's
weights. A shape that does not fit raises a ShapeError naming both layers, before anything
is copied.

Networks with BatchNorm or residual blocks (the ResNets of the zoo, torchvision's, Keras')
are copied BY NAME instead, buffers included: minicnn uses torchvision's names, and
``keras_name`` / ``torch_name`` translate them to keras.applications' ("layer2.0.conv1" is
"conv3_block1_1_conv"). Every layer's kernel, stride and padding are checked first.

What changes on the way (the layouts):

    convolution   minicnn, PyTorch (out, in, kh, kw)     Keras kernel (kh, kw, in, out)
    dense         minicnn, PyTorch (out, in)             Keras kernel (in, out)
    flatten       minicnn, PyTorch (C, H, W) order       Keras (H, W, C) order

The last line is the classic reason ported weights give different answers: Keras' feature
maps are NHWC, so its Flatten lists the channels of one pixel together, and the first Dense
after a Flatten sees its 400 (or 1568, 9216) inputs in a different order. Its weight columns
are permuted on the way in and out; every other weight is a plain transpose.

torch and tensorflow are imported inside the functions, never at import time: ``import
minicnn`` needs only NumPy.

``input_shape`` is one sample's shape without the batch, (C, H, W) as the zoo's specs give
it; it defaults to ``model.spec.input_shape``. Keras needs it for its Input; PyTorch only for
"same" padding with a stride above 1, whose amounts depend on the image size.

The package, one module per framework; imports go down only:

    __init__.py        this page: the public functions
    pytorch.py         to_torch / from_torch: copying weights, in order or by name
    pytorch_layers.py  which torch module computes what a minicnn layer does, and back
    torch_fx.py        a class whose forward() calls F.relu, x.view, ... read with torch.fx
    keras.py           to_keras / from_keras
    keras_layers.py    which Keras layer computes what a minicnn layer does, and back
    layouts.py         the model walk, NCHW <-> NHWC, the flatten order (no framework)
    names.py           torchvision <-> keras.applications names, {name: array} (no framework)
"""
import math

from .. import layers as L
from .keras import from_keras, to_keras
from .names import keras_name, torch_name
from .pytorch import from_torch, to_torch

__all__ = ["to_torch", "from_torch", "to_keras", "from_keras", "count_parameters", "keras_name",
           "torch_name"]


def count_parameters(net):
    """Trainable numbers in a minicnn, PyTorch or Keras model (the table's "parameters")."""
    if isinstance(net, L.Layer):
        return int(sum(p.data.size for p in net.parameters()))
    if hasattr(net, "count_params"):
        return int(sum(math.prod(v.shape) for v in net.trainable_weights))
    return int(sum(p.numel() for p in net.parameters() if p.requires_grad))
