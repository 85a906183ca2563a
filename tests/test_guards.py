"""No silent wrongness in the library: unscaled integer images, NaN in the data, a diverging
loss and softmax applied twice are each refused or warned about, with the fix in the message."""
import warnings

import numpy as np
import pytest

import minicnn as mc
from minicnn.interop import from_keras, from_torch
from minicnn.train import loop as training
from twins import assert_close, keras, requires_keras, requires_torch


def tiny_model(last=None):
    layers = [mc.Conv2D(1, 2, 3, rng=0), mc.ReLU(), mc.Flatten(), mc.Dense(2 * 4 * 4, 3, rng=1)]
    return mc.Sequential(layers + ([last] if last else []))


def data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, 1, 6, 6), dtype=np.float32), rng.integers(0, 3, n)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.bool_])
def test_a_model_refuses_integer_images_and_says_how_to_scale(dtype):
    x = (data()[0] * 255).astype(dtype)
    model = tiny_model()
    with pytest.raises(TypeError, match="Sequential.forward.*" + np.dtype(dtype).name) as info:
        model(x)
    if dtype == np.uint8:
        assert "mc.data.to_float" in str(info.value)
    model.compile(optimizer="adam", loss="cross_entropy")
    for call in (lambda: model.fit(x, data()[1], epochs=1, verbose=0), lambda: model.predict(x),
                 lambda: model.evaluate(x, data()[1])):
        with pytest.raises(TypeError, match="float"):
            call()


def test_fit_refuses_uint8_before_training():
    x, y = data()
    model = tiny_model().compile(optimizer="adam", loss="cross_entropy")
    before = [p.data.copy() for p in model.parameters()]
    with pytest.raises(TypeError, match=r"fit: got uint8 .* mc\.data\.to_float"):
        model.fit((x * 255).astype(np.uint8), y, epochs=1, verbose=0)
    assert all(np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_single_layers_still_take_integers():
    """The refusal is the model's (what a user trains); a lone layer casts, as it always did."""
    assert mc.ReLU()(np.array([[-1, 2]])).dtype.kind == "f"


def test_nan_in_the_data_names_the_image():
    x, y = data()
    x[17, 0, 2, 3] = np.nan
    x[20, 0, 0, 0] = np.inf
    model = tiny_model().compile(optimizer="adam", loss="cross_entropy")
    with pytest.raises(mc.NonFiniteError, match=r"NaN in image 17 \(x\[17\]\) and 1 other"):
        model.fit(x, y, epochs=1, verbose=0)


def test_a_non_finite_batch_is_blamed_on_the_batch_not_layer_0():
    """The explicit loop (train_step) diagnoses the batch itself first."""
    x, y = data(8)
    x[5, 0, 1, 1] = np.inf
    model = tiny_model()
    with pytest.raises(mc.NonFiniteError) as info:
        training.train_step(model, mc.losses.get("cross_entropy"), mc.optim.Adam(model.parameters()),
                            x, y)
    message = str(info.value)
    assert "the input batch: image 5 of the batch holds an infinite value" in message
    assert "layer 0" not in message


def test_a_diverging_loss_warns_once_with_the_learning_rate():
    x, y = data(64)
    model = mc.Sequential([mc.Flatten(), mc.Dense(36, 3, rng=0)])
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e6)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    diverging = [w for w in caught if "training diverges" in str(w.message)]
    assert len(diverging) == 1 and "1000000.0" in str(diverging[0].message)
    assert issubclass(diverging[0].category, RuntimeWarning)


def test_a_sane_learning_rate_does_not_warn():
    x, y = data(64)
    model = tiny_model().compile(optimizer="adam", loss="cross_entropy", lr=1e-3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        history = model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert [str(w.message) for w in caught] == []
    assert len(history.history["loss"]) == 2


def test_softmax_then_a_logits_loss_warns_once():
    x, y = data()
    model = tiny_model(mc.Softmax()).compile(optimizer="adam", loss="cross_entropy")
    with pytest.warns(UserWarning, match="softmax is applied twice") as caught:
        model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    assert len([w for w in caught if "twice" in str(w.message)]) == 1
    # the loss on probabilities is the right one for a Softmax ending: no warning
    model = tiny_model(mc.Softmax()).compile(optimizer="adam", loss="categorical")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x, mc.data.one_hot(y, 3), epochs=1, batch_size=16, verbose=0)


