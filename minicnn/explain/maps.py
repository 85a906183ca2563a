"""Activations, saliency, Grad-CAM and filters of a minicnn model, with minicnn's own backward.

All four take a minicnn model (a ``Sequential``; its top-level layers are the steps, named as
``model.names`` and the tracer name them) and images ``x`` of shape (N, C, H, W). The model is
run in eval mode (dropout off, BatchNorm on its running statistics) and put back in the mode
it was in; the gradients the explanations compute never reach ``param.grad`` (the values there
before the call are restored), so explaining a model in the middle of training changes nothing.
"""
import contextlib

import numpy as np

from ..core.errors import ShapeError
from ..layers import Conv2D, LogSoftmax, ReLU, Sequential, Sigmoid, Softmax, Tanh
from ..layers.base import Layer

#: what a convolution's output goes through before Grad-CAM reads it (the rectified maps)
_ACTIVATIONS = (ReLU, Tanh, Sigmoid)


def _chain(model, where):
    """[(name, layer)] of the model's top-level layers."""
    if isinstance(model, Sequential):
        return model.named_children()
    if isinstance(model, Layer):
        return [(type(model).__name__, model)]
    raise TypeError(f"{where}: expected a minicnn model (a Sequential), got {type(model).__name__}; "
                    f"a PyTorch or Keras model goes through minicnn.interop.from_torch / from_keras "
                    f"first")


def _images(x, where):
    x = np.asarray(x)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ShapeError(f"{where}: expected images x of shape (N, C, H, W), floating point, got "
                         f"shape {x.shape} of {x.dtype}")
    return x


@contextlib.contextmanager
def _explaining(model):
    """Eval mode and untouched ``param.grad`` for the duration; both restored after."""
    training = model.training
    saved = [(p, p.grad, None if p.grad is None else p.grad.copy()) for p in model.parameters()]
    model.eval()
    try:
        yield
    finally:
        model.train(training)
        for p, grad, values in saved:  # the same array object, in case something holds it
            p.grad = grad
            if grad is not None:
                grad[...] = values


def logits_part(model):
    """The model without a final Softmax / LogSoftmax: what produces the logits (N, classes).

    The explanations differentiate a class's logit, not its probability: the probability of
    one class also moves when the other classes' scores move, which blurs the map.
    """
    chain = _chain(model, "logits_part")
    if len(chain) > 1 and isinstance(chain[-1][1], (Softmax, LogSoftmax)):
        return model[:-1]
    return model


def activations(model, x):
    """[(name, output)] for every top-level layer of ``model``, in order, on images ``x``.

    x: (N, C, H, W). Each output is the array that layer returned: (N, C', H', W') for
    convolutions and pools, (N, F) after Flatten. The names are ``model.names`` ("0", "1", ...
    or the names given), those ``minicnn.trace`` prints.
    """
    chain = _chain(model, "activations")
    x = _images(x, "activations")
    outputs = []
    with _explaining(model):
        for name, layer in chain:
            x = layer(x)
            outputs.append((name, x))
    return outputs


def _targets(target, logits, where):
    """(N,) class indices: the predicted class when ``target`` is None, else ``target``."""
    if logits.ndim != 2:
        raise ShapeError(f"{where}: the model's output must be (N, classes) scores, got shape "
                         f"{logits.shape}")
    n, classes = logits.shape
    if target is None:
        return logits.argmax(axis=1)
    t = np.broadcast_to(np.asarray(target), (n,)) if np.ndim(target) == 0 else np.asarray(target)
    if t.shape != (n,) or not np.issubdtype(t.dtype, np.integer):
        raise ValueError(f"{where}: target must be None, a class index or {n} class indices, "
                         f"got {target!r}")
    if t.min() < 0 or t.max() >= classes:
        raise ValueError(f"{where}: target {target!r} is outside the {classes} classes 0..{classes - 1}")
    return t


def _one_hot(targets, logits):
    dy = np.zeros_like(logits)
    dy[np.arange(len(targets)), targets] = 1
    return dy


def saliency(model, x, target=None):
    """d logit[target] / d x for each image (Simonyan et al. 2014), by minicnn's own backward.

    x: (N, C, H, W) images as the model sees them (preprocessed). target: None (each image's
    predicted class), a class index, or N of them. Returns the gradient, shape (N, C, H, W),
    same dtype as the model's computation; a saliency MAP is usually max over C of its absolute
    value. A final Softmax / LogSoftmax is left out (``logits_part``).
    """
    x = _images(x, "saliency")
    chain = _chain(logits_part(model), "saliency")
    with _explaining(model):
        out = x
        for _, layer in chain:
            out = layer(out)
        dy = _one_hot(_targets(target, out, "saliency"), out)
        for _, layer in reversed(chain):
            dy = layer.backward(dy)
    return dy


