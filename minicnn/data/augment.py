"""Random shear, zoom and flips with Keras' ImageDataGenerator's vocabulary, in NumPy.

    aug = Augment(rescale=1 / 255, shear_range=10, zoom_range=0.1, horizontal_flip=True, seed=0)
    xb = aug(images)          # (N, C, H, W) uint8 -> (N, C, H, W) float32, one random transform each

    params = aug.random_transform_params()      # {'shear': 4.2, 'zx': 0.93, 'zy': 1.07, 'flip_horizontal': True}
    out = aug.apply_transform(image, params)    # one image (C, H, W), the same pixels as Keras'

Keras' semantics, kept on purpose (keras/src/legacy/preprocessing/image.py):

* the order: the affine warp, then the flips, then ``rescale`` (``standardize`` runs after
  ``apply_transform``), so ``cval`` is in the units of the input, before rescaling;
* ``zoom_range=z`` draws zx and zy independently from [1 - z, 1 + z]; the factor multiplies the
  *input* coordinates, so zx = 1.2 shows a field of view 1.2 times wider (the content shrinks);
* ``shear_range`` is an angle in degrees: shear ~ U(-shear_range, shear_range);
* the warp maps every output pixel back to an input coordinate (the inverse map) about the point
  (row, col) = (W/2 - 0.5, H/2 - 0.5). For a square image that is the centre; for a non-square one
  Keras swaps H and W there (``transform_matrix_offset_center(matrix, h, w)`` is called before the
  matrix's axes are swapped), and so does this module, so that both give the same pixels.

Fill modes: ``"nearest"`` (Keras' default) repeats the edge pixel; ``"constant"`` fills with
``cval`` (0 = black, what torchvision's RandomAffine does). Interpolation: order 1 (bilinear,
Keras' default) or 0 (nearest neighbour), as scipy.ndimage computes them; minicnn has no scipy.
"""
import numpy as np

from ..core.random import get_rng

FILL_MODES = ("nearest", "constant")
INTERPOLATION_ORDERS = (0, 1)

#: The keys of Keras' transform dict that move pixels; apply_transform understands all of them.
GEOMETRIC_KEYS = ("theta", "tx", "ty", "shear", "zx", "zy", "flip_horizontal", "flip_vertical")


def _check_fill(fill_mode, order):
    if fill_mode not in FILL_MODES:
        raise ValueError(f"fill_mode must be one of {FILL_MODES}, got {fill_mode!r} "
                         f"(Keras' 'reflect' and 'wrap' are not implemented)")
    if isinstance(order, bool) or order not in INTERPOLATION_ORDERS:
        raise ValueError(f"interpolation_order must be 0 (nearest) or 1 (bilinear), got {order!r}; "
                         f"orders 2-5 need scipy's spline prefilter")


def transform_matrix(params, height, width):
    """Keras' 3x3 inverse map for ``params``, in (row, col) array coordinates, or None for identity.

    Returns M such that the output pixel (r, c) samples the input at M @ (r, c, 1). The matrices
    are built and multiplied in Keras' order (rotation, shift, shear, zoom, then the centring),
    so the coordinates come out bit for bit as scipy receives them from Keras.
    """
    theta, tx, ty = params.get("theta", 0), params.get("tx", 0), params.get("ty", 0)
    shear, zx, zy = params.get("shear", 0), params.get("zx", 1), params.get("zy", 1)
    parts = []
    if theta != 0:
        t = np.deg2rad(theta)
        parts.append(np.array([[np.cos(t), -np.sin(t), 0], [np.sin(t), np.cos(t), 0], [0, 0, 1]]))
    if tx != 0 or ty != 0:
        parts.append(np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1]]))
    if shear != 0:
        s = np.deg2rad(shear)
        parts.append(np.array([[1, -np.sin(s), 0], [0, np.cos(s), 0], [0, 0, 1]]))
    if zx != 1 or zy != 1:
        parts.append(np.array([[zx, 0, 0], [0, zy, 0], [0, 0, 1]]))
    if not parts:
        return None
    matrix = parts[0]
    for part in parts[1:]:
        matrix = np.dot(matrix, part)
    # Rotate/shear/zoom about the centre: move it to the origin, transform, move it back.
    # Keras passes (h, w) here although, after the swap below, the first axis is the column.
    o_x, o_y = float(height) / 2 - 0.5, float(width) / 2 - 0.5
    offset = np.array([[1, 0, o_x], [0, 1, o_y], [0, 0, 1]])
    reset = np.array([[1, 0, -o_x], [0, 1, -o_y], [0, 0, 1]])
    matrix = np.dot(np.dot(offset, matrix), reset)
    # The matrix is written for (x, y) = (col, row); arrays are indexed (row, col): M' = P M P.
    matrix[:, [0, 1]] = matrix[:, [1, 0]]
    matrix[[0, 1]] = matrix[[1, 0]]
    return matrix


