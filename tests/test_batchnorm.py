"""BatchNorm2D against torch.nn.BatchNorm2d and keras.layers.BatchNormalization, finite differences,
running statistics over several steps, train vs eval, freezing, checkpoints, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn as mc
from minicnn.train import checkpoint as ckpt
from minicnn.optim import SGD
from twins import (assert_close, check_finite_differences, compare, keras, nchw_to_nhwc, nhwc_to_nchw,
                   requires_keras, requires_torch, torch_module)

# a hypothesis example runs torch and NumPy on a few hundred numbers: cheap, but keep the
# default profile's 300 examples down to what this file can afford next to the others
FEW = settings(max_examples=min(settings().max_examples, 60))


def random_stats(bn, rng):
    """Non-trivial running statistics, so that eval mode is not the identity."""
    bn.running_mean[...] = rng.standard_normal(bn.num_features)
    bn.running_var[...] = rng.uniform(0.5, 2.0, bn.num_features)
    if bn.affine:
        bn.weight.data[...] = rng.uniform(0.5, 1.5, bn.num_features)
        bn.bias.data[...] = rng.standard_normal(bn.num_features)


@st.composite
def bn_case(draw):
    n, c, h, w = (draw(st.integers(1, 4)), draw(st.integers(1, 4)), draw(st.integers(1, 4)),
                  draw(st.integers(1, 4)))
    if n * h * w < 2:  # a variance needs two values per channel
        n = 2
    return dict(shape=(n, c, h, w), momentum=draw(st.sampled_from([0.0, 0.1, 0.5, 1.0])),
                eps=draw(st.sampled_from([1e-5, 1e-3, 0.5])), affine=draw(st.booleans()),
                training=draw(st.booleans()), seed=draw(st.integers(0, 2**16)))


# ----------------------------------------------------------------------------------------
# PyTorch (float64, tight)
# ----------------------------------------------------------------------------------------
@requires_torch
@FEW
@given(bn_case())
def test_matches_torch_output_and_gradients(case):
    rng = np.random.default_rng(case["seed"])
    bn = mc.BatchNorm2D(case["shape"][1], eps=case["eps"], momentum=case["momentum"],
                        affine=case["affine"], dtype=np.float64)
    random_stats(bn, rng)
    bn.train(case["training"])
    x = rng.standard_normal(case["shape"]) * 3 + 1
    compare(bn, x, "torch", seed=case["seed"], config=f"{bn!r}, training={case['training']}")


@requires_torch
@pytest.mark.parametrize("affine", [True, False])
def test_running_statistics_follow_torch_over_several_steps(affine):
    """Five training steps on different batches (and parameter updates), then eval: the running
    mean, the UNBIASED running variance, num_batches_tracked and the eval output all agree."""
    import torch
    rng = np.random.default_rng(1)
    bn = mc.BatchNorm2D(3, momentum=0.3, affine=affine, dtype=np.float64)
    mod = torch_module(bn, (4, 3, 5, 2))
    opt = SGD(bn.parameters(), lr=0.1) if affine else None
    topt = torch.optim.SGD(mod.parameters(), lr=0.1) if affine else None
    for step in range(5):
        x = rng.standard_normal((4, 3, 5, 2)) * (step + 1) + step
        dy = rng.standard_normal(x.shape)
        y = bn(x)
        bn.backward(dy)
        xt = torch.tensor(x, requires_grad=True)
        yt = mod(xt)
        (yt * torch.from_numpy(dy)).sum().backward()
        assert_close(f"output at step {step}", y, yt.detach().numpy(), rtol=1e-10)
        if affine:
            opt.step()
            topt.step()
            topt.zero_grad()
    for name, buf in mod.named_buffers():
        ours = dict(bn.named_buffers())[name]
        assert_close(name, ours, buf.numpy(), rtol=1e-12, atol=0)
    assert int(bn.num_batches_tracked) == 5
    bn.eval()
    mod.eval()
    x = rng.standard_normal((2, 3, 4, 4))
    assert_close("eval output", bn(x), mod(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)


@requires_torch
def test_running_variance_is_unbiased_and_normalisation_biased():
    """The two variances side by side: normalising uses Σ(x − mean)²/n, the running update
    n/(n − 1) times it."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((2, 1, 3, 1))  # n = 6 values in the only channel
    bn = mc.BatchNorm2D(1, momentum=1.0, dtype=np.float64)  # momentum 1: running := batch
    y = bn(x)
    np.testing.assert_allclose(bn.running_var, [np.var(x, ddof=1)], rtol=1e-14)
    np.testing.assert_allclose(y, (x - x.mean()) / np.sqrt(np.var(x) + 1e-5), rtol=1e-12)