def _cam_index(chain, layer, outputs):
    """Index in ``chain`` of the layer whose output Grad-CAM reads."""
    names = [name for name, _ in chain]
    if layer is None:
        convs = [i for i, (_, l) in enumerate(chain) if isinstance(l, Conv2D)]
        if convs:
            i = convs[-1]
            # the rectified maps, as Selvaraju et al. use them: the activation right after the conv
            return i + 1 if i + 1 < len(chain) and isinstance(chain[i + 1][1], _ACTIVATIONS) else i
        spatial = [i for i, out in enumerate(outputs) if out.ndim == 4 and out.shape[2] * out.shape[3] > 1]
        if not spatial:
            raise ShapeError(f"grad_cam: no layer of {names} outputs (N, C, H, W) maps to weigh")
        return spatial[-1]  # a ResNet: the last stage
    if isinstance(layer, str):
        if layer not in names:
            raise KeyError(f"grad_cam: no top-level layer named {layer!r}; the names are {names}")
        return names.index(layer)
    if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool):
        if not -len(chain) <= layer < len(chain):
            raise IndexError(f"grad_cam: layer index {layer} is out of range for {len(chain)} layers")
        return int(layer) % len(chain)
    for i, (_, l) in enumerate(chain):
        if l is layer:
            return i
    raise ValueError(f"grad_cam: layer {layer!r} is not one of the model's top-level layers {names}")


def grad_cam(model, x, target=None, layer=None, upsample=True):
    """Grad-CAM (Selvaraju et al. 2017): where the feature maps of ``layer`` support the class.

    With A (N, K, h, w) the output of ``layer`` and y the logit of the target class:
        w_k = mean over (i, j) of  dy / dA_k[i, j]          (N, K)
        cam = ReLU( sum_k  w_k · A_k )                      (N, h, w)
    then, with ``upsample``, resized to the input's H × W by bilinear interpolation
    (``upsample_bilinear``, PyTorch's F.interpolate(mode="bilinear", align_corners=False)).

    x: (N, C, H, W). target: None (the predicted class), a class index, or N of them.
    layer: a top-level name ("3"), index or layer object; by default the last Conv2D, read
    after the ReLU (or Tanh, Sigmoid) that follows it; a model without a top-level Conv2D (a
    ResNet) uses its last top-level layer with (N, C, H, W) output. Returns (N, H, W), or
    (N, h, w) without ``upsample``.
    """
    x = _images(x, "grad_cam")
    chain = _chain(logits_part(model), "grad_cam")
    with _explaining(model):
        outputs, out = [], x
        for _, l in chain:
            out = l(out)
            outputs.append(out)
        index = _cam_index(chain, layer, outputs)
        maps = outputs[index]
        if maps.ndim != 4:
            raise ShapeError(f"grad_cam: layer {chain[index][0]!r} outputs shape {maps.shape}; "
                             f"Grad-CAM needs (N, C, H, W) feature maps")
        dy = _one_hot(_targets(target, out, "grad_cam"), out)
        for _, l in reversed(chain[index + 1:]):
            dy = l.backward(dy)
    weights = dy.mean(axis=(2, 3))
    cam = np.maximum(np.einsum("nk,nkhw->nhw", weights, maps), 0)
    return upsample_bilinear(cam, x.shape[2:]) if upsample else cam


def _source_index(n_in, n_out):
    """(i0, i1, fraction) along one axis, PyTorch's bilinear with align_corners=False."""
    src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, src - i0


def upsample_bilinear(maps, size):
    """(N, h, w) -> (N, H, W) for size (H, W): bilinear, pixel centres aligned as PyTorch's
    ``F.interpolate(..., mode="bilinear", align_corners=False)`` and OpenCV's resize."""
    maps = np.asarray(maps)
    (y0, y1, fy), (x0, x1, fx) = (_source_index(n, m) for n, m in zip(maps.shape[1:], size))
    fy, fx = fy[:, None].astype(maps.dtype), fx[None, :].astype(maps.dtype)
    top = maps[:, y0][:, :, x0] * (1 - fx) + maps[:, y0][:, :, x1] * fx
    bottom = maps[:, y1][:, :, x0] * (1 - fx) + maps[:, y1][:, :, x1] * fx
    return top * (1 - fy) + bottom * fy


def filters(model, layer=None):
    """The kernels of a convolution: (out_channels, in_channels, kh, kw), a copy.

    layer: None (the model's first Conv2D, depth first, nested layers included), a dotted name
    ("0", "layer1.0.conv1") or a Conv2D object.
    """
    if layer is None:
        convs = [l for _, l in model.named_modules() if isinstance(l, Conv2D)]
        if not convs:
            raise ValueError(f"filters: {type(model).__name__} has no Conv2D")
        layer = convs[0]
    elif isinstance(layer, str):
        layer = model.get_layer(layer)
    if not isinstance(layer, Conv2D):
        raise TypeError(f"filters: expected a Conv2D (or its name), got {layer!r}")
    return layer.weight.data.copy()
