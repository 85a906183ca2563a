"""The ``check`` pytest fixture:  def test_mine(check): check(MyConv2D)

Registered by minicnn's entry point (``pytest11``), or with ``pytest_plugins =
["minicnn.check.plugin"]`` in a conftest.py. ``check(cls, kind=None, against=None,
examples=30)`` fails the test with the checker's report, and returns the ``Result`` on a pass.
"""
import pytest

from .runner import DEFAULT_EXAMPLES
from .runner import check as grade


@pytest.fixture
def check():
    """A function grading a layer class; a failure fails the test with the report."""
    def run(cls, kind=None, against=None, examples=DEFAULT_EXAMPLES, seed=None):
        result = grade(cls, kind=kind, against=against, examples=examples, seed=seed)
        if not result.passed:
            pytest.fail(str(result), pytrace=False)
        return result
    return run
