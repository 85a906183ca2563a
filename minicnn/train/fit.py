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
import warnings

import numpy as np
from tqdm.auto import tqdm

from .. import losses, optim
from ..core.errors import NonFiniteError
from ..data.loader import DataLoader
from ..kernels import workspace
from ..layers import Softmax, container
from ..layers.base import refuse_integers
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
    """Keras' History: ``history.history["loss"]`` etc., one value per epoch.

    ``interrupted``: None after a finished ``fit``; after Ctrl-C, {"epoch": E, "batch": B}
    (1-based), the last batch trained before the stop.
    """

    def __init__(self, history=None):
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.interrupted = None

    def append(self, **values):
        for key, value in values.items():
            self.history.setdefault(key, []).append(value)

    @property
    def epoch(self):
        return list(range(len(self.history.get("loss", []))))


#: a loss this many times its first value: training is diverging (too large a learning rate)
DIVERGING = 1e6


def check_inputs(x, where="fit"):
    """``x`` as an array: TypeError for integer images, NonFiniteError naming a NaN/inf image."""
    x = refuse_integers(x, where)
    finite = np.isfinite(x.reshape(len(x), -1)).all(axis=1) if x.size else np.ones(0, bool)
    if not finite.all():
        index = int(np.argmin(finite))
        kind = "NaN" if np.isnan(x[index]).any() else "an infinite value"
        raise NonFiniteError(f"{where}: the input holds {kind} in image {index} (x[{index}]) and "
                             f"{int(np.sum(~finite)) - 1} other image(s); clean or drop them "
                             f"before training")
    return x


def warn_about_softmax_then_logits(model, loss):
    """Keras' from_logits warning: a model ending in Softmax, trained with a loss on logits."""
    layers = getattr(model, "layers", None)
    if layers and isinstance(layers[-1], Softmax) and isinstance(loss, losses.CrossEntropyLoss):
        warnings.warn(f"the model ends in Softmax but the loss {type(loss).__name__} takes logits "
                      f"and applies softmax itself, so softmax is applied twice and training is "
                      f"slow or stalls; remove the Softmax layer, or use the loss 'categorical' "
                      f"(CategoricalCrossentropy, on probabilities)", stacklevel=3)


def _check_resume(progress, path, seed, batch_size, samples):
    """ValueError listing every recorded option that differs from this call's."""
    now = {"seed": seed, "batch_size": batch_size, "samples": samples}
    differ = [f"{k}: checkpoint {progress[k]}, now {v}" for k, v in now.items()
              if k in progress and progress[k] != v]
    if differ:
        raise ValueError(f"cannot resume {path}: " + "; ".join(differ) + ". A run resumes "
                         f"exactly only with the options it started with.")


def fit(model, x, y, *, optimizer, loss, epochs=1, batch_size=32, validation_data=None,
        shuffle=True, seed=0, verbose=1, checkpoint_path=None, resume=False, on_epoch_end=None,
        transform=None, options=None):
    """Train ``model`` on (x, y); returns a ``History``.

    x (N, C, H, W) float, y (N,) int labels (or (N, classes) one-hot for CategoricalCrossentropy).
    Integer x (unscaled pixels) is a TypeError; a NaN or inf in x a NonFiniteError naming the image.
    ``checkpoint_path``: written after every epoch, and on Ctrl-C, atomically. With ``resume=True``
    and an existing checkpoint, training continues where it stopped (even mid-epoch) and ends with
    exactly the weights an uninterrupted run with the same ``seed`` would have; a checkpoint with
    another seed, batch size or number of samples is refused (ValueError).
    ``on_epoch_end(epoch, logs)`` is called after each epoch (logs: that epoch's numbers).
    ``transform``: applied to every training batch by the DataLoader (e.g. a data.Augment).
    ``options``: a JSON-able dict stored in the checkpoint's progress (the command line keeps
    its options there, to compare them when a run is resumed).
    After Ctrl-C the returned History has ``interrupted`` set. A loss that grows to a million
    times its first value warns once (RuntimeWarning, with the learning rate).
    """
    x = check_inputs(x)
    warn_about_softmax_then_logits(model, loss)
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, transform=transform)
    history, start_epoch, skip_batches, partial = History(), 0, 0, (0.0, 0, 0)
    if resume and checkpoint_path is not None:
        if os.path.exists(checkpoint_path):
            _check_resume(ckpt.read_meta(checkpoint_path).get("progress", {}), checkpoint_path,
                          seed, batch_size, len(x))
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
                       "history": history.history, "seed": seed, "batch_size": batch_size,
                       "samples": len(x), "options": options or {}})

    first_loss, warned = None, False
    model.train()
    for epoch in range(start_epoch, epochs):
        loader.set_epoch(epoch)
        started = time.perf_counter()
        loss_sum, correct, seen = partial if epoch == start_epoch else (0.0, 0, 0)
        # iter() first: tqdm.auto may call iter() on what it is given, and each pass over a
        # DataLoader advances its epoch.
        batches = tqdm(iter(loader), total=len(loader), desc=f"Epoch {epoch + 1}/{epochs}", unit="batch", leave=False,
                       disable=not verbose, dynamic_ncols=True)
        with StopOnInterrupt() as stop, batches:  # the bar is closed (cleared) on an error too
            for batch, (xb, yb) in enumerate(batches):
                if epoch == start_epoch and batch < skip_batches:
                    continue  # trained on before the interruption
                step_loss, step_correct = train_step(model, loss, optimizer, xb, yb)
                first_loss = step_loss if first_loss is None else first_loss
                if not warned and abs(step_loss) > DIVERGING * abs(first_loss) > 0:
                    warned = True
                    warnings.warn(f"the loss grew from {first_loss:.4g} to {step_loss:.4g} "
                                  f"(epoch {epoch + 1}, batch {batch + 1}): training diverges; "
                                  f"try a smaller learning rate than "
                                  f"{getattr(optimizer, 'lr', '?')}", RuntimeWarning, stacklevel=2)
                loss_sum, correct, seen = (loss_sum + step_loss * len(xb), correct + step_correct,
                                           seen + len(xb))
                if batch % 20 == 0:
                    batches.set_postfix(loss=f"{loss_sum / seen:.4f}", accuracy=f"{correct / seen:.4f}")
                if stop.requested:
                    batches.close()
                    save(epoch, batch + 1, (loss_sum, correct, seen))
                    history.interrupted = {"epoch": epoch + 1, "batch": batch + 1}
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
    # the kernels' idle buffers back to the system: training is over (kernels/workspace.py)
    workspace.release()
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