def test_finite_differences_train_mode():
    """With batch statistics every output depends on every input of its channel."""
    rng = np.random.default_rng(3)
    bn = mc.BatchNorm2D(3, dtype=np.float64)
    random_stats(bn, rng)
    x = rng.standard_normal((3, 3, 2, 3))
    check_finite_differences(bn, x, max_entries=40)


def test_finite_differences_eval_mode_and_no_affine():
    rng = np.random.default_rng(4)
    for bn in (mc.BatchNorm2D(2, dtype=np.float64).eval(),
               mc.BatchNorm2D(2, affine=False, dtype=np.float64)):
        random_stats(bn, rng)
        check_finite_differences(bn, rng.standard_normal((2, 2, 3, 3)), max_entries=30)


def test_train_normalises_per_channel_over_n_h_w():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((8, 4, 5, 5)) * np.array([1, 5, 0.1, 30])[:, None, None] + 7
    y = mc.BatchNorm2D(4, dtype=np.float64)(x)
    np.testing.assert_allclose(y.mean(axis=(0, 2, 3)), 0, atol=1e-12)
    # var(y) = var / (var + eps): 1 up to eps, visibly less for the channel of scale 0.1
    var = x.var(axis=(0, 2, 3))
    np.testing.assert_allclose(y.var(axis=(0, 2, 3)), var / (var + 1e-5), rtol=1e-10)


def test_eval_mode_uses_and_keeps_running_statistics():
    rng = np.random.default_rng(6)
    bn = mc.BatchNorm2D(2, dtype=np.float64)
    random_stats(bn, rng)
    bn.eval()
    before = [b.copy() for b in bn.buffers()]
    x = rng.standard_normal((3, 2, 2, 2))
    y = bn(x)
    for b, old in zip(bn.buffers(), before):
        np.testing.assert_array_equal(b, old)
    scale = bn.weight.data / np.sqrt(bn.running_var + bn.eps)
    expected = (x - bn.running_mean[:, None, None]) * scale[:, None, None] + bn.bias.data[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-12)


def test_float32_by_default_and_casts_inputs():
    bn = mc.BatchNorm2D(2)
    y = bn(np.ones((2, 2, 2, 2), np.float64))
    assert y.dtype == np.float32 and bn.running_mean.dtype == np.float32
    assert bn.backward(np.ones_like(y)).dtype == np.float32


# ----------------------------------------------------------------------------------------
# Keras: momentum 0.99 on the OLD value, biased moving variance, eps 1e-3
# ----------------------------------------------------------------------------------------
def _keras_bn(bn, input_shape):
    k = keras()
    layer = k.layers.BatchNormalization(axis=-1, momentum=bn.momentum, epsilon=bn.eps,
                                        dtype=str(bn.dtype))
    layer.build((None,) + tuple(input_shape[2:]) + (input_shape[1],))
    layer.set_weights([bn.weight.data, bn.bias.data, bn.running_mean, bn.running_var])
    return layer


@requires_keras
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10),
                                         # float32: sums over a few hundred values, rounding
                                         # ~1e-7 each, through a division by the std
                                         (np.float32, 2e-5)])
