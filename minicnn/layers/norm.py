"""Batch normalisation over the channels of an NCHW batch, with PyTorch's or Keras' conventions."""
import numbers

import numpy as np

from .. import kernels
from ..core.errors import ShapeError
from ..core.parameter import Parameter
from .base import Layer, shape_product

# convention -> (eps, momentum) defaults, and what momentum means
CONVENTIONS = {
    "torch": (1e-5, 0.1),    # running = (1 − momentum)·running + momentum·batch
    "keras": (1e-3, 0.99),   # moving  = momentum·moving + (1 − momentum)·batch
}


class BatchNorm2D(Layer):
    """Normalise each channel with statistics over (N, H, W), then scale and shift it.

    BatchNorm2D(num_features=C, eps=None, momentum=None, convention="torch", affine=True)

    input  x:            (N, C, H, W)
    weight (γ), bias (β): (C,)  ones and zeros (absent with affine=False)
    buffers running_mean (C,) zeros, running_var (C,) ones, num_batches_tracked () int64
    output y:            (N, C, H, W)

        y[n, c, h, w] = γ[c] · (x[n, c, h, w] − mean[c]) / sqrt(var[c] + eps) + β[c]

    In training mode mean and var are the batch's, per channel over the n = N·H·W values
    (var the BIASED one, Σ(x − mean)²/n), and the running statistics move towards them:

        convention="torch" (eps 1e-5, momentum 0.1, torch.nn.BatchNorm2d):
            running_mean = (1 − momentum)·running_mean + momentum·mean
            running_var  = (1 − momentum)·running_var  + momentum·var·n/(n − 1)   (UNBIASED)
        convention="keras" (eps 1e-3, momentum 0.99, keras.layers.BatchNormalization):
            moving_mean  = momentum·moving_mean + (1 − momentum)·mean
            moving_var   = momentum·moving_var  + (1 − momentum)·var               (biased)

    So Keras' momentum 0.99 is PyTorch's momentum 0.01: the two call opposite weights
    "momentum". In evaluation mode the running statistics replace the batch's and nothing moves.

    Frozen (``layer.trainable = False``): Keras 3's rule by default — the layer uses its running
    statistics and leaves them alone even in training mode, so a frozen pretrained network
    computes in fine-tuning what it computed when it was trained. PyTorch has no such rule:
    ``requires_grad_(False)`` only stops the gradient updates; in ``train()`` mode the layer
    still normalises with the batch's statistics and still updates its running ones. Set
    ``frozen_uses_batch_stats=True`` for that behaviour.

    The layer computes in ``dtype`` (float32 by default); inputs are cast to it.
    """

    per_image = True

    def __init__(self, num_features, eps=None, momentum=None, convention="torch", affine=True,
                 frozen_uses_batch_stats=False, dtype=np.float32):
        super().__init__()
        if convention not in CONVENTIONS:
            raise ValueError(f"BatchNorm2D: convention must be one of {sorted(CONVENTIONS)}, "
                             f"got {convention!r}")
        default_eps, default_momentum = CONVENTIONS[convention]
        if (not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool)
                or num_features < 1):
            raise ValueError(f"BatchNorm2D: num_features must be a positive int, got {num_features!r}")
        eps = default_eps if eps is None else eps
        momentum = default_momentum if momentum is None else momentum
        if not isinstance(eps, numbers.Real) or isinstance(eps, bool) or not eps > 0:
            raise ValueError(f"BatchNorm2D: eps must be a number > 0, got {eps!r}")
        if not isinstance(momentum, numbers.Real) or isinstance(momentum, bool) or not 0 <= momentum <= 1:
            raise ValueError(f"BatchNorm2D: momentum must be a number in [0, 1], got {momentum!r}")
        self.dtype = np.dtype(dtype)
        if not np.issubdtype(self.dtype, np.floating):
            raise ValueError(f"BatchNorm2D: dtype must be a floating type, got {self.dtype}")
        self.num_features = int(num_features)
        self.eps = float(eps)
        self.momentum = float(momentum)
        self.convention = convention
        self.affine = bool(affine)
        self.frozen_uses_batch_stats = bool(frozen_uses_batch_stats)
        c = self.num_features
        self.weight = Parameter(np.ones(c, self.dtype), "weight") if affine else None
        self.bias = Parameter(np.zeros(c, self.dtype), "bias") if affine else None
        self.register_buffer("running_mean", np.zeros(c, self.dtype))
        self.register_buffer("running_var", np.ones(c, self.dtype))
        self.register_buffer("num_batches_tracked", np.zeros((), np.int64))
        self._cache = None

    # -- shapes ---------------------------------------------------------------------------
    def output_shape(self, input_shape):
        shape = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        if shape[1] != self.num_features:
            raise ShapeError(
                f"{self!r}: expected {self.num_features} channels: input (N, {self.num_features}, "
                f"H, W), got {shape} with {shape[1]} channels (num_features must equal the "
                f"previous layer's output channels, {shape[1]} here)")
        return shape

    def explain(self, input_shape):
        n, c, h, w = self._expect_rank(input_shape, 4, "(N, C, H, W)")
        return [f"per channel: mean and variance over N·H·W = {shape_product((n, h, w))} = "
                f"{n * h * w} values; shape unchanged"]

    def uses_batch_statistics(self):
        """True when the next forward normalises with the batch's mean and variance."""
        return self.training and (self.frozen_uses_batch_stats or self.trainable)

    def eval_affine(self):
        """(scale, shift), each (C,) in the layer's dtype: evaluation mode as y = scale·x + shift,
        scale = γ / √(running_var + ε), shift = β − scale·running_mean (γ = 1, β = 0 without
        ``affine``), computed in float64 and rounded once. ``layers.fusion`` folds them into
        the convolution before."""
        scale = 1 / np.sqrt(self.running_var.astype(np.float64) + self.eps)
        if self.affine:
            scale = scale * self.weight.data
        shift = -scale * self.running_mean
        if self.affine:
            shift = shift + self.bias.data
        return scale.astype(self.dtype), shift.astype(self.dtype)

    # -- the two passes ---------------------------------------------------------------------
    def forward(self, x, relu=False):
        """x (N, C, H, W) -> y (N, C, H, W); in training mode also moves the running statistics.
        relu: y = max(y, 0), the ReLU after the layer applied as y is written
        (``layers.fusion``; the ReLU then keeps y for its backward pass, ``ReLU.computed``).

        The arithmetic runs in ``minicnn.kernels.norm()``'s module (compiled by default)."""
        x = self._check_input(x)
        self._clip = None
        batch = self.uses_batch_statistics()
        weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
        # backward must hand the cache to the module that wrote it, even if kernels.use()
        # switches in between
        self._kernels = kernels.norm()
        if batch:
            n = x.shape[0] * x.shape[2] * x.shape[3]
            if n < 2:
                raise ShapeError(
                    f"{self!r}: training needs more than 1 value per channel to compute a "
                    f"variance, got input {x.shape}: N·H·W = {shape_product((x.shape[0],) + x.shape[2:])}"
                    f" = {n} (use a larger batch, or eval mode)")
            y, mean, var, cache = self._kernels.forward_train(x, weight, bias, self.eps, relu)
            self._update_running(mean, var, n)
        else:
            y, cache = self._kernels.forward_eval(x, self.running_mean, self.running_var, weight,
                                                  bias, self.eps, relu)
        self._cache = (cache, y.shape)
        return y

    _CACHES = ("_cache", "_x", "_clip")

    def clips_output_gradient(self, y):
        """y, this layer's output in the last forward pass, was clipped by the ReLU after it
        (``layers.fusion``): backward then takes that ReLU's gradient too, dy where y > 0, else
        0, as it reads dy (``ReLU.applied_later``): one pass over the output's size fewer."""
        self._clip = y

    def _update_running(self, mean, var, n):
        m = self.momentum
        if self.convention == "torch":
            unbiased = var * (n / (n - 1))
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean
            self.running_var[...] = (1 - m) * self.running_var + m * unbiased
        else:
            self.running_mean[...] = self.running_mean * m + mean * (1 - m)
            self.running_var[...] = self.running_var * m + var * (1 - m)
        self.num_batches_tracked += 1

    def backward(self, dy):
        """dy (N, C, H, W) -> dx (N, C, H, W); writes weight.grad (dγ) and bias.grad (dβ).

        With batch statistics, mean and var depend on every x, so with x̂ the normalised input
        and g = dy·γ:   dx = (g − mean(g) − x̂ · mean(g · x̂)) / sqrt(var + eps),
        the means over (N, H, W). With running statistics they are constants: dx = g / sqrt(...).
        """
        if self._cache is None:
            raise RuntimeError(f"{self!r}: backward called before forward")
        cache, shape = self._cache
        dy = np.asarray(dy, dtype=self.dtype)
        if dy.shape != shape:
            raise ShapeError(f"{self!r}: backward expected dy of the output's shape {shape}, "
                             f"got {dy.shape}")
        weight = self.weight.data if self.affine else None
        dx, dweight, dbias = self._kernels.backward(dy, cache, weight,
                                                    getattr(self, "_clip", None))
        if self.affine:
            self.weight.grad, self.bias.grad = dweight, dbias
        return dx

    def saved_for_backward(self):
        """What backward reads, as its formulas name it: (x_hat (N, C, H, W), inv_std (C,),
        batch), batch True when the forward pass used the batch's statistics. (The compiled
        kernels keep x and recompute x̂ when needed; this computes it.)"""
        if self._cache is None:
            raise RuntimeError(f"{self!r}: saved_for_backward called before forward")
        return self._kernels.saved_for_backward(self._cache[0])

    def __repr__(self):
        parts = [str(self.num_features), f"eps={self.eps:g}", f"momentum={self.momentum:g}"]
        if self.convention != "torch":
            parts.append(f"convention={self.convention!r}")
        if not self.affine:
            parts.append("affine=False")
        if self.frozen_uses_batch_stats:
            parts.append("frozen_uses_batch_stats=True")
        return f"BatchNorm2D({', '.join(parts)})"
