"""Transfer learning: train a network on one task, freeze its convolutional base, put a new head on it.

    python -m minicnn transfer --pretrain-epochs 2 --epochs 3 --limit 6000 --target-limit 500
    python -m minicnn transfer --source fashion-mnist --target path/to/folder   # training/ + testing/

The recipe of the Alien-vs-Predator article (a ResNet-50 pretrained on ImageNet, its base frozen,
a new head Dense 128 → ReLU → Dense 2), at a size a CPU trains in minutes:

1. pretrain ``zoo.transfer_cnn`` on the source task: Fashion-MNIST's classes 0-4 by default
   (T-shirt/top, Trouser, Pullover, Dress, Coat), or an image folder;
2. on the target task (classes 5-9: Sandal, Shirt, Sneaker, Bag, Ankle boot, or an image
   folder), three runs with the same budget (epochs, batch size, learning rate, batches in the
   same order) and the same freshly initialised head:

   a. ``frozen_pretrained``: the pretrained base, frozen, and a new head (feature extraction);
   b. ``frozen_random``: the same base as it was BEFORE pretraining (random), frozen, and the
      same new head: what the head alone can do, i.e. what pretraining is worth;
   c. ``fine_tune``: the pretrained base and the new head, everything trained;

3. a table of the target test accuracies, ``OUT/metrics.json`` and one checkpoint per network.

A frozen base keeps its weights bit for bit (the optimizer skips frozen parameters) and, with
minicnn's BatchNorm2D, its running statistics too: a frozen BatchNorm normalises with the
statistics it learnt on the source task, as Keras does (lesson 11).

An image folder is a directory with ``training/`` and ``testing/`` (or ``train/`` with ``test/``
or ``val/``), each holding one sub-folder of images per class; ``find_splits`` finds them and
``load_folder`` reads them through ``minicnn.data.ImageFolder``.
"""
import json
import os
import time
from dataclasses import dataclass

import numpy as np

from .. import data, zoo
from ..core.files import atomic_write
from ..train import checkpoint as ckpt

#: (training, test) sub-folder names an image folder may use, in the order they are looked for
SPLIT_NAMES = (("training", "testing"), ("train", "test"), ("train", "val"))

#: the three target runs: name -> what it is
RUNS = {
    "frozen_pretrained": "frozen pretrained base + new head",
    "frozen_random": "frozen random base + new head",
    "fine_tune": "fine-tuning (pretrained start)",
}


@dataclass
class Task:
    """One classification task: uint8 images (N, C, H, W), int64 labels 0..k-1, class names."""
    name: str
    classes: list
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def describe(self):
        return (f"{self.name}: {len(self.classes)} classes ({', '.join(self.classes)}), "
                f"{len(self.x_train)} training and {len(self.x_test)} test images "
                f"{'×'.join(map(str, self.x_train.shape[1:]))}")


# ----------------------------------------------------------------------------------------
# data: dataset names (IDX) and image folders
# ----------------------------------------------------------------------------------------
def parse_classes(text):
    """"0-4" -> (0, 1, 2, 3, 4); "0,2,7" -> (0, 2, 7); a tuple of ints is returned as is."""
    if not isinstance(text, str):
        return tuple(int(c) for c in text)
    out = []
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        try:
            out += list(range(int(lo), int(hi) + 1)) if sep else [int(lo)]
        except ValueError:
            raise ValueError(f"classes {text!r}: expected numbers and ranges such as '0-4' or "
                             f"'0,2,7'") from None
    if len(set(out)) != len(out) or not out:
        raise ValueError(f"classes {text!r}: each class once, at least one")
    return tuple(out)


def is_folder(dataset):
    """True when ``dataset`` is a directory (an image folder), False for a dataset name."""
    return dataset not in data.DATASETS and os.path.isdir(os.fspath(dataset))


def resolve(dataset, root=None):
    """A dataset name ("fashion-mnist") as is, or the path of an image folder.

    A name that is neither (the zoo's "rock-paper-scissors") is looked for as a folder in
    ``root``, then in $MINICNN_DATA, the places ``minicnn.data.load`` searches first.
    """
    dataset = os.fspath(dataset)
    if dataset in data.DATASETS or os.path.isdir(dataset):
        return dataset
    name = dataset.lower().replace("_", "-")  # names in any case, as data.load takes them
    if name in data.DATASETS:
        return name
    bases = [b for b in (root, os.environ.get("MINICNN_DATA")) if b]
    for base in bases:
        if os.path.isdir(os.path.join(base, dataset)):
            return os.path.join(base, dataset)
    where = "".join(f", nor a folder {os.path.join(b, dataset)}" for b in bases)
    raise ValueError(f"{dataset!r} is neither a dataset name ({', '.join(data.DATASETS)}) nor a "
                     f"directory{where}; give the path of a folder with training/ and testing/ "
                     f"class folders, or the folder that holds {dataset}/ with --data-dir or "
                     f"MINICNN_DATA")


