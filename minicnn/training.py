"""The training loop, written once: what Keras' ``fit()`` does behind its one line.

Each step is the five lines every PyTorch tutorial shows:

    optimizer.zero_grad()               # forget the last batch's gradients
    out = model(xb)                     # forward: (N, C, H, W) -> (N, classes)
    loss = criterion(out, yb)           # one number
    model.backward(criterion.backward())  # backward: every param.grad filled
    optimizer.step()                    # move every parameter against its gradient

``fit`` adds batches, epochs, progress bars, validation, checkpoints that resume exactly,
a clean stop on Ctrl-C, and a clear stop when the loss stops being a finite number.
"""
import os
import signal
import threading
import time

import numpy as np
from tqdm.auto import tqdm

from . import checkpoint as ckpt
from . import losses, optim
from .data.loader import DataLoader


class NonFiniteError(FloatingPointError):
    """The loss became NaN or infinite; the message names the first layer where it happened."""


# ----------------------------------------------------------------------------------------
# names -> objects, so that compile() takes Keras' strings as well as objects
# ----------------------------------------------------------------------------------------
LOSSES = {
    "cross_entropy": losses.CrossEntropyLoss,                   # from logits (PyTorch)
    "nll": losses.NLLLoss,                                      # from log-probabilities
    "categorical": losses.CategoricalCrossentropy,              # from probabilities (Keras)
    "categorical_crossentropy": losses.CategoricalCrossentropy,
    "sparse_categorical_crossentropy": losses.CategoricalCrossentropy,
}


def make_loss(loss):
    if isinstance(loss, str):
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {sorted(LOSSES)}")
        return LOSSES[loss]()
    return loss


def make_optimizer(optimizer, params, lr=None):
    if not isinstance(optimizer, str):
        return optimizer
    kwargs = {} if lr is None else {"lr": lr}
    if optimizer == "adam":
        return optim.Adam(params, **kwargs)
    if optimizer == "keras_adam":
        return optim.KerasAdam(params, **kwargs)
    if optimizer == "sgd":
        return optim.SGD(params, **({"lr": 0.01} | kwargs))
    raise ValueError(f"unknown optimizer {optimizer!r}; choose adam, keras_adam or sgd")


def accuracy(outputs, labels):
    """Fraction of rows whose largest output is the label. outputs (N, classes), labels (N,) or one-hot."""
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(axis=1)
    return float(np.mean(np.argmax(outputs, axis=1) == labels))


# ----------------------------------------------------------------------------------------
# diagnosing a non-finite loss
# ----------------------------------------------------------------------------------------
def first_nonfinite(model, xb, yb, criterion):
    """Re-run one batch layer by layer; describe the first layer whose output or gradient is NaN/inf."""
    x = xb
    for i, layer in enumerate(model.layers):
        x = layer.forward(x)
        if not np.all(np.isfinite(x)):
            return f"the output of layer {i} {layer!r} (its input was finite)"
    value = criterion.forward(x, yb)
    if not np.isfinite(value):
        return f"the loss {type(criterion).__name__} itself (every layer's output is finite)"
    dy = criterion.backward()
    for i in reversed(range(len(model.layers))):
        layer = model.layers[i]
        dy = layer.backward(dy)
        for p in layer.parameters():
            if not np.all(np.isfinite(p.grad)):
                return f"the gradient of {p.name} of layer {i} {layer!r}"
        if not np.all(np.isfinite(dy)):
            return f"the input gradient of layer {i} {layer!r}"
    bad = [n for n, p in model.named_parameters() if not np.all(np.isfinite(p.data))]
    return f"the parameters {bad} (already non-finite before this batch)" if bad else "an unknown place"


# ----------------------------------------------------------------------------------------
# one epoch, evaluation, prediction
# ----------------------------------------------------------------------------------------
def train_step(model, criterion, optimizer, xb, yb):
    """One optimisation step on one batch; returns (loss, number of correct predictions)."""
    optimizer.zero_grad()
    out = model(xb)
    loss = criterion(out, yb)
    if not np.isfinite(loss):
        where = first_nonfinite(model, xb, yb, criterion)
        raise NonFiniteError(f"the loss became {loss}: first non-finite value in {where}. "
                             f"Try a smaller learning rate, or check the inputs' scaling.")
    first = _first_layer(model)
    if getattr(first, "input_gradient", None) is True:
        # the data needs no gradient: the first convolution skips computing it (as PyTorch
        # does for an input that does not require grad); the weights' gradients are the same
        first.input_gradient = False
        try:
            model.backward(criterion.backward())
        finally:
            first.input_gradient = True
    else:
        model.backward(criterion.backward())
    optimizer.step()
    labels = yb.argmax(axis=1) if yb.ndim == 2 else yb
    return loss, int(np.sum(np.argmax(out, axis=1) == labels))


def _first_layer(model):
    """The layer that reads the data: the first of a Sequential (inside nested ones), else None."""
    while isinstance(getattr(model, "layers", None), list) and model.layers:
        model = model.layers[0]
    return model if not isinstance(getattr(model, "layers", None), list) else None


