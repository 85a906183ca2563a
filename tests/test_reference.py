"""reference/: the PyTorch and Keras training scripts, and compare.py, run as the README shows.

compare.py trains LeNet-5 on the first 12,000 Fashion-MNIST images for one epoch (the full
epoch takes minutes on a 2-core CPU; this is the marked smaller variant, run by ``make test``
all the same) and must print the article's table with three rows. The accuracies are checked
against what one epoch can reach and against each other: the three start from the same
weights and see the same batches, so their first losses agree to float32 rounding; rounding
compounds over the steps, so their final accuracies agree as two runs measured on the same
2,000 test images do (the bound is derived in the test). Keras differs also by its Adam epsilon.
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest
from realdata import load_or_skip

import minicnn as mc
from minicnn.apps.cli import main as minicnn_main
from twins import requires_keras, requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # reference/

pytestmark = [requires_torch, requires_keras]

# one thread per library: pytest-xdist already runs a worker per core, and OpenMP threads
# that spin while the other core is busy make PyTorch ten times slower
ENV = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                    "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"}
METRICS_KEYS = {"config", "history", "test_accuracy", "test_loss"}
HISTORY_KEYS = {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}


@pytest.fixture(scope="module")
def fashion_mnist():
    load_or_skip("fashion-mnist", "test")


def script(*argv, timeout=300):
    """Run ``python <argv>`` from the repository root, as a user would; returns stdout."""
    done = subprocess.run([sys.executable, *map(str, argv)], cwd=ROOT, env=ENV, text=True,
                          capture_output=True, timeout=timeout)
    assert done.returncode == 0, f"{argv[0]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


# ----------------------------------------------------------------------------------------
# compare.py
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def comparison(fashion_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    stdout = script("reference/compare.py", "--model", "lenet5", "--dataset", "fashion-mnist",
                    "--epochs", "1", "--limit", "12000", "--device", "cpu", "--quiet",
                    "--out", out)
    return out, stdout


def table_rows(markdown):
    """The rows of the first markdown table below its |---| line, as lists of cells."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|---"))
    rows = []
    for line in lines[start + 1:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


@pytest.mark.slow
def test_compare_prints_and_writes_the_table_with_three_rows(comparison):
    out, stdout = comparison
    written = (out / "comparison.md").read_text()
    assert written.strip() in stdout, "the printed table is the written one"
    rows = table_rows(written)
    assert [row[0].split()[0] for row in rows] == ["minicnn", "PyTorch", "Keras"]
    accuracies = [float(row[3]) for row in rows]
    assert [row[2] for row in rows] == ["1", "1", "1"]  # processes
    # Chance is 0.1. One epoch over the full 60,000 images brings LeNet-5 with Adam to about
    # 0.8 in the article's own curves; 188 steps over 12,000 images must clear 0.6 and cannot
    # reach the 0.9 that takes the full training.
    for row, accuracy in zip(rows, accuracies):
        assert 0.6 < accuracy < 0.9, f"{row[0]}: test accuracy {accuracy} after one short epoch"
    model = mc.zoo.lenet5()
    assert {row[6] for row in rows} == {f"{sum(p.size for p in model.parameters()):,}"}
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_the_three_runs_agree_because_they_start_alike(comparison):
    out, _ = comparison
    result = json.loads((out / "comparison.json").read_text())
    rows = {row["framework"]: row for row in result["rows"]}
    assert max(row["start_gap"] for row in rows.values()) <= 1e-5
    # the first step: the same weights on the same first batch, before any update. Only the
    # order of float32 sums differs. Each of LeNet-5's five weighted layers sums at most n = 400
    # products; rounding errors in a sum of n terms grow as sqrt(n)·u (u = 2^-24 ≈ 6e-8) with
    # overwhelming probability (Higham & Mary, 2019), so five layers move the loss by at most
    # 5·sqrt(400)·6e-8 ≈ 6e-6 of its value: 1e-5 relative holds on any CPU and thread count.
    first = {fw: losses[0] for fw, losses in result["step_losses"].items()}
    for fw in ("torch", "keras"):
        assert abs(first[fw] - first["minicnn"]) <= 1e-5 * first["minicnn"], (fw, first)
    assert {len(losses) for losses in result["step_losses"].values()} == {12000 // 64 + 1}
    assert result["train_images"] == 12000 and result["test_images"] == 2000
    ours = rows["minicnn"]["test_accuracy"]
    # The end: Adam's first updates are about lr·sign(gradient), so a gradient entry whose sign
    # is decided by rounding moves a weight by 2·lr; over 188 steps such differences compound
    # (the weight gap column) and the final weights are no longer the same point. What stays
    # comparable is the accuracy as a statistic of n = 2,000 test images: each run's accuracy p
    # has the binomial standard error sqrt(p(1-p)/n) (0.010 at p = 0.7), and two runs whose
    # errors fell independently on the test images would differ by sqrt(2) times that; errors
    # that coincide (the same start, the same batches) only shrink it. Four such standard
    # errors (0.058 at p = 0.7) are exceeded by chance once in 15,000 runs; a framework that
    # trains differently (another loss, a broken update) misses by far more.
    bound = 4 * np.sqrt(2 * ours * (1 - ours) / result["test_images"])
    for fw in ("torch", "keras"):
        assert abs(rows[fw]["test_accuracy"] - ours) <= bound, (fw, rows[fw]["test_accuracy"], ours, bound)
    # Keras also adds its epsilon to the uncorrected sqrt(v) (the reason the table has that
    # column): a change to every update from the first step on, which moves its weights
    # further from minicnn's than rounding alone moves PyTorch's
    assert rows["keras"]["weight_gap"] > rows["torch"]["weight_gap"]
    for framework in ("minicnn", "torch", "keras"):
        metrics = json.loads((out / framework / "metrics.json").read_text())
        assert METRICS_KEYS <= set(metrics) and set(metrics["history"]) == HISTORY_KEYS
        assert metrics["test_accuracy"] == rows[framework]["test_accuracy"]


# ----------------------------------------------------------------------------------------
# the training scripts
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def minicnn_metrics(fashion_mnist, tmp_path_factory):
    out = tmp_path_factory.mktemp("minicnn")
    assert minicnn_main(["train", "--model", "lenet5", "--epochs", "1", "--limit", "300",
                         "--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("framework", ["torch", "keras"])
def test_training_script_writes_minicnns_metrics(framework, minicnn_metrics, tmp_path):
    stdout = script(f"reference/{framework}/train.py", "--model", "lenet5", "--dataset",
                    "fashion-mnist", "--epochs", "2", "--batch-size", "32", "--optimizer", "adam",
                    "--lr", "2e-3", "--seed", "0", "--limit", "600", "--device", "cpu",
                    "--out", tmp_path)
    assert "test accuracy" in stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert set(metrics) == set(minicnn_metrics) == METRICS_KEYS
    assert set(metrics["history"]) == set(minicnn_metrics["history"]) == HISTORY_KEYS
    history = metrics["history"]
    assert all(len(values) == 2 for values in history.values())
    assert history["loss"][1] < history["loss"][0]
    assert metrics["test_accuracy"] == history["val_accuracy"][-1] > 0.3  # chance is 0.1
    shared = {"model", "dataset", "epochs", "batch_size", "optimizer", "lr", "seed", "out",
              "limit", "preprocessing", "classes"}  # the options both have, and the data's
    assert shared <= set(minicnn_metrics["config"]) & set(metrics["config"])
    assert metrics["config"]["preprocessing"] == minicnn_metrics["config"]["preprocessing"]
    assert metrics["config"]["framework"] == framework and "CPU" in metrics["config"]["device"].upper()
    assert (tmp_path / "curves.png").is_file()
    assert (tmp_path / ("model.pt" if framework == "torch" else "model.keras")).is_file()
    # the same command again would replace the run: refused with one line, nothing touched
    before = (tmp_path / "metrics.json").read_bytes()
    again = subprocess.run([sys.executable, f"reference/{framework}/train.py", "--model", "lenet5",
                            "--epochs", "1", "--limit", "600", "--device", "cpu", "--out",
                            str(tmp_path)], cwd=ROOT, env=ENV, text=True, capture_output=True,
                           timeout=300)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert [line for line in again.stderr.splitlines() if line.startswith("error:")] == [
        line for line in again.stderr.splitlines() if "holds a run already" in line] != []
    assert (tmp_path / "metrics.json").read_bytes() == before


def test_an_out_with_a_run_is_refused_unless_overwrite_or_resume(tmp_path):
    from reference import common
    (tmp_path / "metrics.json").write_text("{}")
    args = common.parser("train.py", "").parse_args(["--out", str(tmp_path)])
    with pytest.raises(SystemExit) as refused:
        common.check_out(args)
    assert refused.value.code == 2
    common.check_out(common.parser("train.py", "").parse_args(["--out", str(tmp_path), "--overwrite"]))
    args.resume = True
    common.check_out(args)
    common.check_out(common.parser("train.py", "").parse_args(["--out", str(tmp_path / "new")]))


def test_torch_device_choice():
    import torch
    from reference.torch.train import pick_device
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if torch.cuda.is_available():
        assert pick_device("cuda").type == "cuda"
    else:
        with pytest.raises(SystemExit, match="no CUDA device"):
            pick_device("cuda")


def test_keras_device_choice():
    import tensorflow as tf
    from reference.keras.train import pick_device
    gpus = tf.config.list_physical_devices("GPU")
    assert pick_device("cpu") == "/CPU:0"
    assert pick_device("auto") == ("/GPU:0" if gpus else "/CPU:0")
    if not gpus:
        with pytest.raises(SystemExit, match="sees no GPU"):
            pick_device("cuda")


def test_torch_training_on_a_given_order_sees_exactly_those_batches():
    """compare.py's order hook: the DataLoader yields the batches of order(epoch), in order."""
    import torch
    from reference.torch import train as torch_train
    seen = []

    class Recorder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 2)

        def forward(self, x):
            if self.training:
                seen.append(x[:, 0].long().tolist())
            return self.linear(x)

    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.zeros(10, dtype=np.int64)
    orders = {0: np.array([3, 1, 4, 0, 5, 9, 2, 6, 8, 7]), 1: np.arange(10)[::-1]}
    torch_train.train(Recorder(), x, y, x[:2], y[:2], loss="cross_entropy", epochs=2,
                      batch_size=4, device="cpu", order=orders.__getitem__, verbose=False)
    expected = [list(o[i:i + 4]) for o in orders.values() for i in range(0, 10, 4)]
    assert seen == expected


@pytest.mark.parametrize("script, model, missing, hidden", [
    ("compare", "resnet50_keras", "reference/torch/models.py", None),
    ("torch", "resnet50_keras", "reference/torch/models.py", None),
    # every zoo model has a Keras twin: one is hidden to see the Keras side refuse it
    ("compare", "resnet18", "reference/keras/models.py", "keras"),
    ("keras", "resnet18", "reference/keras/models.py", "keras"),
])
def test_a_model_without_a_twin_is_refused_by_name(script, model, missing, hidden, monkeypatch):
    """Before any data is read: the script says which framework lacks the model and what it has."""
    if hidden:
        models = __import__(f"reference.{hidden}.models", fromlist=["MODELS"]).MODELS
        monkeypatch.delitem(models, model)
    if script == "compare":
        from reference.compare import main
    else:
        main = __import__(f"reference.{script}.train", fromlist=["main"]).main
    with pytest.raises(SystemExit) as stop:
        main(["--model", model, "--epochs", "1"])
    message = str(stop.value)
    assert f"--model {model}" in message and missing in message and "lenet5" in message


def test_a_missing_dataset_is_a_message_not_a_traceback(tmp_path):
    from reference.torch.train import main
    with pytest.raises(SystemExit) as stop:
        main(["--model", "rps_cnn", "--dataset", str(tmp_path / "nowhere"), "--epochs", "1"])
    assert "nowhere" in str(stop.value) and "training/ and testing/" in str(stop.value)
