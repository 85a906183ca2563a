"""minicnn.interop: the same weights give the same numbers in minicnn, PyTorch and Keras.

For every zoo model, in float32 on the same batch: the outputs of minicnn, of the network
``to_torch``/``to_keras`` build, and of the idiomatic classes of reference/ holding the copied
weights agree to 1e-5; the loss agrees; one SGD step in each framework (torch.optim.SGD,
keras.optimizers.SGD, minicnn.optim.SGD) ends at the same weights, read back with
``from_torch``/``from_keras``. Weights made by the frameworks (their own initialisations) go
the other way. Round trips are exact; a network of another shape is refused with an error
naming the layer, and nothing is copied.
"""
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import minicnn as mc
from minicnn import interop, losses
from minicnn.core.errors import ShapeError
from twins import assert_close, keras, requires_keras, requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # reference/ (the zoo written in PyTorch and Keras)

pytestmark = [requires_torch, requires_keras]

#: the issue's bar for float32: max |Δ| of outputs, and of weights after one step
ATOL = 1e-5
LR = 0.1
NAMES = mc.zoo.CHAINS  # the ResNets (copied by name, with BatchNorm statistics): test_resnet.py


def batch(name, n=4, seed=0):
    """(x, labels): n images of the model's input shape in [0, 1] (NCHW float32) and labels."""
    spec = mc.zoo.spec(name)
    rng = np.random.default_rng(seed)
    x = rng.random((n,) + spec.input_shape, dtype=np.float32)
    classes = 3 if name == "rps_cnn" else 10
    return x, rng.integers(0, classes, n)


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def torch_out(net, x):
    import torch
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy()


def keras_out(km, x):
    """The Keras model's output for the NCHW batch x, back in NCHW when it is a feature map."""
    y = np.asarray(km(nhwc(x), training=False))
    return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y


def ours_out(model, x):
    model.eval()
    return model(x)


def reference_torch(name):
    from reference.torch.models import build
    return build(name)


def reference_keras(name):
    from reference.keras.models import build
    return build(name)


def assert_same_params(ours, theirs, what, atol=0.0):
    """Every parameter of two minicnn models equal (exactly, or within atol)."""
    assert len(ours.parameters()) == len(theirs.parameters())
    for (name, a), (_, b) in zip(ours.named_parameters(), theirs.named_parameters()):
        assert a.data.dtype == b.data.dtype, f"{what}: {name} dtype {a.data.dtype} vs {b.data.dtype}"
        if atol == 0:
            assert np.array_equal(a.data, b.data), f"{what}: {name} differs"
        else:
            assert_close(f"{what}: {name}", b.data, a.data, rtol=0, atol=atol)


# ----------------------------------------------------------------------------------------
# same weights, same outputs
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_same_outputs_in_three_frameworks(name):
    model = mc.zoo.get(name, rng=1)
    x, _ = batch(name)
    ours = ours_out(model, x)
    built_torch, built_keras = interop.to_torch(model), interop.to_keras(model)
    idiomatic_torch = interop.to_torch(model, module=reference_torch(name))
    idiomatic_keras = interop.to_keras(model, keras_model=reference_keras(name))
    for what, theirs in (("to_torch", torch_out(built_torch, x)),
                         ("to_keras", keras_out(built_keras, x)),
                         ("reference/torch", torch_out(idiomatic_torch, x)),
                         ("reference/keras", keras_out(idiomatic_keras, x))):
        assert theirs.dtype == np.float32
        assert_close(f"{name} output, minicnn vs {what}", ours, theirs, rtol=0, atol=ATOL)


@pytest.mark.parametrize("name", NAMES)
def test_framework_initialisations_load_into_minicnn(name):
    """Weights drawn by PyTorch and by Keras (their own initialisers) give minicnn their outputs."""
    import torch
    torch.manual_seed(0)
    net = reference_torch(name)
    keras().utils.set_random_seed(0)
    km = reference_keras(name)
    x, _ = batch(name, seed=1)
    from_torch = interop.from_torch(net, model=mc.zoo.get(name, rng=0))
    assert_close(f"{name}: PyTorch's weights in minicnn", ours_out(from_torch, x), torch_out(net, x),
                 rtol=0, atol=ATOL)
    from_keras = interop.from_keras(km, model=mc.zoo.get(name, rng=0))
    assert_close(f"{name}: Keras' weights in minicnn", ours_out(from_keras, x), keras_out(km, x),
                 rtol=0, atol=ATOL)


