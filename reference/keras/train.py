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

Many devices, with tf.distribute (``--strategy``):

    python reference/keras/train.py --strategy mirrored ...        # every GPU of this machine
    python reference/keras/train.py --strategy mirrored --replicas 2 --device cpu ...
    TF_CONFIG='{"cluster": {"worker": ["HOST0:12345", "HOST1:12345"]}, "task": {"type": "worker",
        "index": 0}}' python reference/keras/train.py --strategy multiworker ...   # index 1 on HOST1

``mirrored`` is MirroredStrategy: one replica of the model per device, each takes
batch-size / replicas of every batch, and the gradients are added over the replicas before
every update (Keras divides each replica's loss by the number of replicas, so the sum is the
mean over the whole batch). ``--batch-size`` stays the global batch. On a machine without a
GPU, ``--replicas N`` splits the CPU into N logical devices, which is how the tests run the
mirrored code. ``multiworker`` is MultiWorkerMirroredStrategy over the machines that TF_CONFIG
lists; worker 0 alone writes the files.
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


STRATEGIES = ("default", "mirrored", "multiworker")


def replica_devices(replicas=None, choice="auto"):
    """The devices MirroredStrategy mirrors over: ``replicas`` GPUs (default: all), or, without a
    GPU, the CPU split into ``replicas`` logical devices. Call it before TensorFlow runs anything:
    logical devices can only be set up before the runtime starts."""
    pick_device(choice)  # --device cuda without a GPU: the usual message
    gpus = tf.config.list_physical_devices("GPU") if choice != "cpu" else []
    if gpus:
        replicas = replicas or len(gpus)
        if replicas > len(gpus):
            common.usage_error(f"--replicas {replicas}: TensorFlow sees {len(gpus)} GPU(s)")
        return [f"/gpu:{i}" for i in range(replicas)]
    replicas = replicas or 1
    if replicas > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError as err:  # the runtime had started: too late to split the CPU
            raise RuntimeError(f"--replicas {replicas}: the CPU must be split into logical devices "
                               f"before TensorFlow starts ({err})") from None
    return [f"/cpu:{i}" for i in range(replicas)]


class MultiWorkerMirrored(tf.distribute.MultiWorkerMirroredStrategy):
    """MultiWorkerMirroredStrategy that accepts the two reductions Keras 3's ``fit`` asks of it.

    ``fit`` reduces a whole (x, y) batch in one call, and every step's per-replica scalar logs
    "along axis 0"; the strategy refuses both (keras-team/keras#20585, tensorflow#72388), while
    MirroredStrategy accepts them. Here a structure is reduced part by part, and a scalar across
    the replicas (axis None), which is what ``fit`` means.
    """

    def reduce(self, reduce_op, value, axis):
        def one(part):
            scalar = self.experimental_local_results(part)[0].shape.rank == 0
            return super(MultiWorkerMirrored, self).reduce(reduce_op, part, None if scalar else axis)
        return tf.nest.map_structure(one, value)


def make_strategy(name, replicas=None, choice="auto"):
    """(tf.distribute strategy or None, device name for the run's records) for --strategy.

    default: None, one device (``pick_device``). mirrored: MirroredStrategy over
    ``replica_devices``. multiworker: MultiWorkerMirroredStrategy over the cluster in TF_CONFIG.
    """
    if name == "default":
        if replicas not in (None, 1):
            common.usage_error(f"--replicas {replicas}: replicas need --strategy mirrored")
        return None, pick_device(choice)
    if name == "mirrored":
        devices = replica_devices(replicas, choice)
        return tf.distribute.MirroredStrategy(devices), f"mirrored over {', '.join(devices)}"
    if name == "multiworker":
        if "TF_CONFIG" not in os.environ:
            common.usage_error("--strategy multiworker: set TF_CONFIG on every worker (the cluster's "
                               "worker addresses and this worker's index; see reference/README.md)")
        if replicas is not None:
            common.usage_error("--replicas: multiworker takes every GPU of each worker (or its CPU)")
        pick_device(choice)
        strategy = MultiWorkerMirrored()
        return strategy, f"multiworker, {strategy.num_replicas_in_sync} replica(s)"
    raise ValueError(f"unknown strategy {name!r}; choose one of {', '.join(STRATEGIES)}")


