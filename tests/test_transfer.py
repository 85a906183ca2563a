"""python -m minicnn transfer: pretrain, freeze the base, a new head; frozen vs random vs fine-tuned.

On a slice of the real Fashion-MNIST (classes 0-4 -> 5-9) and on image folders written here.
What is checked is what transfer learning promises: a frozen base leaves the run with the very
bits it came in with (weights and BatchNorm statistics), the head and only the head learns, the
random base is the network as it was before pretraining, and fine-tuning moves everything.
"""
import json

import numpy as np
import pytest
from realdata import load_or_skip
from synthetic_folders import write_folder

import minicnn as mc
from minicnn.train import checkpoint as ckpt
from minicnn.apps import transfer
from minicnn.apps.cli import main

SEED = 3


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    load_or_skip("fashion-mnist", "test")
    out = tmp_path_factory.mktemp("transfer")
    assert main(["transfer", "--limit", "900", "--target-limit", "300", "--epochs", "2",
                 "--pretrain-epochs", "1", "--batch-size", "32", "--seed", str(SEED),
                 "--out", str(out), "--quiet"]) == 0
    return out


def state(path, prefix):
    """{name: array} of the parameters and buffers of a checkpoint whose name starts with prefix."""
    _, params, buffers, _ = ckpt.read_all(path)
    return {k: v for k, v in (params | buffers).items() if k.startswith(prefix)}


def test_metrics_hold_the_three_runs(run_dir, capsys):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert list(metrics["runs"]) == ["frozen_pretrained", "frozen_random", "fine_tune"]
    assert metrics["source"]["classes"] == list(mc.data.CLASSES["fashion-mnist"][:5])
    assert metrics["target"]["classes"] == list(mc.data.CLASSES["fashion-mnist"][5:])
    assert metrics["target"]["train_images"] == 300 and metrics["target"]["test_images"] == 900
    assert metrics["source"]["test_accuracy"] > 0.2 + 0.25       # 5 classes: chance is 0.2
    for name, run in metrics["runs"].items():
        assert len(run["history"]["loss"]) == 2
        assert run["test_accuracy"] == run["history"]["val_accuracy"][-1]
        assert (run_dir / run["checkpoint"]).exists()
    runs = metrics["runs"]
    head = runs["frozen_pretrained"]["trainable_parameters"]
    assert runs["frozen_random"]["trainable_parameters"] == head
    assert runs["fine_tune"]["frozen_parameters"] == 0
    assert runs["fine_tune"]["trainable_parameters"] == head + runs["frozen_pretrained"]["frozen_parameters"]
    # a head on pretrained features learns the new classes; 300 images, 2 epochs
    assert runs["frozen_pretrained"]["test_accuracy"] > 0.2 + 0.25


def test_frozen_pretrained_base_is_bit_identical_and_the_head_learnt(run_dir):
    pretrained = state(run_dir / "pretrained.npz", "features.")
    frozen = state(run_dir / "frozen_pretrained.npz", "features.")
    assert sorted(frozen) == sorted(pretrained) and any("running_mean" in k for k in frozen)
    for name in pretrained:   # weights AND BatchNorm statistics: a frozen BatchNorm does not move
        assert np.array_equal(frozen[name], pretrained[name]), name
    # the head started as the fresh head every run gets, and moved
    fresh = mc.zoo.transfer_head(1568, 5, rng=np.random.default_rng(SEED + 1))
    trained = state(run_dir / "frozen_pretrained.npz", "head.")
    for name, p in fresh.named_parameters():
        assert not np.array_equal(trained[f"head.{name}"], p.data), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["runs"]["frozen_pretrained"]["base_unchanged"] is True
    assert metrics["runs"]["frozen_pretrained"]["base_max_change"] == 0


