"""The background compile: which kernels each thread gets while it runs, and when it starts."""
import json
import os
import threading

import numpy as np
import pytest

import minicnn as mc
from minicnn import kernels
from minicnn.kernels import conv_fast, elementwise_loops, norm_loops, pool_fast
from minicnn.train import loop as training
from minicnn.train import warmup


def _modules():
    return kernels.conv(), kernels.pool(), kernels.norm(), kernels.elementwise()



@pytest.fixture(autouse=True)
def background_compiling(monkeypatch):
    """conftest.py makes every other test compile in the foreground; here the background is the
    subject."""
    monkeypatch.delenv("MINICNN_COMPILE", raising=False)

def test_other_threads_get_numpy_kernels_while_one_compiles():
    from minicnn.kernels import conv_numba, elementwise_numba, norm_numba, pool_numba
    seen = {}
    release = threading.Event()

    def compiling_thread():
        seen["compiler"] = _modules()
        release.wait()

    thread = threading.Thread(target=compiling_thread)
    with kernels.using("numba"):
        kernels.compiling_in(thread)
        try:
            thread.start()
            seen["main"] = _modules()
            assert kernels.compiling()
        finally:
            release.set()
            thread.join()
            kernels.compiling_in(None)
        seen["after"] = _modules()
    assert seen["compiler"] == (conv_numba, pool_numba, norm_numba, elementwise_numba)
    assert seen["main"] == (conv_fast, pool_fast, norm_loops, elementwise_loops)
    assert seen["after"] == (conv_numba, pool_numba, norm_numba, elementwise_numba)
    assert not kernels.compiling()


def test_a_step_that_straddles_the_switch_stays_consistent():
    """A layer keeps the kernels of its forward pass for its backward pass: a forward on NumPy's
    kernels, then the switch, then the backward, gives NumPy's gradients."""
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((4, 1, 28, 28)).astype(np.float32)
    yb = rng.integers(0, 10, 4)
    grads = {}
    for case in ("fast", "straddle"):
        model = mc.zoo.lenet5(rng=0)
        loss = mc.CrossEntropyLoss()
        with kernels.using("fast" if case == "fast" else "numba"):
            if case == "straddle":
                kernels.compiling_in(threading.Thread())       # someone else compiles
            try:
                loss(model(xb), yb)
            finally:
                kernels.compiling_in(None)                     # ... and is done
            model.backward(loss.backward(), need_input_grad=False)
        grads[case] = [p.grad.copy() for p in model.parameters()]
    for a, b in zip(grads["fast"], grads["straddle"]):
        # the convolutions' and pools' backward ran on the NumPy kernels of their forward, so
        # bit for bit; ReLU's compiled backward is bit for bit its NumPy one (test_kernels_numba)
        np.testing.assert_array_equal(a, b)


def test_nothing_to_do_when_waiting_is_asked_or_kernels_are_not_numba(monkeypatch):
    model = mc.zoo.lenet5(rng=0)
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e-3)
    xb, yb = np.zeros((2, 1, 28, 28), np.float32), np.zeros(2, np.int64)
    monkeypatch.setattr(warmup, "cached", lambda key: False)
    monkeypatch.setenv("MINICNN_COMPILE", "wait")
    assert warmup.compile_in_background(model, xb, yb) is None
    monkeypatch.delenv("MINICNN_COMPILE")
    with kernels.using("fast"):
        assert warmup.compile_in_background(model, xb, yb) is None
    monkeypatch.setattr(warmup, "cached", lambda key: True)
    with kernels.using("numba"):
        assert warmup.compile_in_background(model, xb, yb) is None


def test_background_thread_compiles_and_hands_over(monkeypatch):
    """With the cache said to be cold, the thread runs the twin's step (here loading or
    compiling in this process), says so in two lines, and hands the kernels over."""
    monkeypatch.setattr(warmup, "cached", lambda key: False)
    model = mc.zoo.lenet5(rng=0)
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e-3)
    before = [p.data.copy() for p in model.parameters()]
    xb = np.random.default_rng(0).standard_normal((8, 1, 28, 28)).astype(np.float32)
    yb = np.arange(8) % 10
    lines = []
    with kernels.using("numba"):
        thread = warmup.compile_in_background(model, xb, yb, log=lines.append)
        assert thread is not None
        training.train_step(model, model.loss, model.optimizer, xb, yb)   # meanwhile
        thread.join()
        assert not kernels.compiling()
    assert lines[0].startswith("compiling kernels in the background")
    assert lines[1].startswith("kernels compiled in")
    # the twin trained a copy, with its own optimizer: the model took one step, its own
    assert all(state["step"] == 1 for state in model.optimizer.state)
    assert all(not np.array_equal(a, p.data) for a, p in zip(before, model.parameters()))


def test_a_finished_warm_up_is_remembered_for_the_same_work_only(monkeypatch, tmp_path):
    """After the background compile of a (model, batch) finished, the same work starts none
    (every run then goes on the compiled kernels from its first batch, bit for bit the same as
    the others); another batch shape, or a cache file gone, starts one again."""
    monkeypatch.setattr(warmup, "_stamp", lambda key: str(tmp_path / f"minicnn-warm-{key}.json"))
    model = mc.zoo.lenet5(rng=0)
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e-3)
    xb, yb = np.zeros((4, 1, 28, 28), np.float32), np.zeros(4, np.int64)
    with kernels.using("numba"):
        thread = warmup.compile_in_background(model, xb, yb, log=lambda line: None)
        assert thread is not None
        thread.join()
        assert warmup.compile_in_background(model, xb, yb, log=lambda line: None) is None
        files = json.loads(next(tmp_path.glob("minicnn-warm-*.json")).read_text())
        assert files and all(os.path.exists(f) for f in files)
        other = warmup.compile_in_background(model, xb[:2], yb[:2], log=lambda line: None)
        assert other is not None
        other.join()
        assert warmup.compile_in_background(model, xb[:2], yb[:2], log=lambda line: None) is None
    real_exists = os.path.exists
    monkeypatch.setattr(warmup.os.path, "exists", lambda p: p != files[0] and real_exists(p))
    assert not warmup.cached(warmup._work_key(model, xb, yb))
