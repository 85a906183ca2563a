"""python -m minicnn train | evaluate | predict on an image folder written here, and rps_cnn at any size.

The folder holds random pictures of four patterns (tests/synthetic_folders.py): stripes across,
stripes down, checks and blobs, each with random size, period, colours and heavy noise, PNG and
JPEG. A network that classifies its held-out files well above chance (1/4) has learnt the
patterns; the same folder read by reference/torch/train.py gives PyTorch the same pixels.
"""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from synthetic_folders import PATTERNS, write_folder
from twins import requires_torch

import minicnn as mc
from minicnn.apps import transfer
from minicnn.apps.cli import main

ROOT = Path(__file__).resolve().parent.parent
CHANCE = 1 / len(PATTERNS)
#: lr 3e-3 and 8 epochs of 10 batches: enough for these patterns at 16×16, seconds to run
TRAIN = ["--model", "rps_cnn", "--image-size", "16", "--epochs", "8", "--batch-size", "16",
         "--lr", "3e-3", "--seed", "0"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_folder(tmp_path_factory.mktemp("patterns"), PATTERNS, train=40, test=25, seed=0)


@pytest.fixture(scope="module")
def run_dir(folder, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", "--dataset", str(folder), "--out", str(out)] + TRAIN) == 0
    return out


def metrics_of(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def test_training_on_a_folder_classifies_held_out_files(run_dir, folder):
    metrics = metrics_of(run_dir)
    assert metrics["test_accuracy"] > CHANCE + 0.25, metrics["history"]["val_accuracy"]
    history = metrics["history"]
    assert len(history["loss"]) == 8 and history["loss"][-1] < history["loss"][0]
    config = metrics["config"]
    assert config["classes"] == sorted(PATTERNS)       # sorted folder names, torchvision's rule
    assert config["class_to_idx"] == {name: i for i, name in enumerate(sorted(PATTERNS))}
    assert config["input_shape"] == [3, 16, 16]
    assert config["preprocessing"] | {"dataset": None} == {
        "dataset": None, "scale": "0-1", "mean": None, "std": None, "image_size": 16,
        "color_mode": "rgb"}
    assert Path(config["preprocessing"]["dataset"]) == Path(folder).resolve()


def test_evaluate_reads_the_folder_the_run_was_trained_on(run_dir, capsys):
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.npz")]) == 0
    out = capsys.readouterr().out
    accuracy = float(out.split("accuracy ")[1].split()[0])
    # the same 100 test files and the same weights as the run's last validation
    assert accuracy == pytest.approx(metrics_of(run_dir)["test_accuracy"], abs=1e-4)
    assert "(" + str(round(accuracy * 100)) + "/100)" in out.replace(" ", "")
    for name in PATTERNS:
        assert name[:9] in out
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.npz"), "--split", "train"]) == 0
    assert "/160)" in capsys.readouterr().out


def test_predict_gives_the_model_output_on_the_decoded_file(run_dir, folder, capsys):
    """predict resizes a file as ImageFolder did for training; its top class is the model's."""
    model, _ = mc.train.checkpoint.load(run_dir / "checkpoint.npz")
    reader = mc.data.ImageFolder(folder / "test", 16)
    paths = [p for p, _ in reader.samples[::5]]
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoint.npz")] + [str(p) for p in paths]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(paths)
    correct = 0
    for path, line in zip(paths, lines):
        logits = model.predict(mc.data.to_float(reader.decode(path)[None]))[0]
        probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
        top = line.split(": ", 1)[1].split(",")[0].rsplit(" ", 1)
        assert top[0] == reader.classes[int(np.argmax(probs))]
        assert float(top[1]) == pytest.approx(probs.max(), abs=5e-4)
        correct += top[0] == Path(path).parent.name
    assert correct / len(paths) > CHANCE + 0.25


def test_augmentation_flags_change_the_batches(run_dir, folder, tmp_path):
    """Keras' names; the first epoch's loss differs from the same run without augmentation."""
    out = tmp_path / "augmented"
    assert main(["train", "--dataset", str(folder), "--out", str(out), "--shear-range", "10",
                 "--zoom-range", "0.1", "--horizontal-flip"] + TRAIN + ["--epochs", "1"]) == 0
    config = metrics_of(out)["config"]
    assert (config["shear_range"], config["zoom_range"], config["horizontal_flip"]) == (10, 0.1, True)
    plain = metrics_of(run_dir)["history"]["loss"][0]
    assert metrics_of(out)["history"]["loss"][0] != plain


def test_a_grayscale_model_reads_the_folder_in_grayscale(folder, tmp_path):
    out = tmp_path / "lenet"
    assert main(["train", "--model", "lenet5", "--dataset", str(folder), "--epochs", "1",
                 "--limit", "60", "--out", str(out)]) == 0
    config = metrics_of(out)["config"]
    assert config["preprocessing"]["color_mode"] == "grayscale" and config["input_shape"] == [1, 28, 28]
    model, _ = mc.train.checkpoint.load(out / "checkpoint.npz")
    assert model.layers[-1].out_features == len(PATTERNS)   # the folder's classes, not 10
    assert len(metrics_of(out)["history"]["loss"]) == 1


def test_image_size_only_where_it_can_apply(folder, tmp_path, capsys):
    assert main(["train", "--model", "lenet5", "--dataset", str(folder), "--image-size", "16",
                 "--out", str(tmp_path)]) == 2
    assert "rps_cnn and the ResNets take any --image-size" in capsys.readouterr().err
    assert main(["train", "--model", "lenet5", "--dataset", "fashion-mnist", "--image-size", "64",
                 "--out", str(tmp_path)]) == 2
    assert "fashion-mnist images are 28×28" in capsys.readouterr().err


@pytest.mark.parametrize("train, test", [("training", "testing"), ("train", "test"), ("train", "val")])
def test_split_folder_names(tmp_path, train, test):
    write_folder(tmp_path, ("blobs", "checkers"), train=1, test=1, splits=(train, test))
    assert transfer.find_splits(tmp_path) == (str(tmp_path / train), str(tmp_path / test))


def test_missing_splits_say_what_was_looked_for(tmp_path, capsys):
    write_folder(tmp_path, ("blobs", "checkers"), train=1, test=1, splits=("images", "other"))
    assert main(["train", "--model", "rps_cnn", "--dataset", str(tmp_path),
                 "--out", str(tmp_path / "o")]) == 2
    message = capsys.readouterr().err
    assert message.startswith("error: ") and "Traceback" not in message
    for looked_for in ("training/ + testing/", "train/ + test/", "train/ + val/", "images/, other/"):
        assert looked_for in message
    assert main(["train", "--model", "rps_cnn", "--dataset", str(tmp_path / "nowhere")]) == 2
    assert "neither a dataset name" in capsys.readouterr().err


def test_test_classes_must_be_the_training_classes(tmp_path):
    write_folder(tmp_path, ("blobs", "checkers"), train=1, test=0)
    write_folder(tmp_path, ("blobs", "hstripes"), train=0, test=1)
    with pytest.raises(ValueError, match=r"\['blobs', 'hstripes'\] differ .* \['blobs', 'checkers'\]"):
        transfer.load_folder(tmp_path, 16)


@pytest.mark.parametrize("size", [4, 16, 28, 30, 64])
def test_rps_cnn_at_other_sizes(size):
    model = mc.zoo.rps_cnn(image_size=size, rng=0)
    assert model.spec.input_shape == (3, size, size)
    side = size // 4
    assert model.layers[-1].in_features == 32 * side * side
    x = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    assert model(x).shape == (2, 3)
    if size == 28:  # the article's model, unchanged
        assert model.spec == mc.zoo.spec("rps_cnn") and model.layers[-1].in_features == 1568


def test_rps_cnn_too_small():
    with pytest.raises(ValueError, match="3 // 2 // 2 = 0"):
        mc.zoo.rps_cnn(image_size=3)


@requires_torch
@pytest.mark.parametrize("size", [16, 64])
def test_torch_rps_cnn_at_other_sizes_computes_the_same(size):
    from minicnn import interop
    sys.path.insert(0, str(ROOT))
    from reference.torch.models import build
    model = mc.zoo.rps_cnn(image_size=size, rng=1)
    net = interop.to_torch(model, module=build("rps_cnn", image_size=size))
    x = np.random.default_rng(1).random((2, 3, size, size), dtype=np.float32)
    import torch
    with torch.no_grad():
        theirs = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model(x), theirs, rtol=0, atol=1e-5)


@requires_torch
def test_reference_torch_trains_on_the_same_folder(run_dir, folder, tmp_path):
    """reference/torch/train.py: PyTorch's own initialisation, the pixels minicnn read."""
    sys.path.insert(0, str(ROOT))
    from reference.torch import train as torch_train
    out = tmp_path / "torch"
    assert torch_train.main(["--dataset", str(folder), "--device", "cpu", "--out", str(out)] + TRAIN) == 0
    ours, theirs = metrics_of(run_dir)["config"], metrics_of(out)["config"]
    assert theirs["framework"] == "torch"
    assert theirs["preprocessing"] == ours["preprocessing"] and theirs["classes"] == ours["classes"]
    assert metrics_of(out)["test_accuracy"] > CHANCE + 0.25


def test_augmented_run_resumes_exactly(folder, tmp_path):
    """The DataLoader draws epoch e's augmentation from (seed, e): a resumed run ends bit for bit
    where an uninterrupted one does."""
    aug = ["--dataset", str(folder), "--shear-range", "10", "--zoom-range", "0.2",
           "--horizontal-flip", "--limit", "64"] + TRAIN
    assert main(["train", "--out", str(tmp_path / "straight")] + aug + ["--epochs", "2"]) == 0
    assert main(["train", "--out", str(tmp_path / "resumed")] + aug + ["--epochs", "1"]) == 0
    assert main(["train", "--out", str(tmp_path / "resumed")] + aug + ["--epochs", "2", "--resume"]) == 0
    straight, _ = mc.train.checkpoint.load(tmp_path / "straight" / "checkpoint.npz")
    resumed, _ = mc.train.checkpoint.load(tmp_path / "resumed" / "checkpoint.npz")
    for (name, a), (_, b) in zip(straight.named_parameters(), resumed.named_parameters()):
        assert np.array_equal(a.data, b.data), name


def test_a_resnet_takes_another_image_size(folder, tmp_path):
    """Global average pooling: a ResNet runs on any size; --image-size only resizes the photos
    and says so in the model's spec (and so in the checkpoint and metrics.json)."""
    out = tmp_path / "resnet32"
    assert main(["train", "--model", "resnet_small", "--dataset", str(folder), "--image-size", "32",
                 "--epochs", "1", "--limit", "24", "--batch-size", "8", "--out", str(out)]) == 0
    assert metrics_of(out)["config"]["input_shape"] == [3, 32, 32]
    model, _ = mc.train.checkpoint.load(out / "checkpoint.npz")
    assert model.spec.input_shape == (3, 32, 32)
    assert model(np.zeros((2, 3, 32, 32), np.float32)).shape == (2, len(PATTERNS))
