"""ResNets: minicnn's zoo against torchvision's layout (reference/torch/resnet.py) and
keras.applications.ResNet50, name by name, logit by logit, gradient by gradient.

The frameworks' networks keep their own initialisation, but every BatchNorm gets random
weight, bias, running mean and running variance before the import, so that the statistics
really travel and really matter. ResNet-50 runs at 64×64 (and at odd sizes, where a stride-2
layer sees an odd number of rows and the padding arithmetic could differ) in float32: the
logits must agree within 1e-4 × max |logit|, the float32 rounding of ~50 layers with ~10^3
terms each. The small network runs in float64 against PyTorch in training mode, where its
output, input gradient, every parameter gradient and every updated running statistic must
agree to 1e-10 relative.
"""
import io
import pathlib
import sys

import numpy as np
import pytest

import minicnn as mc
import minicnn.trace as mt
from minicnn import interop
from minicnn.core.errors import ShapeError
from minicnn.interop import keras_name, torch_name
from minicnn.interop.names import load_state, state as interop_state
from minicnn.trace.__main__ import main as trace_main
from twins import assert_close, keras, requires_keras, requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # reference/

#: float32, ~50 layers: max |Δ logit| <= 1e-4 · max |logit|
RTOL32 = 1e-4
RTOL64 = 1e-10
CLASSES = 5


def images(n, size, seed=0, dtype=np.float32):
    """n images (N, 3, size, size) in [0, 1)."""
    return np.random.default_rng(seed).random((n, 3, size, size)).astype(dtype)


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def randomise_torch_bn(net, seed):
    """Every BatchNorm2d of a torch network: weight, bias, running mean and var drawn at random."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(0.5 + torch.rand(c, generator=g))
                m.bias.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_mean.copy_(torch.rand(c, generator=g) - 0.5)
                m.running_var.copy_(0.5 + 1.5 * torch.rand(c, generator=g))
                m.num_batches_tracked.fill_(int(torch.randint(1, 100, (1,), generator=g)))
    return net


def randomise_keras_bn(km, seed):
    rng = np.random.default_rng(seed)
    for layer in km.layers:
        if isinstance(layer, keras().layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.uniform(-0.5, 0.5, c),
                               rng.uniform(-0.5, 0.5, c), rng.uniform(0.5, 2.0, c)])
    return km


def randomise_bn(model, seed):
    """The same for a minicnn model (what the export directions start from)."""
    rng = np.random.default_rng(seed)
    for _, layer in model.named_modules():
        if isinstance(layer, mc.layers.BatchNorm2D):
            c = layer.num_features
            layer.weight.data[...] = rng.uniform(0.5, 1.5, c)
            layer.bias.data[...] = rng.uniform(-0.5, 0.5, c)
            layer.running_mean[...] = rng.uniform(-0.5, 0.5, c)
            layer.running_var[...] = rng.uniform(0.5, 2.0, c)
    return model


def torch_out(net, x):
    import torch
    with torch.no_grad():
        return net.eval()(torch.from_numpy(x)).numpy()


def keras_out(km, x):
    return np.asarray(km(nhwc(x), training=False))


def state(model):
    return {name: np.asarray(v) for name, v in interop_state(model).items()}


def assert_same_state(ours, theirs, what, skip=()):
    """Every parameter and buffer equal, bit for bit, under the same names."""
    a, b = state(ours), state(theirs)
    assert sorted(a) == sorted(b), what
    for name in a:
        if name.rpartition(".")[2] in skip:
            continue
        same = a[name].dtype == b[name].dtype and np.array_equal(a[name], b[name])
        assert same, f"{what}: {name}"


# ----------------------------------------------------------------------------------------
# fixtures: one framework network of each kind, built once
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch_resnet50():
    import torch
    from reference.torch.resnet import resnet50
    torch.manual_seed(0)
    return randomise_torch_bn(resnet50(num_classes=CLASSES), seed=1).eval()


@pytest.fixture(scope="module")
def keras_resnet50():
    """keras.applications.ResNet50 with Keras' own initialisation and random BN, 64×64."""
    keras().utils.set_random_seed(0)
    km = keras().applications.ResNet50(weights=None, input_shape=(64, 64, 3), classes=CLASSES,
                                       classifier_activation=None)
    return randomise_keras_bn(km, seed=2)