def test_keras_convention_over_several_training_steps(dtype, rtol):
    """layer(x, training=True) five times: outputs and moving statistics agree; then eval."""
    rng = np.random.default_rng(7)
    bn = mc.BatchNorm2D(3, convention="keras", dtype=dtype)
    assert (bn.eps, bn.momentum) == (1e-3, 0.99)
    random_stats(bn, rng)
    layer = _keras_bn(bn, (4, 3, 6, 5))
    for step in range(5):
        x = (rng.standard_normal((4, 3, 6, 5)) * (step + 1) + step).astype(dtype)
        y = bn(x)
        y_ref = nhwc_to_nchw(np.asarray(layer(nchw_to_nhwc(x), training=True)))
        assert_close(f"output at step {step}", y, y_ref, rtol=rtol, atol=rtol)
    assert_close("moving mean", bn.running_mean, np.asarray(layer.moving_mean), rtol=rtol, atol=rtol)
    assert_close("moving variance", bn.running_var, np.asarray(layer.moving_variance), rtol=rtol,
                 atol=rtol)
    bn.eval()
    x = rng.standard_normal((2, 3, 6, 5)).astype(dtype)
    y_ref = nhwc_to_nchw(np.asarray(layer(nchw_to_nhwc(x), training=False)))
    assert_close("eval output", bn(x), y_ref, rtol=rtol, atol=rtol)


@requires_keras
@settings(max_examples=min(settings().max_examples, 8))  # a Keras layer per example: slow
@given(bn_case())
def test_matches_keras_output_and_gradients(case):
    rng = np.random.default_rng(case["seed"])
    bn = mc.BatchNorm2D(case["shape"][1], eps=case["eps"], convention="keras",
                        affine=case["affine"], dtype=np.float64)
    random_stats(bn, rng)
    bn.train(case["training"])
    x = rng.standard_normal(case["shape"]) * 3 + 1
    compare(bn, x, "keras", seed=case["seed"], config=f"{bn!r}, training={case['training']}")


@requires_keras
def test_keras_float32_gradients():
    rng = np.random.default_rng(8)
    bn = mc.BatchNorm2D(4, convention="keras")
    random_stats(bn, rng)
    compare(bn, rng.standard_normal((3, 4, 5, 5)).astype(np.float32), "keras", rtol=2e-5, atol=2e-5)


# ----------------------------------------------------------------------------------------
# freezing: Keras 3's rule by default, PyTorch's on request
# ----------------------------------------------------------------------------------------
def _frozen_pair(rng, **kwargs):
    bn = mc.BatchNorm2D(3, dtype=np.float64, **kwargs)
    random_stats(bn, rng)
    bn.trainable = False
    return bn


@requires_torch
def test_frozen_uses_running_statistics_even_in_train_mode_like_torch_eval():
    rng = np.random.default_rng(9)
    bn = _frozen_pair(rng)
    assert bn.training and not bn.trainable and not bn.uses_batch_statistics()
    before = [b.copy() for b in bn.buffers()]
    x = rng.standard_normal((4, 3, 3, 3))
    compare(bn, x, "torch", config="frozen, train mode")  # the twin is torch in eval() mode
    for b, old in zip(bn.buffers(), before):
        np.testing.assert_array_equal(b, old)


@requires_keras
def test_frozen_matches_keras_trainable_false_called_with_training_true():
    rng = np.random.default_rng(10)
    bn = _frozen_pair(rng, convention="keras")
    layer = _keras_bn(bn, (4, 3, 3, 3))
    layer.trainable = False
    x = rng.standard_normal((4, 3, 3, 3))
    y_ref = nhwc_to_nchw(np.asarray(layer(nchw_to_nhwc(x), training=True)))
    assert_close("frozen output", bn(x), y_ref, rtol=1e-10)
    assert_close("moving mean untouched", bn.running_mean, np.asarray(layer.moving_mean), rtol=0)
    compare(bn, x, "keras", config="frozen, training=True")


