"""Image folders written on disk for tests: random pictures of a few patterns, one folder per class.

    write_folder(tmp_path / "shapes", ("hstripes", "checkers", "blobs"), train=40, test=20, seed=0)
    # shapes/train/hstripes/0000.png ... shapes/test/blobs/0019.jpg

Every picture is drawn at random: its size (24 to 47 pixels a side, not square), the period
and phase of its stripes or checks, where its blobs are, its two colours (one dark, one light,
in either order, so colour says nothing about the class) and strong Gaussian noise on every
pixel. Only the pattern tells the classes apart, so a network that classifies held-out files
well has learnt something.
"""
import numpy as np
from PIL import Image

PATTERNS = ("hstripes", "vstripes", "checkers", "blobs")


def pattern(kind, height, width, rng):
    """(height, width) floats in [-1, 1]: one random instance of the pattern ``kind``."""
    yy, xx = np.mgrid[0:height, 0:width]
    yy, xx = yy / height, xx / width           # the period is a fraction of the picture
    period = rng.uniform(0.2, 0.34)
    phase_y, phase_x = rng.uniform(0, 2 * np.pi, 2)
    if kind == "hstripes":
        return np.sin(2 * np.pi * yy / period + phase_y)
    if kind == "vstripes":
        return np.sin(2 * np.pi * xx / period + phase_x)
    if kind == "checkers":
        return np.sign(np.sin(2 * np.pi * yy / period + phase_y) * np.sin(2 * np.pi * xx / period + phase_x))
    if kind == "blobs":
        out = np.zeros((height, width))
        for _ in range(rng.integers(1, 4)):
            cy, cx, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.12, 0.25)
            out += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r ** 2))
        return 2 * out / out.max() - 1
    raise ValueError(f"unknown pattern {kind!r}; known: {PATTERNS}")


def picture(kind, rng, noise=30.0):
    """One RGB picture (H, W, 3) uint8 of ``kind``, random size, colours and noise."""
    height, width = rng.integers(24, 48, 2)
    # two random colours, one dark and one light, in random order: colour says nothing
    dark, light = rng.uniform(0, 100, 3), rng.uniform(155, 255, 3)
    if rng.random() < 0.5:
        dark, light = light, dark
    mix = (pattern(kind, height, width, rng)[..., None] + 1) / 2
    pixels = dark + (light - dark) * mix + rng.normal(0, noise, (height, width, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def write_folder(root, kinds=PATTERNS, train=40, test=20, seed=0, splits=("train", "test")):
    """Write ``root/<split>/<kind>/NNNN.png|jpg`` (PNG and JPEG alternating); returns root."""
    rng = np.random.default_rng(seed)
    for split, count in zip(splits, (train, test)):
        for kind in kinds if count else ():
            folder = root / split / kind
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                ext = ".png" if i % 2 else ".jpg"
                Image.fromarray(picture(kind, rng)).save(folder / f"{i:04d}{ext}")
    return root
