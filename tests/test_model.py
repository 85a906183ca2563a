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


# ------------------------------------------------------------------------------------------
# names: torch.nn.Sequential(OrderedDict(...)) style, and a new head for transfer learning
# ------------------------------------------------------------------------------------------
def named_cnn():
    features = mc.Sequential([mc.Conv2D(2, 3, 3, padding=1, rng=0), mc.BatchNorm2D(3), mc.ReLU()])
    return mc.Sequential({"features": features, "pool": mc.GlobalAvgPool2D(),
                          "fc": mc.Dense(3, 4, rng=1)})


def test_named_sequential_names_parameters_and_buffers_like_torch():
    model = named_cnn()
    assert model.names == ["features", "pool", "fc"]
    assert [n for n, _ in model.named_parameters()] == [
        "features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
        "fc.weight", "fc.bias"]
    assert [p for _, p in model.named_parameters()] == model.parameters()
    assert [n for n, _ in model.named_buffers()] == [
        "features.1.running_mean", "features.1.running_var", "features.1.num_batches_tracked"]
    assert [n for n, _ in model.named_modules()] == ["", "features", "features.0", "features.1",
                                                    "features.2", "pool", "fc"]
    assert mc.Sequential([("a", mc.ReLU()), ("b", mc.Flatten())]).names == ["a", "b"]


@requires_torch
def test_named_sequential_matches_torch_names():
    import collections
    import torch.nn as tnn
    theirs = tnn.Sequential(collections.OrderedDict(
        features=tnn.Sequential(tnn.Conv2d(2, 3, 3, padding=1), tnn.BatchNorm2d(3), tnn.ReLU()),
        pool=tnn.AdaptiveAvgPool2d(1), fc=tnn.Linear(3, 4)))
    ours = named_cnn()
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]


def test_access_and_replace_by_name_index_and_attribute():
    model = named_cnn()
    assert model["fc"] is model.fc is model[2] is model[-1]
    assert model.features[1] is model["features"][1]
    new_head = mc.Dense(3, 2)
    model["fc"] = new_head                    # a new head for a 2-class task
    assert model.fc is new_head and model.output_shape((5, 2, 8, 8)) == (5, 2)
    model.pool = mc.GlobalAvgPool2D()
    assert model.names == ["features", "pool", "fc"] and "fc.weight" in dict(model.named_parameters())
    head = model[1:]
    assert isinstance(head, mc.Sequential) and head.names == ["pool", "fc"]
    assert model.get_layer("features.1") is model.features[1]
    with pytest.raises(KeyError, match="no layer named 'head'"):
        model["head"]
    with pytest.raises(AttributeError, match="head"):
        model.head
    with pytest.raises(IndexError):
        model[3]
    with pytest.raises(TypeError, match="not a minicnn layer"):
        model["fc"] = "dense"


@pytest.mark.parametrize("items, match", [
    ([("a", mc.ReLU()), ("a", mc.ReLU())], "used twice"),
    ([("a.b", mc.ReLU())], "without dots"),
    ([("forward", mc.ReLU())], "hide"),
    ([("layers", mc.ReLU())], "hide")])
def test_bad_names(items, match):
    with pytest.raises(ValueError, match=match):
        mc.Sequential(items)


def test_editing_layers_of_a_named_sequential_directly_is_caught():
    model = named_cnn()
    model.layers.append(mc.ReLU())
    with pytest.raises(RuntimeError, match=r"model\[name\] = layer"):
        model.named_parameters()
    plain = small_cnn()
    plain.layers.insert(0, mc.ReLU())  # index names follow the positions
    assert [n for n, _ in plain.named_parameters()][0] == "1.weight"