# ----------------------------------------------------------------------------------------
# names and counts
# ----------------------------------------------------------------------------------------
@requires_torch
@pytest.mark.parametrize("name", ["resnet50", "resnet18", "resnet_small"])
def test_names_and_shapes_are_torchvisions(name):
    """named_parameters / named_buffers: the same names, order and shapes as the torch module."""
    from reference.torch.models import build
    net, model = build(name), mc.zoo.get(name, rng=0)
    assert [(n, tuple(p.shape)) for n, p in net.named_parameters()] == \
        [(n, p.data.shape) for n, p in model.named_parameters()]
    assert [(n, tuple(b.shape)) for n, b in net.named_buffers()] == \
        [(n, b.shape) for n, b in model.named_buffers()]
    assert set(net.state_dict()) == set(state(model))


@requires_torch
def test_a_torchvision_state_dict_loads_strictly_into_the_reference():
    """reference/torch/resnet.py has torchvision's names: minicnn's state loads with strict=True,
    and what is loaded is minicnn's, array for array."""
    from reference.torch.resnet import resnet18
    model = randomise_bn(mc.zoo.resnet18(num_classes=CLASSES, rng=3), seed=4)
    net = interop.to_torch(model, module=resnet18(num_classes=CLASSES))
    loaded = net.state_dict()
    for name, value in state(model).items():
        assert np.array_equal(loaded[name].numpy(), value), name


@requires_keras
def test_keras_names_map_one_to_one(keras_resnet50):
    """Every conv and BatchNorm of keras.applications.ResNet50 has exactly one minicnn twin,
    and the name translation goes both ways."""
    k = keras().layers
    theirs = {layer.name for layer in keras_resnet50.layers
              if isinstance(layer, (k.Conv2D, k.BatchNormalization, k.Dense))}
    model = mc.zoo.resnet50_keras(num_classes=CLASSES, rng=0)
    ours = [name for name, layer in model.named_modules()
            if isinstance(layer, (mc.Conv2D, mc.layers.BatchNorm2D, mc.Dense))]
    assert {keras_name(n) for n in ours} == theirs and len(ours) == len(theirs)
    assert all(torch_name(keras_name(n)) == n for n in ours)
    assert keras_name("layer2.0.downsample.0") == "conv3_block1_0_conv"


@requires_keras
def test_parameter_counts_equal_keras(keras_resnet50):
    """Trainable numbers equal Keras' trainable weights; with the running statistics (minus
    PyTorch's num_batches_tracked, which Keras has not) they equal Keras' count_params()."""
    model = mc.zoo.resnet50_keras(num_classes=CLASSES, rng=0)
    trainable = sum(int(np.prod(v.shape)) for v in keras_resnet50.trainable_weights)
    assert interop.count_parameters(model) == trainable
    stats = sum(b.size for n, b in model.named_buffers() if not n.endswith("num_batches_tracked"))
    assert interop.count_parameters(model) + stats == keras_resnet50.count_params()


@requires_keras
def test_keras_resnet50_has_no_same_padded_stride_2_layer(keras_resnet50):
    """Keras' "same" with stride 2 pads asymmetrically (the extra row at the bottom) where
    PyTorch pads both sides: ResNet50 avoids it. Its stride-2 layers are "valid" behind an
    explicit ZeroPadding2D (conv1, pool1) or 1×1 (no padding needed), so any input size gives
    the same windows in both frameworks — which the odd sizes below check."""
    k = keras().layers
    strided = [layer for layer in keras_resnet50.layers
               if isinstance(layer, (k.Conv2D, k.MaxPooling2D)) and max(layer.strides) > 1]
    assert len(strided) == 2 + 2 * 3  # conv1, pool1, the _0_ and _1_ convs of conv3..5_block1
    assert all(layer.padding == "valid" for layer in strided)
    wide = [layer.name for layer in strided
            if isinstance(layer, k.Conv2D) and layer.kernel_size != (1, 1)]
    assert wide == ["conv1_conv"]
    assert keras_resnet50.get_layer("conv1_pad").padding == ((3, 3), (3, 3))
    same = [layer for layer in keras_resnet50.layers
            if isinstance(layer, k.Conv2D) and layer.padding == "same"]
    assert len(same) == 16 and all(layer.strides == (1, 1) for layer in same)  # the 3×3 convs


