"""python -m minicnn train | evaluate | predict, end to end on a slice of the real Fashion-MNIST."""
import json
import os

import numpy as np
import pytest
from realdata import load_or_skip

import minicnn as mc
from minicnn.apps.cli import main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    load_or_skip("fashion-mnist", "test")
    out = tmp_path_factory.mktemp("run")
    code = main(["train", "--model", "lenet5", "--dataset", "fashion-mnist", "--epochs", "2",
                 "--limit", "1200", "--batch-size", "32", "--lr", "2e-3", "--seed", "0",
                 "--normalize", "--lr-schedule", "cosine", "--out", str(out)])
    assert code == 0
    return out


def test_train_writes_checkpoint_metrics_and_curves(run_dir):
    assert {"checkpoint.npz", "metrics.json", "curves.png"} <= set(os.listdir(run_dir))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = metrics["history"]
    assert len(history["loss"]) == 2 and history["loss"][1] < history["loss"][0]
    assert metrics["test_accuracy"] > 0.5, "two short epochs of LeNet-5 should beat chance by far"
    assert metrics["config"]["preprocessing"]["mean"] is not None  # --normalize recorded
    assert (run_dir / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_prints_accuracy_and_confusion_matrix(run_dir, capsys):
    assert main(["evaluate", "--checkpoint", str(run_dir / "checkpoint.npz")]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    accuracy = float(out.split("accuracy ")[1].split()[0])
    assert 0.5 < accuracy <= 1
    assert "Ankle boo" in out and "recall" in out
    assert (run_dir / "confusion_test.png").exists()
    # the run evaluated on the first 200 test images; evaluate uses all 10,000: same model, close
    assert abs(accuracy - metrics["test_accuracy"]) < 0.1


def test_predict_classifies_an_image_file(run_dir, capsys):
    from PIL import Image
    images, labels = mc.data.load("fashion-mnist", "test")
    path = run_dir / "item.png"
    Image.fromarray(images[0]).save(path)
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoint.npz"), str(path)]) == 0
    line = capsys.readouterr().out.strip()
    probs = [float(tok.rstrip(",")) for tok in line.split()[1:] if tok.rstrip(",").replace(".", "").isdigit()]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    top = line.split(": ")[1].split(",")[0].rsplit(" ", 1)[0]
    assert top in mc.data.CLASSES["fashion-mnist"]


def test_resume_continues_the_run(run_dir, capsys):
    # the run's cosine schedule depends on --epochs: more epochs would change the learning rate
    # of the epochs still to come, so only the run's own --epochs resumes it
    before = (run_dir / "checkpoint.npz").read_bytes()
    argv = ["train", "--model", "lenet5", "--dataset", "fashion-mnist", "--limit", "1200",
            "--batch-size", "32", "--lr", "2e-3", "--seed", "0", "--normalize", "--lr-schedule",
            "cosine", "--out", str(run_dir), "--resume"]
    assert main(argv + ["--epochs", "3"]) == 2
    err = capsys.readouterr().err
    assert "--epochs" in err and "cosine" in err and "Traceback" not in err
    assert (run_dir / "checkpoint.npz").read_bytes() == before
    assert main(argv + ["--epochs", "2"]) == 0
    assert "resuming from" in capsys.readouterr().out
    history = json.loads((run_dir / "metrics.json").read_text())["history"]
    assert len(history["loss"]) == 2


def test_unknown_model_is_refused(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--model", "lenet6"])
    assert "invalid choice" in capsys.readouterr().err
