"""The bottom of minicnn: what every other part uses, and which imports nothing else of minicnn.

* ``errors``: ShapeError, DataError, NonFiniteError, CheckpointError;
* ``parameter``: Parameter (``.data``, ``.grad``, ``.trainable``);
* ``random``: the global generator and ``manual_seed``;
* ``shapes``: the output-size arithmetic ((W − K + 2P)/S + 1), "same"/"valid" padding;
* ``files``: atomic writes.
"""
from .errors import CheckpointError, DataError, NonFiniteError, ShapeError
from .parameter import Parameter
from .random import get_rng, manual_seed
