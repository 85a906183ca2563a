"""from_torch on class-based models (read with torch.fx), from_keras on functional models.

The classes are the articles' own style: ``reference/torch/models.py`` (F.relu,
F.avg_pool2d, F.max_pool2d, torch.flatten, x.view(x.size(0), -1), x.reshape, F.log_softmax,
F.softmax, nn.Sequential blocks) and a few more spellings written here. ``from_torch(module)``
gets no ``model=``: it must find the architecture itself, and its logits must equal torch's.

Tolerance: both sides in float64 (Keras too) (u = 2^-53 ≈ 1.1e-16). Each logit is a chain of at most
12 layers of dot products of at most 9216 terms; any summation order is within
L·K·u ≈ 12 · 9216 · 1.1e-16 ≈ 1.2e-11 of the largest magnitudes involved, so
max|ours − torch| ≤ 1e-9 · max|torch| holds with margin (the issue asks ≤ 1e-5).
"""
import numpy as np
import pytest

import minicnn as mc
from minicnn import interop
from twins import assert_close, keras, requires_keras, requires_torch

RTOL = 1e-9  # derived in the module docstring


def torch_logits_check(net, input_shape, what):
    """from_torch(net) without model=; its outputs against net's, float64, eval mode."""
    import torch
    net = net.to(torch.float64).eval()
    model = interop.from_torch(net)
    assert not model.training, "the module's eval mode is kept"
    x = np.random.default_rng(0).random((3, *input_shape))
    theirs = net(torch.tensor(x)).detach().numpy()
    assert_close(f"{what}: from_torch outputs", model(x), theirs, rtol=RTOL, atol=0)
    return model


@requires_torch
@pytest.mark.parametrize("name", mc.zoo.CHAINS)
def test_from_torch_reads_the_articles_classes(name):
    from reference.torch.models import build
    import torch
    torch.manual_seed(0)
    model = torch_logits_check(build(name), mc.zoo.spec(name).input_shape, name)
    # the architecture found is the zoo's, layer for layer
    assert [type(layer) for layer in model] == [type(layer) for layer in mc.zoo.get(name)]


def other_spellings():
    """Forwards written with the other spellings the articles use."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class ShapeAndKwargs(nn.Module):  # x.shape[0], keyword pools, methods, torch.* functions
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 8, 3)
            self.fc = nn.Linear(8 * 6 * 6, 10)

        def forward(self, x):
            x = F.max_pool2d(torch.relu(self.conv1(x)), kernel_size=2, stride=2)
            x = F.avg_pool2d(self.conv2(x).relu(), 2)
            x = F.dropout(x, p=0.3, training=self.training)
            x = x.reshape(x.shape[0], -1)
            return torch.log_softmax(self.fc(x), dim=1)

    class ViewMinusOne(nn.Module):  # the LeNet tutorials' x.view(-1, 16 * 5 * 5), tanh
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 16, 5, stride=2)
            self.fc = nn.Linear(16 * 12 * 12, 3)

        def forward(self, x):
            x = torch.tanh(self.conv(x))
            x = x.view(-1, 16 * 12 * 12)
            return F.softmax(torch.sigmoid(self.fc(x)), dim=1)

    return [ShapeAndKwargs(), ViewMinusOne()]


@requires_torch
def test_from_torch_reads_other_spellings():
    import torch
    torch.manual_seed(0)
    for net in other_spellings():
        model = torch_logits_check(net, (1, 28, 28), type(net).__name__)   # asserts the outputs
        assert isinstance(model, mc.Sequential) and len(model) > 0


def unsupported_forwards():
    """[(module, the op the message must name, the line of forward it must quote)]."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Gelu(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 26 * 26, 10)

        def forward(self, x):
            x = F.gelu(self.conv(x))
            return self.fc(torch.flatten(x, 1))

    class ChannelGate(Gelu):  # squeeze-and-excitation style: x times a sigmoid of itself
        def forward(self, x):
            x = self.conv(x)
            x = x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))
            return self.fc(torch.flatten(x, 1))

    class Residual(Gelu):
        def forward(self, x):
            y = F.relu(self.conv(x))
            y = y + F.relu(y)
            return self.fc(torch.flatten(y, 1))

    return [(Gelu(), "'gelu'", "x = F.gelu(self.conv(x))"),
            (ChannelGate(), "'mean'", "x = x * torch.sigmoid(x.mean(dim=(2, 3), keepdim=True))"),
            (Residual(), "'add'", "y = y + F.relu(y)")]


@requires_torch
def test_an_op_minicnn_lacks_is_named_with_its_line_of_forward():
    import inspect
    for net, op, code in unsupported_forwards():
        lines, start = inspect.getsourcelines(type(net).forward)
        line = start + next(i for i, text in enumerate(lines) if code in text)
        with pytest.raises(TypeError) as info:
            interop.from_torch(net)
        message = str(info.value)
        assert op in message and f"line {line} of forward()" in message and code in message, message


@requires_keras
@pytest.mark.parametrize("name", ["lenet5", "mnist_cnn_keras", "rps_cnn"])
def test_from_keras_reads_the_functional_api(name):
    """The reference Sequential, rebuilt in float64 with keras.Input -> layer(x) -> keras.Model."""
    from reference.keras.models import build
    k = keras()
    k.utils.set_random_seed(0)
    sequential = build(name)
    inputs = k.Input(sequential.input_shape[1:], dtype="float64")
    x = inputs
    for layer in sequential.layers:
        x = layer.__class__.from_config(layer.get_config() | {"dtype": "float64"})(x)
    functional = k.Model(inputs, x)
    functional.set_weights([w.astype(np.float64) for w in sequential.get_weights()])
    model = interop.from_keras(functional).eval()  # Keras models have no mode; dropout off
    x = np.random.default_rng(0).random((2, *sequential.input_shape[1:]))
    theirs = np.asarray(functional(x, training=False))
    assert theirs.dtype == np.float64 and model[0].weight.data.dtype == np.float64
    assert_close(f"{name}: from_keras of the functional model", model(x.transpose(0, 3, 1, 2)),
                 theirs, rtol=RTOL, atol=0)
    assert [type(l) for l in model] == [type(l) for l in interop.from_keras(sequential)]


@requires_keras
def test_a_functional_model_that_is_not_a_chain_is_refused_naming_the_layer():
    k = keras()
    inputs = k.Input((28, 28, 1))
    a = k.layers.Conv2D(4, 3, name="conv")(inputs)
    gate = k.layers.Activation("sigmoid", name="gate")(a)
    x = k.layers.Multiply(name="gated")([a, gate])
    x = k.layers.Dense(3)(k.layers.Flatten()(x))
    with pytest.raises(TypeError, match=r"layer 'gated' \(Multiply\) takes \['conv', 'gate'\]"):
        interop.from_keras(k.Model(inputs, x))
