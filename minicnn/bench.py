"""``python -m minicnn.bench``: minicnn vs PyTorch vs Keras; the code is minicnn.apps.bench."""
import sys

from .apps.bench import command_line

if __name__ == "__main__":
    sys.exit(command_line())
