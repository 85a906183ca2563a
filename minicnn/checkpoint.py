"""Checkpoints: weights, optimizer state and progress in one .npz, with no pickle inside.

A checkpoint file holds
* ``param/<name>``: every parameter, named as ``model.named_parameters()`` names it ("0.weight");
* ``optim/<key>``: the optimizer's ``state_dict()`` (plain arrays and numbers);
* ``meta``: a JSON string: the architecture (each layer's type and constructor arguments), the
  training progress (epoch, batch, history) and the state of every random generator, so that a
  resumed run draws the same dropout masks and batches as an uninterrupted one.

It is read with ``np.load(path, allow_pickle=False)``: a file from elsewhere can hold data only,
never code. Writes are atomic: a temporary file in the same folder, then ``os.replace``, so an
interrupted save leaves the previous checkpoint intact.
"""
import inspect
import json
import os
import tempfile

import numpy as np

from . import layers as L
from .model import Sequential

FORMAT = "minicnn-checkpoint-1"


# ----------------------------------------------------------------------------------------
# architecture <-> JSON
# ----------------------------------------------------------------------------------------
def layer_config(layer):
    """{"type": "Conv2D", "args": {...}}: the constructor arguments read back from the layer."""
    if isinstance(layer, Sequential):
        return {"type": "Sequential", "layers": [layer_config(sub) for sub in layer.layers]}
    args = {}
    for name, param in inspect.signature(type(layer).__init__).parameters.items():
        if name in ("self", "rng", "seed") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "bias":
            args[name] = getattr(layer, "bias", None) is not None
        elif name == "dtype":
            args[name] = str(np.dtype(layer.weight.data.dtype)) if hasattr(layer, "weight") else None
        elif hasattr(layer, name):
            value = getattr(layer, name)
            args[name] = list(value) if isinstance(value, tuple) else value
    return {"type": type(layer).__name__, "args": {k: v for k, v in args.items() if v is not None}}


def build(config):
    """A fresh model from ``layer_config``'s output (weights initialised, not loaded)."""
    if config["type"] == "Sequential":
        return Sequential([build(sub) for sub in config["layers"]])
    cls = getattr(L, config["type"], None)
    if cls is None:
        raise ValueError(f"checkpoint names an unknown layer type {config['type']!r}")
    args = {k: (tuple(tuple(x) if isinstance(x, list) else x for x in v) if isinstance(v, list) else v)
            for k, v in config["args"].items()}
    if "dtype" in args:
        args["dtype"] = np.dtype(args["dtype"])
    return cls(**args)


# ----------------------------------------------------------------------------------------
# random generators (dropout masks) <-> JSON
# ----------------------------------------------------------------------------------------
def _generators(model):
    """[(path, generator)] for every np.random.Generator held by a layer of the model."""
    found = []
    layers = model.layers if isinstance(model, Sequential) else [model]
    for i, layer in enumerate(layers):
        if isinstance(layer, Sequential):
            found += [(f"{i}.{p}", g) for p, g in _generators(layer)]
            continue
        for attr, value in sorted(vars(layer).items()):
            if isinstance(value, np.random.Generator):
                found.append((f"{i}.{attr}", value))
    return found


def generator_states(model):
    return {path: gen.bit_generator.state for path, gen in _generators(model)}


def restore_generator_states(model, states):
    for path, gen in _generators(model):
        if path in states:
            gen.bit_generator.state = states[path]


# ----------------------------------------------------------------------------------------
# save / load
# ----------------------------------------------------------------------------------------
def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over ``path``."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def save(path, model, optimizer=None, progress=None):
    """Write model weights, optimizer state and ``progress`` (a JSON-able dict) to ``path`` (.npz)."""
    arrays = {f"param/{name}": p.data for name, p in model.named_parameters()}
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(value)
    meta = {"format": FORMAT, "architecture": layer_config(model),
            "generators": generator_states(model), "progress": progress or {},
            "spec": getattr(getattr(model, "spec", None), "name", None)}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def read(path):
    """(meta dict, {name: array} of parameters, {key: value} optimizer state) from a checkpoint."""
    with np.load(path, allow_pickle=False) as npz:
        if "meta" not in npz.files:
            raise ValueError(f"{path} is not a minicnn checkpoint (no 'meta' entry)")
        meta = json.loads(str(npz["meta"]))
        params = {k[len("param/"):]: npz[k] for k in npz.files if k.startswith("param/")}
        optim = {k[len("optim/"):]: npz[k] for k in npz.files if k.startswith("optim/")}
    optim = {k: (v.item() if v.ndim == 0 else v) for k, v in optim.items()}
    return meta, params, optim


def load_weights(model, params, source="checkpoint"):
    """Copy ``params`` ({name: array}) into ``model``; ValueError naming the first that differs."""
    named = model.named_parameters()
    extra = [n for n in params if n not in dict(named)]
    for name, p in named:
        if name not in params:
            raise ValueError(f"{source} has no parameter {name!r} (model expects {p.data.shape}); "
                             f"it holds {sorted(params)}")
        if params[name].shape != p.data.shape:
            raise ValueError(f"parameter {name!r}: {source} holds shape {params[name].shape}, "
                             f"the model expects {p.data.shape}")
    if extra:
        raise ValueError(f"{source} holds parameters the model does not have: {extra}")
    for name, p in named:
        p.data[...] = params[name]


def load(path, model=None, optimizer=None):
    """Load a checkpoint; returns (model, progress dict).

    With ``model=None`` the model is rebuilt from the architecture stored in the file.
    With an ``optimizer``, its state is restored too (resuming needs it).
    """
    meta, params, optim = read(path)
    if model is None:
        model = build(meta["architecture"])
        if meta.get("spec"):
            from . import zoo
            model.spec = zoo.spec(meta["spec"])
    load_weights(model, params, source=str(path))
    restore_generator_states(model, meta.get("generators", {}))
    if optimizer is not None and optim:
        optimizer.load_state_dict(optim)
    return model, meta.get("progress", {})
