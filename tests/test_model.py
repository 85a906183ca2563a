"""Sequential as a whole: a small CNN against PyTorch and Keras, finite differences, errors."""
import numpy as np
import pytest

import minicnn as mc
from twins import (assert_close, check_numeric_gradients, check_finite_differences, keras, nchw_to_nhwc, requires_keras,
                   requires_torch, torch_twin)


def small_cnn(dtype=np.float64, seed=0):
    """conv -> relu -> pool -> flatten -> dense: the smallest network with every kind of layer."""
    rng = np.random.default_rng(seed)
    return mc.Sequential([
        mc.Conv2D(2, 3, 3, padding=1, dtype=dtype, rng=rng), mc.ReLU(), mc.MaxPool2D(2),
        mc.Flatten(), mc.Dense(3 * 3 * 3, 4, dtype=dtype, rng=rng),
    ])


def test_output_shape_matches_forward():
    model = small_cnn()
    x = np.random.default_rng(1).standard_normal((5, 2, 6, 7))
    assert model.output_shape(x.shape) == model(x).shape == (5, 4)


@requires_torch
def test_small_cnn_matches_torch_nn_sequential():
    import torch
    model = small_cnn()
    x = np.random.default_rng(2).standard_normal((4, 2, 6, 6))
    target = np.array([0, 3, 1, 2])
    loss = mc.CrossEntropyLoss()
    value = loss(model(x), target)
    dx = model.backward(loss.backward())

    mods = [torch_twin(layer, shape) for layer, shape, _ in model.shapes(x.shape)]
    xt = torch.tensor(x, requires_grad=True)
    out = xt
    for m in mods:
        out = m.forward(out)
    ref = torch.nn.functional.cross_entropy(out, torch.from_numpy(target))
    ref.backward()
    assert_close("loss", np.float64(value), np.float64(ref.item()), rtol=1e-12)
    assert_close("input gradient", dx, xt.grad.numpy(), rtol=1e-10)
    ref_grads = [p.grad.numpy() for m in mods for p in m.params]
    for (name, p), g in zip(model.named_parameters(), ref_grads):
        assert_close(f"gradient of {name}", p.grad, g, rtol=1e-10)


@requires_keras
def test_small_cnn_matches_keras():
    import tensorflow as tf
    from twins import keras_twin
    model = small_cnn()
    x = np.random.default_rng(3).standard_normal((4, 2, 6, 6))
    target = np.array([1, 0, 3, 2])
    loss = mc.CrossEntropyLoss()
    value = loss(model(x), target)
    dx = model.backward(loss.backward())
    twins = [keras_twin(layer, shape) for layer, shape, _ in model.shapes(x.shape)]
    # Keras flattens NHWC in (H, W, C) order, so its first Dense needs its input rows permuted:
    # the classic reason why weights ported between the frameworks give different answers.
    dense = model[4].weight.data  # (4, C·H·W) in (C, H, W) order
    twins[4].params[0].assign(dense.reshape(4, 3, 3, 3).transpose(0, 2, 3, 1).reshape(4, 27).T)
    xt = tf.Variable(nchw_to_nhwc(x))
    fn = keras().losses.SparseCategoricalCrossentropy(from_logits=True, dtype="float64")
    with tf.GradientTape() as tape:
        out = xt
        for t in twins:
            out = t.forward(out)
        ref = fn(target, out)
    variables = [p.value for t in twins for p in t.params]
    got = tape.gradient(ref, [xt] + variables)
    assert_close("loss", np.float64(value), np.float64(float(ref)), rtol=1e-10)
    assert_close("input gradient", dx, np.transpose(np.asarray(got[0]), (0, 3, 1, 2)), rtol=1e-9)
    converters = [c for t in twins for c in t.grad_to_ours]
    for (name, p), g, conv in zip(model.named_parameters(), got[1:], converters):
        if name.endswith("4.weight"):
            g = np.asarray(g).reshape(3, 3, 3, 4).transpose(2, 0, 1, 3).reshape(27, 4)
        assert_close(f"gradient of {name}", p.grad, conv(np.asarray(g)), rtol=1e-9)


def test_whole_cnn_finite_differences():
    """conv -> relu -> pool -> flatten -> dense -> cross-entropy, on every parameter and the input."""
    model = small_cnn()
    loss = mc.CrossEntropyLoss()
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 2, 6, 6))
    target = np.array([0, 2, 3])

    def objective():
        return loss(model(x), target)

    objective()
    dx = model.backward(loss.backward())
    analytic = [("input", x, dx)] + [(n, p.data, p.grad.copy()) for n, p in model.named_parameters()]
    check_numeric_gradients(objective, analytic, rng, max_entries=25, config="small CNN + cross-entropy")


def test_sequential_finite_differences_helper():
    check_finite_differences(small_cnn(), np.random.default_rng(5).standard_normal((2, 2, 6, 6)))


def test_shape_error_names_layer_shapes_and_arithmetic():
    """The article's classic: 28x28 inputs into a net whose Dense expects 9216 = 64·12·12."""
    model = mc.Sequential([mc.Conv2D(1, 16, 5, padding=2), mc.ReLU(), mc.MaxPool2D(2),
                           mc.Conv2D(16, 32, 5, padding=2), mc.ReLU(), mc.MaxPool2D(2),
                           mc.Flatten(), mc.Dense(9216, 128)])
    x = np.zeros((64, 1, 28, 28), np.float32)
    for run in (lambda: model(x), lambda: model.output_shape(x.shape)):
        with pytest.raises(ValueError) as info:
            run()
        message = str(info.value)
        assert "Dense(in_features=9216" in message
        assert "(64, 1568)" in message
        assert "1568 = 32·7·7" in message
        assert "at layer 7" in message


def test_zero_grad_train_eval_and_parameters():
    model = small_cnn()
    model(np.ones((1, 2, 6, 6)))
    model.backward(np.ones((1, 4)))
    assert any(np.any(p.grad != 0) for p in model.parameters())
    model.zero_grad()
    assert all(np.all(p.grad == 0) for p in model.parameters())
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "4.weight", "4.bias"]
    model.eval()
    assert not any(layer.training for layer in model)
    model.train()
    assert all(layer.training for layer in model)


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="item 1"):
        mc.Sequential([mc.ReLU(), "relu"])
