"""Command line: ``python -m minicnn train | evaluate | predict``.

    python -m minicnn train --model lenet5 --dataset fashion-mnist --epochs 10 --batch-size 64 \\
        --optimizer adam --lr 1e-3 --seed 0 --out runs/lenet5
    python -m minicnn evaluate --checkpoint runs/lenet5/checkpoint.npz
    python -m minicnn predict --checkpoint runs/lenet5/checkpoint.npz shoe.png
    python -m minicnn train --model rps_cnn --dataset path/to/rock-paper-scissors --image-size 64
    python -m minicnn transfer --pretrain-epochs 2 --epochs 3 --limit 6000 --target-limit 500

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
from ..core.files import atomic_write
from ..core.random import manual_seed
from ..train import checkpoint as ckpt
from ..train import loop as training
from ..train import warmup
from . import plots, transfer


def prepare(images, preprocessing):
    """uint8 (N, H, W) or (N, C, H, W) -> float32 (N, C, H, W) in [0, 1], then normalised if the
    run asked for it."""
    x = data.to_float(images)
    if preprocessing.get("mean") is not None:
        x = data.normalize(x, preprocessing["mean"], preprocessing["std"])
    return x


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
        raise SystemExit(f"--model {args.model} cannot be built for this folder ({err}); its input "
                         f"is {spec.input_shape}; rps_cnn takes any --image-size") from None


def load_folder_run(args, spec, dataset):
    """(model, x_train, y_train, x_test, y_test, preprocessing, classes) for an image folder."""
    try:
        task, preprocessing = transfer.read_folder_for(dataset, spec.input_shape, args.image_size,
                                                       args.limit, args.seed)
    except ValueError as err:  # layout errors: say what was looked for
        raise SystemExit(str(err)) from None
    model = folder_model(args, spec, task.classes)
    return (model, task.x_train, task.y_train, task.x_test, task.y_test, preprocessing,
            task.classes)


def augmentation(args):
    """A data.Augment from --shear-range, --zoom-range, --horizontal-flip, or None."""
    if not (args.shear_range or args.zoom_range or args.horizontal_flip):
        return None
    return data.Augment(shear_range=args.shear_range, zoom_range=args.zoom_range,
                        horizontal_flip=args.horizontal_flip)


def cmd_train(args):
    manual_seed(args.seed)
    spec = zoo.spec(args.model)
    try:
        dataset = transfer.resolve(args.dataset or spec.dataset, args.data_dir)
    except ValueError as err:
        raise SystemExit(str(err)) from None
    if transfer.is_folder(dataset):
        (model, x_train, y_train, x_test, y_test, preprocessing,
         classes) = load_folder_run(args, spec, dataset)
    else:
        if args.image_size and args.image_size != spec.input_shape[1]:
            raise SystemExit(f"--image-size {args.image_size}: {dataset} images are "
                             f"{spec.input_shape[1]}×{spec.input_shape[2]}; other sizes are for "
                             f"image folders")
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

    os.makedirs(args.out, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "run"} | {
        "preprocessing": preprocessing, "classes": classes, "loss": spec.loss,
        "class_to_idx": {name: i for i, name in enumerate(classes)},
        "input_shape": list(x_train.shape[1:])}
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), seed=args.seed,
                        checkpoint_path=os.path.join(args.out, "checkpoint.npz"),
                        resume=args.resume, on_epoch_end=on_epoch_end, transform=augmentation(args))
    metrics = {"config": config, "history": history.history}
    if history.history.get("val_accuracy"):
        metrics["test_accuracy"] = history.history["val_accuracy"][-1]
        metrics["test_loss"] = history.history["val_loss"][-1]
    text = json.dumps(metrics, indent=2)
    atomic_write(os.path.join(args.out, "metrics.json"), lambda f: f.write(text.encode()))
    if history.history.get("loss"):
        plots.learning_curves(history.history, os.path.join(args.out, "curves.png"),
                              title=f"{args.model} on {os.path.basename(os.path.normpath(dataset))}")
    if "test_accuracy" in metrics:
        print(f"test accuracy {metrics['test_accuracy']:.4f} after {len(history.history['loss'])} "
              f"epochs; wrote {args.out}/checkpoint.npz, metrics.json, curves.png")
    return 0


def _run_config(checkpoint_path):
    path = os.path.join(os.path.dirname(checkpoint_path), "metrics.json")
    if not os.path.exists(path):
        raise SystemExit(f"{path} not found: evaluate and predict read the run's preprocessing there")
    with open(path) as f:
        return json.load(f)["config"]


def load_folder_split(dataset, split, config):
    """(images, labels) of a folder's training or test split, read as the run read its own."""
    pre = config["preprocessing"]
    try:
        folder = data.ImageFolder(transfer.find_splits(dataset)[split == "test"], pre["image_size"],
                                  color_mode=pre["color_mode"])
    except (ValueError, data.DataError) as err:
        raise SystemExit(str(err)) from None
    if folder.classes != config["classes"]:
        raise SystemExit(f"{folder.root} has the classes {folder.classes}; the checkpoint was "
                         f"trained on {config['classes']}")
    return folder.load()


def cmd_evaluate(args):
    config = _run_config(args.checkpoint)
    model, _ = ckpt.load(args.checkpoint)
    dataset = args.dataset or config["preprocessing"]["dataset"]
    if transfer.is_folder(dataset):
        images, labels = load_folder_split(dataset, args.split, config)
        classes = config["classes"]
    else:
        images, labels = data.load(dataset, args.split, root=args.data_dir)
        classes = data.CLASSES[dataset]
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


