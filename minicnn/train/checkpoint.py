"""Checkpoints: weights, optimizer state and progress in one .npz, with no pickle inside.

A checkpoint file holds
* ``param/<name>``: every parameter, named as ``model.named_parameters()`` names it ("0.weight",
  "layer1.0.conv1.weight");
* ``buffer/<name>``: every buffer, named as ``model.named_buffers()`` names it
  ("layer1.0.bn1.running_mean"): state that is not trained but must be restored (BatchNorm);
* ``optim/<key>``: the optimizer's ``state_dict()`` (plain arrays and numbers);
* ``meta``: a JSON string: the architecture (each layer's type and constructor arguments,
  nested for containers), which layers and parameters are frozen, the training progress
  (epoch, batch, history) and the state of every random generator, so that a resumed run
  draws the same dropout masks and batches as an uninterrupted one.

Files written before buffers existed hold no ``buffer/`` entries; they load into models that
have no buffers, as before.

It is read with ``np.load(path, allow_pickle=False)``: a file from elsewhere can hold data only,
never code. Writes are atomic: a temporary file in the same folder, then ``os.replace``, so an
interrupted save leaves the previous checkpoint intact.
"""
import dataclasses
import inspect
import json
import os
import zipfile

import numpy as np

from ..core.errors import CheckpointError
from ..core.files import atomic_write
from ..core.parameter import Parameter
from ..layers import Layer, Sequential
from .. import zoo

FORMAT = "minicnn-checkpoint-1"


# ----------------------------------------------------------------------------------------
# architecture <-> JSON
# ----------------------------------------------------------------------------------------
def layer_config(layer):
    """{"type": "Conv2D", "args": {...}}: the constructor arguments read back from the layer.

    A Sequential becomes {"type": "Sequential", "layers": [...]} (plus "names" when they are not
    "0", "1", ...); an argument holding a layer (Residual's branch, a block's downsample) holds
    that layer's config.
    """
    if isinstance(layer, Sequential):
        config = {"type": "Sequential", "layers": [layer_config(sub) for sub in layer.layers]}
        if layer.names != [str(i) for i in range(len(layer))]:
            config["names"] = layer.names
        return config
    args = {}
    for name, param in inspect.signature(type(layer).__init__).parameters.items():
        if name in ("self", "rng", "seed") or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if name == "bias":
            args[name] = getattr(layer, "bias", None) is not None
        elif name == "dtype":
            dtype = getattr(layer, "dtype", None)
            if dtype is None and isinstance(getattr(layer, "weight", None), Parameter):
                dtype = layer.weight.data.dtype
            args[name] = None if dtype is None else str(np.dtype(dtype))
        elif name == "downsample" and getattr(layer, "downsample", 0) is None:
            args[name] = False  # None would mean "make one when needed"
        elif hasattr(layer, name):
            value = getattr(layer, name)
            if isinstance(value, Layer):
                value = layer_config(value)
            args[name] = list(value) if isinstance(value, tuple) else value
    return {"type": type(layer).__name__, "args": {k: v for k, v in args.items() if v is not None}}


def _arg(value):
    """A constructor argument from JSON: lists back to tuples, layer configs back to layers."""
    if isinstance(value, dict) and "type" in value:
        return build(value)
    if isinstance(value, list):
        return tuple(tuple(x) if isinstance(x, list) else x for x in value)
    return value


def build(config):
    """A fresh model from ``layer_config``'s output (weights initialised, not loaded)."""
    if config["type"] == "Sequential":
        layers = [build(sub) for sub in config["layers"]]
        names = config.get("names")
        return Sequential(list(zip(names, layers)) if names else layers)
    cls = Layer.registry.get(config["type"])
    if cls is None:
        raise ValueError(f"checkpoint names an unknown layer type {config['type']!r}")
    args = {k: _arg(v) for k, v in config["args"].items()}
    if "dtype" in args:
        args["dtype"] = np.dtype(args["dtype"])
    return cls(**args)


