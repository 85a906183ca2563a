"""``FILE.py:CLASS`` -> the class, loaded from the file; ``UsageError`` says what is wrong."""
import importlib.util
import os
import re
import sys

from ..layers.base import Layer


class UsageError(Exception):
    """A bad command line: the file or the class is not there."""


def load_target(target):
    """The class named by ``target`` = "path/to/file.py:ClassName" (the file's directory is on
    sys.path while it loads, so it may import its neighbours). A learner's ``class Conv2D``
    does not replace minicnn's in ``Layer.registry`` (which checkpoints build layers from)."""
    path, sep, name = target.rpartition(":")
    if not sep or not path or not name:
        raise UsageError(f"expected FILE.py:CLASS, got {target!r}")
    if not os.path.isfile(path):
        raise UsageError(f"file not found: {path}")
    if not path.endswith(".py"):
        raise UsageError(f"expected a Python file (.py), got {path}")
    module_name = "_minicnn_check_" + re.sub(r"\W", "_", os.path.splitext(os.path.basename(path))[0])
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    folder = os.path.dirname(os.path.abspath(path))
    sys.path.insert(0, folder)
    sys.modules[module_name] = module
    registry = dict(Layer.registry)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as err:
        raise UsageError(f"{path}, line {err.lineno}: SyntaxError: {err.msg}") from None
    except Exception as err:  # noqa: BLE001 (the learner's file may raise anything)
        raise UsageError(f"{path} raised {type(err).__name__} while loading: {err}") from None
    finally:
        sys.path.remove(folder)
        Layer.registry.clear()
        Layer.registry.update(registry)
    cls = getattr(module, name, None)
    if not isinstance(cls, type):
        classes = sorted(k for k, v in vars(module).items()
                         if isinstance(v, type) and v.__module__ == module_name)
        raise UsageError(f"no class {name!r} in {path}; its classes: {', '.join(classes) or 'none'}")
    return cls