# ----------------------------------------------------------------------------------------
# interop and the tracer: messages that point the right way
# ----------------------------------------------------------------------------------------
@requires_keras
def test_from_keras_reads_batch_normalization_with_its_statistics():
    k = keras()
    model = k.Sequential([k.Input((8, 8, 3)), k.layers.Conv2D(4, 3),
                          k.layers.BatchNormalization(epsilon=1e-3, momentum=0.9),
                          k.layers.ReLU(), k.layers.Flatten(), k.layers.Dense(3)])
    rng = np.random.default_rng(0)
    bn = model.layers[1]
    gamma, beta, mean, var = (rng.uniform(0.5, 2, 4), rng.normal(size=4), rng.normal(size=4),
                              rng.uniform(0.5, 2, 4))
    bn.set_weights([a.astype(np.float32) for a in (gamma, beta, mean, var)])
    ours = from_keras(model).eval()
    twin = ours[1]
    assert isinstance(twin, mc.BatchNorm2D) and twin.convention == "keras"
    assert (twin.eps, twin.momentum) == (pytest.approx(1e-3), pytest.approx(0.9))
    np.testing.assert_array_equal(twin.running_mean, mean.astype(np.float32))
    np.testing.assert_array_equal(twin.running_var, var.astype(np.float32))
    x = rng.standard_normal((5, 8, 8, 3)).astype(np.float32)
    # float32 throughout: the Dense sums 144 products, the convolution 27; each sum of n terms
    # is within n·u (u = 6e-8) of exact relative to the sum of |terms| (9e-6 at n = 144), and
    # the BatchNorm multiplies by gamma/sqrt(var + eps) <= 2.9 here: 1e-4 of the largest output
    # is over three times the worst case of the three layers together
    assert_close("output", ours(x.transpose(0, 3, 1, 2)), np.asarray(model(x, training=False)),
                 rtol=1e-4)


@requires_torch
@requires_keras
def test_each_importer_names_the_other_one():
    import torch
    k = keras()
    keras_model = k.Sequential([k.Input((4,)), k.layers.Dense(2)])
    with pytest.raises(TypeError, match="got a Keras model .*use minicnn.interop.from_keras"):
        from_torch(keras_model)
    with pytest.raises(TypeError, match="got a PyTorch module .*use minicnn.interop.from_torch"):
        from_keras(torch.nn.Sequential(torch.nn.Linear(4, 2)))


@requires_keras
def test_keras_trace_of_a_channels_first_shape_points_to_channels_last():
    import minicnn.trace as mt
    k = keras()
    model = k.Sequential([k.Input((28, 28, 1)), k.layers.Conv2D(4, 3), k.layers.Flatten(),
                          k.layers.Dense(10)])
    trace = mt.trace(model, (1, 28, 28))
    text = trace.render()
    assert "channels-last" in text and "28,28,1" in text
    assert "so that it takes 28" not in text


def test_fit_refuses_to_resume_with_another_batch_size_or_seed(tmp_path):
    """The checkpoint records the batch size, seed and number of samples that placed it."""
    x, y = data(48)
    path = tmp_path / "c.npz"
    model = tiny_model().compile(optimizer="adam", loss="cross_entropy")
    model.fit(x, y, epochs=1, batch_size=16, seed=0, verbose=0, checkpoint_path=path)
    before = path.read_bytes()
    model = tiny_model().compile(optimizer="adam", loss="cross_entropy")
    with pytest.raises(ValueError, match="seed: checkpoint 0, now 5; batch_size: checkpoint 16, now 32"):
        model.fit(x, y, epochs=2, batch_size=32, seed=5, verbose=0, checkpoint_path=path,
                  resume=True)
    with pytest.raises(ValueError, match="samples: checkpoint 48, now 32"):
        model.fit(x[:32], y[:32], epochs=2, batch_size=16, verbose=0, checkpoint_path=path,
                  resume=True)
    assert path.read_bytes() == before