def is_chief(strategy):
    """True for the process that writes the files: worker 0 (or the only process)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (resolver.task_type == "worker" and resolver.task_id == 0
                                             and "chief" not in resolver.cluster_spec().as_dict())


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
          verbose=True, strategy=None):
    """Train the Keras ``model`` on NCHW float32 arrays (turned NHWC here); returns the history.

    history: {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}, one value per epoch,
    as minicnn's fit(). "seconds" is the wall time of the epoch, evaluation included; the
    first epoch also pays for tracing the graph of the training step.
    order: None to let tf.data shuffle (seeded), or ``order(epoch)`` -> indices.
    batch_losses: a list that receives every step's loss (a float), for learning curves.
    strategy: a tf.distribute strategy whose scope built ``model`` (``make_strategy``), or None
    for one device; ``batch_size`` is then the global batch, split over the replicas.
    """
    device = pick_device(device) if device in ("auto", "cpu", "cuda") else device
    keras.utils.set_random_seed(seed)  # dropout masks
    train_for, test = datasets(x_train, y_train, x_test, y_test, batch_size, seed, order)
    history = {}
    callbacks = [] if batch_losses is None else [BatchLosses(batch_losses, len(x_train), batch_size)]
    with strategy.scope() if strategy is not None else tf.device(device):
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


def parse(argv=None):
    p = common.parser("python reference/keras/train.py", __doc__.split("\n")[0])
    p.add_argument("--strategy", default="default", choices=STRATEGIES,
                   help="default: one device; mirrored: MirroredStrategy over this machine's "
                        "GPUs (or --replicas logical CPUs); multiworker: "
                        "MultiWorkerMirroredStrategy over the machines in TF_CONFIG")
    p.add_argument("--replicas", type=int, default=None,
                   help="mirrored: how many devices (default: every GPU; without a GPU, the "
                        "CPU split into this many logical devices)")
    args = p.parse_args(argv)
    if args.replicas is not None and args.replicas < 1:
        common.usage_error(f"--replicas {args.replicas}: expected 1 or more devices")
    return args


def main(argv=None):
    args = parse(argv)
    common.check_model(args.model, ("keras", MODELS))
    common.check_out(args)
    strategy, device = make_strategy(args.strategy, args.replicas, args.device)  # before any TF op
    spec = zoo.spec(args.model)
    run = common.load_run(args)
    dataset, classes, preprocessing, kwargs = run.dataset, run.classes, run.preprocessing, run.model_kwargs
    x_train, y_train, x_test, y_test = run.x_train, run.y_train, run.x_test, run.y_test
    chief = is_chief(strategy)
    keras.utils.set_random_seed(args.seed)
    with strategy.scope() if strategy is not None else tf.device(device):
        model = build(args.model, **kwargs)
    history = train(model, x_train, y_train, x_test, y_test, loss=spec.loss, epochs=args.epochs,
                    batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                    seed=args.seed, device=device, strategy=strategy, verbose=chief)
    if not chief:  # the other workers hold the same weights; worker 0 writes them
        return 0
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    config = common.config(args, "keras", device, classes, preprocessing) | {"processes": replicas}
    metrics = common.write_run(args.out, config, history,
                               f"{args.model} on {Path(dataset).name} (Keras, {device})")
    model.save(Path(args.out) / "model.keras")
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epochs on {device}; "
          f"wrote {args.out}/metrics.json, curves.png, model.keras")
    return 0


if __name__ == "__main__":
    sys.exit(main())
