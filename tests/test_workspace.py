"""kernels.workspace: the large arrays' memory reused from batch to batch, never while in use.

What must hold:
* a buffer is handed out again only when no array made from it is alive (a view, a view of a
  view, a slice, a reshape, an array a compiled kernel returned), and then it is;
* the arrays are what ``np.empty`` would give (shape, dtype, C-contiguous, aligned), ``zeros``
  is zeros on a reused, dirty buffer, small arrays are NumPy's own;
* the pool stays bounded: stale buffers go, ``release()`` gives back the idle ones (``fit``
  calls it when training ends), ``LIMIT`` caps it, ``disabled()`` turns it off;
* training steps give the same bits with the pool as without (every kernel writes every entry
  it hands on: a dirty buffer changes nothing).
"""
import gc

import numba
import numpy as np
import pytest

import minicnn as mc
from minicnn import losses, optim, zoo
from minicnn.kernels import workspace
from minicnn.train import loop as training

SHAPE = (64, 300)           # 76,800 bytes in float32: above SMALLEST


@pytest.fixture(autouse=True)
def fresh_pool():
    workspace.release()
    yield
    workspace.release()


def address(a):
    return a.__array_interface__["data"][0]


def test_a_buffer_returns_only_when_nothing_uses_it():
    a = workspace.empty(SHAPE, np.float32)
    for keep in (lambda a: a[1:], lambda a: a.reshape(-1)[::2], lambda a: a.T.view(np.int32),
                 lambda a: np.asarray(a), lambda a: memoryview(a),
                 numba.njit(lambda a: a.reshape(a.size))):
        where, kept = address(a), keep(a)
        del a
        gc.collect()
        b = workspace.empty(SHAPE, np.float32)
        assert address(b) != where, "handed out while a view of it lives"
        pooled = workspace.pooled_bytes()
        del b, kept
        gc.collect()
        a = workspace.empty(SHAPE, np.float32)        # one of the two, both idle now
        assert workspace.pooled_bytes() == pooled, "not reused once idle"


def test_the_arrays_are_those_of_np_empty():
    for dtype in (np.float32, np.float64, np.int64):
        for shape in [SHAPE, (8, 3, 64, 64), 100_000]:
            a = workspace.empty(shape, dtype)
            expected = np.empty(shape, dtype)
            assert a.shape == expected.shape and a.dtype == expected.dtype
            assert a.flags.c_contiguous and a.flags.aligned and a.flags.writeable
    assert workspace.pooled_bytes() > 0
    small = workspace.empty((10, 10), np.float32)
    assert small.base is None                      # NumPy's own: not pooled


def test_zeros_on_a_dirty_buffer_and_like():
    a = workspace.empty(SHAPE, np.float32)
    a[...] = 7
    where = address(a)
    del a
    z = workspace.zeros(SHAPE, np.float32)
    assert address(z) == where and not z.any()
    like = workspace.empty_like(np.ones((3, 200, 50), np.float64))
    assert like.shape == (3, 200, 50) and like.dtype == np.float64


def test_the_pool_stays_bounded(monkeypatch):
    start = workspace.pooled_bytes()
    kept = [workspace.empty((i + 1, 20000), np.float32) for i in range(3)]
    assert workspace.pooled_bytes() == start + 6 * 20000 * 4
    del kept[0]
    workspace.release()                          # the idle one goes, the two in use stay
    assert workspace.pooled_bytes() == start + 5 * 20000 * 4
    monkeypatch.setattr(workspace, "STALE", 2)
    for _ in range(3):
        workspace.empty((50, 20000), np.float32)     # a buffer taken again and again
    del kept
    workspace.empty((60, 20000), np.float32)          # the others are stale now: dropped
    assert workspace.pooled_bytes() == start + (50 + 60) * 20000 * 4
    monkeypatch.setattr(workspace, "LIMIT", workspace.pooled_bytes())
    over = workspace.empty((70, 20000), np.float32)   # over the limit: NumPy's own
    assert over.base is None
    with workspace.disabled():
        assert workspace.empty((50, 20000), np.float32).base is None


@pytest.mark.parametrize("name", ["lenet5", "mnist_cnn", "resnet_small"])
def test_training_steps_give_the_same_bits_with_the_pool(name):
    shape = (8,) + tuple(zoo.spec(name).input_shape)
    x = np.random.default_rng(0).standard_normal((3,) + shape).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, (3, 8))
    results = []
    for pooled in (False, True):
        model = zoo.get(name, rng=0)
        model.train()
        criterion = losses.get(model.spec.loss)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        for _, layer in model.named_modules():
            if isinstance(layer, mc.Dropout):
                layer.rng = np.random.default_rng(2)
        with (workspace.disabled() if not pooled else np.errstate()):
            for xb, yb in zip(x, y):             # the buffers of a step are reused, dirty
                training.train_step(model, criterion, opt, xb, yb)
            with mc.layers.no_grad():
                model.eval()
                predicted = model(x[0])
        results.append([p.data.copy() for p in model.parameters()] + [predicted])
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_fit_gives_the_idle_buffers_back():
    """After ``fit`` only the buffers that arrays still use (the layers' caches) stay: a
    release() afterwards finds nothing idle to drop."""
    model = zoo.get("mnist_cnn", rng=0).compile(optimizer="adam", loss="nll")
    x = np.random.default_rng(0).standard_normal((48, 1, 28, 28)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 10, 48)
    seen = []
    model.fit(x, y, epochs=1, batch_size=16, verbose=0,
              on_epoch_end=lambda *_: seen.append(workspace.pooled_bytes()))
    after = workspace.pooled_bytes()
    workspace.release()
    assert seen[0] > after > 0 and workspace.pooled_bytes() == after