# ----------------------------------------------------------------------------------------
# frozen layers and parameters <-> JSON
# ----------------------------------------------------------------------------------------
def frozen_state(model):
    """{"layers": [...], "parameters": [...]}: the dotted names of what is frozen."""
    return {"layers": [name for name, layer in model.named_modules() if vars(layer).get("_frozen")],
            "parameters": [name for name, p in model.named_parameters() if not p.trainable]}


def restore_frozen_state(model, frozen):
    layers = dict(model.named_modules())
    params = dict(model.named_parameters())
    for name in frozen.get("layers", []):
        if name in layers:
            layers[name]._frozen = True
    for name in frozen.get("parameters", []):
        if name in params:
            params[name].trainable = False


# ----------------------------------------------------------------------------------------
# random generators (dropout masks) <-> JSON
# ----------------------------------------------------------------------------------------
def _generators(model):
    """[(path, generator)] for every np.random.Generator held by a layer of the model.

    Paths are "<layer name>.<attribute>" ("3.rng", "block.branch.1.rng"); a model that is a
    single layer, not a Sequential, uses "0" as its name, as files written before did.
    """
    found = []
    for name, layer in model.named_modules():
        if not name and isinstance(model, Sequential):
            continue
        for attr, value in sorted(vars(layer).items()):
            if isinstance(value, np.random.Generator):
                found.append((f"{name or '0'}.{attr}", value))
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
def _spec_dict(spec):
    """A zoo Spec as a plain dict for the JSON meta (None when the model has none)."""
    if spec is None:
        return None
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}


def _spec(stored):
    """The Spec back from the meta: a dict (this format), or a zoo name (files written before)."""
    if isinstance(stored, dict):
        return zoo.Spec(**{k: tuple(v) if isinstance(v, list) else v for k, v in stored.items()})
    return zoo.spec(stored)  # files written before the spec was stored whole name a zoo model


def save(path, model, optimizer=None, progress=None):
    """Write weights, buffers, optimizer state and ``progress`` (a JSON-able dict) to ``path`` (.npz)."""
    arrays = {f"param/{name}": p.data for name, p in model.named_parameters()}
    arrays.update({f"buffer/{name}": b for name, b in model.named_buffers()})
    if optimizer is not None:
        for key, value in optimizer.state_dict().items():
            arrays[f"optim/{key}"] = np.asarray(value)
    meta = {"format": FORMAT, "architecture": layer_config(model),
            "generators": generator_states(model), "frozen": frozen_state(model),
            "progress": progress or {},
            "spec": _spec_dict(getattr(model, "spec", None))}
    arrays["meta"] = np.array(json.dumps(meta))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def _open(path):
    """The open NpzFile of a checkpoint, or CheckpointError saying what the file is instead."""
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: no such checkpoint; train writes OUT/checkpoint.npz")
    if os.path.isdir(path):
        raise CheckpointError(f"{path} is a folder; give the checkpoint file inside it "
                              f"({os.path.join(path, 'checkpoint.npz')})")
    try:
        npz = np.load(path, allow_pickle=False)
    except ValueError:  # NumPy's "load unsafely using allow_pickle": not an .npy/.npz at all
        raise CheckpointError(f"{path} is not a minicnn checkpoint: it is not an .npz archive "
                              f"(minicnn never loads pickled data)") from None
    except (zipfile.BadZipFile, EOFError, OSError) as err:
        if isinstance(err, PermissionError):
            raise
        raise CheckpointError(f"{path} is truncated or corrupt ({err}); use an earlier copy, or "
                              f"train again") from None
    if not hasattr(npz, "files"):  # a bare .npy array
        raise CheckpointError(f"{path} holds a single array, not a minicnn checkpoint (an .npz "
                              f"written by minicnn)")
    return npz