def test_random_base_is_the_network_before_pretraining(run_dir):
    before = mc.zoo.transfer_cnn(5, 1, 28, rng=SEED).features   # what pretraining started from
    frozen = state(run_dir / "frozen_random.npz", "features.")
    for name, p in before.named_parameters():
        assert np.array_equal(frozen[f"features.{name}"], p.data), name
    for name, b in before.named_buffers():
        assert np.array_equal(frozen[f"features.{name}"], b), name
    pretrained = state(run_dir / "pretrained.npz", "features.conv1")
    assert not np.array_equal(frozen["features.conv1.weight"], pretrained["features.conv1.weight"])


def test_fine_tuning_moves_the_base(run_dir):
    pretrained = state(run_dir / "pretrained.npz", "features.")
    tuned = state(run_dir / "fine_tune.npz", "features.")
    assert all(not np.array_equal(tuned[k], pretrained[k]) for k in pretrained
               if k.endswith(("weight", "running_mean")))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["runs"]["fine_tune"]["base_unchanged"] is False
    assert metrics["runs"]["fine_tune"]["base_max_change"] > 0


def test_checkpoints_keep_the_frozen_flags(run_dir):
    model, _ = ckpt.load(run_dir / "frozen_pretrained.npz")
    assert not model.features.trainable and model.head.trainable
    assert [n for n, p in model.named_parameters() if p.trainable] == [
        "head.fc1.weight", "head.fc1.bias", "head.fc2.weight", "head.fc2.bias"]
    tuned, _ = ckpt.load(run_dir / "fine_tune.npz")
    assert all(p.trainable for p in tuned.parameters())


def test_the_command_prints_the_table(tmp_path, capsys):
    load_or_skip("fashion-mnist", "test")
    assert main(["transfer", "--limit", "120", "--epochs", "1", "--pretrain-epochs", "1",
                 "--out", str(tmp_path), "--quiet", "--no-batch-norm"]) == 0
    out = capsys.readouterr().out
    for what in transfer.RUNS.values():
        assert what in out
    assert "bit-identical" in out and "moved, max |Δ|" in out
    model, _ = ckpt.load(tmp_path / "pretrained.npz")
    assert not any(isinstance(layer, mc.layers.BatchNorm2D) for _, layer in model.named_modules())


# ------------------------------------------------------------------------------------------
# freezing, the mechanism underneath
# ------------------------------------------------------------------------------------------
def test_an_optimizer_skips_a_frozen_base_but_backward_still_reaches_it():
    model = mc.zoo.transfer_cnn(3, 1, 12, rng=0)
    model.features.trainable = False
    base = transfer.snapshot(model.features)
    head = [p.data.copy() for p in model.head.parameters()]
    model.compile(optimizer="adam", lr=1e-2)
    x = np.random.default_rng(0).random((8, 1, 12, 12), dtype=np.float32)
    y = np.arange(8) % 3
    for _ in range(3):
        mc.train.loop.train_step(model, model.loss, model.optimizer, x, y)
    # the gradient was computed (backward runs through the base: the input gradient needs it)...
    assert np.any(model.features.conv1.weight.grad != 0)
    # ...and not applied, and the frozen BatchNorm kept its statistics in training mode
    assert transfer.largest_change(base, model.features) == (0.0, True)
    assert all(not np.array_equal(a, p.data) for a, p in zip(head, model.head.parameters()))


def test_clone_is_independent():
    model = mc.zoo.transfer_cnn(3, 1, 12, rng=0)
    model.features.trainable = False
    twin = transfer.clone(model)
    assert [n for n, _ in twin.named_parameters()] == [n for n, _ in model.named_parameters()]
    assert not twin.features.trainable and twin.head.trainable
    twin.features.conv1.weight.data += 1
    twin.features.bn1.running_mean += 1
    assert not np.any(model.features.conv1.weight.data == twin.features.conv1.weight.data)
    assert np.all(model.features.bn1.running_mean == 0)


