"""Keras' way: ``model.compile(...)`` once, then ``model.fit``, ``evaluate``, ``predict``.

``fit`` is the loop of ``minicnn.train.loop`` with batches, epochs, progress bars, validation,
checkpoints that resume exactly, a clean stop on Ctrl-C, and a clear stop when the loss stops
being a finite number. Importing this module gives every Sequential its Keras-style methods
(``layers.container.KERAS_METHODS``).
"""
import os
import signal
import threading
import time

from tqdm.auto import tqdm

from .. import losses, optim
from ..data.loader import DataLoader
from ..layers import container
from . import checkpoint as ckpt
from .loop import evaluate, predict, train_step


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


# ----------------------------------------------------------------------------------------
# the Keras-style methods of a Sequential
# ----------------------------------------------------------------------------------------
def compile_model(model, optimizer="adam", loss="cross_entropy", metrics=("accuracy",), lr=None):
    """Choose the optimizer and loss (objects, or names such as "adam" and "nll").

    Only accuracy is computed as a metric; it is what the articles report.
    """
    model.optimizer = optim.get(optimizer, model.parameters(), lr)
    model.loss = losses.get(loss)
    model.metrics = list(metrics)
    return model


def _compiled(model):
    if getattr(model, "optimizer", None) is None:
        raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit/evaluate")


def fit_model(model, x, y, epochs=1, batch_size=32, validation_data=None, **options):
    _compiled(model)
    return fit(model, x, y, optimizer=model.optimizer, loss=model.loss, epochs=epochs,
               batch_size=batch_size, validation_data=validation_data, **options)


def evaluate_model(model, x, y, batch_size=1000):
    _compiled(model)
    return list(evaluate(model, x, y, model.loss, batch_size))


container.KERAS_METHODS.update(compile=compile_model, fit=fit_model, evaluate=evaluate_model,
                               predict=predict)
