"""The exceptions minicnn raises for mistakes a user can fix, each with a message that says how.

They live here, at the bottom of the package, so that every layer above can raise them and
the command line can catch them all in one place.
"""


class ShapeError(ValueError):
    """A layer received an input whose shape it cannot take.

    The message names the layer, the shape it expected, the shape it received, and the
    arithmetic (with numbers) that produced the mismatch.
    """


class DataError(ValueError):
    """A data file is missing, malformed, or is not the file it should be.

    The message always names the file (or every place that was searched).
    """


class NonFiniteError(FloatingPointError):
    """The loss became NaN or infinite; the message names the first layer where it happened."""


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, not a minicnn checkpoint, or does not fit the model.

    The message names the file and what to do instead.
    """
