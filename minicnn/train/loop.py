"""The training loop, written once: what Keras' ``fit()`` does behind its one line.

Each step is the five lines every PyTorch tutorial shows:

    optimizer.zero_grad()               # forget the last batch's gradients
    out = model(xb)                     # forward: (N, C, H, W) -> (N, classes)
    loss = criterion(out, yb)           # one number
    model.backward(criterion.backward())  # backward: every param.grad filled
    optimizer.step()                    # move every parameter against its gradient

``minicnn.train.fit`` adds batches, epochs, progress bars, validation, checkpoints that resume exactly,
a clean stop on Ctrl-C, and a clear stop when the loss stops being a finite number.
"""
import numpy as np

from ..core.errors import NonFiniteError
from ..layers import no_grad


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
    """Re-run one batch layer by layer; describe the first layer whose output or gradient is NaN/inf.

    The batch itself is looked at first: a NaN in the data is the data's fault, not layer 0's.
    """
    bad = ~np.isfinite(np.asarray(xb, dtype=np.float64).reshape(len(xb), -1)).all(axis=1)
    if bad.any():
        index = int(np.argmax(bad))
        kind = "NaN" if np.isnan(xb[index]).any() else "an infinite value"
        return (f"the input batch: image {index} of the batch holds {kind} "
                f"({int(bad.sum())} image(s) of {len(xb)} are not finite)")
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
    """One optimisation step on one batch; returns (loss, number of correct predictions).

    xb (N, C, H, W), yb (N,) labels or (N, classes) one-hot.
    """
    optimizer.zero_grad()
    out = model(xb)
    loss = criterion(out, yb)
    if not np.isfinite(loss):
        where = first_nonfinite(model, xb, yb, criterion)
        raise NonFiniteError(f"the loss became {loss}: first non-finite value in {where}. "
                             f"Try a smaller learning rate, or check the inputs' scaling.")
    # the input is the data, whose gradient nobody reads: the first layer may skip it, as
    # PyTorch does for an input that does not require grad (the weights' gradients are the same)
    model.backward(criterion.backward(), need_input_grad=False)
    optimizer.step()
    labels = yb.argmax(axis=1) if yb.ndim == 2 else yb
    return loss, int(np.sum(np.argmax(out, axis=1) == labels))


def evaluate(model, x, y, criterion, batch_size=1000):
    """(mean loss, accuracy) over (x, y) in eval mode, batch by batch. x (N, C, H, W), y (N,)."""
    was_training = model.training
    model.eval()
    total_loss, correct = 0.0, 0
    for start in range(0, len(x), batch_size):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with no_grad():
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
    with no_grad():
        outs = [model(x[start:start + batch_size]) for start in range(0, len(x), batch_size)]
    model.train(was_training)
    return np.concatenate(outs)
