"""One seedable source of randomness for weight initialisation and dropout.

``minicnn.manual_seed(0)`` makes every later model, initialisation and dropout mask
reproducible, as ``torch.manual_seed`` does.
"""
import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed):
    """Reset the global generator; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def get_rng(rng=None):
    """``rng`` itself if it is a Generator, a new Generator if it is an int, else the global one."""
    if rng is None:
        return _generator
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)
