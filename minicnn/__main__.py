"""Command line: ``python -m minicnn train | evaluate | predict``.

    python -m minicnn train --model lenet5 --dataset fashion-mnist --epochs 10 --batch-size 64 \\
        --optimizer adam --lr 1e-3 --seed 0 --out runs/lenet5
    python -m minicnn evaluate --checkpoint runs/lenet5/checkpoint.npz
    python -m minicnn predict --checkpoint runs/lenet5/checkpoint.npz shoe.png
"""
import argparse
import json
import math
import os
import sys

import numpy as np

from . import checkpoint as ckpt
from . import data, plots, training, zoo
from .random import manual_seed


def prepare(images, preprocessing):
    """uint8 (N, H, W) -> float32 (N, 1, H, W) in [0, 1], then normalised if the run asked for it."""
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


def cmd_train(args):
    manual_seed(args.seed)
    model = zoo.get(args.model, rng=args.seed)
    spec = model.spec
    dataset = args.dataset or spec.dataset
    x_train, y_train = data.load(dataset, "train", root=args.data_dir)
    x_test, y_test = data.load(dataset, "test", root=args.data_dir)
    if args.limit:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
        x_test, y_test = x_test[:max(args.limit // 6, 1)], y_test[:max(args.limit // 6, 1)]
    preprocessing = {"dataset": dataset, "scale": "0-1", "mean": None, "std": None}
    if args.normalize:
        mean, std = data.mean_std(data.to_float(x_train))
        preprocessing |= {"mean": float(mean), "std": float(std)}
    x_train, x_test = prepare(x_train, preprocessing), prepare(x_test, preprocessing)
    if spec.loss == "categorical":  # Keras' loss on probabilities takes one-hot labels
        y_train, y_test = data.one_hot(y_train, 10), data.one_hot(y_test, 10)

    model.compile(optimizer=args.optimizer, loss=spec.loss, lr=args.lr)
    lr_at = schedule(args.lr_schedule, model.optimizer.lr, args.epochs)
    model.optimizer.lr = lr_at(0)

    def on_epoch_end(epoch, logs):
        model.optimizer.lr = lr_at(epoch + 1)

    os.makedirs(args.out, exist_ok=True)
    config = {k: v for k, v in vars(args).items() if k != "run"} | {"preprocessing": preprocessing, "classes": data.CLASSES[dataset]}
    history = model.fit(x_train, y_train, epochs=args.epochs, batch_size=args.batch_size,
                        validation_data=(x_test, y_test), seed=args.seed,
                        checkpoint_path=os.path.join(args.out, "checkpoint.npz"),
                        resume=args.resume, on_epoch_end=on_epoch_end)
    metrics = {"config": config, "history": history.history}
    if history.history.get("val_accuracy"):
        metrics["test_accuracy"] = history.history["val_accuracy"][-1]
        metrics["test_loss"] = history.history["val_loss"][-1]
    text = json.dumps(metrics, indent=2)
    ckpt.atomic_write(os.path.join(args.out, "metrics.json"), lambda f: f.write(text.encode()))
    if history.history.get("loss"):
        plots.learning_curves(history.history, os.path.join(args.out, "curves.png"),
                              title=f"{args.model} on {dataset}")
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


def cmd_evaluate(args):
    config = _run_config(args.checkpoint)
    model, _ = ckpt.load(args.checkpoint)
    dataset = args.dataset or config["preprocessing"]["dataset"]
    images, labels = data.load(dataset, args.split, root=args.data_dir)
    outputs = training.predict(model, prepare(images, config["preprocessing"]))
    predictions = outputs.argmax(axis=1)
    classes = data.CLASSES[dataset]
    matrix = plots.confusion_matrix(labels, predictions, len(classes))
    print(f"{dataset} {args.split}: accuracy {np.mean(predictions == labels):.4f} "
          f"({int(np.sum(predictions == labels))}/{len(labels)})\n")
    print(plots.confusion_text(matrix, classes))
    out = os.path.join(os.path.dirname(args.checkpoint), f"confusion_{args.split}.png")
    plots.confusion_plot(matrix, classes, out, title=f"{dataset} {args.split}")
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
    channels, height, width = model.spec.input_shape if hasattr(model, "spec") else (1, 28, 28)
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
        probs = probabilities(training.predict(model, x), model.spec.loss)[0]
        top = np.argsort(probs)[::-1][:args.top]
        print(f"{path}: " + ", ".join(f"{classes[i]} {probs[i]:.3f}" for i in top))
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minicnn", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a zoo model on a dataset")
    train.add_argument("--model", default="lenet5", choices=zoo.NAMES)
    train.add_argument("--dataset", default=None, help="mnist or fashion-mnist (default: the model's)")
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
    train.add_argument("--limit", type=int, default=0, help="use only the first N training images")
    train.add_argument("--data-dir", default=None, help="folder with the dataset files")
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

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
