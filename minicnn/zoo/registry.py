"""The zoo's registry: each model function registers with the Spec of what it eats.

``get(name)`` builds a model by name and ``spec(name)`` says, without building it, its input
shape (C, H, W), the loss it is trained with and the dataset of its article.
"""
from dataclasses import dataclass

from ..core.random import get_rng


@dataclass(frozen=True)
class Spec:
    """What a zoo model expects: input (C, H, W), the loss it is trained with, its dataset."""
    name: str
    input_shape: tuple
    loss: str          # "cross_entropy" (logits), "nll" (log-probabilities), "categorical" (probabilities)
    dataset: str
    article: str


_REGISTRY = {}


def register(input_shape, loss, dataset, article):
    def wrap(fn):
        spec = Spec(fn.__name__, input_shape, loss, dataset, article)

        def build(**kwargs):
            # one generator for the whole model: an int seed given to every layer would restart
            # the same random stream in each layer, and their initial weights would be correlated
            kwargs["rng"] = get_rng(kwargs.get("rng"))
            model = fn(**kwargs)
            # a model built at another size (rps_cnn(image_size=64)) sets its own spec
            model.spec = vars(model).get("spec") or spec
            return model
        build.__name__, build.__doc__, build.spec = fn.__name__, fn.__doc__, spec
        _REGISTRY[fn.__name__] = build
        return build
    return wrap


def names():
    """Every registered model name, in the order the models were defined."""
    return tuple(_REGISTRY)


def get(name, **kwargs):
    """A fresh model by name; ValueError listing the names when it is unknown."""
    try:
        build = _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(names())}") from None
    return build(**kwargs)


def spec(name):
    """The Spec of a model name, without building it."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; the zoo has: {', '.join(names())}")
    return _REGISTRY[name].spec
