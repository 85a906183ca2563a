"""Command line: ``python -m minicnn train | evaluate | predict | transfer | show``.

    python -m minicnn train --model lenet5 --dataset fashion-mnist --epochs 10 --batch-size 64 \\
        --optimizer adam --lr 1e-3 --seed 0 --out runs/lenet5
    python -m minicnn evaluate --checkpoint runs/lenet5/checkpoint.npz
    python -m minicnn predict --checkpoint runs/lenet5/checkpoint.npz shoe.png
    python -m minicnn train --model rps_cnn --dataset path/to/rock-paper-scissors --image-size 64
    python -m minicnn transfer --pretrain-epochs 2 --epochs 3 --limit 6000 --target-limit 500
    python -m minicnn show --checkpoint runs/lenet5/checkpoint.npz --image shoe.png --out runs/show

``--dataset`` takes a dataset name (mnist, fashion-mnist) or an image folder: a directory with
training/ and testing/ (or train/ with test/ or val/), each holding one folder per class.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from .. import data, zoo
from ..core.errors import CheckpointError, NonFiniteError
from ..core.files import atomic_write
from ..core.random import manual_seed
from ..train import checkpoint as ckpt
from ..train import loop as training
from ..train import warmup
from . import plots, run_folders, runs, show, transfer
from .runs import prepare, probabilities


def schedule(name, lr, epochs):
    """Learning rate per epoch: constant, cosine (to 0 at the end) or step (÷10 at 50 % and 75 %)."""
    if name == "constant":
        return lambda epoch: lr
    if name == "cosine":
        return lambda epoch: 0.5 * lr * (1 + math.cos(math.pi * epoch / epochs))
    if name == "step":
        return lambda epoch: lr * (0.1 ** ((epoch >= epochs // 2) + (epoch >= 3 * epochs // 4)))
    raise ValueError(f"unknown schedule {name!r}")


def folder_kwargs(args, spec, classes):
    """The zoo arguments for an image folder: its classes, and --image-size if it differs."""
    kwargs = {"num_classes": len(classes)}
    if args.image_size and args.image_size != spec.input_shape[1]:
        kwargs["image_size"] = args.image_size
    return kwargs


def folder_model(args, spec, classes):
    """The zoo model for an image folder: its classes, and --image-size where the model takes it."""
    kwargs = folder_kwargs(args, spec, classes)
    try:
        return zoo.get(args.model, rng=args.seed, **kwargs)
    except TypeError as err:  # a model without num_classes or image_size
        raise run_folders.UsageError(f"--model {args.model} cannot be built for this folder ({err}); its "
                              f"input is {spec.input_shape}; rps_cnn and the ResNets take any --image-size") from None


def load_folder_run(args, spec, dataset):
    """(model, x_train, y_train, x_test, y_test, preprocessing, classes) for an image folder."""
    task, preprocessing = transfer.read_folder_for(dataset, spec.input_shape, args.image_size,
                                                   args.limit or 0, args.seed)
    model = folder_model(args, spec, task.classes)
    return (model, task.x_train, task.y_train, task.x_test, task.y_test, preprocessing,
            task.classes)


def augmentation(args):
    """A data.Augment from --shear-range, --zoom-range, --horizontal-flip, or None."""
    if not (args.shear_range or args.zoom_range or args.horizontal_flip):
        return None
    return data.Augment(shear_range=args.shear_range, zoom_range=args.zoom_range,
                        horizontal_flip=args.horizontal_flip)


def dataset_id(dataset):
    """A dataset as a run records it: its name, or the absolute path of an image folder."""
    return dataset if dataset in data.DATASETS else os.path.abspath(dataset)


def _config(args, dataset, preprocessing, classes, loss, input_shape):
    """What metrics.json and the checkpoint keep of a run: its options and how it read its data."""
    options = {k: v for k, v in vars(args).items() if k not in ("run", "debug", "parser")}
    return options | {
        "dataset": dataset_id(dataset),
        "preprocessing": preprocessing, "classes": classes, "loss": loss,
        "class_to_idx": {name: i for i, name in enumerate(classes)}, "input_shape": list(input_shape)}


def check_run_folder(args, dataset):
    """(out, checkpoint path): refuses to overwrite a run, or to resume another run's checkpoint.

    Then removes the temporary files a killed write left in the folder.
    """
    if args.resume and args.out is None:
        raise run_folders.UsageError("--resume needs --out: the folder of the run to continue")
    out = args.out or run_folders.default_out(args.model, dataset)
    path = os.path.join(out, "checkpoint.npz")
    exists, progress, describe = os.path.exists(path), {}, ""
    if exists and not args.overwrite:
        try:
            progress = ckpt.read_meta(path).get("progress", {})
            epochs = (progress.get("options") or {}).get("epochs")
            describe = f"{progress.get('epoch', 0)} of {epochs or '?'} epochs done"
        except CheckpointError:
            if args.resume:
                raise
            describe = "unreadable"
    run_folders.check_out(out, exists, args.resume, args.overwrite, describe)
    if args.resume:
        stored = {k: progress[k] for k in ("seed", "batch_size") if k in progress}
        stored |= progress.get("options") or {}
        now = run_folders.trajectory(vars(args) | {"dataset": dataset_id(dataset)})
        differ = run_folders.compare(stored, now, progress.get("epoch", 0), args.epochs)
        if differ:
            raise run_folders.UsageError(f"cannot resume {path}: this command differs from the run it "
                                  f"continues:\n  " + "\n  ".join(differ) + "\nresume with the "
                                  f"run's own options (only --epochs may grow), or start a new run "
                                  f"in another --out")
    if os.path.isdir(out):  # only once the folder is this run's: another may be writing there
        for stray in run_folders.remove_temporaries(out):
            print(f"removed {stray}: a temporary file left by a write that was killed",
                  file=sys.stderr)
    return out, path


def cmd_train(args):
    manual_seed(args.seed)
    spec = zoo.spec(args.model)
    dataset = transfer.resolve(args.dataset or spec.dataset, args.data_dir)
    out, checkpoint_path = check_run_folder(args, dataset)
    if transfer.is_folder(dataset):
        (model, x_train, y_train, x_test, y_test, preprocessing,
         classes) = load_folder_run(args, spec, dataset)
    else:
        if args.image_size and args.image_size != spec.input_shape[1]:
            raise run_folders.UsageError(f"--image-size {args.image_size}: {dataset} images are "
                                  f"{spec.input_shape[1]}×{spec.input_shape[2]}; other sizes are "
                                  f"for image folders")
        model = zoo.get(args.model, rng=args.seed)
        x_train, y_train = data.load(dataset, "train", root=args.data_dir)
        x_test, y_test = data.load(dataset, "test", root=args.data_dir)
        if args.limit:
            x_train, y_train = x_train[:args.limit], y_train[:args.limit]
            x_test, y_test = x_test[:max(args.limit // 6, 1)], y_test[:max(args.limit // 6, 1)]
        preprocessing = {"dataset": dataset, "scale": "0-1", "mean": None, "std": None}
        classes = list(data.CLASSES[dataset])
    if args.normalize:
        mean, std = data.mean_std(data.to_float(x_train))
        preprocessing |= {"mean": float(mean), "std": float(std)}
    x_train, x_test = prepare(x_train, preprocessing), prepare(x_test, preprocessing)
    if spec.loss == "categorical":  # Keras' loss on probabilities takes one-hot labels
        y_train, y_test = data.one_hot(y_train, len(classes)), data.one_hot(y_test, len(classes))

    model.compile(optimizer=args.optimizer, loss=spec.loss, lr=args.lr)
    # a fresh machine compiles the kernels (in a child process) while the first batches run
    # on NumPy's
    build = (args.model, folder_kwargs(args, spec, classes) if transfer.is_folder(dataset)
             else {})
    warmup.compile_in_background(model, x_train[:args.batch_size], y_train[:args.batch_size],
                                 build=build)
    lr_at = schedule(args.lr_schedule, model.optimizer.lr, args.epochs)
    model.optimizer.lr = lr_at(0)

    def on_epoch_end(epoch, logs):
        model.optimizer.lr = lr_at(epoch + 1)

    os.makedirs(out, exist_ok=True)
    config = _config(args, dataset, preprocessing, classes, spec.loss, x_train.shape[1:]) | {"out": out}
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), seed=args.seed,
                        checkpoint_path=checkpoint_path, resume=args.resume,
                        on_epoch_end=on_epoch_end, transform=augmentation(args), options=config)
    if history.interrupted:
        print(f"resume with:\n  {run_folders.resume_command(args.parser, args, out)}")
        return 130
    metrics = {"config": config, "history": history.history}
    if history.history.get("val_accuracy"):
        metrics["test_accuracy"] = history.history["val_accuracy"][-1]
        metrics["test_loss"] = history.history["val_loss"][-1]
    text = json.dumps(metrics, indent=2)
    atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(text.encode()))
    if history.history.get("loss"):
        plots.learning_curves(history.history, os.path.join(out, "curves.png"),
                              title=f"{args.model} on {os.path.basename(os.path.normpath(dataset))}")
    if "test_accuracy" in metrics:
        print(f"test accuracy {metrics['test_accuracy']:.4f} after {len(history.history['loss'])} "
              f"epochs; wrote {out}/checkpoint.npz, metrics.json, curves.png")
    return 0


def load_folder_split(dataset, split, config, checkpoint_path):
    """(images, labels) of a folder's training or test split, read as the run read its own."""
    pre = config["preprocessing"]
    if "image_size" not in pre:
        raise CheckpointError(f"{checkpoint_path} was trained on {pre['dataset']} "
                              f"({config.get('input_shape') or '28×28 grayscale'}), not on an "
                              f"image folder; evaluate it on {pre['dataset']} (leave out "
                              f"--dataset), or train a model on {dataset}")
    folder = data.ImageFolder(transfer.find_splits(dataset)[split == "test"], pre["image_size"],
                              color_mode=pre["color_mode"])
    if folder.classes != config["classes"]:
        raise CheckpointError(f"{folder.root} has the classes {folder.classes}; the checkpoint "
                              f"{checkpoint_path} was trained on {config['classes']}")
    return folder.load()