# ------------------------------------------------------------------------------------------
# the same command on image folders
# ------------------------------------------------------------------------------------------
def test_transfer_between_image_folders(tmp_path):
    source = write_folder(tmp_path / "source", ("hstripes", "vstripes", "blobs"), train=40, test=10, seed=1)
    target = write_folder(tmp_path / "target", ("checkers", "blobs"), train=30, test=20, seed=2)
    metrics = transfer.run(source, target, epochs=6, pretrain_epochs=4, batch_size=16, lr=3e-3,
                           image_size=16, seed=0, out=tmp_path / "out", verbose=0)
    assert metrics["config"]["input_shape"] == [3, 16, 16]
    assert metrics["source"]["classes"] == ["blobs", "hstripes", "vstripes"]
    assert metrics["target"]["classes"] == ["blobs", "checkers"]
    assert metrics["target"]["test_images"] == 40
    assert metrics["source"]["test_accuracy"] > 1 / 3 + 0.25
    assert metrics["runs"]["frozen_pretrained"]["base_unchanged"]
    assert metrics["runs"]["fine_tune"]["test_accuracy"] > 1 / 2 + 0.25


def test_a_folder_with_fashion_mnist_is_read_in_grayscale(tmp_path):
    load_or_skip("fashion-mnist", "test")
    target = write_folder(tmp_path / "target", ("checkers", "blobs"), train=8, test=4, seed=2)
    assert transfer.input_format("fashion-mnist", target) == (1, 28)
    task = transfer.load_task(target, None, 28, 1)
    assert task.x_train.shape == (16, 1, 28, 28) and task.x_train.dtype == np.uint8
    with pytest.raises(ValueError, match="fashion-mnist images are 28×28"):
        transfer.input_format("fashion-mnist", target, image_size=64)


def test_classes_and_limits():
    assert transfer.parse_classes("0-4") == (0, 1, 2, 3, 4)
    assert transfer.parse_classes("5, 7,9") == (5, 7, 9)
    for bad in ("a-b", "1,1", ""):
        with pytest.raises(ValueError, match="classes"):
            transfer.parse_classes(bad)
    x, y = np.arange(100).reshape(100, 1), np.repeat(np.arange(4), 25)   # stored class by class
    xs, ys = transfer.subset(x, y, 20, seed=0)
    assert len(xs) == 20 and np.all(np.diff(xs[:, 0]) > 0) and len(set(ys.tolist())) > 1
    assert transfer.subset(x, y, 0, seed=0)[0] is x


def test_fashion_mnist_classes_are_renumbered():
    load_or_skip("fashion-mnist", "test")
    task = transfer.load_classes("fashion-mnist", (5, 6, 7, 8, 9), limit=500)
    images, labels = mc.data.load("fashion-mnist", "test")
    assert set(task.y_test.tolist()) == set(range(5)) and task.x_test.shape[1:] == (1, 28, 28)
    # every kept test image is the original one with its label minus 5, in the stored order
    lookup = {images[i].tobytes(): labels[i] for i in np.flatnonzero(labels >= 5)}
    assert all(lookup[x[0].tobytes()] - 5 == y for x, y in zip(task.x_test, task.y_test))
    with pytest.raises(ValueError, match="classes 0..9"):
        transfer.load_classes("fashion-mnist", (3, 12))


def test_float64_runs_compute_in_float64(tmp_path):
    """dtype=np.float64 reaches every layer of every run (lesson 14 uses it for CPU-independent digits)."""
    load_or_skip("fashion-mnist", "test")
    net = mc.zoo.transfer_cnn(rng=0, dtype=np.float64)
    assert {p.data.dtype for p in net.parameters()} == {np.dtype(np.float64)}
    assert {b.dtype for _, b in net.named_buffers() if b.dtype.kind == "f"} == {np.dtype(np.float64)}
    assert net(np.zeros((2, 1, 28, 28), np.float32)).dtype == np.float64
    metrics = transfer.run(limit=64, target_limit=32, epochs=1, pretrain_epochs=1, batch_size=32,
                           seed=SEED, verbose=0, out=tmp_path, dtype=np.float64)
    assert metrics["config"]["dtype"] == "float64"
    _, params, _, _ = ckpt.read_all(tmp_path / "fine_tune.npz")
    assert {v.dtype for v in params.values()} == {np.dtype(np.float64)}
