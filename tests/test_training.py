"""The training loop: sanity of a fresh model, overfitting, exact resume, Ctrl-C, non-finite losses."""
import math
import os
import signal

import numpy as np
import pytest

import minicnn as mc
from minicnn.train import checkpoint as ckpt
from minicnn.train import loop as training
from minicnn.layers.base import Layer
from realdata import load_or_skip
from twins import assert_close


def fashion_subset(n, split="train"):
    images, labels = load_or_skip("fashion-mnist", split)
    return mc.data.to_float(images[:n]), labels[:n]


def tiny_cnn(seed):
    """Small enough to train in a blink, with dropout so that resuming must restore its generator."""
    rng = np.random.default_rng(seed)
    return mc.Sequential([
        mc.Conv2D(1, 4, 3, rng=rng), mc.ReLU(), mc.MaxPool2D(2), mc.Dropout(0.3, seed=seed),
        mc.Flatten(), mc.Dense(4 * 3 * 3, 10, rng=rng)])


def synthetic(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
    y = (x[:, 0, :4].sum(axis=(1, 2)) > 0).astype(np.int64) + 2 * (x[:, 0, 4:].mean(axis=(1, 2)) > 0)
    return x, y


def test_initial_loss_is_about_ln_10():
    """A fresh LeNet-5 is near uniform over 10 classes, so its cross-entropy is near ln 10 = 2.303."""
    x, y = fashion_subset(512)
    mc.manual_seed(0)
    model = mc.zoo.lenet5(rng=0)
    loss = mc.CrossEntropyLoss()(model(x), y)
    probs = np.exp(mc.LogSoftmax()(model(x)))
    assert abs(loss - math.log(10)) < 0.1, f"initial loss {loss:.4f}, ln 10 = {math.log(10):.4f}"
    assert probs.max() < 0.3, "a fresh model should not be confident about any class"


def test_small_batch_is_overfitted_to_100_percent():
    x, y = fashion_subset(32)
    model = mc.zoo.lenet5(rng=1).compile(optimizer="adam", loss="cross_entropy", lr=3e-3)
    for _ in range(150):
        training.train_step(model, model.loss, model.optimizer, x, y)
    loss, accuracy = model.evaluate(x, y)
    assert accuracy == 1.0, f"accuracy {accuracy} after 150 steps on 32 images (loss {loss:.4f})"


def test_fit_equals_the_explicit_loop():
    """model.fit is exactly the five-line loop over the same batches."""
    x, y = synthetic()
    a, b = tiny_cnn(3), tiny_cnn(3)
    a.compile(optimizer=mc.optim.SGD(a.parameters(), lr=0.1, momentum=0.9), loss="cross_entropy")
    a.fit(x, y, epochs=2, batch_size=16, seed=5, verbose=0)
    opt, crit = mc.optim.SGD(b.parameters(), lr=0.1, momentum=0.9), mc.CrossEntropyLoss()
    loader = mc.data.DataLoader(x, y, batch_size=16, shuffle=True, seed=5)
    b.train()
    for epoch in range(2):
        loader.set_epoch(epoch)
        for xb, yb in loader:
            opt.zero_grad()
            loss = crit(b(xb), yb)
            b.backward(crit.backward())
            opt.step()
    assert np.isfinite(loss)
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.array_equal(p.data, q.data), f"{name} differs between fit and the explicit loop"


def _fit(model, x, y, path, epochs, **kw):
    model.compile(optimizer="adam", loss="cross_entropy", lr=1e-2)
    return model.fit(x, y, epochs=epochs, batch_size=16, seed=7, verbose=0,
                     checkpoint_path=str(path), validation_data=(x[:32], y[:32]), **kw)


def test_resume_after_epoch_equals_uninterrupted(tmp_path):
    x, y = synthetic()
    whole = tiny_cnn(11)
    h_whole = _fit(whole, x, y, tmp_path / "whole.npz", epochs=3)

    first = tiny_cnn(11)
    _fit(first, x, y, tmp_path / "cut.npz", epochs=1)
    resumed = tiny_cnn(99)  # other initial weights: everything must come from the checkpoint
    h_resumed = _fit(resumed, x, y, tmp_path / "cut.npz", epochs=3, resume=True)

    for (name, p), q in zip(whole.named_parameters(), resumed.parameters()):
        assert np.array_equal(p.data, q.data), f"{name}: resumed run differs from uninterrupted"
    assert h_resumed.history == h_whole.history | {"seconds": h_resumed.history["seconds"]}


class InterruptAt(Layer):
    """Identity layer that sends the process a Ctrl-C (SIGINT) during its ``at``-th forward call."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at:
            os.kill(os.getpid(), signal.SIGINT)
        return x

    def backward(self, dy):
        return dy


def test_ctrl_c_saves_a_checkpoint_that_resumes_exactly(tmp_path, capsys):
    x, y = synthetic()
    whole = tiny_cnn(21)
    _fit(whole, x, y, tmp_path / "whole.npz", epochs=2)

    cut = tiny_cnn(21)
    # 6 batches an epoch, then one validation forward: the 10th forward is batch 3 of epoch 2
    cut.layers.insert(0, InterruptAt(10))
    history = _fit(cut, x, y, tmp_path / "cut.npz", epochs=2)
    assert "interrupted after batch 3 of epoch 2" in capsys.readouterr().out
    assert len(history.history["loss"]) == 1
    progress = ckpt.read(tmp_path / "cut.npz")[0]["progress"]
    assert (progress["epoch"], progress["batch"]) == (1, 3)

    resumed = tiny_cnn(5)
    resumed.layers.insert(0, InterruptAt(0))
    _fit(resumed, x, y, tmp_path / "cut.npz", epochs=2, resume=True)
    for (name, p), q in zip(whole.named_parameters(), resumed.parameters()):
        assert np.array_equal(p.data, q.data), f"{name}: run resumed after Ctrl-C differs"


def test_non_finite_loss_names_the_first_layer():
    x, y = synthetic(32)
    model = tiny_cnn(0).compile(optimizer="sgd", loss="cross_entropy")
    model[0].weight.data[0, 0, 0, 0] = np.inf
    with pytest.raises(mc.NonFiniteError) as info:
        model.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert "layer 0 Conv2D(1, 4" in str(info.value)


def test_checkpoint_round_trip_and_rebuild(tmp_path):
    model = mc.zoo.lenet5(rng=3)
    opt = mc.optim.Adam(model.parameters())
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    path = tmp_path / "c.npz"
    ckpt.save(path, model, opt, {"epoch": 2})
    with np.load(path, allow_pickle=False) as npz:  # readable without pickle
        assert "param/0.weight" in npz.files
    rebuilt, progress = ckpt.load(path)
    assert progress["epoch"] == 2
    assert rebuilt.spec.name == "lenet5"
    assert_close("rebuilt output", rebuilt(x), model(x), rtol=0)


def test_loading_into_another_shape_names_the_parameter(tmp_path):
    path = tmp_path / "c.npz"
    ckpt.save(path, mc.zoo.lenet5(rng=0))
    other = mc.zoo.lenet5(rng=0, num_classes=3)
    with pytest.raises(ValueError, match=r"parameter '11.weight'.*\(10, 84\).*\(3, 84\)"):
        ckpt.load(path, other)


def test_interrupted_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    model = tiny_cnn(0)
    ckpt.save(path, model, progress={"epoch": 1})
    before = path.read_bytes()

    def failing_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")
    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        ckpt.save(path, model, progress={"epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"], "temporary file left behind"
