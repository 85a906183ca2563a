"""``python -m minicnn train | evaluate | predict | transfer | show``: see minicnn.apps.cli."""
import sys

from .apps.cli import main

if __name__ == "__main__":
    sys.exit(main())