def test_flatten_order_is_why_ported_weights_disagree():
    """Copy the first Dense after Flatten with a plain transpose and Keras computes something else."""
    model = mc.zoo.lenet5(rng=0)
    x, _ = batch("lenet5")
    km = interop.to_keras(model)
    dense = next(layer for layer in km.layers if isinstance(layer, keras().layers.Dense))
    right = keras_out(km, x)
    dense.set_weights([model.layers[7].weight.data.T, model.layers[7].bias.data])  # no permutation
    wrong = keras_out(km, x)
    ours = ours_out(model, x)
    assert np.max(np.abs(ours - right)) <= ATOL
    assert np.max(np.abs(ours - wrong)) > 100 * ATOL


def test_float64_to_torch_is_exact_to_rounding():
    import torch
    model = mc.Sequential([mc.Conv2D(1, 3, 3, padding=1, dtype=np.float64, rng=0), mc.ReLU(),
                           mc.MaxPool2D(2), mc.Flatten(), mc.Dense(3 * 4 * 4, 5, dtype=np.float64, rng=1),
                           mc.LogSoftmax()])
    x = np.random.default_rng(0).random((3, 1, 8, 8))
    net = interop.to_torch(model, input_shape=(1, 8, 8))
    assert next(net.parameters()).dtype == torch.float64
    assert_close("float64 output", ours_out(model, x), torch_out(net, x), rtol=1e-12, atol=1e-14)
    back = interop.from_torch(net)
    assert back.parameters()[0].data.dtype == np.float64
    assert_same_params(model, back, "float64 round trip")


# ----------------------------------------------------------------------------------------
# the same loss, the same step
# ----------------------------------------------------------------------------------------
def minicnn_step(model, x, y, loss_name):
    """Loss, then one SGD step; returns the loss. convnet (no classifier) uses ½·mean(y²)."""
    model.eval()  # dropout off: its random masks are not part of the comparison
    out = model(x)
    if loss_name is None:
        loss, dy = 0.5 * float(np.mean(out.astype(np.float64) ** 2)), out / out.size
    else:
        criterion = losses.get(loss_name)
        loss, dy = criterion(out, y), criterion.backward()
    model.backward(dy)
    mc.optim.SGD(model.parameters(), lr=LR).step()
    return loss


def torch_step(net, x, y, loss_name):
    import torch
    from reference.torch.train import criterion
    net.eval()
    out = net(torch.from_numpy(x))
    loss = (0.5 * (out ** 2).mean() if loss_name is None
            else criterion(loss_name)(out, torch.from_numpy(y)))
    opt = torch.optim.SGD(net.parameters(), lr=LR)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def keras_step(km, x, y, loss_name):
    import tensorflow as tf
    from reference.keras.train import loss_for
    with tf.GradientTape() as tape:
        out = km(nhwc(x), training=False)
        loss = (0.5 * tf.reduce_mean(out ** 2) if loss_name is None
                else loss_for(loss_name)(y, out))
    grads = tape.gradient(loss, km.trainable_variables)
    keras().optimizers.SGD(learning_rate=LR).apply_gradients(zip(grads, km.trainable_variables))
    return float(loss)


