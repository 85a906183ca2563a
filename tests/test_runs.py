"""python -m minicnn as a new user meets it: runs are never overwritten, resumed runs keep their
options, and every expected mistake is one ``error:`` line with exit status 2, never a traceback.

Each case of issue 14's "Found" list has a test here (the cross-CPU tolerances are in
test_reference.py, the library's own refusals in test_guards.py, the fault injection with real
signals in test_faults.py).
"""
import argparse
import hashlib
import json
import os
import shlex
import signal

import numpy as np
import pytest
from realdata import load_or_skip
from synthetic_folders import write_folder

import minicnn as mc
from minicnn.apps import cli, run_folders
from minicnn.apps.cli import main
from minicnn.train import fit as fit_module

TINY = ["--model", "lenet5", "--dataset", "fashion-mnist", "--limit", "120", "--batch-size", "32",
        "--lr", "2e-3", "--seed", "0"]


@pytest.fixture(scope="module", autouse=True)
def fashion_mnist():
    load_or_skip("fashion-mnist", "test")


def checksum(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def run(capsys, *argv):
    """(exit status, stdout, stderr) of ``python -m minicnn argv`` run in this process."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *words):
    """Exit status 2, an ``error:`` line (or a few) naming ``words``, and no traceback."""
    assert code == 2, err
    err = err.split("\r")[-1]  # after the progress bar, which clears its line with \r
    assert err.startswith("error: ") or "\nerror: " in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 6, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A finished one-epoch run: (folder, checkpoint path, checksum of the checkpoint)."""
    out = tmp_path_factory.mktemp("run") / "run"
    assert main(["train", *TINY, "--epochs", "1", "--out", str(out)]) == 0
    return out, out / "checkpoint.npz", checksum(out / "checkpoint.npz")


# ----------------------------------------------------------------------------------------
# a run is never lost
# ----------------------------------------------------------------------------------------
def test_an_out_holding_a_run_is_refused_and_left_as_it_was(trained, capsys):
    out, path, before = trained
    code, stdout, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert_user_error(code, err, str(out), "--resume", "--overwrite")
    assert "test accuracy" not in stdout
    assert checksum(path) == before


def test_overwrite_replaces_the_run(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *TINY, "--epochs", "1", "--out", out)[0] == 0
    before = checksum(out / "checkpoint.npz")
    code, stdout, _ = run(capsys, "train", *TINY, "--epochs", "1", "--seed", "1", "--out", out,
                          "--overwrite")
    assert code == 0 and "test accuracy" in stdout
    assert checksum(out / "checkpoint.npz") != before  # another seed: another run
    assert json.loads((out / "metrics.json").read_text())["config"]["seed"] == 1


def test_the_default_out_is_a_new_folder_for_each_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        assert run(capsys, "train", *TINY, "--epochs", "1")[0] == 0
    made = sorted(os.listdir(tmp_path / "runs"))
    assert len(made) == 2 and all(name.startswith("lenet5-fashion-mnist-") for name in made)
    assert all((tmp_path / "runs" / name / "checkpoint.npz").is_file() for name in made)


def test_default_out_never_names_an_existing_folder(tmp_path, monkeypatch):
    import datetime
    monkeypatch.chdir(tmp_path)
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    first = run_folders.default_out("lenet5", "fashion-mnist", now)
    os.makedirs(first)
    second = run_folders.default_out("lenet5", "fashion-mnist", now)
    assert first == os.path.join("runs", "lenet5-fashion-mnist-20260102-030405")
    assert second == first + "-2"


def test_resume_with_changed_options_names_each_one(trained, capsys):
    out, path, before = trained
    code, stdout, err = run(capsys, "train", "--model", "lenet5", "--dataset", "fashion-mnist",
                            "--limit", "240", "--batch-size", "64", "--lr", "2e-3", "--seed", "7",
                            "--epochs", "2", "--out", out, "--resume")
    assert_user_error(code, err, "--batch-size: the checkpoint's run used 32, this command gives 64",
                      "--seed: the checkpoint's run used 0, this command gives 7",
                      "--limit: the checkpoint's run used 120, this command gives 240")
    assert "--lr" not in err and "--model" not in err  # what is the same is not named
    assert checksum(path) == before


@pytest.mark.parametrize("option, value", [("--model", "mnist_cnn"), ("--dataset", "mnist"),
                                           ("--optimizer", "sgd"), ("--lr", "0.01"),
                                           ("--lr-schedule", "step"), ("--normalize", None),
                                           ("--horizontal-flip", None)])
def test_resume_refuses_every_option_that_shapes_the_run(trained, capsys, option, value):
    out, path, before = trained
    argv = [a for a in TINY]
    if option in argv:
        i = argv.index(option)
        argv[i + 1] = value
    else:
        argv += [option] + ([value] if value else [])
    code, _, err = run(capsys, "train", *argv, "--epochs", "2", "--out", out, "--resume")
    assert_user_error(code, err, option)
    assert checksum(path) == before


def test_resume_may_grow_the_epochs_but_not_shrink_them(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *TINY, "--epochs", "2", "--out", out)[0] == 0
    before = checksum(out / "checkpoint.npz")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out, "--resume")
    assert_user_error(code, err, "--epochs", "2 epochs already")
    assert checksum(out / "checkpoint.npz") == before
    code, stdout, _ = run(capsys, "train", *TINY, "--epochs", "3", "--out", out, "--resume")
    assert code == 0 and "resuming from" in stdout
    assert len(json.loads((out / "metrics.json").read_text())["history"]["loss"]) == 3


