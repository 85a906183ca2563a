"""Train a zoo network with Keras: the options and metrics.json of ``python -m minicnn train``.

    python reference/keras/train.py --model lenet5 --dataset fashion-mnist --epochs 10 \\
        --batch-size 64 --optimizer adam --lr 1e-3 --seed 0 --out runs/keras-lenet5 --device auto
    python reference/keras/train.py --model rps_cnn --dataset path/to/rock-paper-scissors \\
        --epochs 10 --batch-size 32 --seed 0 --out runs/keras-rps28

The Keras road for real-scale runs: ``compile`` + ``fit`` on a tf.data pipeline (shuffle,
batch, prefetch, so the next batch is ready while the GPU computes), on the GPU when
TensorFlow sees one. The images go in NHWC, Keras' layout: (N, 28, 28, 1). The network is
``reference.keras.models.build(name)``, Keras' own default initialisation (Glorot-uniform
kernels, zero biases) unless ``train`` is given a model holding other weights
(reference/compare.py copies minicnn's in).
"""
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `minicnn` and `reference` importable
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from minicnn import zoo  # noqa: E402
from reference import common  # noqa: E402
from reference.keras.models import MODELS, build  # noqa: E402


def pick_device(choice="auto"):
    """A TensorFlow device name for --device auto|cpu|cuda; SystemExit when cuda is absent."""
    gpus = tf.config.list_physical_devices("GPU")
    if choice == "cuda" and not gpus:
        raise SystemExit("--device cuda: TensorFlow sees no GPU (tf.config.list_physical_devices"
                         "('GPU') is empty; tensorflow-cpu has none); use --device auto or cpu")
    return "/GPU:0" if gpus and choice in ("auto", "cuda") else "/CPU:0"


def loss_for(loss):
    """The loss of a zoo spec ("cross_entropy", "nll", "categorical") as a Keras loss."""
    if loss == "cross_entropy":
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if loss == "nll":
        # Keras has no NLL loss. Log-probabilities are logits whose log-sum-exp is 0, so the
        # softmax cross-entropy of them is exactly −log p[label]: PyTorch's NLLLoss
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if loss == "categorical":
        return keras.losses.SparseCategoricalCrossentropy()  # probabilities, clipped to [ε, 1 − ε]
    raise ValueError(f"unknown loss {loss!r}")


def make_optimizer(name, lr):
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr)  # epsilon 1e-7, before the bias correction
    if name == "sgd":
        return keras.optimizers.SGD(learning_rate=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose adam or sgd")


def to_nhwc(x):
    """(N, C, H, W) -> (N, H, W, C): the same images in Keras' layout."""
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def datasets(x_train, y_train, x_test, y_test, batch_size, seed, order=None):
    """(train_for(epoch), test): tf.data pipelines over NHWC arrays.

    Shuffled by tf.data itself (seeded, a new order every epoch), or in ``order(epoch)``.
    """
    x_train, x_test = to_nhwc(x_train), to_nhwc(x_test)
    test = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(1000).prefetch(tf.data.AUTOTUNE)
    if order is None:
        shuffled = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                    .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
                    .batch(batch_size).prefetch(tf.data.AUTOTUNE))
        return (lambda epoch: shuffled), test
    images, labels = tf.constant(x_train), tf.constant(y_train)

    def train_for(epoch):
        return (tf.data.Dataset.from_tensor_slices(order(epoch)).batch(batch_size)
                .map(lambda idx: (tf.gather(images, idx), tf.gather(labels, idx)))
                .prefetch(tf.data.AUTOTUNE))
    return train_for, test


class BatchLosses(keras.callbacks.Callback):
    """Appends every step's loss to a list. Keras' logs hold the running mean of the epoch so
    far, weighted by the batch sizes; the step's own loss is recovered from two of them."""

    def __init__(self, losses, n, batch_size):
        super().__init__()
        self.losses, self.n, self.batch_size = losses, n, batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.total, self.seen = 0.0, 0

    def on_train_batch_end(self, batch, logs=None):
        size = min(self.batch_size, self.n - self.seen)
        total = float(logs["loss"]) * (self.seen + size)
        self.losses.append((total - self.total) / size)
        self.total, self.seen = total, self.seen + size


def train(model, x_train, y_train, x_test, y_test, *, loss, epochs=1, batch_size=64,
          optimizer="adam", lr=1e-3, seed=0, device="auto", order=None, batch_losses=None,
          verbose=True):
    """Train the Keras ``model`` on NCHW float32 arrays (turned NHWC here); returns the history.

    history: {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}, one value per epoch,
    as minicnn's fit(). "seconds" is the wall time of the epoch, evaluation included; the
    first epoch also pays for tracing the graph of the training step.
    order: None to let tf.data shuffle (seeded), or ``order(epoch)`` -> indices.
    batch_losses: a list that receives every step's loss (a float), for learning curves.
    """
    device = pick_device(device) if device in ("auto", "cpu", "cuda") else device
    keras.utils.set_random_seed(seed)  # dropout masks
    train_for, test = datasets(x_train, y_train, x_test, y_test, batch_size, seed, order)
    history = {}
    callbacks = [] if batch_losses is None else [BatchLosses(batch_losses, len(x_train), batch_size)]
    with tf.device(device):
        model.compile(optimizer=make_optimizer(optimizer, lr), loss=loss_for(loss),
                      metrics=["accuracy"])
        for epoch in range(epochs):
            started = time.perf_counter()
            # one fit() per epoch, so that each epoch may have its own order; fit keeps the
            # compiled training step between calls
            h = model.fit(train_for(epoch), validation_data=test, initial_epoch=epoch,
                          epochs=epoch + 1, shuffle=False, verbose=0,  # tf.data shuffles
                          callbacks=callbacks)
            logs = {key: float(h.history[key][-1])
                    for key in ("loss", "accuracy", "val_loss", "val_accuracy")}
            logs["seconds"] = time.perf_counter() - started
            for key, value in logs.items():
                history.setdefault(key, []).append(value)
            if verbose:
                print("keras " + common.epoch_line(epoch, epochs, logs), flush=True)
    return history


def main(argv=None):
    args = common.parser("python reference/keras/train.py", __doc__.split("\n")[0]).parse_args(argv)
    common.check_model(args.model, ("keras", MODELS))
    device = pick_device(args.device)
    spec = zoo.spec(args.model)
    run = common.load_run(args)
    dataset, classes, preprocessing, kwargs = run.dataset, run.classes, run.preprocessing, run.model_kwargs
    x_train, y_train, x_test, y_test = run.x_train, run.y_train, run.x_test, run.y_test
    keras.utils.set_random_seed(args.seed)
    with tf.device(device):
        model = build(args.model, **kwargs)
    history = train(model, x_train, y_train, x_test, y_test, loss=spec.loss, epochs=args.epochs,
                    batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                    seed=args.seed, device=device)
    metrics = common.write_run(args.out, common.config(args, "keras", device, classes, preprocessing),
                               history, f"{args.model} on {Path(dataset).name} (Keras, {device})")
    model.save(Path(args.out) / "model.keras")
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epochs on {device}; "
          f"wrote {args.out}/metrics.json, curves.png, model.keras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