# ----------------------------------------------------------------------------------------
# the check: same logits in three frameworks
# ----------------------------------------------------------------------------------------
@requires_torch
def test_resnet50_from_torch_gives_torchs_logits(torch_resnet50):
    """torch (its init, random BN) -> from_torch: logits at 64×64, and at 65×65 where every
    stride-2 layer meets an odd size (65 -> 33 -> 17 -> 9 -> 5 -> 3)."""
    model = interop.from_torch(torch_resnet50)
    assert_same_state(model, interop.from_torch(torch_resnet50, model=mc.zoo.resnet50(
        num_classes=CLASSES, rng=0)), "from_torch into a given model")
    theirs = torch_resnet50.state_dict()
    for name, value in state(model).items():  # weights AND running statistics, by name
        assert np.array_equal(theirs[name].numpy(), value), name
    for size in (64, 65):
        x = images(2, size, seed=size)
        ours, expected = model.eval()(x), torch_out(torch_resnet50, x)
        assert ours.dtype == np.float32 and ours.shape == (2, CLASSES)
        assert_close(f"ResNet-50 logits vs PyTorch at {size}×{size}", ours, expected, rtol=RTOL32)


@requires_keras
def test_resnet50_from_keras_gives_keras_logits(keras_resnet50):
    model = interop.from_keras(keras_resnet50)
    assert [n for n, _ in model.named_children()] == [
        "conv1_pad", "conv1", "bn1", "relu", "pool1_pad", "maxpool", "layer1", "layer2", "layer3",
        "layer4", "avgpool", "fc"]
    bn = keras_resnet50.get_layer("conv4_block3_2_bn")
    assert np.array_equal(model.get_layer("layer3.2.bn2").running_var,
                          np.asarray(bn.moving_variance))
    assert np.array_equal(model.get_layer("layer2.0.conv1").weight.data,
                          np.asarray(keras_resnet50.get_layer("conv3_block1_1_conv").kernel)
                          .transpose(3, 2, 0, 1))
    x = images(2, 64, seed=5)
    assert_close("ResNet-50 logits vs Keras at 64×64", model.eval()(x),
                 keras_out(keras_resnet50, x), rtol=RTOL32)
    again = interop.from_keras(keras_resnet50, model=mc.zoo.resnet50_keras(num_classes=CLASSES))
    assert_same_state(model, again, "from_keras into a given model", skip=("num_batches_tracked",))


@requires_keras
def test_resnet50_to_keras_at_an_odd_size_and_back():
    """minicnn (random BN) -> keras.applications.ResNet50 built by to_keras at 33×33, the
    smallest odd size Keras accepts (33 -> 17 -> 9 -> 5 -> 3 -> 2): same logits, and
    from_keras brings back every array exactly."""
    model = randomise_bn(mc.zoo.resnet50_keras(num_classes=CLASSES, rng=6), seed=7)
    km = interop.to_keras(model, input_shape=(3, 33, 33))
    assert km.name == "resnet50"
    x = images(2, 33, seed=8)
    assert_close("ResNet-50 logits, minicnn vs to_keras at 33×33", model.eval()(x),
                 keras_out(km, x), rtol=RTOL32)
    back = interop.from_keras(km)
    assert_same_state(model, back, "to_keras then from_keras", skip=("num_batches_tracked",))


@requires_torch
@pytest.mark.parametrize("name, size", [("resnet18", 64), ("resnet18", 37), ("resnet_small", 64),
                                        ("resnet_small", 35)])
