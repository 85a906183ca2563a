"""minicnn.explain against PyTorch: saliency and Grad-CAM of the same weights, by autograd.

The network is the zoo's, copied to PyTorch with ``interop.to_torch`` and brought back to
minicnn in float64 (``from_torch`` of the float64 module), so both sides compute in float64.
PyTorch's side is written the way a PyTorch user computes them: ``x.requires_grad``,
``logit.backward()`` for saliency; a forward hook on the rectified last convolution plus a
tensor hook on its output for Grad-CAM, and ``F.interpolate(mode="bilinear")`` to the input.

Tolerance (float64, u = 2^-53 ≈ 1.1e-16): each entry is a chain of dot products, forward and
backward, the longest 9216 terms (mnist_cnn's first Dense); a dot product of length K in any
summation order is within K·u·Σ|a_i·b_i| of the exact value, and a chain of L ≤ 24 such
steps (12 layers, forward and backward) adds up to L·K·u ≈ 24 · 9216 · 1.1e-16 ≈ 2.5e-11 of
the largest magnitudes involved. Measured against the largest |value| of the reference map
(twins.assert_close's rule), 1e-9 leaves a factor of 40 for the ratio of the terms'
magnitudes to the map's largest value, and is well inside the issue's 1e-5. Ties (max-pool,
argmax, ReLU at 0) have probability zero with continuous random inputs.
"""
import numpy as np
import pytest

import minicnn as mc
from minicnn import explain, interop
from twins import assert_close, requires_torch

pytestmark = requires_torch

NAMES = ["lenet5", "mnist_cnn", "rps_cnn"]
RTOL = 1e-9  # derived in the module docstring


def float64_pair(name):
    """(minicnn model, torch nn.Sequential) in float64, the same weights, eval mode."""
    import torch
    module = interop.to_torch(mc.zoo.get(name, rng=0)).to(torch.float64).eval()
    return interop.from_torch(module).eval(), module


def torch_logits_model(module):
    """The module up to its logits: a final Softmax / LogSoftmax left out."""
    import torch
    last = module[-1]
    return module[:-1] if isinstance(last, (torch.nn.Softmax, torch.nn.LogSoftmax)) else module


def images(name, n=3):
    return np.random.default_rng(1).random((n, *mc.zoo.spec(name).input_shape))


@pytest.mark.parametrize("name", NAMES)
def test_saliency_equals_torch_autograd(name):
    import torch
    model, module = float64_pair(name)
    x = images(name)
    xt = torch.tensor(x, requires_grad=True)
    logits = torch_logits_model(module)(xt)
    target = logits.argmax(dim=1)
    logits[torch.arange(len(x)), target].sum().backward()
    ours = explain.saliency(model, x)  # target=None: the predicted class, as torch's argmax
    assert_close(f"{name} saliency", ours, xt.grad.numpy(), rtol=RTOL, atol=0)
    # an explicit target, the same for every image
    xt.grad = None
    torch_logits_model(module)(xt)[:, 1].sum().backward()
    assert_close(f"{name} saliency, class 1", explain.saliency(model, x, target=1),
                 xt.grad.numpy(), rtol=RTOL, atol=0)


def torch_grad_cam(module, x, target=None):
    """Grad-CAM with hooks on the rectified output of the last nn.Conv2d, as tutorials write it."""
    import torch
    import torch.nn.functional as F
    net = torch_logits_model(module)
    last_conv = max(i for i, m in enumerate(net) if isinstance(m, torch.nn.Conv2d))
    hooked = net[last_conv + 1] if isinstance(net[last_conv + 1], torch.nn.ReLU) else net[last_conv]
    saved = {}

    def forward_hook(mod, inputs, output):
        saved["maps"] = output
        output.register_hook(lambda grad: saved.__setitem__("grad", grad))

    handle = hooked.register_forward_hook(forward_hook)
    try:
        logits = net(torch.tensor(x))
    finally:
        handle.remove()
    target = logits.argmax(dim=1) if target is None else torch.full((len(x),), target)
    logits[torch.arange(len(x)), target].sum().backward()
    weights = saved["grad"].mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * saved["maps"]).sum(dim=1, keepdim=True)).detach()
    small = cam[:, 0].numpy()
    big = F.interpolate(cam, size=x.shape[2:], mode="bilinear", align_corners=False)[:, 0].numpy()
    return small, big


