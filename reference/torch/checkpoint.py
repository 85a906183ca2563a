"""reference/torch/train.py's checkpoint: a nested state of tensors and numbers in one .npz.

The state is what a run needs to continue: the model's and the optimizer's ``state_dict()``,
the GradScaler's, the number of epochs done and the history, e.g.

    {"model": {"conv1.weight": tensor, ...}, "optimizer": {"state": {0: {...}}, "param_groups": [...]},
     "scaler": {...}, "epoch": 3, "history": {"loss": [...], ...}, "run": {"model": "lenet5", ...}}

Every tensor becomes an array of the .npz; the rest (dicts, lists, numbers, strings, None, with
the dicts' integer keys kept integers) becomes one JSON string, ``meta``, that says where each
array goes. It is read with ``np.load(path, allow_pickle=False)``: a checkpoint from elsewhere
holds data, never code. Writes are atomic (``common.atomic_write``): a process killed while it
writes leaves the previous checkpoint whole.
"""
import io
import json

import numpy as np
import torch

from reference import common

FORMAT = "reference-torch-checkpoint-1"


def _pack(obj, arrays, where):
    """The JSON skeleton of ``obj``; its tensors go into ``arrays`` (name -> ndarray)."""
    if isinstance(obj, torch.Tensor):
        name = f"array{len(arrays)}"
        arrays[name] = obj.detach().cpu().numpy()
        return {"tensor": name}
    if isinstance(obj, dict):
        return {"dict": [[key, _pack(value, arrays, f"{where}[{key!r}]")] for key, value in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"list": [_pack(value, arrays, f"{where}[{i}]") for i, value in enumerate(obj)]}
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return {"value": obj}
    raise TypeError(f"checkpoint: {where} is a {type(obj).__name__}; a checkpoint holds tensors, "
                    f"dicts, lists, numbers, strings and None")


def _unpack(skeleton, arrays):
    if "tensor" in skeleton:
        return torch.from_numpy(arrays[skeleton["tensor"]])
    if "dict" in skeleton:
        return {key: _unpack(value, arrays) for key, value in skeleton["dict"]}
    if "list" in skeleton:
        return [_unpack(value, arrays) for value in skeleton["list"]]
    return skeleton["value"]


def save(path, state):
    """Write the nested ``state`` (tensors on any device) to ``path`` (.npz), atomically."""
    arrays = {}
    meta = {"format": FORMAT, "state": _pack(state, arrays, "state")}
    buffer = io.BytesIO()
    np.savez(buffer, meta=np.array(json.dumps(meta)), **arrays)
    common.atomic_write(str(path), lambda f: f.write(buffer.getvalue()))


def load(path):
    """The state ``save`` wrote to ``path``, tensors on the CPU; ValueError for another file."""
    with np.load(path, allow_pickle=False) as f:
        if "meta" not in f.files:
            raise ValueError(f"{path} is not a checkpoint of reference/torch/train.py (no meta entry)")
        meta = json.loads(str(f["meta"]))
        if meta.get("format") != FORMAT:
            raise ValueError(f"{path} has the format {meta.get('format')!r}; reference/torch/train.py "
                             f"reads {FORMAT!r}")
        arrays = {name: f[name] for name in f.files if name != "meta"}
    return _unpack(meta["state"], arrays)