def test_resnet18_and_small_equal_torch_in_float64(name, size):
    import torch
    from reference.torch.models import build
    torch.manual_seed(1)
    net = randomise_torch_bn(build(name, num_classes=CLASSES), seed=2).double().eval()
    model = interop.from_torch(net)
    assert model.parameters()[0].data.dtype == np.float64 and not model.training
    x = images(2, size, seed=3, dtype=np.float64)
    assert_close(f"{name} logits vs PyTorch, float64, {size}×{size}", model(x), torch_out(net, x),
                 rtol=RTOL64)


@requires_torch
@pytest.mark.parametrize("style", ["torch", "keras"])
def test_to_torch_builds_the_same_network(style):
    """to_torch without a module builds one with the model's names (blocks with torchvision's
    forward, Keras' ZeroPadding2D as nn.ZeroPad2d): same logits, and back again exactly."""
    model = randomise_bn(mc.zoo.resnet_small(num_classes=CLASSES, style=style, dtype=np.float64,
                                             rng=9), seed=10).eval()
    net = interop.to_torch(model)
    assert set(net.state_dict()) == set(state(model))
    x = images(3, 35, seed=11, dtype=np.float64)
    assert_close(f"resnet_small ({style}) vs to_torch", model(x), torch_out(net, x), rtol=RTOL64)
    back = mc.zoo.resnet_small(num_classes=CLASSES, style=style, dtype=np.float64, rng=0)
    assert_same_state(model, interop.from_torch(net, model=back), "to_torch then from_torch")


# ----------------------------------------------------------------------------------------
# reference/keras/resnet.py: torchvision's layout written in Keras (the zoo's default style)
# ----------------------------------------------------------------------------------------
U32 = 2.0 ** -24  # float32's unit roundoff


def gamma(n, u=U32):
    """Higham's γ_n = n·u / (1 − n·u): a sum of n products computed in any order is within
    γ_n·Σ|terms| of the exact one (Accuracy and Stability of Numerical Algorithms, §3.1)."""
    return n * u / (1 - n * u)