@pytest.mark.parametrize("name", NAMES)
def test_grad_cam_equals_torch_hooks(name):
    model, module = float64_pair(name)
    x = images(name)
    small, big = torch_grad_cam(module, x)
    assert_close(f"{name} Grad-CAM at the layer's size", explain.grad_cam(model, x, upsample=False),
                 small, rtol=RTOL, atol=0)
    assert_close(f"{name} Grad-CAM upsampled", explain.grad_cam(model, x), big, rtol=RTOL, atol=0)
    assert big.max() > 0, "an all-zero map would make the comparison empty"
    small, big = torch_grad_cam(module, x, target=2)
    assert_close(f"{name} Grad-CAM, class 2", explain.grad_cam(model, x, target=2), big,
                 rtol=RTOL, atol=0)


def test_upsampling_matches_torch_for_odd_sizes():
    import torch
    import torch.nn.functional as F
    maps = np.random.default_rng(2).random((2, 5, 7))
    for size in [(28, 28), (13, 9), (5, 7), (3, 2)]:
        theirs = F.interpolate(torch.tensor(maps)[:, None], size=size, mode="bilinear",
                               align_corners=False)[:, 0].numpy()
        # a handful of float64 multiply-adds per entry: a few u of the largest value
        assert_close(f"upsample to {size}", explain.upsample_bilinear(maps, size), theirs,
                     rtol=1e-14, atol=0)


def test_activations_are_each_layers_output_named_as_the_model():
    model = mc.zoo.lenet5(rng=0)
    x = images("lenet5", 2).astype(np.float32)
    outputs = explain.activations(model, x)
    assert [name for name, _ in outputs] == model.names
    expected = x
    for (_, out), layer in zip(outputs, model):
        expected = layer(expected)
        np.testing.assert_array_equal(out, expected)
    assert outputs[-1][1].shape == (2, 10)


def test_explaining_leaves_mode_and_gradients_as_they_were():
    model = mc.zoo.mnist_cnn_keras(rng=0).train()
    before = [p.grad.copy() for p in model.parameters()]
    grads = [p.grad for p in model.parameters()]
    x = images("mnist_cnn_keras", 2).astype(np.float32)
    explain.saliency(model, x)
    explain.grad_cam(model, x)
    assert model.training and model[3].training, "eval mode leaked out of explain"
    for p, g, b in zip(model.parameters(), grads, before):
        assert p.grad is g
        np.testing.assert_array_equal(p.grad, b)


def test_filters_are_the_first_convolutions_kernels():
    model = mc.zoo.rps_cnn(rng=0)
    np.testing.assert_array_equal(explain.filters(model), model[0].weight.data)
    np.testing.assert_array_equal(explain.filters(model, "3"), model[3].weight.data)
    with pytest.raises(TypeError, match=r"expected a Conv2D.*ReLU"):
        explain.filters(model, "1")


def test_bad_targets_and_layers_are_named():
    model = mc.zoo.lenet5(rng=0)
    x = images("lenet5", 2).astype(np.float32)
    with pytest.raises(ValueError, match=r"target 10 is outside the 10 classes 0..9"):
        explain.saliency(model, x, target=10)
    with pytest.raises(ValueError, match=r"target must be None, a class index or 2 class indices"):
        explain.saliency(model, x, target=[1, 2, 3])
    with pytest.raises(KeyError, match=r"no top-level layer named 'conv9'"):
        explain.grad_cam(model, x, layer="conv9")
    with pytest.raises(mc.ShapeError, match=r"layer '7' outputs shape \(2, 120\)"):
        explain.grad_cam(model, x, layer="7")
    with pytest.raises(mc.ShapeError, match=r"expected images x of shape \(N, C, H, W\)"):
        explain.saliency(model, x[0])