def cmd_evaluate(args):
    config = runs.run_config(args.checkpoint)
    model, _ = ckpt.load(args.checkpoint)
    dataset = transfer.resolve(args.dataset or config["preprocessing"]["dataset"], args.data_dir)
    if transfer.is_folder(dataset):
        images, labels = load_folder_split(dataset, args.split, config, args.checkpoint)
        classes = config["classes"]
    else:
        if "image_size" in config["preprocessing"]:
            raise CheckpointError(f"{args.checkpoint} was trained on the image folder "
                                  f"{config['preprocessing']['dataset']} ({config['classes']}); "
                                  f"it cannot classify {dataset}: evaluate it on that folder")
        classes = data.CLASSES[dataset]
        if list(classes) != list(config["classes"]):
            raise CheckpointError(f"{args.checkpoint} was trained on {config['classes']}, "
                                  f"{dataset} has the classes {list(classes)}; evaluate it on "
                                  f"{config['preprocessing']['dataset']}")
        images, labels = data.load(dataset, args.split, root=args.data_dir)
    outputs = training.predict(model, prepare(images, config["preprocessing"]))
    predictions = outputs.argmax(axis=1)
    matrix = plots.confusion_matrix(labels, predictions, len(classes))
    name = os.path.basename(os.path.normpath(dataset))   # a folder's name, not its whole path
    print(f"{name} {args.split}: accuracy {np.mean(predictions == labels):.4f} "
          f"({int(np.sum(predictions == labels))}/{len(labels)})\n")
    print(plots.confusion_text(matrix, classes))
    out = os.path.join(os.path.dirname(args.checkpoint), f"confusion_{args.split}.png")
    plots.confusion_plot(matrix, classes, out, title=f"{name} {args.split}")
    print(f"\nwrote {out}")
    return 0