def test_train_eval_and_freezing_reach_every_nested_layer():
    model = mc.Sequential([named_cnn(), mc.Residual(mc.Sequential([mc.ReLU()]))])
    model.eval()
    assert all(not layer.training for _, layer in model.named_modules())
    model.train()
    assert all(layer.training for _, layer in model.named_modules())
    model[0].features.trainable = False
    assert [n for n, p in model.named_parameters() if p.trainable] == ["0.fc.weight", "0.fc.bias"]
    assert not model[0].features.trainable and model.trainable


def test_load_buffer_by_dotted_name_writes_in_place():
    model = named_cnn()
    buf = model.features[1].running_var
    model.load_buffer("features.1.running_var", [2.0, 3.0, 4.0])
    assert buf is model.features[1].running_var
    np.testing.assert_array_equal(buf, [2.0, 3.0, 4.0])
    with pytest.raises(KeyError, match="no buffer 'running_max'"):
        model.load_buffer("features.1.running_max", [1.0])


def test_nested_repr_is_indented_like_torch():
    assert repr(named_cnn()).splitlines()[:3] == [
        "Sequential(", "  (features): Sequential(",
        "    (0): Conv2D(2, 3, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"]


def test_no_grad_predicts_the_same_and_keeps_no_caches():
    """Under no_grad every layer forgets what backward needs once its forward is done (the
    memory of a prediction), and the outputs are those of a plain forward pass of the network
    with its BatchNorms folded into the convolutions (``layers.fusion``; test_fusion.py bounds
    how far that moves them from the layer-by-layer numbers)."""
    import minicnn as mc
    from minicnn.layers import folding, fusion, no_grad
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 3, 64, 64)).astype(np.float32)
    model = mc.zoo.resnet_small(rng=0)
    model.eval()
    expected = folding.folded(model)(x)
    model(x)
    assert any(getattr(m, "_cache", None) is not None for _, m in model.named_modules())
    with no_grad():
        got = model(x)
    np.testing.assert_array_equal(got, expected)
    for name, m in model.named_modules():
        assert getattr(m, "_cache", None) is None and getattr(m, "_x", None) is None, name
    # and outside the block, layers keep their caches again
    model(x)
    assert any(getattr(m, "_cache", None) is not None for _, m in model.named_modules())


class _Spy(mc.layers.base.Layer):
    """Records the batch sizes it sees; per_image as told."""

    def __init__(self, per_image):
        super().__init__()
        self.per_image, self.seen = per_image, []

    def forward(self, x):
        self.seen.append(len(x))
        return x


def test_prediction_goes_through_the_layers_in_slices_with_the_same_numbers(monkeypatch):
    """Under no_grad in eval mode a large batch goes through a slice of images at a time (the
    convolutions compute image by image, so the numbers are the same bits); a layer whose
    weights outweigh its slice of input (Dense) takes the whole batch; training, or a layer
    that may mix the images, keeps the batch whole."""
    monkeypatch.setattr(mc.Sequential, "SLICE_BYTES", 1)      # slices of SLICE_MIN images
    monkeypatch.setattr(mc.Sequential, "SLICE_MIN", 3)
    spy, tail = _Spy(per_image=True), _Spy(per_image=True)
    model = mc.Sequential([mc.Conv2D(1, 4, 3, rng=0), mc.ReLU(), spy, mc.MaxPool2D(2),
                           mc.Flatten(), mc.Dense(144, 500, rng=1), tail])
    x = np.random.default_rng(0).standard_normal((10, 1, 14, 14)).astype(np.float32)
    expected = model(x)                                       # training mode: whole
    assert spy.seen == [10] and tail.seen == [10]
    model.eval()
    with mc.layers.no_grad():
        sliced = model(x)
    assert spy.seen[1:] == [3, 3, 3, 1] and tail.seen[1:] == [10]
    np.testing.assert_array_equal(sliced, expected)
    mixing = mc.Sequential([mc.Conv2D(1, 4, 3, rng=0), _Spy(per_image=False)])
    mixing.eval()
    with mc.layers.no_grad():
        mixing(x)
    assert mixing[1].seen == [10]