def sample(image, rows, cols, fill_mode="nearest", cval=0.0, order=1):
    """Read ``image`` (C, H, W) at real-valued coordinates ``rows``, ``cols`` (both (H', W')).

    order 1: bilinear between the four neighbouring pixels; order 0: the nearest pixel (ties
    round up). A coordinate outside [0, H - 1] x [0, W - 1] reads the edge pixel
    (``fill_mode="nearest"``) or ``cval`` (``"constant"``; no blending with cval at the border,
    as scipy.ndimage's mode "constant"). Returns (C, H', W') float64.
    """
    _check_fill(fill_mode, order)
    image = np.asarray(image, dtype=np.float64)
    _, height, width = image.shape
    inside = (rows >= 0) & (rows <= height - 1) & (cols >= 0) & (cols <= width - 1)

    def pixel(index, size):
        # Beyond the border, the edge pixel ("nearest"; "constant" replaces those values below).
        return np.clip(index, 0, size - 1).astype(np.intp)

    flat = image.reshape(len(image), height * width)

    def at(r, c):
        """Every channel's pixel at integer (r, c): (C, H', W'); np.take on flat indices is
        several times faster than image[:, r, c]."""
        return np.take(flat, r * width + c, axis=1)

    if order == 0:
        out = at(pixel(np.floor(rows + 0.5), height), pixel(np.floor(cols + 0.5), width))
    else:
        r0, c0 = np.floor(rows), np.floor(cols)
        # Weights of the two neighbours along each axis; the second is 1 - w0 (not the fraction
        # itself) so that they sum to exactly 1, as in scipy's spline weights.
        wr0 = 1.0 - (rows - r0)
        wc0 = 1.0 - (cols - c0)
        wr1, wc1 = 1.0 - wr0, 1.0 - wc0
        r0, r1 = pixel(r0, height), pixel(r0 + 1, height)
        c0, c1 = pixel(c0, width), pixel(c0 + 1, width)
        # The four neighbours, summed in scipy's order: the results agree to the last bit.
        out = (at(r0, c0) * wr0 * wc0 + at(r0, c1) * wr0 * wc1
               + at(r1, c0) * wr1 * wc0 + at(r1, c1) * wr1 * wc1)
    if fill_mode == "constant":
        out = np.where(inside, out, float(cval))
    return out


def apply_transform(image, params, fill_mode="nearest", cval=0.0, order=1):
    """Keras' ``ImageDataGenerator.apply_transform`` for one image (C, H, W); returns (C, H, W).

    params: Keras' transform dict; the keys in ``GEOMETRIC_KEYS`` are used (missing ones mean
    "no change"), so a dict from Keras' ``get_random_transform`` works as is. The warp first
    (every output pixel looks up its input coordinate through ``transform_matrix``, then is
    interpolated by ``sample``), then the flips. Identity params return the image unchanged.
    Float images keep their dtype (computed in float64, rounded once); integer images become
    float32, as Keras' iterators cast to float32 before transforming.
    """
    _check_fill(fill_mode, order)
    image = np.asarray(image)
    if image.ndim != 3:
        raise ValueError(f"apply_transform expects one image (C, H, W), got shape {image.shape}; "
                         f"for a batch (N, C, H, W) call an Augment")
    unknown = set(params) - set(GEOMETRIC_KEYS) - {"channel_shift_intensity", "brightness"}
    if unknown:
        raise ValueError(f"apply_transform: unknown transform keys {sorted(unknown)}; "
                         f"known: {list(GEOMETRIC_KEYS)}")
    for key in ("channel_shift_intensity", "brightness"):
        if params.get(key) is not None:
            raise ValueError(f"apply_transform: {key!r} is not implemented (got {params[key]!r})")
    dtype = image.dtype if image.dtype.kind == "f" else np.dtype(np.float32)
    out = image.astype(dtype, copy=True)
    matrix = transform_matrix(params, image.shape[1], image.shape[2])
    if matrix is not None:
        rows, cols = np.meshgrid(np.arange(image.shape[1], dtype=np.float64),
                                 np.arange(image.shape[2], dtype=np.float64), indexing="ij")
        # The inverse map, summed in scipy's order so the coordinates match it to the last bit
        # (with fill_mode="constant" a coordinate of -1e-16 instead of 0 would read cval).
        in_rows = matrix[0, 2] + rows * matrix[0, 0] + cols * matrix[0, 1]
        in_cols = matrix[1, 2] + rows * matrix[1, 0] + cols * matrix[1, 1]
        out = sample(image, in_rows, in_cols, fill_mode, cval, order).astype(dtype)
    if params.get("flip_horizontal", False):
        out = out[:, :, ::-1]
    if params.get("flip_vertical", False):
        out = out[:, ::-1, :]
    return np.ascontiguousarray(out)


