"""An on/off setting of a module that a block can turn off: ``with switch.off(): ...``."""
from contextlib import contextmanager


class Switch:
    """``switch.on`` (True at first); ``with switch.off():`` makes it False inside the block
    and puts back what it was after, exceptions included."""

    def __init__(self):
        self.on = True

    @contextmanager
    def off(self):
        previous, self.on = self.on, False
        try:
            yield
        finally:
            self.on = previous
