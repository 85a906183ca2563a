"""The real datasets for tests: loaded when present, skipped when not, an error when CI requires them."""
import os

import pytest

import minicnn as mc


def load_or_skip(name, split="train"):
    """(images, labels) of a real dataset; skip (or fail under MINICNN_REQUIRE_DATA=1) if absent."""
    try:
        return mc.data.load(name, split, download=False)
    except mc.data.DataError as err:
        if os.environ.get("MINICNN_REQUIRE_DATA") == "1":
            raise
        pytest.skip(f"{name} not available: {err}")