@requires_torch
def test_frozen_uses_batch_stats_is_torchs_requires_grad_false():
    """PyTorch: requires_grad_(False) in train() mode still normalises with the batch and still
    moves the running statistics; only the optimizer leaves γ and β alone."""
    import torch
    rng = np.random.default_rng(11)
    bn = _frozen_pair(rng, frozen_uses_batch_stats=True)
    mod = torch_module(bn, (4, 3, 3, 3))
    mod.requires_grad_(False)
    assert mod.training
    opt = SGD(bn.parameters(), lr=0.5)
    weight = bn.weight.data.copy()
    for _ in range(3):
        x = rng.standard_normal((4, 3, 3, 3))
        y = bn(x)
        bn.backward(np.ones_like(y))
        opt.step()
        assert_close("output", y, mod(torch.from_numpy(x)).numpy(), rtol=1e-10)
    for name, buf in mod.named_buffers():
        assert_close(name, dict(bn.named_buffers())[name], buf.numpy(), rtol=1e-12)
    np.testing.assert_array_equal(bn.weight.data, weight)


def test_unfreezing_restores_batch_statistics():
    bn = mc.BatchNorm2D(2)
    bn.trainable = False
    assert not bn.uses_batch_statistics()
    bn.trainable = True
    assert bn.uses_batch_statistics()
    no_affine = mc.BatchNorm2D(2, affine=False)
    no_affine.trainable = False  # no parameters: the layer itself remembers it is frozen
    assert not no_affine.trainable and not no_affine.uses_batch_statistics()


def test_frozen_weights_do_not_move_while_the_others_do():
    rng = np.random.default_rng(12)
    model = mc.Sequential([mc.Conv2D(2, 3, 3, padding=1, dtype=np.float64, rng=0),
                           mc.BatchNorm2D(3, dtype=np.float64), mc.ReLU(), mc.Flatten(),
                           mc.Dense(3 * 4 * 4, 2, dtype=np.float64, rng=1)])
    model[1].trainable = False
    frozen = {n: p.data.copy() for n, p in model.named_parameters() if n.startswith("1.")}
    others = {n: p.data.copy() for n, p in model.named_parameters() if not n.startswith("1.")}
    stats = [b.copy() for b in model[1].buffers()]
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    loss = mc.CrossEntropyLoss()
    for _ in range(3):
        loss(model(rng.standard_normal((4, 2, 4, 4))), np.array([0, 1, 1, 0]))
        model.backward(loss.backward())
        opt.step()
    params = dict(model.named_parameters())
    for name, old in frozen.items():
        np.testing.assert_array_equal(params[name].data, old, err_msg=name)
    for name, old in others.items():
        assert not np.array_equal(params[name].data, old), f"{name} did not train"
    for b, old in zip(model[1].buffers(), stats):  # Keras' rule: frozen statistics stay put
        np.testing.assert_array_equal(b, old)


# ----------------------------------------------------------------------------------------
# checkpoints, shapes, errors
# ----------------------------------------------------------------------------------------
def test_checkpoint_restores_buffers_exactly_and_resumes(tmp_path):
    rng = np.random.default_rng(13)

    def net():
        return mc.Sequential([mc.Conv2D(1, 4, 3, rng=0), mc.BatchNorm2D(4, momentum=0.2),
                              mc.ReLU(), mc.Flatten(), mc.Dense(4 * 4 * 4, 3, rng=1)])
    batches = [(rng.standard_normal((5, 1, 6, 6)).astype(np.float32), rng.integers(0, 3, 5))
               for _ in range(6)]

    def run(model, opt, part):
        loss = mc.CrossEntropyLoss()
        for x, y in part:
            loss(model(x), y)
            model.backward(loss.backward())
            opt.step()

    straight = net()
    run(straight, mc.optim.Adam(straight.parameters(), lr=0.01), batches)

    first = net()
    opt = mc.optim.Adam(first.parameters(), lr=0.01)
    run(first, opt, batches[:3])
    ckpt.save(tmp_path / "bn.npz", first, opt)
    rebuilt, _ = ckpt.load(tmp_path / "bn.npz")
    for (name, a), (_, b) in zip(first.named_buffers(), rebuilt.named_buffers()):
        assert a.dtype == b.dtype and np.array_equal(a, b), name
    assert int(rebuilt[1].num_batches_tracked) == 3

    resumed = net()
    opt = mc.optim.Adam(resumed.parameters(), lr=0.01)
    ckpt.load(tmp_path / "bn.npz", resumed, opt)
    run(resumed, opt, batches[3:])
    for (name, a), (_, b) in zip(straight.named_parameters() + straight.named_buffers(),
                                 resumed.named_parameters() + resumed.named_buffers()):
        if isinstance(a, mc.Parameter):
            a, b = a.data, b.data
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_checkpoint_without_the_buffers_is_refused(tmp_path):
    model = mc.Sequential([mc.Conv2D(1, 2, 3), mc.BatchNorm2D(2, affine=False)])
    path = tmp_path / "old.npz"
    ckpt.save(path, mc.Sequential([mc.Conv2D(1, 2, 3), mc.ReLU()]))
    with pytest.raises(ValueError, match="no buffer '1.running_mean'"):
        ckpt.load(path, model)