def rounding_bound(model, x):
    """(N, classes): a first-order bound on how far a float32 run of ``model`` (eval mode) can
    put each logit from the exact one, from the float64 ``model`` (same weights) at ``x``.

    Every rounded operation of the network perturbs its output by e, |e| <= γ·Σ|terms|, and
    a perturbation at an activation a moves logit i by ∂logit_i/∂a · e to first order; so
    |computed − exact| <= Σ over operations of |∂logit_i/∂a|·γ·Σ|terms|. The operations:
    each conv and dense output (n = in·kh·kw products, + 1 with a bias: γ_n), each eval
    BatchNorm output y = (x − μ)·s + β, s = γ/sqrt(var + eps) (γ_7 on each of |x·s|, |μ·s|
    and |β|: minicnn rounds x − μ, var + eps, the sqrt, 1/ (together at most 2.5·u on s),
    × 1/sqrt, × γ and + β; Keras' rsqrt(var + eps)·γ, x·that, β − μ·that and the sum round
    fewer times), each residual sum (u·|sum|) and the global average (γ_{hw+1}·mean, the
    inputs being >= 0). ReLU, max-pool and padding are exact. The derivatives come from
    minicnn's own backward pass in float64, one logit at a time, recorded at those layers."""
    seen = {}
    kinds = (mc.Conv2D, mc.Dense, mc.layers.BatchNorm2D, mc.layers.Add, mc.layers.GlobalAvgPool2D)
    leaves = [(n, layer) for n, layer in model.named_modules() if isinstance(layer, kinds)]

    def hook(name, layer):
        forward, backward = layer.forward, layer.backward

        def record_forward(*inputs):
            y = forward(*inputs)
            seen[name] = {"inputs": inputs, "y": y}
            return y

        def record_backward(dy, *args, **kwargs):
            seen[name]["dy"] = dy
            return backward(dy, *args, **kwargs)
        layer.forward, layer.backward = record_forward, record_backward

    for name, layer in leaves:
        hook(name, layer)
    try:
        logits = model.eval()(x)
        gradients = []
        for i in range(logits.shape[1]):
            model.backward(np.eye(logits.shape[1])[[i] * len(x)])
            gradients.append({name: np.abs(seen[name]["dy"]) for name, _ in leaves})
    finally:
        for _, layer in leaves:
            del layer.forward, layer.backward

    def terms(layer, record):
        """(γ, Σ|terms|) of every output of one recorded operation."""
        x = record["inputs"][0]
        if isinstance(layer, (mc.Conv2D, mc.Dense)):
            params = layer.parameters()  # weight (out, in[, kh, kw]) and the bias if any
            kept = [p.data for p in params]
            for p in params:
                p.data = np.abs(p.data)
            try:
                total = layer.forward(np.abs(x))  # the same sums of |x|, |W| and |b|
            finally:
                for p, data in zip(params, kept):
                    p.data = data
            return gamma(int(np.prod(kept[0].shape[1:])) + len(kept) - 1), total
        if isinstance(layer, mc.layers.BatchNorm2D):
            s = layer.weight.data / np.sqrt(layer.running_var + layer.eps)
            c = (slice(None), None, None)
            return gamma(7), (np.abs(x * s[c]) + np.abs(layer.running_mean * s)[c]
                              + np.abs(layer.bias.data)[c])
        if isinstance(layer, mc.layers.Add):
            return U32, np.abs(record["y"])
        hw = int(np.prod(x.shape[2:]))
        return gamma(hw + 1), record["y"]  # the mean of inputs >= 0 (after a ReLU)

    budget = {name: terms(layer, seen[name]) for name, layer in leaves}
    return np.stack([sum(np.sum(g[name] * budget[name][0] * budget[name][1],
                                axis=tuple(range(1, g[name].ndim)))
                         for name, _ in leaves) for g in gradients], axis=1)


def keras_twin(name, size):
    """(minicnn zoo model with random BN, eval mode; its reference/keras twin at size×size
    holding its weights by to_keras), after checking the twin's parameter count and that it
    is torchvision's layout: no "same" padding on a strided layer (Keras puts the extra row at
    the bottom, PyTorch one on each side), convs without bias, BatchNorm eps 1e-5 and
    momentum 0.9 (PyTorch's 0.1)."""
    from reference.keras.models import build
    k = keras().layers
    model = randomise_bn(mc.zoo.get(name, num_classes=CLASSES, rng=12), seed=13).eval()
    km = interop.to_keras(model, keras_model=build(name, num_classes=CLASSES, image_size=size))
    trainable = sum(int(np.prod(v.shape)) for v in km.trainable_weights)
    assert interop.count_parameters(model) == interop.count_parameters(km) == trainable
    strided = [layer for layer in km.layers
               if isinstance(layer, (k.Conv2D, k.MaxPooling2D)) and max(layer.strides) > 1]
    assert strided and all(layer.padding == "valid" for layer in strided)
    assert all(not layer.use_bias for layer in km.layers if isinstance(layer, k.Conv2D))
    assert {(layer.epsilon, layer.momentum) for layer in km.layers
            if isinstance(layer, k.BatchNormalization)} == {(1e-5, 0.9)}
    return model, km


