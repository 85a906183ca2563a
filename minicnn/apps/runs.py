"""A finished run read back: its config, and new images prepared the way it was trained.

``python -m minicnn predict`` and ``python -m minicnn show`` both read a checkpoint's run
folder (``checkpoint.npz`` beside ``metrics.json``) and feed the model image files; this is
the code they share.
"""
import json
import os

import numpy as np

from .. import data
from ..core.errors import CheckpointError
from ..train import checkpoint as ckpt


def prepare(images, preprocessing):
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1], then normalised if the
    run asked for it."""
    x = data.to_float(images)
    if preprocessing.get("mean") is not None:
        x = data.normalize(x, preprocessing["mean"], preprocessing["std"])
    return x


def run_config(checkpoint_path):
    """The run's config: kept in the checkpoint, or (files written before) in metrics.json beside it."""
    progress = ckpt.read_meta(checkpoint_path).get("progress", {})
    if progress.get("options", {}).get("preprocessing"):
        return progress["options"]
    path = os.path.join(os.path.dirname(checkpoint_path), "metrics.json")
    if not os.path.exists(path):
        raise CheckpointError(f"{checkpoint_path} does not say how its run read the data (it was "
                              f"not written by python -m minicnn train), and there is no "
                              f"metrics.json beside it")
    with open(path) as f:
        return json.load(f)["config"]


def input_shape(config, model):
    """(C, H, W) the run fed its model (an image folder may have been read at any size)."""
    return tuple(config.get("input_shape") or (
        model.spec.input_shape if hasattr(model, "spec") else (1, 28, 28)))


def read_image(path, shape, preprocessing, invert=False):
    """An image file as the model sees it: (1, C, H, W) float32 for ``shape`` (C, H, W).

    Converted to grey (C = 1) or RGB (C = 3), resized to H × W (bilinear), inverted when asked
    (Fashion-MNIST and MNIST are light objects on black), then ``prepare``d.
    """
    from PIL import Image
    channels, height, width = shape
    with Image.open(path) as img:   # OSError (PIL's UnidentifiedImageError) for a bad file
        img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
        pixels = np.asarray(img, dtype=np.uint8)
    if invert:
        pixels = 255 - pixels
    x = prepare(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)[None], preprocessing)
    return x.reshape(1, channels, height, width)


def probabilities(outputs, loss):
    """Class probabilities from whatever the model ends with: logits, log-probabilities or probabilities."""
    if loss == "categorical":
        return outputs
    if loss == "nll":
        return np.exp(outputs)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)
