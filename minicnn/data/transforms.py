"""Scaling images the way the frameworks do, where tutorials most often slip.

    x = to_float(images)                      # (N, 28, 28) uint8 0..255 -> (N, 1, 28, 28) float32 0..1
    x = normalize(x, MNIST_MEAN, MNIST_STD)   # zero mean, unit std (statistics of the [0, 1] pixels)

The classic mistakes: normalising 0..255 values with statistics of 0..1 values (or the
reverse), and dividing by 255 twice. ``to_float`` accepts only uint8 and ``normalize`` only
floats, so both mistakes raise instead of training silently on badly scaled inputs.
"""
import numpy as np

#: The MNIST statistics used by PyTorch's examples (examples/mnist/main.py): mean and std of
#: all training pixels after scaling to [0, 1]. ``dataset_mean_std("mnist")`` recomputes them.
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081


def to_float(images, dtype=np.float32):
    """uint8 images 0..255 -> floats in [0, 1] with a channel axis, like torchvision's ToTensor.

    (N, H, W) -> (N, 1, H, W); (N, C, H, W) keeps its shape. Returns ``dtype``.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise ValueError(f"to_float expects uint8 images (0..255), got {images.dtype}; "
                         f"float images are probably scaled already (dividing by 255 twice "
                         f"would shrink them to 0..{1 / 255:.4f})")
    if images.ndim == 3:
        images = images[:, None]  # NCHW: MNIST has one channel
    elif images.ndim != 4:
        raise ValueError(f"to_float expects (N, H, W) or (N, C, H, W) images, got shape {images.shape}")
    out = images.astype(dtype)
    out /= 255  # in place: one temporary instead of two
    return out


def _per_channel(value, x, what):
    v = np.asarray(value, dtype=np.float64)
    if v.ndim == 0:
        return v
    if v.ndim != 1 or x.ndim != 4 or len(v) != x.shape[1]:
        raise ValueError(f"normalize: {what} has shape {v.shape}; per-channel values need (C,) with "
                         f"C = x.shape[1] of an (N, C, H, W) input, got x of shape {x.shape}")
    return v[:, None, None]


def normalize(x, mean, std):
    """(x - mean) / std in x's float dtype; mean and std are scalars or per-channel (C,) sequences.

    x: float images, e.g. (N, 1, 28, 28) from ``to_float``. Returns an array of x's shape.
    """
    x = np.asarray(x)
    if x.dtype.kind != "f":
        raise ValueError(f"normalize expects float images (call to_float first), got {x.dtype}; "
                         f"the usual mean/std are statistics of pixels in [0, 1], not 0..255")
    m, s = _per_channel(mean, x, "mean"), _per_channel(std, x, "std")
    if np.any(s <= 0):
        raise ValueError(f"normalize: std must be positive, got {std}")
    return ((x - m.astype(x.dtype)) / s.astype(x.dtype)).astype(x.dtype, copy=False)


def mean_std(x, per_channel=False):
    """Mean and (population) standard deviation of all values of ``x``, accumulated in float64.

    x: any array, e.g. (N, 1, 28, 28) floats from ``to_float``. per_channel=True on an
    (N, C, H, W) array returns two (C,) arrays instead of two floats.
    """
    x = np.asarray(x)
    if per_channel:
        if x.ndim != 4:
            raise ValueError(f"mean_std(per_channel=True) expects (N, C, H, W), got shape {x.shape}")
        pairs = [mean_std(x[:, c]) for c in range(x.shape[1])]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    if x.size == 0:
        raise ValueError("mean_std of an empty array")
    if x.dtype == np.uint8:  # exact and fast: a histogram of the 256 possible values
        counts = np.bincount(x.ravel(), minlength=256).astype(np.float64)
        values = np.arange(256, dtype=np.float64)
        mean = counts @ values / x.size
        return float(mean), float(np.sqrt(counts @ (values - mean) ** 2 / x.size))
    flat = x.reshape(-1)
    mean = flat.mean(dtype=np.float64)
    # Two passes in chunks: exact-ish in float64 without a float64 copy of the whole array.
    step = 1 << 22
    sq = sum(float(np.square(flat[i:i + step].astype(np.float64) - mean).sum())
             for i in range(0, flat.size, step))
    return float(mean), float(np.sqrt(sq / flat.size))


_stats = {}


def dataset_mean_std(name, split="train", root=None, download=True):
    """Mean and std of a dataset's pixels scaled to [0, 1], as floats (computed, then remembered).

    ``dataset_mean_std("mnist")`` reproduces MNIST_MEAN, MNIST_STD to their 4 decimals;
    ``dataset_mean_std("fashion-mnist")`` gives the Fashion-MNIST pair the same way.
    """
    from .datasets import get_dataset, load
    key = (get_dataset(name).name, split)
    if key not in _stats:
        images, _ = load(name, split, root=root, download=download)
        mean, std = mean_std(images)  # exact on uint8; /255 maps the statistics to [0, 1]
        _stats[key] = (mean / 255, std / 255)
    return _stats[key]


def one_hot(labels, num_classes, dtype=np.float32):
    """(N,) integer labels in 0..num_classes-1 -> (N, num_classes) one-hot rows of ``dtype``."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise ValueError(f"one_hot expects integer labels, got {labels.dtype}")
    if labels.ndim != 1:
        raise ValueError(f"one_hot expects labels of shape (N,), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in 0..{num_classes - 1}, "
                         f"got range {labels.min()}..{labels.max()}")
    out = np.zeros((len(labels), num_classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out
