"""Shared test configuration: hypothesis profiles, and no silent skips in CI.

MINICNN_REQUIRE_FRAMEWORKS=1 (set by the Makefile's test target, hence by CI) turns a missing
torch or tensorflow into an error instead of a skip, so CI cannot go green by skipping.
"""
import importlib.util
import os

import pytest
from hypothesis import HealthCheck, settings

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# Tests compare runs bit for bit (a resumed run with an uninterrupted one, two seeds alike): the
# kernels compile in the foreground, never while the first batches run on NumPy's kernels
# (minicnn.train.warmup; tests/test_warmup.py turns it back on where it is the subject).
os.environ.setdefault("MINICNN_COMPILE", "wait")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

settings.register_profile(
    "default", max_examples=300, deadline=None, derandomize=False, print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.register_profile("quick", max_examples=25, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_KERAS = (importlib.util.find_spec("keras") is not None
              and importlib.util.find_spec("tensorflow") is not None)

if os.environ.get("MINICNN_REQUIRE_FRAMEWORKS") == "1" and not (HAVE_TORCH and HAVE_KERAS):
    raise pytest.UsageError("MINICNN_REQUIRE_FRAMEWORKS=1 but torch or keras/tensorflow is missing: "
                            "install the extras with  pip install -e .[reference]")

if HAVE_TORCH:
    import torch
    # Tiny float64 ops run ~50x slower through torch's thread pool on a busy 2-core machine;
    # pytest-xdist already runs one worker per core.
    torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under MINICNN_REQUIRE_FRAMEWORKS=1 a skipped test is a failed test: CI skips nothing."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("MINICNN_REQUIRE_FRAMEWORKS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped under MINICNN_REQUIRE_FRAMEWORKS=1: {reason}"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running (still run by make test)")


def pytest_addoption(parser):
    parser.addoption("--update-golden", action="store_true", default=False,
                     help="rewrite the golden files under tests/golden/ instead of comparing")
    parser.addoption("--update-lessons", action="store_true", default=False,
                     help="rewrite the ```text blocks of lessons/*.md and README.md from a real run, "
                          "and copy the figures the lessons draw into lessons/figures/")
