"""What the PyTorch and Keras training scripts share with ``python -m minicnn train``.

The options, the data (read by minicnn, scaled to [0, 1] the same way), and the run's
``metrics.json`` and ``curves.png``: the same keys as minicnn writes, so that one script can
read the runs of all three frameworks. NumPy and minicnn only; no framework is imported here.
"""
import argparse
import json
import os
import sys
from pathlib import Path
from dataclasses import dataclass, field

from minicnn import data, zoo
from minicnn.apps import plots, transfer
from minicnn.core.files import atomic_write

#: zoo models with a dataset to train on (convnet is a feature block); rps_cnn's is an image
#: folder, given with --dataset PATH or found in --data-dir / $MINICNN_DATA
TRAINABLE = tuple(n for n in zoo.NAMES if zoo.spec(n).dataset)


def parser(prog, description):
    """The options of ``python -m minicnn train`` that a reference script has, plus --device."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--model", default="lenet5", choices=TRAINABLE)
    p.add_argument("--dataset", default=None,
                   help="mnist, fashion-mnist, or an image folder with training/ and testing/ "
                        "class folders (default: the model's)")
    p.add_argument("--image-size", type=int, default=None,
                   help="side an image folder's photos are resized to (default: the model's)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="the framework's own Adam (or plain SGD)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/latest",
                   help="the run's folder; one that holds a finished run is refused unless "
                        "--overwrite (or, for PyTorch, --resume) says what to do with it")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run already in --out")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"],
                   help="auto: the GPU when the framework sees one")
    p.add_argument("--limit", type=int, default=0,
                   help="use only the first N training images (and N // 6 test images)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    return p


def check_out(args):
    """Refuse an --out that holds a run (its metrics.json) unless --overwrite or --resume: a run
    is never replaced silently. Every process of a distributed run checks the same folder."""
    done = Path(args.out) / "metrics.json"
    if done.exists() and not (args.overwrite or getattr(args, "resume", False)):
        usage_error(f"{args.out} holds a run already ({done}); give another --out, or --overwrite "
                    f"to replace it" + (", or --resume to continue it" if hasattr(args, "resume")
                                        else ""))


def usage_error(message):
    """A user error on the command line: one ``error:`` line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def load(dataset, limit=0, root=None):
    """(x_train, y_train, x_test, y_test): float32 (N, 1, 28, 28) in [0, 1] (NCHW, as
    ToTensor), int64 labels. ``limit`` cuts both splits as ``python -m minicnn train`` does."""
    x_train, y_train = data.load(dataset, "train", root=root)
    x_test, y_test = data.load(dataset, "test", root=root)
    if limit:
        x_train, y_train = x_train[:limit], y_train[:limit]
        x_test, y_test = x_test[:max(limit // 6, 1)], y_test[:max(limit // 6, 1)]
    return data.to_float(x_train), y_train, data.to_float(x_test), y_test


def load_folder(dataset, model, image_size=None, limit=0, seed=0):
    """(x_train, y_train, x_test, y_test, classes, preprocessing) of an image folder, read by
    minicnn exactly as ``python -m minicnn train`` reads it (same decoding, resizing, subset)."""
    task, preprocessing = transfer.read_folder_for(dataset, zoo.spec(model).input_shape,
                                                   image_size, limit, seed)
    return (data.to_float(task.x_train), task.y_train, data.to_float(task.x_test), task.y_test,
            task.classes, preprocessing)


def check_model(name, *versions):
    """SystemExit before any data is read when a framework has no version of zoo model ``name``.

    versions: (framework, {name: constructor}) pairs, e.g. ("torch", reference.torch.models.MODELS).
    """
    for framework, models in versions:
        if name not in models:
            raise SystemExit(f"--model {name}: reference/{framework}/models.py has no version of "
                             f"it; it has {', '.join(models)}")


@dataclass
class RunData:
    """What a run trains on: float32 NCHW arrays in [0, 1] and int64 labels, and where they came from.

    classes, preprocessing: an image folder's (None for a dataset name); model_kwargs: what the
    zoo and reference models take for that folder (its number of classes, its image size).
    """
    dataset: str
    x_train: object
    y_train: object
    x_test: object
    y_test: object
    classes: list = None
    preprocessing: dict = None
    model_kwargs: dict = field(default_factory=dict)


def load_run(args):
    """RunData from a run's --model, --dataset, --image-size, --limit, --seed and --data-dir."""
    spec = zoo.spec(args.model)
    try:
        dataset = transfer.resolve(args.dataset or spec.dataset, args.data_dir)
    except ValueError as err:  # where it looked, and how to point it at the data
        raise SystemExit(str(err)) from None
    if not transfer.is_folder(dataset):
        return RunData(dataset, *load(dataset, args.limit, args.data_dir))
    x_train, y_train, x_test, y_test, classes, preprocessing = load_folder(
        dataset, args.model, args.image_size, args.limit, args.seed)
    kwargs = {"num_classes": len(classes)}
    if preprocessing["image_size"] != spec.input_shape[1]:
        kwargs["image_size"] = preprocessing["image_size"]
    return RunData(dataset, x_train, y_train, x_test, y_test, classes, preprocessing, kwargs)


def config(args, framework, device, classes=None, preprocessing=None):
    """The run's settings as metrics.json records them (minicnn's keys, plus the framework).

    classes, preprocessing: an image folder's (``load_folder``); by default a dataset name's.
    """
    dataset = preprocessing["dataset"] if preprocessing else args.dataset or zoo.spec(args.model).dataset
    return {k: v for k, v in vars(args).items()} | {
        "dataset": dataset, "framework": framework, "device": str(device),
        "preprocessing": preprocessing or {"dataset": dataset, "scale": "0-1", "mean": None, "std": None},
        "classes": list(classes or data.CLASSES[dataset])}


def write_run(out, config, history, title):
    """Write OUT/metrics.json (config, history, test_accuracy, test_loss) and OUT/curves.png."""
    os.makedirs(out, exist_ok=True)
    metrics = {"config": config, "history": history}
    if history.get("val_accuracy"):
        metrics["test_accuracy"] = history["val_accuracy"][-1]
        metrics["test_loss"] = history["val_loss"][-1]
    text = json.dumps(metrics, indent=2)
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(text.encode()))
    if history.get("loss"):
        plots.learning_curves(history, os.path.join(out, "curves.png"), title=title)
    return metrics


def epoch_line(epoch, epochs, logs):
    shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "seconds")
    return f"Epoch {epoch + 1}/{epochs} - {logs['seconds']:.1f}s - {shown}"
