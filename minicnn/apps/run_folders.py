"""Run folders: where ``train`` writes, and the checks that keep a run from being lost.

* ``default_out``: a new folder for each run, runs/<model>-<dataset>-<date>-<time>, never one
  that exists;
* ``check_out``: an --out that holds a checkpoint is refused unless the run resumes it or
  overwrites it; resuming without a checkpoint is refused too;
* ``compare``: the options that shape a run's trajectory, the checkpoint's against the
  command line's, each mismatch named with its old and its new value;
* ``remove_temporaries``: the ``.tmp-*`` files a killed write left beside the checkpoint;
* ``resume_command``: the command line that continues an interrupted run.
"""
import datetime
import glob
import os
import shlex

from ..core.files import TEMP_PREFIX


class UsageError(Exception):
    """A mistake the user can fix on the command line; printed as ``error: <message>``, exit 2."""


#: options whose change would make a resumed run differ from an uninterrupted one
TRAJECTORY = ("model", "dataset", "image_size", "limit", "batch_size", "seed", "optimizer", "lr",
              "lr_schedule", "normalize", "shear_range", "zoom_range", "horizontal_flip")


def default_out(model, dataset, now=None):
    """runs/<model>-<dataset>-<YYYYmmdd-HHMMSS>, with -2, -3, ... if that folder exists already."""
    now = now or datetime.datetime.now()
    name = os.path.basename(os.path.normpath(dataset)) or "data"
    base = os.path.join("runs", f"{model}-{name}-{now:%Y%m%d-%H%M%S}")
    out, n = base, 1
    while os.path.exists(out):
        n += 1
        out = f"{base}-{n}"
    return out


def trajectory(options):
    """The options of ``TRAJECTORY`` from a dict of all options (vars(args))."""
    return {k: options.get(k) for k in TRAJECTORY}


def compare(stored, now, epochs_done, epochs):
    """Lines naming each option that differs between a checkpoint's run and this command.

    ``stored``: the checkpoint's options ({} for files written before options were kept);
    ``now``: this command's. --epochs may change as long as it is not below the epochs
    already done and the learning-rate schedule does not depend on it.
    """
    lines = [f"--{k.replace('_', '-')}: the checkpoint's run used {stored[k]!r}, this command "
             f"gives {now[k]!r}" for k in TRAJECTORY if k in stored and stored[k] != now.get(k)]
    if epochs < epochs_done:
        lines.append(f"--epochs: the checkpoint has done {epochs_done} epochs already; "
                     f"--epochs {epochs} would train nothing (give {epochs_done} or more)")
    old_epochs = stored.get("epochs")
    if old_epochs is not None and epochs != old_epochs and stored.get("lr_schedule", "constant") \
            != "constant":
        lines.append(f"--epochs: the checkpoint's run used {old_epochs}; the --lr-schedule "
                     f"{stored['lr_schedule']} depends on it, so only that value resumes exactly")
    return lines


def remove_temporaries(folder):
    """Delete the ``.tmp-*`` files a killed atomic write left in ``folder``; returns their paths."""
    stray = sorted(glob.glob(os.path.join(glob.escape(folder), TEMP_PREFIX + "*")))
    for path in stray:
        os.remove(path)
    return stray


def check_out(out, checkpoint_exists, resume, overwrite, describe=""):
    """UsageError unless the combination of --out, --resume and --overwrite is safe.

    ``describe``: a few words about the checkpoint found ("at epoch 2 of 10").
    """
    if resume and overwrite:
        raise UsageError("--resume continues the checkpoint in --out and --overwrite replaces it; "
                         "give one of them")
    if resume and not checkpoint_exists:
        raise UsageError(f"--resume: {os.path.join(out, 'checkpoint.npz')} does not exist, so there "
                         f"is nothing to continue; check --out, or leave out --resume to start "
                         f"a new run")
    if checkpoint_exists and not (resume or overwrite):
        raise UsageError(f"{out} already holds a run ({os.path.join(out, 'checkpoint.npz')}"
                         f"{', ' + describe if describe else ''}); continue it with --resume, "
                         f"replace it with --overwrite, or choose another --out")


def resume_command(parser, args, out):
    """``python -m minicnn train ...``: this command with --out ``out`` and --resume.

    Built from the parsed options (not the typed words), so abbreviations and defaults are
    spelled out: each option that differs from its default, then --out and --resume.
    """
    words = ["python", "-m", "minicnn", "train"]
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "out", "resume", "overwrite",
                                                        "debug"):
            continue
        value = getattr(args, action.dest, None)
        if value == action.default or value is None:
            continue
        flag = action.option_strings[-1]
        words += [flag] if value is True else [flag, str(value)]
    return shlex.join(words + ["--out", out, "--resume"])
