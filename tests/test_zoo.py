"""The articles' networks: shapes their readers puzzled over, and parameter counts equal to PyTorch's."""
import numpy as np
import pytest

import minicnn as mc
from twins import requires_torch


def flatten_size(model):
    for layer, shape_in, shape_out in model.shapes((64,) + model.spec.input_shape):
        if isinstance(layer, mc.Flatten):
            return shape_in, shape_out


@pytest.mark.parametrize("name, chw, flat", [("lenet5", (16, 5, 5), 400),
                                             ("rps_cnn", (32, 7, 7), 1568),
                                             ("mnist_cnn", (64, 12, 12), 9216),
                                             ("mnist_cnn_keras", (32, 12, 12), 4608)])
def test_flatten_sizes_of_the_articles(name, chw, flat):
    shape_in, shape_out = flatten_size(mc.zoo.get(name))
    assert shape_in == (64,) + chw and shape_out == (64, flat)
    assert f"{flat} = {'·'.join(map(str, chw))}" in mc.Flatten().explain(shape_in)[0]


@pytest.mark.parametrize("name", mc.zoo.NAMES)
def test_every_zoo_model_runs_forward_and_backward(name):
    model = mc.zoo.get(name, rng=0)
    x = np.random.default_rng(0).random((2,) + model.spec.input_shape, dtype=np.float32)
    out = model(x)
    assert out.shape == model.output_shape(x.shape)
    dx = model.backward(np.ones_like(out))
    assert dx.shape == x.shape
    assert all(np.all(np.isfinite(p.grad)) for p in model.parameters())


@requires_torch
@pytest.mark.parametrize("name", mc.zoo.CHAINS)  # the ResNets, name by name: test_resnet.py
def test_parameter_counts_equal_torch(name):
    """The same architecture written with torch.nn has exactly as many parameters, layer by layer."""
    import torch.nn as tnn
    model = mc.zoo.get(name)
    mods = []
    for layer in model:
        if isinstance(layer, mc.Conv2D):
            mods.append(tnn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                                   layer.stride, layer.padding, layer.dilation))
        elif isinstance(layer, mc.Dense):
            mods.append(tnn.Linear(layer.in_features, layer.out_features))
    ours = [sum(p.size for p in layer.parameters()) for layer in model if layer.parameters()]
    theirs = [sum(p.numel() for p in m.parameters()) for m in mods]
    assert ours == theirs


def test_unknown_name_lists_the_zoo():
    with pytest.raises(ValueError, match="lenet5"):
        mc.zoo.get("resnet9000")


def test_layers_of_a_seeded_model_draw_independent_weights():
    """An int seed seeds ONE generator for the model, not the same stream again in every layer."""
    model = mc.zoo.lenet5(rng=0)
    a = model[7].weight.data.reshape(-1)[:50] * np.sqrt(400)   # both U(-1, 1) once rescaled
    b = model[9].weight.data.reshape(-1)[:50] * np.sqrt(120)
    assert not np.allclose(a, b)
    again = mc.zoo.lenet5(rng=0)
    assert all(np.array_equal(p.data, q.data) for p, q in zip(model.parameters(), again.parameters()))