def evaluate(model, x, y, criterion, batch_size=1000):
    """(mean loss, accuracy) over (x, y) in eval mode, batch by batch. x (N, C, H, W), y (N,)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        out = model(xb)
        total_loss += criterion(out, yb) * len(xb) if criterion.reduction == "mean" else criterion(out, yb)
        labels = yb.argmax(axis=1) if yb.ndim == 2 else yb
        correct += int(np.sum(np.argmax(out, axis=1) == labels))
    model.train(was_training)
    return total_loss / len(x), correct / len(x)


def predict(model, x, batch_size=1000):
    """The model's outputs for x in eval mode: (N, ...) stacked batch by batch."""
    was_training = model.training
    model.eval()
    outs = [model(x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    model.train(was_training)
    return np.concatenate(outs)


class StopOnInterrupt:
    """Turn Ctrl-C into a request that the loop honours between two steps, never inside one.

    A step cut in half would leave the weights updated and the optimizer state not (or the other
    way round), and the checkpoint could not resume exactly. A second Ctrl-C stops at once.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


class History:
    """Keras' History: ``history.history["loss"]`` etc., one value per epoch."""

    def __init__(self, history=None):
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def append(self, **values):
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    @property
    def epoch(self):
        return list(range(len(self.history.get("loss", []))))


def fit(model, x, y, *, optimizer, loss, epochs=1, batch_size=32, validation_data=None,
        shuffle=True, seed=0, verbose=1, checkpoint_path=None, resume=False, on_epoch_end=None,
        transform=None):
    """Train ``model`` on (x, y); returns a ``History``.

    x (N, C, H, W) float, y (N,) int labels (or (N, classes) one-hot for CategoricalCrossentropy).
    ``checkpoint_path``: written after every epoch, and on Ctrl-C, atomically. With ``resume=True``
    and an existing checkpoint, training continues where it stopped (even mid-epoch) and ends with
    exactly the weights an uninterrupted run with the same ``seed`` would have.
    ``on_epoch_end(epoch, logs)`` is called after each epoch (logs: that epoch's numbers).
    ``transform``: applied to every training batch by the DataLoader (e.g. a data.Augment).
    """
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, transform=transform)
    history, start_epoch, skip_batches, partial = History(), 0, 0, (0.0, 0, 0)
    if resume and checkpoint_path is not None:
        if os.path.exists(checkpoint_path):
            _, progress = ckpt.load(checkpoint_path, model, optimizer)
            history = History(progress.get("history"))
            start_epoch, skip_batches = progress.get("epoch", 0), progress.get("batch", 0)
            partial = tuple(progress.get("partial", (0.0, 0, 0)))
            if verbose:
                where = f"epoch {start_epoch + 1}, batch {skip_batches}" if skip_batches else \
                    f"epoch {start_epoch + 1}"
                print(f"resuming from {checkpoint_path} at {where}")

    def save(epoch, batch, partial_sums):
        if checkpoint_path is not None:
            ckpt.save(checkpoint_path, model, optimizer,
                      {"epoch": epoch, "batch": batch, "partial": list(partial_sums),
                       "history": history.history, "seed": seed, "batch_size": batch_size})

    model.train()
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        started = time.perf_counter()
        loss_sum, correct, seen = partial if epoch == start_epoch else (0.0, 0, 0)
        # iter() first: tqdm.auto may call iter() on what it is given, and each pass over a
        # DataLoader advances its epoch.
        batches = tqdm(iter(loader), total=len(loader), desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                       disable=not verbose, dynamic_ncols=True)
        with StopOnInterrupt() as stop:
            for batch, (xb, yb) in enumerate(batches):
                if epoch == start_epoch and batch < skip_batches:
                    continue  # trained on before the interruption
                step_loss, step_correct = train_step(model, loss, optimizer, xb, yb)
                loss_sum, correct, seen = (loss_sum + step_loss * len(xb), correct + step_correct,
                                           seen + len(xb))
                if batch % 20 == 0:
                    batches.set_postfix(loss=f"{loss_sum / seen:.4f}", accuracy=f"{correct / seen:.4f}")
                if stop.requested:
                    batches.close()
                    save(epoch, batch + 1, (loss_sum, correct, seen))
                    print(f"\ninterrupted after batch {batch + 1} of epoch {epoch + 1}"
                          + (f": checkpoint saved to {checkpoint_path}; resume to continue"
                             if checkpoint_path else ""))
                    return history
        batches.close()
        logs = {"loss": loss_sum / max(seen, 1), "accuracy": correct / max(seen, 1)}
        if validation_data is not None:
            val_loss, val_acc = evaluate(model, *validation_data, loss)
            model.train()
            logs |= {"val_loss": val_loss, "val_accuracy": val_acc}
        logs["seconds"] = time.perf_counter() - started
        history.append(**logs)
        skip_batches = 0
        save(epoch + 1, 0, (0.0, 0, 0))
        if verbose:
            shown = " - ".join(f"{k}: {v:.4f}" for k, v in logs.items() if k != "seconds")
            print(f"Epoch {epoch + 1}/{epochs} - {len(loader)} batches - {logs['seconds']:.1f}s - {shown}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, logs)
    return history
