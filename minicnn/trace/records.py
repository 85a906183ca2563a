"""The data of a trace: a ``Row`` per layer (or function) call, and the ``Trace`` with totals.

A row is what one call did to the data flowing through it, measured on a real forward pass:

    index     call order (0 is the model itself)
    depth     nesting depth in the call stack (0 the model, 1 its layers, 2 their layers, ...)
    parent    index of the row it was called from (None for the model)
    name      where the layer sits in the model ("conv1", "features.0", "3"), or the function
              ("F.relu", "torch.flatten", "x.view") for a functional call
    type      the layer's class ("Conv2d"), or "function"
    input_shapes / output_shapes   every tensor in / out, batch dimension included, in the
              framework's own layout (NCHW for minicnn and PyTorch, NHWC for Keras)
    trainable / frozen   parameters the layer itself owns (a container's own, not its children's)
    macs      multiply-adds for the whole batch (convolutions and dense layers: the bias is an
              add without a multiply and is not counted)
    memory    bytes the output newly occupies; 0 when it shares the input's memory (a view, or
              an in-place operation), with ``shared`` set
    explain   the arithmetic behind the output shape, numbers filled in
    status    "ok", "failed" (the call that raised) or "unfinished" (a container the failure
              passed through)

Containers (rows that other rows were called from) are not counted in the totals: their
children are.
"""
import math
import re
from dataclasses import dataclass, field

from ..core.shapes import resolve_padding, window_formula
from . import render
from .render import LAYOUTS


def to_pair(value):
    """(a, b) from an int or a sequence of one or two ints, as the frameworks accept them."""
    if isinstance(value, (list, tuple)):
        values = tuple(int(v) for v in value)
        return values * 2 if len(values) == 1 else values[:2]
    return (int(value), int(value))


