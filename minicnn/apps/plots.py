"""Figures a learner looks at: learning curves and the confusion matrix (matplotlib, PNG)."""
import io

import numpy as np

from ..core.files import atomic_write


def _figure():
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


def learning_curves(history, path, title="learning curves"):
    """Loss and accuracy per epoch, train and validation, side by side. ``history``: a dict of lists."""
    plt = _figure()
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for ax, key in ((ax_loss, "loss"), (ax_acc, "accuracy")):
        for prefix, style in (("", "-o"), ("val_", "-s")):
            if history.get(prefix + key):
                ax.plot(epochs, history[prefix + key], style, label=("test " if prefix else "train ") + key)
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def confusion_matrix(labels, predictions, num_classes):
    """(num_classes, num_classes) counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(labels), np.asarray(predictions)), 1)
    return matrix


def confusion_text(matrix, classes):
    """The confusion matrix as aligned text, with each class's recall at the end of its row."""
    short = [c[:9] for c in classes]
    width = max(6, max(len(s) for s in short) + 1)
    lines = [" " * width + "".join(f"{s:>{width}}" for s in short) + f"{'recall':>{width}}"]
    for name, row in zip(short, matrix):
        recall = row[short.index(name)] / max(row.sum(), 1)
        lines.append(f"{name:>{width}}" + "".join(f"{v:>{width}}" for v in row) + f"{recall:>{width}.3f}")
    return "\n".join(lines)


def confusion_plot(matrix, classes, path, title="confusion matrix"):
    plt = _figure()
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), v in np.ndenumerate(matrix):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > matrix.max() / 2 else "black")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    _save(fig, path)
    plt.close(fig)
