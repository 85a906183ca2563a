"""From a command-line target to a model: a zoo name, ``file.py:NAME`` or ``package.module:NAME``.

NAME is a model object (minicnn, torch.nn.Module or Keras) or a function returning one.
A zoo name is built by minicnn, or with ``framework="torch"`` / ``"keras"`` from
``reference/torch/models.py`` / ``reference/keras/models.py``, the same network written in
those frameworks' usual style.
"""
import importlib
import importlib.util
import pathlib
import sys

from .. import zoo


class TargetError(ValueError):
    """The target cannot be found or is not a model."""


def _reference(framework):
    """``reference.torch.models`` or ``reference.keras.models``, from the repository."""
    module = f"reference.{framework}.models"
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name not in ("reference", f"reference.{framework}", module):
            raise
    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / "reference" / framework / "models.py").exists():
        raise TargetError(f"the {framework} versions of the zoo live in reference/{framework}/"
                          f"models.py, which is not beside this minicnn ({root})")
    sys.path.append(str(root))
    return importlib.import_module(module)


def zoo_model(name, framework):
    """(model, one sample's input shape in the framework's layout) for a zoo name."""
    spec = zoo.spec(name)
    if framework == "minicnn":
        return zoo.get(name, rng=0), tuple(spec.input_shape)
    if framework == "torch":
        import torch
        torch.manual_seed(0)
        return _reference("torch").build(name), tuple(spec.input_shape)
    if framework == "keras":
        c, h, w = spec.input_shape
        return _reference("keras").build(name), (h, w, c)
    raise TargetError(f"unknown framework {framework!r}: minicnn, torch or keras")


def _module(source):
    path = pathlib.Path(source)
    if source.endswith(".py") or path.is_file():
        if not path.is_file():
            raise TargetError(f"no such file: {source}")
        name = "_minicnn_trace_" + "".join(c if c.isalnum() else "_" for c in path.stem)
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        folder = str(path.resolve().parent)
        sys.path.insert(0, folder)  # so that the file can import its neighbours
        try:
            spec.loader.exec_module(module)
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
        return module
    try:
        return importlib.import_module(source)
    except ModuleNotFoundError as err:
        raise TargetError(f"cannot import {source!r}: {err}") from None


def load(target):
    """(model, name) for ``file.py:NAME`` or ``package.module:NAME``."""
    from . import framework_of
    source, sep, attr = target.rpartition(":")
    if not sep or not source or not attr:
        raise TargetError(f"{target!r} is neither a zoo name ({', '.join(zoo.NAMES)}) nor "
                          f"path/to/file.py:NAME nor package.module:NAME")
    module = _module(source)
    obj = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise TargetError(f"{source} has no {attr!r}") from None
    if framework_of(obj) is None and callable(obj):  # a function or a class: call it
        obj = obj()
    if framework_of(obj) is None:
        raise TargetError(f"{target} is a {type(obj).__name__}, not a minicnn, PyTorch or Keras "
                          f"model (nor a function returning one)")
    return obj, attr