def test_config_round_trip():
    bn = mc.BatchNorm2D(5, eps=1e-4, momentum=0.9, convention="keras", affine=False,
                        frozen_uses_batch_stats=True, dtype=np.float64)
    again = ckpt.build(ckpt.layer_config(bn))
    assert repr(again) == repr(bn) and again.dtype == np.float64


def test_wrong_channel_count_names_layer_expected_and_received():
    bn = mc.BatchNorm2D(64)
    with pytest.raises(mc.ShapeError) as info:
        bn(np.zeros((2, 32, 5, 5), np.float32))
    message = str(info.value)
    assert "BatchNorm2D(64" in message and "(N, 64, H, W)" in message and "(2, 32, 5, 5)" in message
    with pytest.raises(mc.ShapeError, match=r"rank 4 \(N, C, H, W\)"):
        bn.output_shape((2, 64))


def test_in_a_sequential_the_error_shows_the_previous_layer():
    model = mc.Sequential([mc.Conv2D(3, 32, 3), mc.BatchNorm2D(64)])
    with pytest.raises(mc.ShapeError) as info:
        model.output_shape((2, 3, 8, 8))
    assert "at layer 1" in str(info.value) and "Conv2D(3, 32" in str(info.value)


def test_one_value_per_channel_cannot_train():
    bn = mc.BatchNorm2D(3)
    with pytest.raises(mc.ShapeError, match=r"N·H·W = 1·1·1 = 1"):
        bn(np.zeros((1, 3, 1, 1)))
    assert bn.eval()(np.zeros((1, 3, 1, 1))).shape == (1, 3, 1, 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_features=0), "num_features"), (dict(num_features=3, eps=0), "eps"),
    (dict(num_features=3, momentum=1.5), "momentum"),
    (dict(num_features=3, convention="caffe"), "convention"),
    (dict(num_features=3, dtype=np.int32), "dtype")])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        mc.BatchNorm2D(**kwargs)


def test_names_shapes_explain_repr():
    bn = mc.BatchNorm2D(4)
    assert [n for n, _ in bn.named_parameters()] == ["weight", "bias"]
    assert [n for n, _ in bn.named_buffers()] == ["running_mean", "running_var", "num_batches_tracked"]
    assert bn.output_shape((8, 4, 5, 5)) == (8, 4, 5, 5)
    assert bn.explain((8, 4, 5, 5)) == ["per channel: mean and variance over N·H·W = 8·5·5 = 200 "
                                        "values; shape unchanged"]
    assert repr(bn) == "BatchNorm2D(4, eps=1e-05, momentum=0.1)"
    assert repr(mc.BatchNorm2D(4, convention="keras")) == \
        "BatchNorm2D(4, eps=0.001, momentum=0.99, convention='keras')"
    bn.load_buffer("running_mean", np.arange(4))
    np.testing.assert_array_equal(bn.running_mean, np.arange(4))
    with pytest.raises(ValueError, match="shape"):
        bn.load_buffer("running_var", np.ones(3))