@requires_keras
@pytest.mark.parametrize("size", [64, 35])
def test_keras_twin_of_resnet_small_gives_minicnns_logits(size):
    """zoo.resnet_small (torchvision's layout, the zoo's default) copied into reference/keras's
    twin: the same logits at 64×64 and at 35×35, where stride-2 layers meet odd numbers of rows
    (35 -> 18 -> 9 -> 9 -> 5 -> 3 -> 2), and from_keras reads every array back."""
    model, km = keras_twin("resnet_small", size)
    x = images(3, size, seed=14)
    ours, theirs = model(x), keras_out(km, x)
    # Both are float32 runs of the same network with the same float32 weights on the same
    # float32 images: each is within ``rounding_bound`` of the exact logits whatever its
    # summation order, threads or SIMD width, so the two are within twice it. First order in
    # u: the neglected terms are about K·u ≈ 1e-4 of it (K ≈ 1,900 roundings on the longest
    # path); a ReLU input that rounding tips across zero changes that output by no more than
    # its own error. A strided 3×3 conv padded "same" moves the logits far beyond this
    # bound; Keras' default eps 1e-3 might stay within it, which is why ``keras_twin`` checks
    # eps itself.
    exact = mc.zoo.resnet_small(num_classes=CLASSES, dtype=np.float64, rng=0)
    load_state(exact, {n: np.asarray(v, np.float64) for n, v in interop_state(model).items()},
               "float64 copy")
    bound = 2 * rounding_bound(exact, x.astype(np.float64))
    assert ours.shape == theirs.shape == bound.shape == (3, CLASSES)
    gap = np.abs(ours.astype(np.float64) - theirs)
    worst = np.unravel_index(np.argmax(gap / bound), gap.shape)
    assert np.all(gap <= bound), (f"{size}×{size}: |minicnn − Keras| {gap[worst]:.2e} at {worst} "
                                  f"> twice the float32 rounding bound {bound[worst]:.2e}")
    back = interop.from_keras(km)  # torchvision's layout recognised: convs without bias
    assert [n for n, _ in back.named_children()] == [n for n, _ in model.named_children()]
    assert_same_state(model, back, "to_keras then from_keras", skip=("num_batches_tracked",))


@requires_keras
def test_keras_twin_of_resnet18_holds_minicnns_weights():
    """The BasicBlock twin: the parameter count and layout checks of ``keras_twin``, and every
    array back by from_keras. (Its logits are not compared in float32: with eight 3×3 convs of
    up to 4,608 terms, ``rounding_bound`` is as large as the logits themselves.)"""
    model, km = keras_twin("resnet18", 37)
    back = interop.from_keras(km)
    assert isinstance(back.get_layer("layer1.0"), mc.BasicBlock)
    assert_same_state(model, back, "to_keras then from_keras", skip=("num_batches_tracked",))


# ----------------------------------------------------------------------------------------
# training mode: gradients and running statistics, float64
# ----------------------------------------------------------------------------------------
@requires_torch
def test_small_resnet_gradients_equal_torch_in_train_mode():
    """One training step's numbers: the output (batch statistics), dx, the gradient of every
    parameter by name, and every running mean/var/count the forward pass moved."""
    import torch
    from reference.torch.resnet import resnet_small
    torch.manual_seed(3)
    net = randomise_torch_bn(resnet_small(num_classes=CLASSES), seed=4).double().train()
    model = interop.from_torch(net)
    assert model.training
    x = images(4, 64, seed=5, dtype=np.float64)
    dy = np.random.default_rng(6).standard_normal((4, CLASSES))

    xt = torch.from_numpy(x).requires_grad_(True)
    yt = net(xt)
    yt.backward(torch.from_numpy(dy))
    y = model(x)
    dx = model.backward(dy)

    assert_close("train-mode output", y, yt.detach().numpy(), rtol=RTOL64)
    assert_close("dx", dx, xt.grad.numpy(), rtol=RTOL64)
    grads = {n: p.grad.numpy() for n, p in net.named_parameters()}
    named = model.named_parameters()
    assert [n for n, _ in named] == list(grads)
    for name, p in named:
        assert_close(f"gradient of {name}", p.grad, grads[name], rtol=RTOL64)
    moved = dict(net.named_buffers())
    for name, value in model.named_buffers():
        assert_close(f"buffer {name} after the step", value, moved[name].numpy(), rtol=RTOL64)