def test_resume_without_a_checkpoint_is_an_error(tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", tmp_path / "none",
                       "--resume")
    assert_user_error(code, err, "checkpoint.npz does not exist", "--resume")
    assert not (tmp_path / "none").exists()
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--resume")
    assert_user_error(code, err, "--resume needs --out")


def interrupt_at(monkeypatch, step):
    """Send this process SIGINT (Ctrl-C) right after the ``step``-th training step (1-based)."""
    original, calls = fit_module.train_step, []

    def step_then_interrupt(*args):
        result = original(*args)
        calls.append(1)
        if len(calls) == step:
            os.kill(os.getpid(), signal.SIGINT)
        return result
    monkeypatch.setattr(fit_module, "train_step", step_then_interrupt)


def test_an_interrupted_run_exits_130_and_says_how_to_resume(tmp_path, monkeypatch, capsys):
    straight = tmp_path / "straight"
    assert run(capsys, "train", *TINY, "--epochs", "2", "--out", straight)[0] == 0
    out = tmp_path / "cut"
    interrupt_at(monkeypatch, 6)  # 4 batches an epoch: batch 2 of epoch 2
    code, stdout, _ = run(capsys, "train", *TINY, "--epochs", "2", "--out", out)
    monkeypatch.undo()
    assert code == 130
    assert "interrupted after batch 2 of epoch 2" in stdout
    assert "test accuracy" not in stdout and not (out / "metrics.json").exists()
    # the checkpoint holds the run's configuration: an interrupted run can be evaluated
    code, evaluated, _ = run(capsys, "evaluate", "--checkpoint", out / "checkpoint.npz")
    assert code == 0 and "fashion-mnist test: accuracy" in evaluated
    command = stdout.split("resume with:\n", 1)[1].strip().splitlines()[0]
    words = shlex.split(command)
    assert words[:4] == ["python", "-m", "minicnn", "train"] and words[-1] == "--resume"
    assert words[words.index("--out") + 1] == str(out)
    code, stdout, _ = run(capsys, *words[3:])   # exactly the printed command
    assert code == 0 and "resuming from" in stdout and "test accuracy" in stdout
    a, _ = mc.train.checkpoint.load(straight / "checkpoint.npz")
    b, _ = mc.train.checkpoint.load(out / "checkpoint.npz")
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.array_equal(p.data, q.data), name


def test_stray_temporaries_of_a_killed_write_are_removed(tmp_path, capsys):
    out = tmp_path / "run"
    assert run(capsys, "train", *TINY, "--epochs", "1", "--out", out)[0] == 0
    stray = out / ".tmp-abc123checkpoint.npz"
    stray.write_bytes(b"half a checkpoint")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "2", "--out", out, "--resume")
    assert code == 0 and not stray.exists() and str(stray) in err