@dataclass(frozen=True)
class Window:
    """A sliding window over H and W (convolution or pooling), enough to redo its arithmetic.

    ``padding``: anything ``minicnn.shapes.resolve_padding`` takes: an int, a pair, a pair of
    pairs ((top, bottom), (left, right)), "valid" or "same" (TensorFlow's rule, which for
    stride 1 is also PyTorch's). ``ceil_mode``: PyTorch pooling's rounding up.
    """
    kernel: tuple
    stride: tuple
    padding: object = 0
    dilation: tuple = (1, 1)
    ceil_mode: bool = False

    def pads(self, h, w):
        return resolve_padding(self.padding, (h, w), self.kernel, self.stride, self.dilation)

    def _axis(self, size, k, s, pad, d):
        span = size + pad[0] + pad[1] - d * (k - 1) - 1
        if not self.ceil_mode:
            return span // s + 1
        out = -(-span // s) + 1
        # PyTorch: the last window must start inside the input or the left padding
        return out - 1 if (out - 1) * s >= size + pad[0] else out

    def out(self, h, w):
        """(H_out, W_out) for an input of H × W."""
        pads = self.pads(h, w)
        return tuple(self._axis(size, k, s, p, d) for size, k, s, p, d in
                     zip((h, w), self.kernel, self.stride, pads, self.dilation))

    def explain(self, h, w):
        """['H: (28 + 2·2 − 5)/1 + 1 = 28', 'W: ...']."""
        pads = self.pads(h, w)
        lines = []
        for axis, size, k, s, p, d in zip("HW", (h, w), self.kernel, self.stride, pads,
                                          self.dilation):
            if self.ceil_mode:
                padded = f"{size} + 2·{p[0]}" if p[0] == p[1] else f"{size} + {p[0]} + {p[1]}"
                kern = f"{k}" if d == 1 else f"{d}·({k} − 1) − 1"
                out = self._axis(size, k, s, p, d)
                lines.append(f"{axis}: ⌈({padded} − {kern})/{s}⌉ + 1 = {out}")
            else:
                lines.append(f"{axis}: {window_formula(size, k, s, p, d)}")
        if isinstance(self.padding, str) and self.padding == "same" and any(sum(p) for p in pads):
            lines.insert(0, f'padding "same": {pads[0][0]} top + {pads[0][1]} bottom, '
                            f'{pads[1][0]} left + {pads[1][1]} right')
        return lines


@dataclass
class Row:
    """One call: a layer, a container or a function, with the shapes that went in and out."""
    index: int
    depth: int
    parent: object          # int or None
    name: str
    type: str
    input_shapes: list = field(default_factory=list)
    output_shapes: list = field(default_factory=list)
    trainable: int = 0
    frozen: int = 0
    nested_params: int = 0  # a container's parameters, its children's included
    macs: int = 0
    memory: int = 0
    shared: bool = False
    explain: list = field(default_factory=list)
    status: str = "ok"
    function: bool = False
    container: bool = False
    kind: str = ""          # normalised name ("conv", "relu", "flatten"...) to align frameworks
    fused: str = ""         # Keras: the activation a Conv2D/Dense applies itself ("relu")
    window: object = field(default=None, repr=False, compare=False)  # Window, not exported
    display: str = field(default="", repr=False, compare=False)  # name relative to the parent

    @property
    def input_shape(self):
        return self.input_shapes[0] if self.input_shapes else None

    @property
    def output_shape(self):
        return self.output_shapes[0] if self.output_shapes else None

    @property
    def params(self):
        return self.trainable + self.frozen

    @property
    def label(self):
        """'conv1: Conv2d', 'F.relu', or the class alone for the model itself."""
        name = self.display or self.name
        if self.function or not name or name == self.type:
            return name or self.type
        if _plain(re.sub(r"_\d+$", "", name)) == _plain(self.type):  # Keras: "max_pooling2d_1"
            return name
        return f"{name}: {self.type}"

    def to_dict(self):
        return {
            "index": self.index, "depth": self.depth, "parent": self.parent, "name": self.name,
            "type": self.type, "function": self.function, "container": self.container,
            "input_shape": _listed(self.input_shape), "output_shape": _listed(self.output_shape),
            "input_shapes": [list(s) for s in self.input_shapes],
            "output_shapes": [list(s) for s in self.output_shapes],
            "params": {"trainable": self.trainable, "frozen": self.frozen,
                       "nested": self.nested_params},
            "macs": self.macs, "memory_bytes": self.memory, "shares_input_memory": self.shared,
            "explain": list(self.explain), "status": self.status, "kind": self.kind,
            "fused_activation": self.fused or None,
        }


def _plain(text):
    return text.replace("_", "").lower()


def _listed(shape):
    return None if shape is None else list(shape)


@dataclass
class Failure:
    """Why the forward pass stopped: at which row, what was expected and received, and the fix."""
    row: int
    layer: str                 # the layer's repr, e.g. "Linear(in_features=8192, out_features=3)"
    error: str                 # the exception's own message (its meaningful lines)
    expected: str = ""         # e.g. "[N, 8192]"
    received: str = ""         # e.g. "[64, 1568]"
    fix: list = field(default_factory=list)
    exception: object = field(default=None, repr=False, compare=False)

    def to_dict(self):
        return {"row": self.row, "layer": self.layer, "error": self.error,
                "expected": self.expected, "received": self.received, "fix": list(self.fix)}


@dataclass
class Trace:
    """The rows of one forward pass and its totals. Iterating yields the rows.

    ``input_shape`` includes the batch: (batch, C, H, W) or, for Keras, (batch, H, W, C).
    ``trainable`` / ``frozen`` count every parameter of the model once (a layer called twice
    still owns its weights once); ``macs`` and the memory add up the calls.
    """
    model: str
    framework: str             # "minicnn", "torch" or "keras"
    layout: str                # "NCHW" or "NHWC"
    input_shape: tuple
    dtype: str
    itemsize: int
    rows: list = field(default_factory=list)
    trainable: int = 0
    frozen: int = 0
    param_bytes: int = 0
    failure: object = None     # Failure or None

    def __iter__(self):
        return iter(self.rows)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i):
        return self.rows[i]

    @property
    def ok(self):
        return self.failure is None

    @property
    def batch(self):
        return self.input_shape[0]

    @property
    def leaves(self):
        """The rows that do the work: every row that no other row was called from."""
        return [r for r in self.rows if not r.container]

    @property
    def output_shape(self):
        return self.rows[0].output_shape if self.rows and self.ok else None

    def totals(self):
        """Parameters, multiply-adds and memory (bytes) of a forward and a backward pass."""
        leaves = self.leaves
        activations = sum(r.memory for r in leaves)
        inputs = math.prod(self.input_shape) * self.itemsize
        return {
            "params": self.trainable + self.frozen, "trainable": self.trainable,
            "frozen": self.frozen, "param_bytes": self.param_bytes,
            "macs": sum(r.macs for r in leaves),
            "macs_per_sample": sum(r.macs for r in leaves) // max(self.batch, 1),
            "input_bytes": inputs,
            "activation_bytes": activations,
            # inference keeps the input, the weights and the activations
            "forward_bytes": inputs + self.param_bytes + activations,
            # training adds one gradient per activation and per parameter
            "forward_backward_bytes": inputs + 2 * self.param_bytes + 2 * activations,
        }

    def to_dict(self):
        return {
            "model": self.model, "framework": self.framework, "layout": self.layout,
            "shape_format": LAYOUTS[self.layout], "batch": self.batch,
            "input_shape": list(self.input_shape), "dtype": self.dtype,
            "rows": [r.to_dict() for r in self.rows], "totals": self.totals(),
            "failure": self.failure.to_dict() if self.failure else None,
        }

    def render(self, format="text", explain=False):
        """The table as text (fits 100 columns), markdown or JSON."""
        return render.render(self, format, explain)

    def __str__(self):
        return self.render()


