"""Grade a learner's layer against minicnn, PyTorch and Keras: ``python -m minicnn.check``.

    python -m minicnn.check lessons/exercises/03_maxpool.py:MaxPool2D
    python -m minicnn.check mine.py:MyConv2D --kind conv2d --against torch,numeric

or, in Python, ``minicnn.check.check(MyConv2D)`` -> ``Result``; in pytest, the ``check``
fixture of ``minicnn.check.plugin``. torch, Keras and hypothesis are imported when used.
"""
from .kinds import KINDS
from .outcome import Crashed, Mismatch, NotImplementedYet, Outcome
from .runner import Result, check, infer_kind, installed_references

__all__ = ["KINDS", "Crashed", "Mismatch", "NotImplementedYet", "Outcome", "Result", "check",
           "infer_kind", "installed_references"]