# ----------------------------------------------------------------------------------------
# the Keras stem's max-pool padding, and errors
# ----------------------------------------------------------------------------------------
def test_zero_padded_max_pool_equals_minus_inf_padding_only_after_a_relu():
    """Keras' stem pads the max-pool's input with zeros; PyTorch's max-pool pads with -inf.
    Same numbers for inputs >= 0 (after the ReLU), different ones for negative inputs."""
    keras_way = mc.Sequential([mc.layers.ZeroPadding2D(1), mc.MaxPool2D(3, 2)])
    torch_way = mc.MaxPool2D(3, 2, padding=1)
    x = np.random.default_rng(0).standard_normal((2, 4, 9, 9))
    relu = np.maximum(x, 0)
    assert np.array_equal(keras_way(relu), torch_way(relu))
    assert not np.array_equal(keras_way(-np.abs(x)), torch_way(-np.abs(x)))


def test_shape_errors_name_the_layer_and_the_numbers():
    model = mc.zoo.resnet_small(rng=0)
    with pytest.raises(ShapeError, match=r"(?s)expected 3 input channels.*\(2, 1, 64, 64\).*conv1"):
        model(np.zeros((2, 1, 64, 64), np.float32))
    with pytest.raises(ShapeError, match=r"rank 4"):
        model.output_shape((3, 64, 64))
    model["fc"] = mc.Dense(100, 2)  # a new head of the wrong width: stage 4 gives 32·8 = 256
    with pytest.raises(ShapeError, match=r"(?s)100.*256.*fc"):
        model.output_shape((2, 3, 64, 64))


def test_zoo_rejects_unknown_styles():
    with pytest.raises(ValueError, match="style"):
        mc.zoo.resnet50(style="caffe")
    with pytest.raises(ValueError, match="block"):
        mc.zoo.resnet("wide", (1, 1, 1, 1))


@requires_torch
def test_mismatched_networks_are_refused_before_copying():
    import torch
    from reference.torch.resnet import resnet_small, resnet18
    model = mc.zoo.resnet_small(num_classes=CLASSES, rng=0)
    before = state(model)
    with pytest.raises(ShapeError, match=r"fc.weight has shape \(5, 256\) in minicnn, \(3, 256\)"):
        interop.from_torch(resnet_small(num_classes=3), model=model)
    # a BasicBlock's conv1 is 3×3 where a Bottleneck's is 1×1
    with pytest.raises(TypeError, match=r"layer1.0.conv1 is Conv2d\(64, 64, kernel_size=\(3, 3\)"):
        interop.from_torch(resnet18(num_classes=CLASSES), model=model)
    # torchvision's stride on the 3×3 conv; the Keras style strides the first 1×1 conv
    keras_style = mc.zoo.resnet_small(num_classes=CLASSES, style="keras", rng=0)
    with pytest.raises(TypeError, match=r"conv1 .*padding"):
        interop.from_torch(resnet_small(num_classes=CLASSES), model=keras_style)
    for name, value in state(model).items():
        assert np.array_equal(value, before[name]), f"{name} changed by a refused copy"
    with pytest.raises(TypeError, match="avgpool"):
        net = resnet_small()
        net.avgpool = torch.nn.AdaptiveAvgPool2d(2)
        interop.from_torch(net)


@requires_keras
def test_keras_into_a_torch_style_model_is_refused(keras_resnet50):
    """keras.applications' conv1_pad + "valid" conv1_conv pads as torchvision's conv1 does;
    what differs first is the bias (and then the stride's place, the eps)."""
    with pytest.raises(TypeError, match=r"conv1 .*conv1_conv.*bias True"):
        interop.from_keras(keras_resnet50, model=mc.zoo.resnet50(num_classes=CLASSES))


# ----------------------------------------------------------------------------------------
# transfer learning: the article's heads
# ----------------------------------------------------------------------------------------
@requires_torch
def test_torch_transfer_learning_head_comes_along():
    """The article's PyTorch model: model.fc = nn.Sequential(Linear, ReLU, Linear)."""
    import torch
    from reference.torch.resnet import resnet_small
    torch.manual_seed(5)
    net = randomise_torch_bn(resnet_small(), seed=6)
    net.fc = torch.nn.Sequential(torch.nn.Linear(256, 16), torch.nn.ReLU(inplace=True),
                                 torch.nn.Linear(16, 2))
    model = interop.from_torch(net.eval())
    assert [n for n, _ in model.named_parameters()][-4:] == ["fc.0.weight", "fc.0.bias",
                                                            "fc.2.weight", "fc.2.bias"]
    x = images(2, 64, seed=7)
    assert_close("resnet_small with the article's head", model(x), torch_out(net, x), rtol=RTOL32)


