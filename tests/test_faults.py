"""Fault injection with real signals: ``python -m minicnn train`` killed (SIGKILL) while it
writes its checkpoint, or interrupted (SIGINT, Ctrl-C) after a random batch of a random epoch,
then resumed, ends bit for bit where an uninterrupted run ends.

Each run is a subprocess on 120 Fashion-MNIST images (4 batches of 32 an epoch, 3 epochs), so
that the signal really ends or interrupts a process. The faults are placed by a small driver
(``DRIVER``) that wraps one function before calling the command line's ``main``; minicnn
itself has no hook for them.
"""
import os
import pathlib
import random
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest
from realdata import load_or_skip

ROOT = pathlib.Path(__file__).resolve().parent.parent
ARGS = ["train", "--model", "lenet5", "--dataset", "fashion-mnist", "--limit", "120",
        "--batch-size", "32", "--epochs", "3", "--seed", "3"]
BATCHES, EPOCHS = 4, 3

DRIVER = r"""
import os, signal, sys
fault, at = os.environ.get("FAULT", ""), int(os.environ.get("FAULT_AT", "0"))
calls = []

def now():                      # the fault's moment has come: count this call
    calls.append(1)
    return len(calls) == at

if fault == "sigint-after-step":      # Ctrl-C right after training step `at`
    from minicnn.train import fit
    step = fit.train_step
    def train_step(*args):
        result = step(*args)
        if now():
            os.kill(os.getpid(), signal.SIGINT)
        return result
    fit.train_step = train_step
elif fault == "sigkill-before-rename":   # the new checkpoint complete, not yet renamed
    replace = os.replace
    def killing_replace(src, dst):
        if os.path.basename(dst) == "checkpoint.npz" and now():
            os.kill(os.getpid(), signal.SIGKILL)
        return replace(src, dst)
    os.replace = killing_replace
elif fault == "sigkill-mid-write":       # half of the new checkpoint's bytes written
    import io
    import numpy as np
    savez = np.savez
    def killing_savez(f, **arrays):
        if not now():
            return savez(f, **arrays)
        buffer = io.BytesIO()
        savez(buffer, **arrays)
        f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    np.savez = killing_savez
from minicnn.apps.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist():
    load_or_skip("fashion-mnist", "test")


def train(argv, fault="", at=0):
    """Run the driver with ``argv`` in a subprocess; returns the CompletedProcess."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "FAULT": fault, "FAULT_AT": str(at),
                        "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-c", DRIVER, *map(str, argv)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def arrays(path):
    """Every array of a checkpoint but its meta (which holds wall-clock seconds)."""
    with np.load(path, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files if k != "meta"}


def assert_bit_identical(path, reference):
    ours, theirs = arrays(path), arrays(reference)
    assert sorted(ours) == sorted(theirs)
    for key in theirs:  # weights, BatchNorm buffers and Adam's moments
        assert np.array_equal(ours[key], theirs[key]), f"{key} differs after the fault"


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    done = train(ARGS + ["--out", out])
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "checkpoint.npz"


@pytest.mark.parametrize("fault", ["sigkill-before-rename", "sigkill-mid-write"])
def test_killed_during_a_checkpoint_write_then_resumed(fault, uninterrupted, tmp_path):
    out = tmp_path / "run"
    # the second write: the end of epoch 2, replacing epoch 1's checkpoint
    killed = train(ARGS + ["--out", out], fault, at=2)
    assert killed.returncode == -signal.SIGKILL
    stray = [p for p in out.iterdir() if p.name.startswith(".tmp-")]
    assert len(stray) == 1, "the killed write leaves its temporary file"
    with np.load(out / "checkpoint.npz", allow_pickle=False):   # the old one, intact
        pass
    resumed = train(ARGS + ["--out", out, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from" in resumed.stdout and "at epoch 2" in resumed.stdout
    assert f"removed {stray[0]}" in resumed.stderr and not stray[0].exists()
    assert_bit_identical(out / "checkpoint.npz", uninterrupted)


# three (epoch, batch) points drawn with a fixed seed, so that a failure can be rerun
POINTS = sorted(random.Random(14).sample([(e, b) for e in range(1, EPOCHS + 1)
                                          for b in range(1, BATCHES + 1)], 3))


@pytest.mark.parametrize("epoch, batch", POINTS)
def test_ctrl_c_at_a_random_batch_then_the_printed_command(epoch, batch, uninterrupted, tmp_path):
    out = tmp_path / "run"
    cut = train(ARGS + ["--out", out], "sigint-after-step", at=(epoch - 1) * BATCHES + batch)
    assert cut.returncode == 130, cut.stderr[-2000:]
    assert f"interrupted after batch {batch} of epoch {epoch}" in cut.stdout
    assert "test accuracy" not in cut.stdout and "Traceback" not in cut.stderr
    command = shlex.split(cut.stdout.split("resume with:\n", 1)[1].strip().splitlines()[0])
    assert command[:4] == ["python", "-m", "minicnn", "train"]
    resumed = train(command[3:])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "test accuracy" in resumed.stdout
    assert_bit_identical(out / "checkpoint.npz", uninterrupted)
