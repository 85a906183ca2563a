"""The one exception minicnn raises for bad shapes."""


class ShapeError(ValueError):
    """A layer received an input whose shape it cannot take.

    The message names the layer, the shape it expected, the shape it received, and the
    arithmetic (with numbers) that produced the mismatch.
    """