def find_splits(root):
    """(training folder, test folder) of an image folder; ValueError saying what was looked for.

    The pairs tried, in order: training/ + testing/ (the rock-paper-scissors layout),
    train/ + test/, train/ + val/.
    """
    root = os.fspath(root)
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a directory (nor a dataset name: {', '.join(data.DATASETS)})")
    for train, test in SPLIT_NAMES:
        a, b = os.path.join(root, train), os.path.join(root, test)
        if os.path.isdir(a) and os.path.isdir(b):
            return a, b
    tried = ", ".join(f"{a}/ + {b}/" for a, b in SPLIT_NAMES)
    found = sorted(e + "/" for e in os.listdir(root) if os.path.isdir(os.path.join(root, e)))
    raise ValueError(f"{root}: no training and test sub-folders; looked for {tried}; it holds "
                     f"{', '.join(found) or 'no sub-folders'}. Each of them holds one folder of "
                     f"images per class.")


def subset(x, y, n, seed):
    """At most ``n`` samples of (x, y), drawn without replacement (seeded), in their stored order.

    A folder is read class by class, so its first n images would all be of the first classes.
    """
    if not n or n >= len(x):
        return x, y
    keep = np.sort(np.random.default_rng(seed).permutation(len(x))[:n])
    return x[keep], y[keep]


def load_folder(root, image_size, color_mode="rgb", limit=0, test_limit=None, seed=0):
    """A Task from an image folder with training and test sub-folders of class folders.

    Every image is decoded and resized to ``image_size`` × ``image_size`` by ImageFolder, so the
    arrays are uint8 (N, C, S, S) with C = 3 ("rgb") or 1 ("grayscale"). The test folder must
    use the training folder's class names; its labels follow the training folder's numbering.
    ``limit`` / ``test_limit``: at most that many training / test images (0: all), a seeded
    random subset. ``test_limit=None`` uses ``limit``.
    """
    from ..data.folder import ImageFolder
    train_dir, test_dir = find_splits(root)
    train = ImageFolder(train_dir, image_size, color_mode=color_mode)
    test = ImageFolder(test_dir, image_size, color_mode=color_mode)
    if test.classes != train.classes:
        raise ValueError(f"{root}: the test folder's classes {test.classes} differ from the training "
                         f"folder's {train.classes}")
    x_train, y_train = subset(*train.load(), limit, seed)
    x_test, y_test = subset(*test.load(), limit if test_limit is None else test_limit, seed + 1)
    return Task(os.fspath(root), list(train.classes), x_train, y_train, x_test, y_test)