# ----------------------------------------------------------------------------------------
# arguments the parser refuses
# ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["train", "--limit", "-5"], ["train", "--limit", "0"], ["train", "--epochs", "0"],
    ["train", "--image-size", "0"], ["train", "--batch-size", "0"], ["train", "--batch-size", "-1"],
    ["train", "--lr", "0"], ["train", "--zoom-range", "1.5"], ["train", "--shear-range", "-3"],
    ["predict", "--checkpoint", "c.npz", "--top", "0", "x.png"],
    ["predict", "--checkpoint", "c.npz", "--top", "-2", "x.png"],
    ["transfer", "--limit", "-1"], ["transfer", "--epochs", "0"]])
def test_counts_and_sizes_below_one_are_refused(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert "error: argument " + argv[-2 if argv[0] != "predict" else -3] in err
    assert "Traceback" not in err


def test_dataset_names_in_any_case(tmp_path, capsys):
    out = tmp_path / "run"
    argv = [a if a != "fashion-mnist" else "Fashion_MNIST" for a in TINY]
    assert run(capsys, "train", *argv, "--epochs", "1", "--out", out)[0] == 0
    assert json.loads((out / "metrics.json").read_text())["config"]["dataset"] == "fashion-mnist"


# ----------------------------------------------------------------------------------------
# errors: one line, exit 2, --debug for the traceback
# ----------------------------------------------------------------------------------------
def test_a_missing_checkpoint_is_named_not_its_metrics(tmp_path, capsys):
    missing = tmp_path / "nowhere" / "checkpoint.npz"
    for command in (["evaluate", "--checkpoint", missing], ["predict", "--checkpoint", missing,
                                                            "x.png"]):
        code, _, err = run(capsys, *command)
        assert_user_error(code, err, str(missing), "no such checkpoint")
        assert "metrics.json" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(mc.CheckpointError, match="no such checkpoint"):
        main(["--debug", "evaluate", "--checkpoint", str(tmp_path / "none.npz")])
    with pytest.raises(mc.CheckpointError):
        main(["evaluate", "--checkpoint", str(tmp_path / "none.npz"), "--debug"])


def test_a_truncated_checkpoint_names_the_file(trained, tmp_path, capsys):
    _, path, _ = trained
    cut = tmp_path / "checkpoint.npz"
    cut.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    code, _, err = run(capsys, "evaluate", "--checkpoint", cut)
    assert_user_error(code, err, str(cut), "truncated or corrupt")


def test_a_text_file_named_npz_is_not_a_checkpoint(tmp_path, capsys):
    fake = tmp_path / "checkpoint.npz"
    fake.write_text("these are my notes\n")
    code, _, err = run(capsys, "evaluate", "--checkpoint", fake)
    assert_user_error(code, err, str(fake), "not an .npz")
    assert "allow_pickle" not in err


def test_a_corrupt_checkpoint_is_not_resumed_nor_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "checkpoint.npz").write_text("garbage")
    before = checksum(out / "checkpoint.npz")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out, "--resume")
    assert_user_error(code, err, "checkpoint.npz")
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", out)
    assert_user_error(code, err, "already holds a run", "unreadable")
    assert checksum(out / "checkpoint.npz") == before


def test_evaluating_a_checkpoint_on_data_it_does_not_fit(trained, tmp_path, capsys):
    _, path, _ = trained
    folder = tmp_path / "shapes"
    write_folder(folder, ("hstripes", "blobs"), train=2, test=2)
    code, _, err = run(capsys, "evaluate", "--checkpoint", path, "--dataset", folder)
    assert_user_error(code, err, str(path), "fashion-mnist", "not on an image folder")
    code, _, err = run(capsys, "evaluate", "--checkpoint", path, "--dataset", "mnist")
    assert_user_error(code, err, str(path), "classes")


