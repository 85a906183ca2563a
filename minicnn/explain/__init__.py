"""Look inside a trained network: what each layer makes of an image, and which pixels decided.

    import minicnn.explain as ex
    for name, out in ex.activations(model, x):    # x (N, C, H, W); every layer's output
        print(name, out.shape)
    g = ex.saliency(model, x, target=None)        # (N, C, H, W): d logit[target] / d x
    cam = ex.grad_cam(model, x, target=None)      # (N, H, W): where the last conv looked
    w = ex.filters(model)                         # (out, in, kh, kw): the first conv's kernels

Everything is computed by minicnn itself: the forward pass of each layer, and its own
``backward`` for the gradients. A model that ends in Softmax or LogSoftmax is explained through
the logits before it (the scores the softmax turns into probabilities), as Simonyan et al. and
Selvaraju et al. do. ``python -m minicnn show`` draws all of it as one HTML page.

    maps.py   activations, saliency, grad_cam, filters and the helpers they share
"""
from .maps import activations, filters, grad_cam, logits_part, saliency, upsample_bilinear

__all__ = ["activations", "saliency", "grad_cam", "filters", "logits_part", "upsample_bilinear"]