def read_folder_for(dataset, input_shape, image_size=None, limit=0, seed=0):
    """(Task, preprocessing dict): an image folder read for a model whose input is ``input_shape``.

    This is how ``python -m minicnn train`` and the reference scripts read a folder, so that
    all frameworks train on the same pixels: RGB or grayscale as the model's channels, resized
    to ``image_size`` (default: the model's), and with ``limit`` the same seeded subset of
    ``limit`` training and ``limit // 6`` test images.
    """
    size = image_size or input_shape[1]
    color_mode = "grayscale" if input_shape[0] == 1 else "rgb"
    task = load_folder(dataset, size, color_mode, limit, max(limit // 6, 1) if limit else 0, seed)
    preprocessing = {"dataset": os.path.abspath(dataset), "scale": "0-1", "mean": None, "std": None,
                     "image_size": size, "color_mode": color_mode}
    return task, preprocessing


def load_classes(dataset, classes, limit=0, test_limit=None, seed=0, root=None):
    """A Task from some classes of an IDX dataset (Fashion-MNIST), labels renumbered 0..k-1.

    Images uint8 (N, 1, 28, 28). ``classes``: the original labels, e.g. (5, 6, 7, 8, 9), which
    become 0..4 in that order. ``limit`` / ``test_limit`` as in ``load_folder``.
    """
    names = data.CLASSES[dataset]
    if any(not 0 <= c < len(names) for c in classes):
        raise ValueError(f"{dataset} has classes 0..{len(names) - 1}, got {list(classes)}")
    relabel = np.full(len(names), -1)
    relabel[list(classes)] = np.arange(len(classes))
    arrays = []
    for split, n, s in (("train", limit, seed), ("test", limit if test_limit is None else test_limit,
                                                 seed + 1)):
        images, labels = data.load(dataset, split, root=root)
        keep = relabel[labels] >= 0
        x, y = subset(images[keep][:, None], relabel[labels[keep]].astype(np.int64), n, s)
        arrays += [x, y]
    span = (f"{classes[0]}-{classes[-1]}" if list(classes) == list(range(classes[0], classes[-1] + 1))
            else ",".join(map(str, classes)))
    return Task(f"{dataset} classes {span}", [names[c] for c in classes], *arrays)


def load_task(dataset, classes, image_size, channels, limit=0, test_limit=None, seed=0, root=None):
    """A Task from a dataset name (with ``classes``) or an image folder, with C = ``channels``."""
    dataset = resolve(dataset, root)
    if is_folder(dataset):
        return load_folder(dataset, image_size, "grayscale" if channels == 1 else "rgb",
                           limit, test_limit, seed)
    task = load_classes(dataset, classes, limit, test_limit, seed, root)
    if channels == 3:  # a grayscale image given to an RGB network: the gray in all three channels
        task.x_train, task.x_test = (np.repeat(x, 3, axis=1) for x in (task.x_train, task.x_test))
    return task


def input_format(source, target, image_size=None):
    """(channels, image size) both tasks are read at: grayscale 28×28 when an IDX dataset takes
    part (its images are that), otherwise RGB at ``image_size`` (default 28)."""
    named = [d for d in (source, target) if not is_folder(d)]
    if named:
        if image_size not in (None, 28):
            raise ValueError(f"{named[0]} images are 28×28: --image-size {image_size} needs two "
                             f"image folders (or leave --image-size out)")
        return 1, 28
    return 3, image_size or 28


# ----------------------------------------------------------------------------------------
# freezing and the runs
# ----------------------------------------------------------------------------------------
def clone(layer):
    """An independent copy of ``layer``: rebuilt from its architecture, then its parameters,
    buffers and frozen flags copied (a layer holds caches that copy.deepcopy cannot copy)."""
    twin = ckpt.build(ckpt.layer_config(layer))
    ckpt.load_weights(twin, {n: p.data for n, p in layer.named_parameters()})
    ckpt.load_buffers(twin, dict(layer.named_buffers()))
    ckpt.restore_frozen_state(twin, ckpt.frozen_state(layer))
    return twin


def snapshot(layer):
    """{name: copy} of every parameter and buffer of ``layer``: to check later that nothing moved."""
    state = {f"param/{n}": p.data.copy() for n, p in layer.named_parameters()}
    state.update({f"buffer/{n}": np.array(b, copy=True) for n, b in layer.named_buffers()})
    return state


def largest_change(before, layer):
    """max |Δ| over the parameters of ``layer`` since ``snapshot``; and whether every parameter
    AND buffer is bit-identical."""
    after = snapshot(layer)
    change = max((float(np.max(np.abs(after[k].astype(np.float64) - v))) for k, v in before.items()
                  if k.startswith("param/") and v.size), default=0.0)
    identical = all(np.array_equal(after[k], v) for k, v in before.items())
    return change, identical


def count(model, trainable):
    return int(sum(p.size for p in model.parameters() if p.trainable == trainable))


def train_on(model, task, *, epochs, batch_size, lr, seed, verbose=1):
    """compile + fit on the task (scaled to [0, 1]); returns the numbers of the run."""
    x_train, x_test = data.to_float(task.x_train), data.to_float(task.x_test)
    model.compile(optimizer="adam", loss="cross_entropy", lr=lr)
    started = time.perf_counter()
    history = model.fit(x_train, task.y_train, epochs=epochs, batch_size=batch_size,
                        validation_data=(x_test, task.y_test), seed=seed, verbose=verbose)
    seconds = time.perf_counter() - started
    loss, accuracy = model.evaluate(x_test, task.y_test)
    return {"test_accuracy": float(accuracy), "test_loss": float(loss), "history": history.history,
            "trainable_parameters": count(model, True), "frozen_parameters": count(model, False),
            "seconds": seconds}


def run(source="fashion-mnist", target="fashion-mnist", source_classes=(0, 1, 2, 3, 4),
        target_classes=(5, 6, 7, 8, 9), *, epochs=3, pretrain_epochs=3, batch_size=64, lr=1e-3,
        seed=0, limit=0, target_limit=0, image_size=None, batch_norm=True, out=None, verbose=1,
        data_dir=None, dtype=np.float32):
    """Pretrain on ``source``, then the three runs on ``target``; returns the metrics dict.

    source, target: a dataset name (with ``*_classes``) or an image folder.
    limit: at most this many images per split of each task (0: all); target_limit: at most
    this many TARGET training images (0: as limit), the small data transfer learning is for.
    out: a folder for metrics.json and the checkpoints (pretrained.npz and one per run), or None.
    dtype: what the networks compute in; float64 makes every digit the same on any CPU (float32
    results move in the third digit with the BLAS kernels a CPU gets), at twice the time.
    """
    started = time.perf_counter()
    source, target = resolve(source, data_dir), resolve(target, data_dir)
    channels, size = input_format(source, target, image_size)
    source_task = load_task(source, parse_classes(source_classes), size, channels, limit,
                            seed=seed, root=data_dir)
    target_task = load_task(target, parse_classes(target_classes), size, channels,
                            target_limit or limit, test_limit=limit, seed=seed, root=data_dir)
    options = dict(epochs=epochs, batch_size=batch_size, lr=lr, seed=seed, verbose=verbose)
    if verbose:
        print(f"source {source_task.describe()}\ntarget {target_task.describe()}", flush=True)

    # 1. pretraining; the base's initial weights are kept for the random-base run
    model = zoo.transfer_cnn(len(source_task.classes), channels, size, batch_norm=batch_norm, rng=seed,
                             dtype=dtype)
    random_base = clone(model.features)
    if verbose:
        print(f"\npretraining on {source_task.name} for {pretrain_epochs} epochs", flush=True)
    pretrained = train_on(model, source_task, **(options | {"epochs": pretrain_epochs}))
    if out:
        os.makedirs(out, exist_ok=True)
        ckpt.save(os.path.join(out, "pretrained.npz"), model)

    # 2. three runs on the target, each from a copy, each with the same new head
    in_features = model.head.fc1.in_features
    results = {}
    for name, what in RUNS.items():
        net = clone(model)
        net["head"] = zoo.transfer_head(in_features, len(target_task.classes),  # the same head each time
                                        rng=np.random.default_rng(seed + 1), dtype=dtype)
        if name == "frozen_random":
            net["features"] = clone(random_base)
        net.features.trainable = name == "fine_tune"
        before = snapshot(net.features)
        if verbose:
            print(f"\n{what}: {count(net, True):,} trainable parameters, {count(net, False):,} "
                  f"frozen", flush=True)
        result = train_on(net, target_task, **options)
        result["base_max_change"], result["base_unchanged"] = largest_change(before, net.features)
        result["description"] = what
        if out:
            result["checkpoint"] = f"{name}.npz"
            ckpt.save(os.path.join(out, result["checkpoint"]), net)
        results[name] = result

    metrics = {
        "config": {"source": os.fspath(source), "target": os.fspath(target),
                   "source_classes": list(parse_classes(source_classes)) if not is_folder(source) else None,
                   "target_classes": list(parse_classes(target_classes)) if not is_folder(target) else None,
                   "epochs": epochs, "pretrain_epochs": pretrain_epochs, "batch_size": batch_size,
                   "lr": lr, "seed": seed, "limit": limit, "target_limit": target_limit,
                   "input_shape": [channels, size, size], "batch_norm": batch_norm,
                   "optimizer": "adam", "preprocessing": {"scale": "0-1", "mean": None, "std": None},
                   "dtype": np.dtype(dtype).name},
        "source": {"dataset": source_task.name, "classes": source_task.classes,
                   "train_images": len(source_task.x_train), "test_images": len(source_task.x_test),
                   **{k: pretrained[k] for k in ("test_accuracy", "test_loss", "history", "seconds")}},
        "target": {"dataset": target_task.name, "classes": target_task.classes,
                   "train_images": len(target_task.x_train), "test_images": len(target_task.x_test)},
        "runs": results,
        "seconds": time.perf_counter() - started,
    }
    if out:
        text = json.dumps(metrics, indent=2)
        atomic_write(os.path.join(out, "metrics.json"), lambda f: f.write(text.encode()))
    return metrics


def table(metrics):
    """The result as text: the two tasks, then one row per run."""
    src, tgt, cfg = metrics["source"], metrics["target"], metrics["config"]
    lines = [f"source  {src['dataset']}: {src['train_images']} training images, "
             f"{cfg['pretrain_epochs']} epochs -> test accuracy {src['test_accuracy']:.4f}",
             f"target  {tgt['dataset']} ({', '.join(tgt['classes'])}): {tgt['train_images']} training "
             f"and {tgt['test_images']} test images, {cfg['epochs']} epochs per run",
             "",
             f"{'run':36} {'trainable':>10} {'frozen':>8} {'test accuracy':>14}  base after training"]
    for name, r in metrics["runs"].items():
        moved = ("bit-identical" if r["base_unchanged"]
                 else f"moved, max |Δ| {r['base_max_change']:.2g}")
        lines.append(f"{r['description']:36} {r['trainable_parameters']:>10,} "
                     f"{r['frozen_parameters']:>8,} {r['test_accuracy']:>14.4f}  {moved}")
    return "\n".join(lines)