@requires_keras
def test_keras_transfer_learning_head_comes_along(keras_resnet50):
    """The article's Keras model: the trunk's output, GlobalAveragePooling2D, Dense(relu),
    Dense(softmax) — a head of its own after conv5_block3_out."""
    k = keras().layers
    keras().utils.set_random_seed(1)
    features = keras_resnet50.get_layer("conv5_block3_out").output
    h = k.Dense(16, activation="relu")(k.GlobalAveragePooling2D()(features))
    km = keras().Model(keras_resnet50.input, k.Dense(2, activation="softmax")(h))
    model = interop.from_keras(km)
    assert [n for n, _ in model.named_children()][-2:] == ["avgpool", "fc"]
    assert [n for n, _ in model.named_parameters()][-4:] == ["fc.0.weight", "fc.0.bias",
                                                            "fc.2.weight", "fc.2.bias"]
    x = images(2, 64, seed=8)
    assert_close("ResNet-50 + the article's head vs Keras", model.eval()(x), keras_out(km, x),
                 rtol=RTOL32)


# ----------------------------------------------------------------------------------------
# the tracer
# ----------------------------------------------------------------------------------------
@requires_torch
def test_trace_prints_resnet50():
    """python -m minicnn.trace resnet50: every layer, and torchvision's parameter count."""
    from reference.torch.resnet import resnet50
    out = io.StringIO()
    assert trace_main(["resnet50", "--batch", "2"], out=out) == 0
    text = out.getvalue()
    total = sum(p.numel() for p in resnet50().parameters())
    assert f"{total:,}" in text
    assert "[2, 3, 224, 224]" in text and "[2, 1000]" in text
    rows = mt.trace(mc.zoo.resnet50(rng=0), batch=2).rows
    assert sum(r.type == "Bottleneck" for r in rows) == 3 + 4 + 6 + 3
    assert [r.output_shape for r in rows if r.type == "Bottleneck"][-1] == (2, 2048, 7, 7)


@requires_torch
@requires_keras
def test_zero_padding_converts_in_a_plain_chain():
    """ZeroPadding2D outside a ResNet: nn.ZeroPad2d (width first) and Keras' ZeroPadding2D."""
    import torch
    model = mc.Sequential([mc.layers.ZeroPadding2D(((1, 2), (0, 3))), mc.Conv2D(2, 3, 3, rng=0)])
    x = images(2, 6, seed=12)[:, :2]
    ours = model(x)
    net = interop.to_torch(model)
    assert_close("ZeroPadding2D chain vs to_torch", ours,
                 net(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)
    km = interop.to_keras(model, input_shape=(2, 6, 6))
    assert_close("ZeroPadding2D chain vs to_keras", ours, keras_out(km, x).transpose(0, 3, 1, 2),
                 rtol=1e-6)


@requires_torch
def test_the_resnets_and_their_torch_twins_take_an_image_size():
    """``image_size`` (what --image-size passes for an image folder) changes only the spec: the
    same layers run on 48×48; torchvision's layout takes the argument and any size too."""
    import torch

    from reference.torch.models import build
    model = mc.zoo.get("resnet_small", image_size=48, rng=0)
    assert model.spec.input_shape == (3, 48, 48)
    assert mc.zoo.get("resnet_small", rng=0).spec.input_shape == (3, 64, 64)
    assert model(np.zeros((2, 3, 48, 48), np.float32)).shape == (2, 3)
    for name in ("resnet_small", "resnet18"):
        with torch.no_grad():
            assert build(name, num_classes=3, image_size=48)(torch.zeros(1, 3, 48, 48)).shape == (1, 3)