@pytest.mark.parametrize("name", NAMES)
def test_same_loss_and_same_weights_after_one_sgd_step(name):
    spec = mc.zoo.spec(name)
    loss_name = None if name == "convnet" else spec.loss  # convnet ends at feature maps
    model = mc.zoo.get(name, rng=2)
    before = [p.data.copy() for p in model.parameters()]
    net = interop.to_torch(model, module=reference_torch(name))
    km = interop.to_keras(model, keras_model=reference_keras(name))
    x, y = batch(name, n=8, seed=3)

    loss = minicnn_step(model, x, y, loss_name)
    loss_torch = torch_step(net, x, y, loss_name)
    loss_keras = keras_step(km, x, y, loss_name)
    assert_close(f"{name} loss vs PyTorch", loss, loss_torch, rtol=1e-5, atol=1e-6)
    assert_close(f"{name} loss vs Keras", loss, loss_keras, rtol=1e-5, atol=1e-6)

    moved = max(float(np.max(np.abs(p.data - b))) for p, b in zip(model.parameters(), before))
    assert moved > 10 * ATOL, f"{name}: the step hardly moved the weights ({moved:.1e})"
    assert_same_params(model, interop.from_torch(net, model=mc.zoo.get(name)),
                       f"{name} after one step, minicnn vs PyTorch", atol=ATOL)
    assert_same_params(model, interop.from_keras(km, model=mc.zoo.get(name)),
                       f"{name} after one step, minicnn vs Keras", atol=ATOL)


# ----------------------------------------------------------------------------------------
# round trips and every layer type
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_round_trips_are_exact(name):
    model = mc.zoo.get(name, rng=4)
    x, _ = batch(name)
    via_torch = interop.from_torch(interop.to_torch(model))
    assert [repr(layer) for layer in via_torch] == [repr(layer) for layer in model]
    assert_same_params(model, via_torch, f"{name} minicnn -> torch -> minicnn")
    via_keras = interop.from_keras(interop.to_keras(model))
    assert [type(layer) for layer in via_keras] == [type(layer) for layer in model]
    assert_same_params(model, via_keras, f"{name} minicnn -> keras -> minicnn")
    assert np.array_equal(ours_out(via_keras, x), ours_out(model, x))
    # from the idiomatic classes too: what they hold comes back unchanged
    km = interop.to_keras(model, keras_model=reference_keras(name))
    assert_same_params(model, interop.from_keras(km, model=mc.zoo.get(name)), f"{name} via reference/keras")
    assert_same_params(model, interop.from_keras(km), f"{name} read from reference/keras alone")


def every_layer():
    """One model with each layer type, paddings Keras and PyTorch express differently
    (a strided "same" convolution pads one row more at the bottom; explicit uneven padding)."""
    return mc.Sequential([
        mc.Conv2D(2, 4, 3, stride=2, padding="same", rng=0), mc.Tanh(),    # 10×10 -> 5×5, pads (0, 1)
        mc.Conv2D(4, 6, (2, 3), padding=((1, 0), (2, 1)), rng=1), mc.ReLU(),  # -> 5×6
        mc.SumPool2D(2),                                                  # -> 2×3
        mc.Sigmoid(), mc.MaxPool2D(2, stride=1, padding="same"),          # -> 2×3
        mc.AvgPool2D((2, 1), stride=(2, 1)),                              # -> 1×3
        mc.Softmax(axis=1), mc.Dropout(0.3),
        mc.GlobalAvgPool2D(),                                             # -> (N, 6)
        mc.Dense(6, 5, rng=2), mc.LogSoftmax(),
    ])


def test_every_layer_type_in_both_frameworks():
    model = every_layer()
    x = np.random.default_rng(5).random((3, 2, 10, 10), dtype=np.float32)
    ours = ours_out(model, x)
    net = interop.to_torch(model, input_shape=(2, 10, 10))
    km = interop.to_keras(model, input_shape=(2, 10, 10))
    assert_close("every layer, PyTorch", ours, torch_out(net, x), rtol=0, atol=ATOL)
    assert_close("every layer, Keras", ours, keras_out(km, x), rtol=0, atol=ATOL)
    via_torch = interop.from_torch(net)
    assert [type(layer) for layer in via_torch] == [type(layer) for layer in model]
    assert np.array_equal(ours_out(via_torch, x), ours)
    via_keras = interop.from_keras(km)
    assert [type(layer) for layer in via_keras] == [type(layer) for layer in model]
    assert_close("every layer, Keras -> minicnn", ours_out(via_keras, x), ours, rtol=0, atol=1e-6)