class Recorder:
    """Builds the rows as calls start and end; shared by the three tracers.

    ``open`` is called when a call starts (so a container gets its index before its
    children, in call order), ``close`` when it returns, ``fail`` when it raises.
    """

    def __init__(self):
        self.rows = []
        self.stack = []        # open rows, innermost last
        self.failed = None     # the Row that raised first

    @property
    def depth(self):
        return len(self.stack)

    def open(self, name, type_, input_shapes, **extra):
        parent = self.stack[-1] if self.stack else None
        row = Row(index=len(self.rows), depth=len(self.stack),
                  parent=None if parent is None else parent.index, name=name, type=type_,
                  input_shapes=[tuple(s) for s in input_shapes], **extra)
        if parent is not None:
            parent.container = True
        self.rows.append(row)
        self.stack.append(row)
        return row

    def close(self, row, output_shapes):
        row.output_shapes = [tuple(s) for s in output_shapes]
        self._pop(row)

    def failed_row(self, error, input_shape):
        """The row the model failed in; an "error" row of its own when ``error`` was raised
        outside every layer (the model's own code between two calls)."""
        if self.failed is None:
            self.fail(self.open(type(error).__name__, "error", [tuple(input_shape)]))
        return self.failed

    def fail(self, row):
        """``row``'s call raised: the first row to see the exception is the failing one."""
        if self.failed is None:
            self.failed = row
            row.status = "failed"
        elif row.status == "ok":
            row.status = "unfinished"
        self._pop(row)

    def _pop(self, row):
        if row in self.stack:
            while self.stack and self.stack.pop() is not row:
                pass

    def add_function(self, name, input_shapes, output_shapes, **extra):
        """A functional call (nothing can be called from inside it): opened and closed at once."""
        row = self.open(name, "function", input_shapes, function=True, **extra)
        self.close(row, output_shapes)
        return row


def flatten_explain(row):
    """'16·5·5 = 400' when ``row`` flattens (N, d1, ..., dk) into (N, d1·...·dk), else []."""
    src, out = row.input_shape, row.output_shape
    if (src is None or out is None or len(src) < 3 or len(out) != 2 or src[0] != out[0]
            or out[1] != math.prod(src[1:])):
        return []
    return [f"{'·'.join(str(d) for d in src[1:])} = {out[1]}"]


def batch_warning(row):
    """A line when a reshape changed the batch dimension (the x.view(-1, 9216) trap)."""
    src, out = row.input_shape, row.output_shape
    if src is None or out is None or not src or not out or src[0] == out[0]:
        return []
    if math.prod(src) != math.prod(out):
        return []
    return [f"⚠ the batch dimension changed: {src[0]} → {out[0]}; a view(-1, ...) folded "
            f"features into the batch (use x.flatten(1) or x.view(x.size(0), -1))"]


def window_explain(row, layout):
    """The window arithmetic of a conv/pool row, only when it reproduces the measured output."""
    if row.window is None or row.input_shape is None or row.output_shape is None:
        return []
    if len(row.input_shape) != 4 or len(row.output_shape) != 4:
        return []
    hw = spatial(row.input_shape, layout)
    try:
        if row.window.out(*hw) != spatial(row.output_shape, layout):
            return []
        return row.window.explain(*hw)
    except (ValueError, TypeError):
        return []


def spatial(shape, layout):
    """(H, W) of a 4-D shape in ``layout``."""
    return (shape[2], shape[3]) if layout == "NCHW" else (shape[1], shape[2])


def channels(shape, layout):
    return shape[1] if layout == "NCHW" else shape[-1]


_KINDS = {
    "conv2d": "conv", "linear": "dense", "dense": "dense", "relu": "relu", "relu_": "relu",
    "maxpool2d": "maxpool", "max_pool2d": "maxpool", "maxpooling2d": "maxpool",
    "avgpool2d": "avgpool", "avg_pool2d": "avgpool", "averagepooling2d": "avgpool",
    "flatten": "flatten", "dropout": "dropout", "softmax": "softmax",
    "logsoftmax": "log_softmax", "log_softmax": "log_softmax", "tanh": "tanh",
    "sigmoid": "sigmoid",
}


def kind_of(row):
    """A name shared by the three frameworks' versions of a layer: Conv2d, Conv2D -> "conv"."""
    key = (row.name if row.function else row.type).rsplit(".", 1)[-1].lower()
    if key in ("view", "reshape") and flatten_explain(row):
        return "flatten"
    return _KINDS.get(key, key)


def finish(rows, layout):
    """Fill each row's explanation, kind and displayed name once the shapes are known."""
    by_index = {row.index: row for row in rows}
    for row in rows:
        row.kind = row.kind or kind_of(row)
        parent = by_index.get(row.parent)
        if (parent is not None and not row.function and parent.name
                and row.name.startswith(parent.name + ".")):
            row.display = row.name[len(parent.name) + 1:]  # "conv1" under "blocks.0"
        if row.status == "failed" or row.container:
            continue
        computed = window_explain(row, layout) + flatten_explain(row) + batch_warning(row)
        row.explain = computed or row.explain