def probabilities(outputs, loss):
    """Class probabilities from whatever the model ends with: logits, log-probabilities or probabilities."""
    if loss == "categorical":
        return outputs
    if loss == "nll":
        return np.exp(outputs)
    shifted = np.exp(outputs - outputs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def cmd_predict(args):
    from PIL import Image
    config = _run_config(args.checkpoint)
    model, _ = ckpt.load(args.checkpoint)
    # the run's own input shape (an image folder may have been read at any size)
    channels, height, width = config.get("input_shape") or (
        model.spec.input_shape if hasattr(model, "spec") else (1, 28, 28))
    classes = config["classes"]
    for path in args.images:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB").resize((width, height), Image.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
        if args.invert:  # Fashion-MNIST and MNIST are light objects on a black background
            pixels = 255 - pixels
        x = prepare(pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)[None],
                    config["preprocessing"])
        if channels != 1:
            x = x.reshape(1, channels, height, width)
        probs = probabilities(training.predict(model, x), config.get("loss") or model.spec.loss)[0]
        top = np.argsort(probs)[::-1][:args.top]
        print(f"{path}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in top))
    return 0


def cmd_transfer(args):
    try:
        metrics = transfer.run(args.source, args.target, args.source_classes, args.target_classes,
                               epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                               batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                               limit=args.limit, target_limit=args.target_limit,
                               image_size=args.image_size, batch_norm=not args.no_batch_norm,
                               out=args.out, verbose=0 if args.quiet else 1, data_dir=args.data_dir)
    except (ValueError, data.DataError) as err:
        raise SystemExit(str(err)) from None
    print("\n" + transfer.table(metrics))
    print(f"\nwrote {args.out}/metrics.json and the checkpoints pretrained.npz, "
          f"{', '.join(name + '.npz' for name in transfer.RUNS)} ({metrics['seconds']:.0f} s)")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minicnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a zoo model on a dataset")
    train.add_argument("--model", default="lenet5", choices=zoo.NAMES)
    train.add_argument("--dataset", default=None,
                       help="mnist, fashion-mnist, or an image folder with training/ and testing/ "
                            "class folders (default: the model's)")
    train.add_argument("--image-size", type=int, default=None,
                       help="side of the square an image folder's photos are resized to "
                            "(default: the model's input size)")
    train.add_argument("--epochs", type=int, default=10)
    train.add_argument("--batch-size", type=int, default=64)
    train.add_argument("--optimizer", default="adam", choices=["adam", "keras_adam", "sgd"])
    train.add_argument("--lr", type=float, default=1e-3)
    train.add_argument("--lr-schedule", default="constant", choices=["constant", "cosine", "step"])
    train.add_argument("--normalize", action="store_true",
                       help="subtract the training set's mean and divide by its std (after [0, 1] scaling)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default="runs/latest")
    train.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.npz")
    train.add_argument("--limit", type=int, default=0,
                       help="use only N training images and N // 6 test images (the first ones of "
                            "a dataset, a seeded random subset of a folder)")
    train.add_argument("--data-dir", default=None, help="folder with the dataset files")
    train.add_argument("--shear-range", type=float, default=0.0,
                       help="augmentation, Keras' name: random shear in degrees, U(-s, s)")
    train.add_argument("--zoom-range", type=float, default=0.0,
                       help="augmentation, Keras' name: random zoom factors in [1 - z, 1 + z]")
    train.add_argument("--horizontal-flip", action="store_true",
                       help="augmentation, Keras' name: flip half of the images left-right")
    train.set_defaults(run=cmd_train)

    evaluate = sub.add_parser("evaluate", help="accuracy and confusion matrix of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True)
    evaluate.add_argument("--dataset", default=None)
    evaluate.add_argument("--split", default="test", choices=["train", "test"])
    evaluate.add_argument("--data-dir", default=None)
    evaluate.set_defaults(run=cmd_evaluate)

    predict = sub.add_parser("predict", help="classify image files with a checkpoint")
    predict.add_argument("--checkpoint", required=True)
    predict.add_argument("images", nargs="+")
    predict.add_argument("--top", type=int, default=3)
    predict.add_argument("--invert", action="store_true", help="invert dark-on-light photos")
    predict.set_defaults(run=cmd_predict)

    tl = sub.add_parser("transfer", help="pretrain, freeze the base, train a new head: frozen "
                                         "pretrained vs frozen random base vs fine-tuning")
    tl.add_argument("--source", default="fashion-mnist", help="dataset name or image folder to pretrain on")
    tl.add_argument("--source-classes", default="0-4", help="classes of a dataset name, e.g. 0-4 or 0,2,4")
    tl.add_argument("--target", default="fashion-mnist", help="dataset name or image folder to transfer to")
    tl.add_argument("--target-classes", default="5-9")
    tl.add_argument("--epochs", type=int, default=3, help="epochs of each of the three target runs")
    tl.add_argument("--pretrain-epochs", type=int, default=3)
    tl.add_argument("--batch-size", type=int, default=64)
    tl.add_argument("--lr", type=float, default=1e-3, help="Adam's learning rate, every run")
    tl.add_argument("--seed", type=int, default=0)
    tl.add_argument("--limit", type=int, default=0, help="at most N images per split of each task")
    tl.add_argument("--target-limit", type=int, default=0,
                    help="at most N target TRAINING images (default: as --limit)")
    tl.add_argument("--image-size", type=int, default=None,
                    help="side for image folders (Fashion-MNIST is 28; default 28)")
    tl.add_argument("--no-batch-norm", action="store_true", help="a base without BatchNorm2D")
    tl.add_argument("--out", default="runs/transfer")
    tl.add_argument("--data-dir", default=None, help="folder with the dataset files")
    tl.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    tl.set_defaults(run=cmd_transfer)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