def test_bad_data_is_one_line(tmp_path, capsys):
    folder = tmp_path / "shapes"
    write_folder(folder, ("hstripes", "blobs"), train=3, test=2)
    broken = sorted((folder / "train" / "blobs").iterdir())[0]
    broken.write_bytes(b"not a picture")
    code, _, err = run(capsys, "train", "--model", "rps_cnn", "--dataset", folder, "--epochs", "1",
                       "--out", tmp_path / "run")
    assert_user_error(code, err, broken.name)


def test_a_non_finite_loss_is_one_line(tmp_path, capsys):
    code, _, err = run(capsys, "train", *TINY[:-4], "--lr", "1e30", "--seed", "0", "--optimizer",
                       "sgd", "--epochs", "1", "--out", tmp_path / "run")
    assert_user_error(code, err, "the loss became", "learning rate")


def test_a_permission_problem_names_the_file(tmp_path, monkeypatch, capsys):
    import tempfile

    def refuse(dir=None, **kwargs):
        raise PermissionError(13, "Permission denied", os.path.join(dir, kwargs.get("prefix", "")))
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    code, _, err = run(capsys, "train", *TINY, "--epochs", "1", "--out", tmp_path / "run")
    assert_user_error(code, err, str(tmp_path / "run"), "Permission denied", "--out")


def test_predict_reports_a_bad_image_and_predicts_the_rest(trained, tmp_path, capsys):
    from PIL import Image
    _, path, _ = trained
    images, _ = mc.data.load("fashion-mnist", "test")
    good = [tmp_path / "a.png", tmp_path / "c.png"]
    for file, image in zip(good, images):
        Image.fromarray(image).save(file)
    bad = tmp_path / "b.png"
    bad.write_bytes(b"\x89PNG truncated")
    code, out, err = run(capsys, "predict", "--checkpoint", path, good[0], bad, good[1])
    assert code == 2
    assert [line.split(":")[0] for line in out.strip().splitlines()] == [str(g) for g in good]
    assert f"error: {bad}: cannot read this image" in err and "Traceback" not in err
    assert "1 of 3 images" in err


def test_top_is_at_most_the_classes(trained, tmp_path, capsys):
    from PIL import Image
    _, path, _ = trained
    images, _ = mc.data.load("fashion-mnist", "test")
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    code, out, _ = run(capsys, "predict", "--checkpoint", path, "--top", "1", tmp_path / "a.png")
    assert code == 0 and len(out.strip().splitlines()) == 1 and "," not in out


# ----------------------------------------------------------------------------------------
# help
# ----------------------------------------------------------------------------------------
def test_every_option_has_help_and_shows_its_default():
    parser = cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert set(commands) == {"train", "evaluate", "predict", "transfer", "show"}
    top = parser.format_help()
    for name in commands:
        assert f"    {name} " in top, f"top-level help omits {name}"
    for variable in ("MINICNN_DATA", "MINICNN_CACHE", "MINICNN_KERNELS"):
        assert variable in top
    for name, sub in commands.items():
        formatter = sub._get_formatter()
        assert isinstance(formatter, argparse.ArgumentDefaultsHelpFormatter)
        for action in sub._actions:
            if action.dest == "help":
                continue
            where = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help, f"{where}: no help line"
            if action.option_strings and action.default is not argparse.SUPPRESS:
                assert "%(default)" in formatter._get_help_string(action), f"{where}: no default"
        assert "MINICNN_DATA" in sub.format_help()


def test_the_dataset_finder_says_once_which_files_it_read(tmp_path, monkeypatch, capsys):
    from minicnn.data import datasets
    monkeypatch.setattr(datasets, "_reported", set())
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path))   # a folder without Fashion-MNIST
    capsys.readouterr()
    for split in ("train", "test", "test"):
        mc.data.load("fashion-mnist", split)
    lines = capsys.readouterr().err.strip().splitlines()
    images, labels = datasets.locate("fashion-mnist", "test")
    assert len(lines) == 1, lines
    assert f"Fashion-MNIST from {images.parent}/" in lines[0]
    assert f"MINICNN_DATA={tmp_path} has no fashion-mnist files" in lines[0]
