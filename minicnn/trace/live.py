"""``with tracing(): ...``: print each layer's shapes as data flows through a real training step.

Inside the block every minicnn layer call prints one line (its input and output shapes), and
every minicnn ``backward`` prints the gradient's way back. PyTorch modules (global module
hooks) and Keras layers are traced too when torch / Keras are already imported: the block
never imports them. Everything is restored on exit, even after an exception.
"""
import contextlib
import sys
from dataclasses import dataclass


@dataclass
class Event:
    """One line of the live trace."""
    phase: str        # "forward" or "backward"
    framework: str
    depth: int
    type: str
    input_shape: tuple
    output_shape: tuple

    def line(self):
        arrow = "→" if self.phase == "forward" else "←"
        what = "" if self.phase == "forward" else "grad "
        return (f"{arrow} {'  ' * self.depth}{self.type:<{max(1, 22 - 2 * self.depth)}} "
                f"{what}{_shape(self.input_shape)} → {_shape(self.output_shape)}")


def _shape(s):
    return "?" if s is None else "[" + ", ".join(str(int(d)) for d in s) + "]"


class _Live:
    def __init__(self, file):
        self.file = file
        self.events = []
        self.depth = 0

    def emit(self, phase, framework, depth, type_, src, out):
        event = Event(phase, framework, depth, type_, tuple(src) if src is not None else None,
                      tuple(out) if out is not None else None)
        self.events.append(event)
        print(event.line(), file=self.file or sys.stdout)


def _layer_classes(base):
    todo, found = [base], []
    while todo:
        cls = todo.pop()
        found.append(cls)
        todo += cls.__subclasses__()
    return found


@contextlib.contextmanager
def _minicnn(live):
    import numpy as np

    from ..layers.base import Layer

    original_call = Layer.__call__
    open_calls = []

    def call(layer, x):
        depth = len(open_calls)
        open_calls.append(layer)
        try:
            y = original_call(layer, x)
        finally:
            open_calls.pop()
        live.emit("forward", "minicnn", depth, type(layer).__name__, np.shape(x), np.shape(y))
        return y

    patched = []
    backward_stack = []

    def wrap(cls, fn):
        def backward(layer, *args, **kwargs):
            if backward_stack and backward_stack[-1] is layer:  # super().backward(): once
                return fn(layer, *args, **kwargs)
            depth = len(backward_stack)
            backward_stack.append(layer)
            try:
                dx = fn(layer, *args, **kwargs)
            finally:
                backward_stack.pop()
            dy = args[0] if args else None
            live.emit("backward", "minicnn", depth, type(layer).__name__,
                      None if dy is None else np.shape(dy), np.shape(dx))
            return dx
        backward.__wrapped__ = fn
        return backward

    for cls in _layer_classes(Layer):
        fn = cls.__dict__.get("backward")
        if fn is not None:
            patched.append((cls, fn))
            cls.backward = wrap(cls, fn)
    Layer.__call__ = call
    try:
        yield
    finally:
        Layer.__call__ = original_call
        for cls, fn in patched:
            cls.backward = fn


@contextlib.contextmanager
def _torch(live):
    torch = sys.modules.get("torch")
    if torch is None:
        yield
        return
    from torch.nn.modules import module as tm
    stack = []

    def first_shape(value):
        if isinstance(value, torch.Tensor):
            return tuple(value.shape)
        if isinstance(value, (tuple, list)):
            for v in value:
                found = first_shape(v)
                if found is not None:
                    return found
        return None

    def pre(mod, args):
        stack.append(mod)

    def post(mod, args, out):
        if stack and stack[-1] is mod:
            stack.pop()
        live.emit("forward", "torch", len(stack), type(mod).__name__, first_shape(args),
                  first_shape(out))

    def back(mod, grad_input, grad_output):
        live.emit("backward", "torch", 0, type(mod).__name__, first_shape(grad_output),
                  first_shape(grad_input))

    handles = [tm.register_module_forward_pre_hook(pre), tm.register_module_forward_hook(post),
               tm.register_module_full_backward_hook(back)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def _keras(live):
    keras = sys.modules.get("keras")
    if keras is None:
        yield
        return
    Layer = keras.layers.Layer
    original = Layer.__call__
    stack = []

    def first_shape(value):
        for v in keras.tree.flatten(value):
            if hasattr(v, "shape"):
                return tuple(v.shape)
        return None

    def call(layer, *args, **kwargs):
        stack.append(layer)
        try:
            out = original(layer, *args, **kwargs)
        finally:
            stack.pop()
        live.emit("forward", "keras", len(stack), type(layer).__name__, first_shape(args),
                  first_shape(out))
        return out

    Layer.__call__ = call
    try:
        yield
    finally:
        Layer.__call__ = original


@contextlib.contextmanager
def tracing(file=None):
    """Print every layer call's shapes while the block runs; yields the list of Events.

        with minicnn.trace.tracing() as events:
            logits = model(x)                        # → Conv2D  [64, 1, 28, 28] → [64, 6, 28, 28]
            loss = loss_fn(logits, y)
            model.backward(loss_fn.backward())       # ← Dense   grad [64, 10] → [64, 84]

    A line is printed when a call returns, so a container's line follows its layers'.
    """
    live = _Live(file)
    with _minicnn(live), _torch(live), _keras(live):
        yield live.events