def cmd_predict(args):
    config = runs.run_config(args.checkpoint)
    model, _ = ckpt.load(args.checkpoint)
    shape = runs.input_shape(config, model)
    classes = config["classes"]
    failed = 0
    for path in args.images:
        try:
            # --invert: Fashion-MNIST and MNIST are light objects on a black background
            x = runs.read_image(path, shape, config["preprocessing"], invert=args.invert)
        except (OSError, ValueError) as err:  # PIL's UnidentifiedImageError is an OSError
            failed += 1
            print(f"error: {path}: cannot read this image ({err}); skipped", file=sys.stderr)
            continue
        probs = probabilities(training.predict(model, x), config.get("loss") or model.spec.loss)[0]
        top = np.argsort(probs)[::-1][:args.top]
        print(f"{path}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in top))
    if failed:
        print(f"error: {failed} of {len(args.images)} images could not be read", file=sys.stderr)
        return 2
    return 0


def cmd_transfer(args):
    metrics = transfer.run(args.source, args.target, args.source_classes, args.target_classes,
                           epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                           limit=args.limit or 0, target_limit=args.target_limit or 0,
                           image_size=args.image_size, batch_norm=not args.no_batch_norm,
                           out=args.out, verbose=0 if args.quiet else 1, data_dir=args.data_dir)
    print("\n" + transfer.table(metrics))
    print(f"\nwrote {args.out}/metrics.json and the checkpoints pretrained.npz, "
          f"{', '.join(name + '.npz' for name in transfer.RUNS)} ({metrics['seconds']:.0f} s)")
    return 0


# ----------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------
def positive(kind):
    """An argparse type: ``kind`` (int or float) > 0, refused with the value otherwise."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a{'n integer' if kind is int else ' number'}")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
        return value
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def fraction(text):
    """An argparse type: a number in [0, 1)."""
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be in [0, 1)")
    return value


def non_negative(text):
    """An argparse type: a number >= 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be 0 or more")
    return value


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default shown; the description and epilog kept as written."""


ENVIRONMENT = """environment variables:
  MINICNN_DATA     a folder searched first for datasets (mnist/, fashion-mnist/) and image
                   folders named by --dataset; the Makefile sets ../shared/datasets
  MINICNN_CACHE    where downloaded datasets are kept (default: the user cache, minicnn/)
  MINICNN_KERNELS  the compute kernels: numba (default) or numpy (the plain loops)

Run `python -m minicnn COMMAND --help` for a command's options; --debug shows the traceback of
an error."""


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m minicnn", description=__doc__,
                                     formatter_class=Formatter, epilog=ENVIRONMENT)
    parser.add_argument("--debug", action="store_true",
                        help="show the full traceback of an error instead of its one line")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                title="commands")

    def command(name, help, run):
        p = sub.add_parser(name, help=help, description=help, formatter_class=Formatter,
                           epilog=ENVIRONMENT)
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
        p.set_defaults(run=run, parser=p)
        return p

    train = command("train", "train a zoo model on a dataset or an image folder", cmd_train)
    train.add_argument("--model", default="lenet5", choices=zoo.NAMES, help="the zoo model")
    train.add_argument("--dataset", default=None,
                       help="mnist, fashion-mnist (any case), or an image folder with training/ "
                            "and testing/ class folders; if not given: the model's own dataset")
    train.add_argument("--image-size", type=positive(int), default=None,
                       help="side of the square an image folder's photos are resized to; if not given: "
                            "the model's input size")
    train.add_argument("--epochs", type=positive(int), default=10,
                       help="passes over the training set (with --resume it may grow)")
    train.add_argument("--batch-size", type=positive(int), default=64, help="images per step")
    train.add_argument("--optimizer", default="adam", choices=["adam", "keras_adam", "sgd"],
                       help="keras_adam: Keras' epsilon placement")
    train.add_argument("--lr", type=positive(float), default=1e-3, help="learning rate")
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine", "step"],
                       help="learning rate per epoch: constant, cosine to 0, or ÷10 at 50 %% and 75 %%")
    train.add_argument("--normalize", action="store_true",
                       help="subtract the training set's mean and divide by its std (after [0, 1] "
                            "scaling)")
    train.add_argument("--seed", type=int, default=0,
                       help="seeds the initial weights, the shuffle and dropout")
    train.add_argument("--out", default=None,
                       help="the run's folder: checkpoint.npz, metrics.json, curves.png; if not given: a "
                            "new folder runs/MODEL-DATASET-DATE-TIME. A folder holding a "
                            "checkpoint needs --resume or --overwrite")
    train.add_argument("--resume", action="store_true",
                       help="continue the run in --out from its checkpoint, with the same options")
    train.add_argument("--overwrite", action="store_true",
                       help="start a new run in --out, replacing the checkpoint there")
    train.add_argument("--limit", type=positive(int), default=None,
                       help="use only N training images and N // 6 test images (the first ones "
                            "of a dataset, a seeded random subset of a folder); if not given: all")
    train.add_argument("--data-dir", default=None,
                       help="folder with the dataset files, searched before MINICNN_DATA")
    train.add_argument("--shear-range", type=non_negative, default=0.0,
                       help="augmentation, Keras' name: random shear in degrees, U(-s, s)")
    train.add_argument("--zoom-range", type=fraction, default=0.0,
                       help="augmentation, Keras' name: random zoom factors in [1 - z, 1 + z]")
    train.add_argument("--horizontal-flip", action="store_true",
                       help="augmentation, Keras' name: flip half of the images left-right")

    evaluate = command("evaluate", "accuracy and confusion matrix of a checkpoint", cmd_evaluate)
    evaluate.add_argument("--checkpoint", required=True,
                          help="a run's checkpoint.npz (written by train)")
    evaluate.add_argument("--dataset", default=None,
                          help="dataset name or image folder; if not given: the one the run trained on")
    evaluate.add_argument("--split", default="test", choices=["train", "test"],
                          help="which split to classify")
    evaluate.add_argument("--data-dir", default=None,
                          help="folder with the dataset files, searched before MINICNN_DATA")

    predict = command("predict", "classify image files with a checkpoint", cmd_predict)
    predict.add_argument("--checkpoint", required=True,
                         help="a run's checkpoint.npz (written by train)")
    predict.add_argument("images", nargs="+", help="image files (PNG, JPEG, ...)")
    predict.add_argument("--top", type=positive(int), default=3,
                         help="how many classes to print per image, most probable first")
    predict.add_argument("--invert", action="store_true",
                         help="invert dark-on-light photos (MNIST and Fashion-MNIST are light "
                              "on black)")

    tl = command("transfer", "pretrain, freeze the base, train a new head: frozen pretrained vs "
                             "frozen random base vs fine-tuning", cmd_transfer)
    tl.add_argument("--source", default="fashion-mnist",
                    help="dataset name or image folder to pretrain on")
    tl.add_argument("--source-classes", default="0-4",
                    help="classes of a dataset name, e.g. 0-4 or 0,2,4")
    tl.add_argument("--target", default="fashion-mnist",
                    help="dataset name or image folder to transfer to")
    tl.add_argument("--target-classes", default="5-9", help="classes of the target dataset name")
    tl.add_argument("--epochs", type=positive(int), default=3,
                    help="epochs of each of the three target runs")
    tl.add_argument("--pretrain-epochs", type=positive(int), default=3,
                    help="epochs of pretraining on the source")
    tl.add_argument("--batch-size", type=positive(int), default=64, help="images per step")
    tl.add_argument("--lr", type=positive(float), default=1e-3, help="Adam's learning rate, every run")
    tl.add_argument("--seed", type=int, default=0, help="seeds weights, shuffles and subsets")
    tl.add_argument("--limit", type=positive(int), default=None,
                    help="at most N images per split of each task; if not given: all")
    tl.add_argument("--target-limit", type=positive(int), default=None,
                    help="at most N target TRAINING images; if not given: as --limit")
    tl.add_argument("--image-size", type=positive(int), default=None,
                    help="side for image folders (Fashion-MNIST is 28); if not given: 28")
    tl.add_argument("--no-batch-norm", action="store_true", help="a base without BatchNorm2D")
    tl.add_argument("--out", default="runs/transfer",
                    help="folder for metrics.json and the four checkpoints")
    tl.add_argument("--data-dir", default=None,
                    help="folder with the dataset files, searched before MINICNN_DATA")
    tl.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    shown = command("show", "an HTML page of a model's insides: every layer's maps, the first "
                            "filters, top-5, saliency and Grad-CAM", show.run)
    show.add_options(shown)
    return parser


#: errors a user can act on: printed as one ``error:`` line (or a few), exit 2
EXPECTED = (run_folders.UsageError, ValueError, NonFiniteError, OSError)


def message(err):
    """The ``error:`` text of an expected error: its message, with the file and a fix for OS errors."""
    if isinstance(err, OSError) and err.filename is not None:
        fix = {PermissionError: "check its permissions, or choose another path (--out)",
               FileNotFoundError: "check the path",
               IsADirectoryError: "give a file, not a folder"}.get(type(err), "")
        return f"{err.filename}: {err.strerror or err}" + (f"; {fix}" if fix else "")
    return str(err)


def main(argv=None):
    """Run one command; returns the exit status (0, 2 for a user error, 130 when interrupted)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("interrupted", file=sys.stderr)
        return 130
    except EXPECTED as err:
        if args.debug:
            raise
        print(f"error: {message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