class Augment:
    """Random augmentation of (N, C, H, W) batches, configured like Keras' ImageDataGenerator.

    rescale: multiply by this after transforming (e.g. 1/255); None or 0: no rescaling.
    shear_range: shear angle in degrees, drawn from U(-shear_range, shear_range).
    zoom_range: float z -> zx, zy ~ U(1 - z, 1 + z); or a pair [lower, upper].
    horizontal_flip: flip half of the images left-right.
    fill_mode: "nearest" (Keras' default) or "constant" (``cval``; 0 = black, like torchvision).
    interpolation_order: 1 (bilinear, Keras' default) or 0 (nearest neighbour).
    seed: the generator used when a call gets no ``rng`` (an int, a Generator, or None for
        minicnn's global generator, which ``minicnn.manual_seed`` fixes).
    dtype: the output dtype (Keras: float32).
    """

    def __init__(self, rescale=None, shear_range=0.0, zoom_range=0.0, horizontal_flip=False,
                 fill_mode="nearest", cval=0.0, interpolation_order=1, seed=None, dtype=np.float32):
        _check_fill(fill_mode, interpolation_order)
        if isinstance(zoom_range, (int, float)) and not isinstance(zoom_range, bool):
            zoom = [1 - zoom_range, 1 + zoom_range]
        elif (isinstance(zoom_range, (list, tuple)) and len(zoom_range) == 2
              and all(isinstance(z, (int, float)) for z in zoom_range)):
            zoom = [zoom_range[0], zoom_range[1]]
        else:
            raise ValueError(f"zoom_range must be a float or a pair [lower, upper], got {zoom_range!r}")
        if shear_range < 0 or zoom[0] <= 0 or zoom[1] < zoom[0]:
            raise ValueError(f"Augment: need shear_range >= 0 and 0 < lower <= upper zoom, got "
                             f"shear_range={shear_range}, zoom [{zoom[0]}, {zoom[1]}]")
        self.rescale, self.shear_range, self.zoom_range = rescale, shear_range, zoom
        self.horizontal_flip, self.fill_mode, self.cval = bool(horizontal_flip), fill_mode, cval
        self.interpolation_order, self.dtype = interpolation_order, np.dtype(dtype)
        self.rng = get_rng(seed)

    def _rng(self, rng):
        if rng is None:
            return self.rng
        # A legacy RandomState has the same uniform/random methods: RandomState(s) reproduces
        # Keras' get_random_transform(shape, seed=s), which seeds NumPy's legacy global state.
        return rng if isinstance(rng, np.random.RandomState) else get_rng(rng)

    def random_transform_params(self, rng=None):
        """One random transform: {'shear': degrees, 'zx', 'zy', 'flip_horizontal': bool}.

        The numbers are drawn in Keras' order with Keras' calls, including the flip_vertical
        draw that Keras always makes, so the same stream gives the same parameters.
        rng: a Generator, an int seed, a np.random.RandomState, or None (this Augment's own).
        """
        rng = self._rng(rng)
        shear = float(rng.uniform(-self.shear_range, self.shear_range)) if self.shear_range else 0
        if self.zoom_range[0] == 1 and self.zoom_range[1] == 1:
            zx, zy = 1, 1
        else:
            zx, zy = (float(z) for z in rng.uniform(self.zoom_range[0], self.zoom_range[1], 2))
        flip_horizontal = bool(rng.random() < 0.5) and self.horizontal_flip
        rng.random()  # Keras' flip_vertical draw: kept so that the streams stay in step
        return {"shear": shear, "zx": zx, "zy": zy, "flip_horizontal": flip_horizontal}

    def apply_transform(self, image, params):
        """``apply_transform`` with this Augment's fill mode, cval and order; (C, H, W) -> (C, H, W).

        Like Keras' method of the same name, it does not rescale.
        """
        return apply_transform(image, params, self.fill_mode, self.cval, self.interpolation_order)

    def __call__(self, x, rng=None):
        """A batch (N, C, H, W) -> (N, C, H, W) of ``dtype``: each image warped with its own
        random parameters, then rescaled. ``rng`` as in ``random_transform_params``; a
        DataLoader(..., transform=augment) passes one derived from its seed and the epoch.
        """
        x = np.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"Augment expects a batch (N, C, H, W), got shape {x.shape}")
        rng = self._rng(rng)
        out = np.empty(x.shape, dtype=self.dtype)
        for i, image in enumerate(x):
            params = self.random_transform_params(rng)
            out[i] = self.apply_transform(image.astype(self.dtype), params)
        if self.rescale:
            out *= self.rescale  # after the warp, as Keras' standardize runs after apply_transform
        return out

    def __repr__(self):
        return (f"Augment(rescale={self.rescale}, shear_range={self.shear_range}, "
                f"zoom_range={self.zoom_range}, horizontal_flip={self.horizontal_flip}, "
                f"fill_mode={self.fill_mode!r}, cval={self.cval}, "
                f"interpolation_order={self.interpolation_order})")
