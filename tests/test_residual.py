"""Identity, Add, Residual, Bottleneck and BasicBlock against torch twins with torchvision's names,
finite differences, freezing, checkpoints of nested and named models, shape errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import minicnn as mc
from minicnn.train import checkpoint as ckpt
from minicnn.optim import SGD, Adam, KerasAdam
from twins import (assert_close, check_finite_differences, compare, requires_torch, torch_module)

F64 = np.float64
FEW = settings(max_examples=min(settings().max_examples, 25))  # a block per example


def values(entry):
    """The array of a named_parameters() or a named_buffers() entry."""
    return entry.data if isinstance(entry, mc.Parameter) else entry


# ----------------------------------------------------------------------------------------
# Identity and Add
# ----------------------------------------------------------------------------------------
def test_identity():
    x = np.arange(6.0).reshape(2, 3)
    assert mc.Identity()(x) is x or np.array_equal(mc.Identity()(x), x)
    assert mc.Identity().backward(x) is x
    assert mc.Identity().output_shape((2, 3, 4, 5)) == (2, 3, 4, 5)


def test_add_sums_and_hands_dy_to_every_input():
    rng = np.random.default_rng(0)
    a, b, c = (rng.standard_normal((2, 3, 4, 4)) for _ in range(3))
    add = mc.Add()
    np.testing.assert_array_equal(add(a, b, c), a + b + c)
    dy = rng.standard_normal((2, 3, 4, 4))
    grads = add.backward(dy)
    assert len(grads) == 3
    for g in grads:
        np.testing.assert_array_equal(g, dy)
    assert not np.shares_memory(grads[0], grads[1])
    assert add.output_shape((2, 3), (2, 3)) == add.output_shape([(2, 3), (2, 3)]) == (2, 3)


def test_add_of_mismatched_shapes_names_both_and_the_axes():
    with pytest.raises(mc.ShapeError) as info:
        mc.Add()(np.zeros((8, 256, 4, 4)), np.zeros((8, 64, 8, 8)))
    message = str(info.value)
    assert "Add()" in message and "(8, 256, 4, 4)" in message and "(8, 64, 8, 8)" in message
    assert "C (256 vs 64), H (4 vs 8), W (4 vs 8)" in message


# ----------------------------------------------------------------------------------------
# Residual
# ----------------------------------------------------------------------------------------
def conv_bn(cin, cout, stride=1, rng=0):
    # no bias before a BatchNorm (as in ResNets): in training mode its gradient is exactly 0,
    # and two libraries' rounding noise around 0 cannot be compared relatively
    return mc.Sequential([mc.Conv2D(cin, cout, 3, stride=stride, padding=1, bias=False, dtype=F64,
                                    rng=rng), mc.BatchNorm2D(cout, dtype=F64)])


def test_residual_dx_is_branch_dx_plus_dy():
    """The gradient flows through the Add twice: dx = branch.backward(dy) + dy."""
    rng = np.random.default_rng(1)
    branch = conv_bn(3, 3)
    block = mc.Residual(branch)
    x = rng.standard_normal((2, 3, 5, 5))
    dy = rng.standard_normal((2, 3, 5, 5))
    block(x)
    dx = block.backward(dy)
    branch(x)
    np.testing.assert_allclose(dx, branch.backward(dy) + dy, rtol=1e-13)


@requires_torch
@pytest.mark.parametrize("shortcut, activation", [(False, None), (True, "relu"), (False, "relu")])
def test_residual_matches_torch_by_name(shortcut, activation):
    rng = np.random.default_rng(2)
    cout, stride = (6, 2) if shortcut else (3, 1)
    block = mc.Residual(mc.Sequential([mc.Conv2D(3, 4, 3, padding=1, bias=False, dtype=F64, rng=0),
                                       mc.BatchNorm2D(4, dtype=F64), mc.ReLU(),
                                       mc.Conv2D(4, cout, 3, stride=stride, padding=1, dtype=F64, rng=1)]),
                        shortcut=conv_bn(3, cout, stride, rng=2) if shortcut else None,
                        activation=activation)
    names = [n for n, _ in block.named_parameters()]
    assert names[:3] == ["branch.0.weight", "branch.1.weight", "branch.1.bias"]
    if shortcut:
        assert names[-3:] == ["shortcut.0.weight", "shortcut.1.weight", "shortcut.1.bias"]
    compare(block, rng.standard_normal((3, 3, 6, 6)), "torch")


def test_residual_finite_differences():
    rng = np.random.default_rng(3)
    block = mc.Residual(conv_bn(2, 2), shortcut=mc.Conv2D(2, 2, 1, dtype=F64, rng=4), activation="relu")
    check_finite_differences(block, rng.standard_normal((3, 2, 3, 3)), max_entries=25)


def test_residual_shape_mismatch_shows_both_paths_and_the_arithmetic():
    block = mc.Residual(conv_bn(64, 128, stride=2))
    with pytest.raises(mc.ShapeError) as info:
        block.output_shape((8, 64, 16, 16))
    message = str(info.value)
    assert "branch (8, 128, 8, 8) and shortcut (8, 64, 16, 16)" in message
    assert "C (128 vs 64), H (8 vs 16), W (8 vs 16)" in message
    assert "H: ⌊(16 + 2·1 − 3)/2⌋ + 1 = 8" in message
    assert "shortcut: identity" in message
    assert "Conv2D(64, 128, kernel_size=1, stride=2)" in message
    with pytest.raises(mc.ShapeError, match="branch"):  # forward says the same
        block(np.zeros((8, 64, 16, 16)))


def test_residual_rejects_non_layers():
    with pytest.raises(TypeError, match="shortcut"):
        mc.Residual(mc.ReLU(), shortcut="identity")


# ----------------------------------------------------------------------------------------
# Bottleneck and BasicBlock: torchvision's names, torch's numbers
# ----------------------------------------------------------------------------------------
def test_bottleneck_names_are_torchvisions():
    block = mc.Bottleneck(64, 64, stride=1)  # 64 -> 256 channels: a downsample is needed
    assert [n for n, _ in block.named_parameters()] == [
        "conv1.weight", "bn1.weight", "bn1.bias", "conv2.weight", "bn2.weight", "bn2.bias",
        "conv3.weight", "bn3.weight", "bn3.bias", "downsample.0.weight", "downsample.1.weight",
        "downsample.1.bias"]
    assert [n for n, _ in block.named_buffers()][:3] == [
        "bn1.running_mean", "bn1.running_var", "bn1.num_batches_tracked"]
    assert mc.Bottleneck(256, 64).downsample is None          # same shape: identity shortcut
    assert mc.Bottleneck(256, 64, stride=2).downsample is not None
    assert mc.Bottleneck(256, 64, downsample=True).downsample is not None
    assert mc.Bottleneck(64, 64, downsample=False).downsample is None
    assert block.output_shape((2, 64, 56, 56)) == (2, 256, 56, 56)
    assert mc.Bottleneck(256, 128, stride=2).output_shape((2, 256, 56, 56)) == (2, 512, 28, 28)


@requires_torch
@FEW
@given(in_channels=st.sampled_from([4, 8]), width=st.integers(1, 3), stride=st.integers(1, 2),
       stride_in_1x1=st.booleans(), conv_bias=st.booleans(), training=st.booleans(),
       seed=st.integers(0, 1000))
def test_bottleneck_matches_torch(in_channels, width, stride, stride_in_1x1, conv_bias, training, seed):
    """Output, input gradient and the gradient of every parameter, matched by torch's name
    (torch_module asserts the names and their order); then the running statistics."""
    import torch
    rng = np.random.default_rng(seed)
    block = mc.Bottleneck(in_channels, width, stride=stride, stride_in_1x1=stride_in_1x1,
                          conv_bias=conv_bias, dtype=F64, rng=seed)
    for _, layer in block.named_modules():
        if isinstance(layer, mc.BatchNorm2D):  # non-trivial γ, β and statistics
            layer.weight.data[...] = rng.uniform(0.5, 1.5, layer.num_features)
            layer.bias.data[...] = rng.standard_normal(layer.num_features)
            layer.running_var[...] = rng.uniform(0.5, 2, layer.num_features)
    block.train(training)
    x = rng.standard_normal((2, in_channels, 5, 5))
    mod = torch_module(block, x.shape)
    y = block(x)
    dy = rng.standard_normal(y.shape)
    dx = block.backward(dy)
    xt = torch.tensor(x, requires_grad=True)
    yt = mod(xt)
    (yt * torch.from_numpy(dy)).sum().backward()
    config = (f"Bottleneck({in_channels}, {width}, stride={stride}, stride_in_1x1={stride_in_1x1}, "
              f"conv_bias={conv_bias}), training={training}")
    assert_close("output", y, yt.detach().numpy(), rtol=1e-10, atol=1e-12, config=config)
    assert_close("input gradient", dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12, config=config)
    theirs = {name: p.grad.numpy() for name, p in mod.named_parameters()}
    # A convolution bias followed by a BatchNorm in training mode has a gradient of exactly 0
    # (the normalisation subtracts the channel mean, bias included): both libraries return
    # rounding noise, a sum of N·H·W terms cancelling, of the size of 1e-16 x the other
    # gradients. So the absolute tolerance is relative to the block's largest gradient.
    atol = 1e-10 * max(float(np.abs(g).max()) for g in theirs.values())
    for name, p in block.named_parameters():
        assert_close(f"gradient of {name}", p.grad, theirs[name], rtol=1e-10, atol=atol,
                     config=config)
        if training and conv_bias and name.endswith(".bias") and name.startswith("conv"):
            assert np.abs(p.grad).max() <= atol, f"{name}: a bias before a BatchNorm learns nothing"
    theirs = dict(mod.named_buffers())
    for name, b in block.named_buffers():
        assert_close(name, b, theirs[name].numpy(), rtol=1e-12, config=config)


@requires_torch
@pytest.mark.parametrize("cin, cout, stride", [(4, 4, 1), (4, 6, 1), (4, 4, 2), (3, 5, 2)])
def test_basic_block_matches_torch(cin, cout, stride):
    rng = np.random.default_rng(cin + cout + stride)
    block = mc.BasicBlock(cin, cout, stride=stride, dtype=F64, rng=5)
    assert [n for n, _ in block.named_parameters()][:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert (block.downsample is not None) == (stride != 1 or cin != cout)
    compare(block, rng.standard_normal((2, cin, 6, 6)), "torch")


def test_bottleneck_finite_differences():
    """A tiny block in float64, training mode: batch statistics in three BatchNorms."""
    rng = np.random.default_rng(6)
    block = mc.Bottleneck(4, 2, stride=2, dtype=F64, rng=6)
    check_finite_differences(block, rng.standard_normal((2, 4, 4, 4)), max_entries=12)


def test_bottleneck_channel_error_names_the_layer():
    with pytest.raises(mc.ShapeError) as info:
        mc.Bottleneck(256, 64)(np.zeros((2, 128, 8, 8), np.float32))
    message = str(info.value)
    assert "expected 256 input channels" in message and "(2, 128, 8, 8)" in message
    assert "layer 'conv1'" in message


def test_bottleneck_without_the_needed_downsample():
    with pytest.raises(mc.ShapeError) as info:
        mc.Bottleneck(64, 64, downsample=False).output_shape((2, 64, 8, 8))
    message = str(info.value)
    assert "branch (2, 256, 8, 8) and shortcut (2, 64, 8, 8)" in message
    assert "conv3: Conv2D (2, 64, 8, 8) -> (2, 256, 8, 8)" in message


# ----------------------------------------------------------------------------------------
# freezing
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("make_opt", [lambda ps: SGD(ps, lr=0.1, momentum=0.9, weight_decay=0.1),
                                      lambda ps: Adam(ps, lr=0.01, weight_decay=0.1),
                                      lambda ps: KerasAdam(ps, lr=0.01)],
                         ids=["SGD", "Adam", "KerasAdam"])
def test_a_frozen_block_does_not_change_while_the_head_trains(make_opt):
    rng = np.random.default_rng(7)
    model = mc.Sequential({"block": mc.Bottleneck(4, 1, dtype=F64, rng=7),
                           "pool": mc.GlobalAvgPool2D(), "fc": mc.Dense(4, 3, dtype=F64, rng=8)})
    model.block.trainable = False
    assert not model.block.trainable and model.trainable and model.fc.trainable
    assert all(not p.trainable for p in model.block.parameters())
    before = {n: values(p).copy() for n, p in model.named_parameters() + model.named_buffers()}
    opt = make_opt(model.parameters())
    loss = mc.CrossEntropyLoss()
    for _ in range(3):
        loss(model(rng.standard_normal((4, 4, 3, 3))), np.array([0, 1, 2, 0]))
        model.backward(loss.backward())
        opt.step()
    after = dict(model.named_parameters() + model.named_buffers())
    for name, old in before.items():
        new = values(after[name])
        if name.startswith("block."):   # weights, biases and BatchNorm statistics all stay
            np.testing.assert_array_equal(new, old, err_msg=name)
        else:
            assert not np.array_equal(new, old), f"{name} did not train"
    frozen = [i for i, p in enumerate(opt.params) if not p.trainable]
    assert frozen and all(opt.state[i] == {} for i in frozen)


def test_unfreezing_and_partial_freezing():
    block = mc.Bottleneck(4, 1)
    block.trainable = False
    block.bn1.trainable = True
    assert block.trainable  # True as soon as any parameter trains
    assert [n for n, p in block.named_parameters() if p.trainable] == ["bn1.weight", "bn1.bias"]
    assert block.bn1.uses_batch_statistics() and not block.bn2.uses_batch_statistics()


# ----------------------------------------------------------------------------------------
# checkpoints of nested, named models
# ----------------------------------------------------------------------------------------
def small_resnet():
    return mc.Sequential([
        ("stem", mc.Sequential([mc.ZeroPadding2D(1), mc.Conv2D(1, 4, 3, bias=False, rng=0),
                                mc.BatchNorm2D(4), mc.ReLU()])),
        ("layer1", mc.Sequential([mc.Bottleneck(4, 2, stride=2, rng=1), mc.Bottleneck(8, 2, rng=2)])),
        ("layer2", mc.BasicBlock(8, 8, rng=3)),
        ("extra", mc.Residual(mc.Sequential([mc.Conv2D(8, 8, 1, rng=4), mc.BatchNorm2D(8)]),
                              shortcut=mc.Identity(), activation="relu")),
        ("pool", mc.GlobalAvgPool2D()), ("fc", mc.Dense(8, 3, rng=5))])


def test_checkpoint_round_trip_of_a_nested_named_model(tmp_path):
    rng = np.random.default_rng(8)
    model = small_resnet()
    model["layer1"].trainable = False
    opt = Adam(model.parameters(), lr=0.01)
    loss = mc.CrossEntropyLoss()
    for _ in range(2):
        loss(model(rng.standard_normal((4, 1, 8, 8)).astype(np.float32)), np.array([0, 1, 2, 1]))
        model.backward(loss.backward())
        opt.step()
    ckpt.save(tmp_path / "net.npz", model, opt)
    rebuilt, _ = ckpt.load(tmp_path / "net.npz")
    assert repr(rebuilt) == repr(model)
    assert rebuilt.names == ["stem", "layer1", "layer2", "extra", "pool", "fc"]
    for (name, a), (name2, b) in zip(model.named_parameters(), rebuilt.named_parameters()):
        assert name == name2 and np.array_equal(a.data, b.data) and a.trainable == b.trainable, name
    for (name, a), (name2, b) in zip(model.named_buffers(), rebuilt.named_buffers()):
        assert name == name2 and a.dtype == b.dtype and np.array_equal(a, b), name
    assert not rebuilt.layer1.trainable and rebuilt.layer2.trainable
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt.eval()(x), model.eval()(x))


@pytest.mark.parametrize("layer", [
    mc.Bottleneck(8, 4, stride=2, stride_in_1x1=True, conv_bias=True, bn_eps=1.001e-5,
                  bn_convention="keras", dtype=F64),
    mc.Bottleneck(16, 4, downsample=False), mc.BasicBlock(3, 6, stride=2, bn_momentum=0.2),
    mc.Residual(mc.Conv2D(2, 2, 3, padding=1))], ids=repr)
def test_layer_config_round_trip(layer):
    config = ckpt.layer_config(layer)
    again = ckpt.build(config)
    assert repr(again) == repr(layer)
    assert ckpt.layer_config(again) == config
    assert [(n, p.shape, p.data.dtype) for n, p in again.named_parameters()] == \
        [(n, p.shape, p.data.dtype) for n, p in layer.named_parameters()]