def _read(path, arrays=True):
    """(meta, {prefix: {name: array}} or None) from a checkpoint; CheckpointError if unreadable."""
    with _open(path) as npz:
        try:
            if "meta" not in npz.files:
                raise CheckpointError(f"{path} is not a minicnn checkpoint (no 'meta' entry)")
            meta = json.loads(str(npz["meta"]))
            entries = None if not arrays else {
                prefix: {k[len(prefix):]: npz[k] for k in npz.files if k.startswith(prefix)}
                for prefix in ("param/", "buffer/", "optim/")}
        except (zipfile.BadZipFile, EOFError, OSError, ValueError) as err:
            if isinstance(err, (CheckpointError, PermissionError)):
                raise
            if "allow_pickle" in str(err):
                # an entry holds Python objects, which only unpickling could rebuild
                raise CheckpointError(f"{path} holds pickled Python objects ({err}); minicnn never "
                                      f"unpickles a file, which could run any code: use a "
                                      f"checkpoint written by minicnn") from None
            raise CheckpointError(f"{path} is truncated or corrupt ({err}); use an earlier copy, "
                                  f"or train again") from None
    return meta, entries


def read_all(path):
    """(meta, {name: parameter array}, {name: buffer array}, {key: optimizer state}) from a file.

    CheckpointError when the file is missing, not an .npz, truncated or not minicnn's.
    """
    meta, entries = _read(path)
    optim = {k: (v.item() if v.ndim == 0 else v) for k, v in entries["optim/"].items()}
    return meta, entries["param/"], entries["buffer/"], optim


def read_meta(path):
    """The ``meta`` dict of a checkpoint (architecture, progress, ...), its arrays left unread."""
    return _read(path, arrays=False)[0]


def read(path):
    """(meta dict, {name: array} of parameters, {key: value} optimizer state) from a checkpoint."""
    meta, params, _, optim = read_all(path)
    return meta, params, optim


def _check_names(expected, stored, kind, source):
    """ValueError naming the first entry missing, of another shape, or not in the model."""
    for name, array in expected:
        if name not in stored:
            raise ValueError(f"{source} has no {kind} {name!r} (model expects {array.shape}); "
                             f"it holds {sorted(stored)}")
        if stored[name].shape != array.shape:
            raise ValueError(f"{kind} {name!r}: {source} holds shape {stored[name].shape}, "
                             f"the model expects {array.shape}")
    extra = [n for n in stored if n not in dict(expected)]
    if extra:
        raise ValueError(f"{source} holds {kind}s the model does not have: {extra}")


def load_weights(model, params, source="checkpoint"):
    """Copy ``params`` ({name: array}) into ``model``; ValueError naming the first that differs."""
    named = model.named_parameters()
    _check_names([(n, p.data) for n, p in named], params, "parameter", source)
    for name, p in named:
        p.data[...] = params[name]


def load_buffers(model, buffers, source="checkpoint"):
    """Copy ``buffers`` ({name: array}) into the model's buffers, in place; ValueError as above."""
    named = model.named_buffers()
    _check_names(named, buffers, "buffer", source)
    for name, _ in named:
        model.load_buffer(name, buffers[name])


def load(path, model=None, optimizer=None):
    """Load a checkpoint; returns (model, progress dict).

    With ``model=None`` the model is rebuilt from the architecture stored in the file, frozen
    layers and parameters frozen again. With an ``optimizer``, its state is restored too
    (resuming needs it).
    """
    meta, params, buffers, optim = read_all(path)
    if model is None:
        model = build(meta["architecture"])
        restore_frozen_state(model, meta.get("frozen", {}))
        if meta.get("spec"):
            model.spec = _spec(meta["spec"])
    load_weights(model, params, source=str(path))
    load_buffers(model, buffers, source=str(path))
    restore_generator_states(model, meta.get("generators", {}))
    if optimizer is not None and optim:
        optimizer.load_state_dict(optim)
    return model, meta.get("progress", {})