def test_what_a_framework_cannot_express_is_refused_by_name():
    # PyTorch: an average over uneven padding that leaves the padding out of the count
    uneven = mc.Sequential([mc.AvgPool2D(2, stride=1, padding="same")])
    with pytest.raises(ValueError, match=r"layer 0 AvgPool2D.*PyTorch has no module"):
        interop.to_torch(uneven, input_shape=(1, 4, 4))
    # Keras: max pooling with padding other than "same" (which would pad nothing here)
    padded = mc.Sequential([mc.MaxPool2D(2, padding=1)])
    with pytest.raises(ValueError, match=r"layer 0 MaxPool2D.*Keras pools"):
        interop.to_keras(padded, input_shape=(1, 4, 4))
    # "same" with a stride: the amounts depend on the image size
    strided = mc.Sequential([mc.Conv2D(1, 1, 3, stride=2, padding="same")])
    with pytest.raises(ValueError, match=r"layer 0 Conv2D.*input_shape"):
        interop.to_torch(strided)


# ----------------------------------------------------------------------------------------
# a network of another shape
# ----------------------------------------------------------------------------------------
def test_mismatched_shapes_name_the_layer_and_copy_nothing():
    import torch
    net = reference_torch("lenet5")
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    five = mc.zoo.lenet5(num_classes=5, rng=0)
    with pytest.raises(ShapeError, match=r"layer 11 Dense\(in_features=84, out_features=5\).*'fc3'"
                                         r".*weight is \(5, 84\) in minicnn, \(10, 84\) there"):
        interop.to_torch(five, module=net)
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items()), "a failed copy changed weights"

    before = [p.data.copy() for p in five.parameters()]
    with pytest.raises(ShapeError, match=r"layer 11 Dense\(in_features=84, out_features=5\).*'fc3'"):
        interop.from_torch(net, model=five)
    km = reference_keras("lenet5")
    with pytest.raises(ShapeError, match=r"layer 11 Dense\(in_features=84, out_features=5\)"
                                         r".*Keras layer 'dense(_\d+)?'"):
        interop.from_keras(km, model=five)
    with pytest.raises(ShapeError, match=r"layer 11 Dense.*Keras layer"):
        interop.to_keras(five, keras_model=km)
    assert all(np.array_equal(p.data, b) for p, b in zip(five.parameters(), before))

    # a convolution of another size
    wide = mc.Sequential([mc.Conv2D(1, 8, 5, padding=2), mc.ReLU(), mc.Flatten(),
                          mc.Dense(8 * 28 * 28, 10)])
    narrow = interop.to_torch(mc.Sequential([mc.Conv2D(1, 6, 5, padding=2), mc.ReLU(),
                                             mc.Flatten(), mc.Dense(6 * 28 * 28, 10)]),
                              input_shape=(1, 28, 28))
    with pytest.raises(ShapeError, match=r"layer 0 Conv2D\(1, 8, .*weight is \(8, 1, 5, 5\) in "
                                         r"minicnn, \(6, 1, 5, 5\) there"):
        interop.from_torch(narrow, model=wide)


def test_different_numbers_of_weighted_layers_list_both():
    with pytest.raises(ValueError, match=r"minicnn model has 5 layers with weights, the PyTorch "
                                         r"model 4(.|\n)*conv1"):
        interop.from_torch(reference_torch("mnist_cnn"), model=mc.zoo.lenet5())
    with pytest.raises(ValueError, match=r"minicnn model has 3 layers with weights, the Keras model 5"):
        interop.to_keras(mc.zoo.rps_cnn(), keras_model=reference_keras("lenet5"))


def test_importing_minicnn_imports_no_framework():
    code = ("import sys, minicnn, minicnn.interop; "
            "loaded = {'torch', 'tensorflow', 'keras'} & set(sys.modules); "
            "assert not loaded, loaded")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT,
                   env=os.environ | {"PYTHONPATH": str(ROOT)})
