"""What every layer has: forward, backward, parameters, buffers, children, train/eval, output_shape.

A layer follows cs231n's pattern: ``forward(x)`` computes the output and keeps what the
backward pass needs (the cache) on the layer; ``backward(dy)`` consumes that cache, writes
the parameter gradients into ``param.grad`` (overwriting, not accumulating) and returns
the gradient with respect to the input. Shapes are NCHW, like PyTorch.

A layer may hold other layers (its children), as a torch.nn.Module does: every attribute
whose value is a Layer is a child, in the order the attributes were set. Parameters, buffers
(state that is saved but not trained, such as BatchNorm's running statistics), train/eval and
freezing all go down into the children, with PyTorch's dotted names ("conv1.weight",
"downsample.1.running_mean").
"""
from contextlib import contextmanager

import numpy as np

from ..core.errors import ShapeError
from ..core.parameter import Parameter
from ..core.shapes import pair

#: every Layer subclass by class name, filled as each class is defined: a checkpoint names its
#: layers' types, and ``Layer.registry["Conv2D"]`` builds them again without importing a zoo


_keep_caches = True     # False inside no_grad()


@contextmanager
def no_grad():
    """``with no_grad(): model(x)``: prediction only, as ``torch.no_grad``. Each layer of a
    Sequential (or of a residual block) forgets what its backward pass would need as soon as
    its forward pass is done, so that only the activations still in use stay in memory instead
    of every layer's; ``backward`` cannot follow such a forward pass."""
    global _keep_caches
    previous, _keep_caches = _keep_caches, False
    try:
        yield
    finally:
        _keep_caches = previous


def keeping_caches():
    """False inside ``no_grad()``."""
    return _keep_caches


class Layer:
    """Base class. Subclasses implement ``forward``, ``backward`` and ``output_shape``.

    ``backward(dy)`` returns dx. A layer that can skip computing dx (the first layer of a
    network sees the data, whose gradient training never reads) sets ``skips_input_grad = True``
    and takes ``backward(dy, need_input_grad=False)``, returning None then.
    """

    registry = {}
    skips_input_grad = False
    #: Whether, in evaluation mode, each output image depends on the same input image alone, so
    #: that a batch may be computed a slice of images at a time (``Sequential`` does so under
    #: ``no_grad``). True of minicnn's layers; a layer of yours is assumed to mix the images
    #: unless its class sets it.
    per_image = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__name__.startswith("_"):
            Layer.registry[cls.__name__] = cls

    def __init__(self):
        self.training = True
        self._frozen = False
        self._buffer_names = []

    # -- the two passes -------------------------------------------------------------
    def forward(self, x):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def __call__(self, x):
        return self.forward(x)

    #: the attributes where layers keep what their backward pass needs
    _CACHES = ("_cache", "_x")

    def forget(self):
        """Drop what the backward pass would need (after a forward pass under ``no_grad``)."""
        for name in self._CACHES:
            if name in vars(self):
                setattr(self, name, None)

    # -- shapes without running ---------------------------------------------------------
    def output_shape(self, input_shape):
        """Shape of the output for an input of ``input_shape`` (batch included), or ShapeError."""
        return tuple(input_shape)

    def explain(self, input_shape):
        """Lines of arithmetic, numbers filled in, that turn ``input_shape`` into the output shape."""
        return []

    # -- children -------------------------------------------------------------------------
    def named_children(self):
        """[(name, layer)]: every public attribute holding a Layer, in the order it was set.

        That is torch.nn.Module's rule (a submodule is registered by assigning it), so a block
        written like torchvision's gets torchvision's names. Leaf layers have none.
        """
        return [(name, value) for name, value in vars(self).items()
                if isinstance(value, Layer) and not name.startswith("_")]

    def children(self):
        return [layer for _, layer in self.named_children()]

    def computes_per_image(self):
        """``per_image`` of the layer and of all its children."""
        return self.per_image and all(child.computes_per_image() for child in self.children())

    def named_modules(self, prefix=""):
        """[("", self), ("conv1", ...), ("downsample.0", ...), ...]: the layer and every layer
        inside it, depth first, each once (a layer used twice keeps its first name)."""
        found, seen = [], set()

        def visit(layer, name):
            if id(layer) in seen:
                return
            seen.add(id(layer))
            found.append((name, layer))
            for child_name, child in layer.named_children():
                visit(child, f"{name}.{child_name}" if name else child_name)
        visit(self, prefix)
        return found

    def get_layer(self, name):
        """The layer at dotted ``name`` ("layer1.0.bn1"); "" is the layer itself."""
        layer = self
        for part in name.split(".") if name else []:
            children = dict(layer.named_children())
            if part not in children:
                raise KeyError(f"{type(layer).__name__} has no child {part!r} (looking up {name!r}; "
                               f"its children are {list(children)})")
            layer = children[part]
        return layer

    # -- parameters -------------------------------------------------------------------------
    def _own_parameters(self):
        """[(attribute, Parameter)] held directly by this layer: weight, bias, then any other."""
        own = [(name, getattr(self, name, None)) for name in ("weight", "bias")]
        own += [(name, value) for name, value in vars(self).items() if name not in ("weight", "bias")]
        return [(name, p) for name, p in own if isinstance(p, Parameter)]

    def named_parameters(self, prefix=""):
        """[("conv1.weight", Parameter), ...]: PyTorch's names and order, each parameter once.

        The layer's own parameters first (weight, bias), then each child's, prefixed with the
        child's name; a Sequential's children are named by index ("3.weight", "1.2.weight").
        """
        named, seen = [], set()
        for layer_name, layer in self.named_modules(prefix):
            for attr, p in layer._own_parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    named.append((f"{layer_name}.{attr}" if layer_name else attr, p))
        return named

    def parameters(self):
        """The Parameters of the layer and its children, in ``named_parameters()`` order."""
        return [p for _, p in self.named_parameters()]

    def zero_grad(self):
        for p in self.parameters():
            p.zero_grad()

    # -- buffers: saved state that no optimizer touches -------------------------------------
    def register_buffer(self, name, value):
        """Keep ``value`` (an array) as attribute ``name``, saved and loaded with the weights."""
        if "_buffer_names" not in vars(self):
            self._buffer_names = []
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        setattr(self, name, np.asarray(value))

    def named_buffers(self, prefix=""):
        """[("bn1.running_mean", array), ...]: every buffer of the layer and its children.

        The arrays themselves, not copies: ``load_buffer`` writes into them in place.
        """
        return [(f"{layer_name}.{name}" if layer_name else name, getattr(layer, name))
                for layer_name, layer in self.named_modules(prefix)
                for name in vars(layer).get("_buffer_names", [])]

    def buffers(self):
        return [b for _, b in self.named_buffers()]

    def load_buffer(self, name, value):
        """Copy ``value`` into the buffer at dotted ``name`` in place (shape must match)."""
        owner, _, attr = name.rpartition(".")
        layer = self.get_layer(owner)
        if attr not in vars(layer).get("_buffer_names", []):
            raise KeyError(f"{type(layer).__name__} has no buffer {attr!r} (loading {name!r})")
        buf, value = getattr(layer, attr), np.asarray(value)
        if buf.shape != value.shape:
            raise ValueError(f"buffer {name!r} has shape {buf.shape}, got a value of shape "
                             f"{value.shape}")
        buf[...] = value

    # -- modes ------------------------------------------------------------------------------
    def train(self, mode=True):
        """Training mode (``mode=True``) or evaluation mode, for the layer and its children."""
        self.training = mode
        for child in self.children():
            child.train(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def trainable(self):
        """True iff any parameter of the layer (children included) is trainable; for a layer
        without parameters, False once it was frozen. ``layer.trainable = False`` freezes the
        layer and its children: every parameter gets ``trainable = False``, which optimizers
        skip (Keras' ``layer.trainable``; PyTorch's ``requires_grad_(False)`` on every one)."""
        # a layer without children asks its own parameters (walking the tree, as parameters()
        # does, costs BatchNorm2D more than its arithmetic on small planes, at every batch)
        own = not self.named_children()
        params = [p for _, p in self._own_parameters()] if own else self.parameters()
        if params:
            return any(p.trainable for p in params)
        return not vars(self).get("_frozen", False)

    @trainable.setter
    def trainable(self, value):
        value = bool(value)
        for _, layer in self.named_modules():
            layer._frozen = not value
        for p in self.parameters():
            p.trainable = value

    # -- helpers for subclasses -----------------------------------------------------------
    def _expect_rank(self, input_shape, rank, layout):
        """Raise ShapeError unless ``input_shape`` has ``rank`` dimensions, named by ``layout``."""
        input_shape = tuple(input_shape)
        if len(input_shape) != rank:
            raise ShapeError(
                f"{self!r}: expected an input of rank {rank} {layout}, "
                f"got shape {input_shape} of rank {len(input_shape)}")
        return input_shape

    def _check_input(self, x):
        """Validate ``x`` (as ``output_shape`` does) and return it as an array of the layer's dtype."""
        x = np.asarray(x)
        self.output_shape(x.shape)
        dtype = getattr(self, "dtype", None)
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        return x

    def __repr__(self):
        return f"{type(self).__name__}()"


# ----------------------------------------------------------------------------------------
# checks every layer shares: arguments, input dtypes, the upstream gradient
# ----------------------------------------------------------------------------------------
def as_float(x, integer_dtype=np.float64):
    """``x`` as an array of its own float dtype; integers and bools become ``integer_dtype``."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(integer_dtype)


def refuse_integers(x, where):
    """``x`` as an array; TypeError if it holds integers or bools (unscaled images, most likely).

    A model takes floats, as PyTorch's layers refuse a Byte tensor: uint8 pixels 0..255 fed
    as they are train at a loss of several units and learn little, with no error anywhere.
    ``where`` names the receiver in the message ("Sequential.forward", "fit").
    """
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
        hint = ("mc.data.to_float(x) (uint8 0..255 -> float32 0..1, NCHW)" if x.dtype == np.uint8
                else "x.astype(np.float32), scaled as the model expects")
        raise TypeError(f"{where}: got {x.dtype} input of shape {x.shape}; a model takes floats. "
                        f"Scale it first: {hint}")
    return x


def check_upstream(layer, dy, shape, dtype):
    """``dy`` as an array of ``dtype``; ShapeError unless it has the forward output's ``shape``.

    Elementwise backward passes would otherwise broadcast a wrong-shaped ``dy`` silently.
    """
    if shape is None:
        raise RuntimeError(f"{layer!r}: backward called before forward")
    dy = np.asarray(dy)
    if dy.shape != tuple(shape):
        raise ShapeError(f"{layer!r}: backward expected dy of the output's shape {tuple(shape)}, "
                         f"got {dy.shape}")
    return dy.astype(dtype, copy=False)


def positive_int(layer_name, value, name):
    """``value`` as an int >= 1, or ValueError naming the layer and the argument."""
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer_name}: {name} must be a positive int, got {value!r}")
    return int(value)


def positive_pair(layer_name, value, name):
    """An int or a pair as (rows, columns), both >= 1, or ValueError naming the layer."""
    result = pair(value, name)
    if min(result) < 1:
        raise ValueError(f"{layer_name}: {name} must be positive, got {value!r}")
    return result


def check_padding(layer_name, padding):
    """The padding as stored: a lower-case "same"/"valid", or ints >= 0 (ValueError otherwise).

    Accepted forms: an int, a pair (rows, columns), a pair of pairs ((top, bottom), (left, right)).
    """
    if isinstance(padding, str):
        if padding.lower() not in ("same", "valid"):
            raise ValueError(f'{layer_name}: padding must be an int, a pair, a pair of pairs, '
                             f'"valid" or "same", got {padding!r}')
        return padding.lower()
    if isinstance(padding, (tuple, list)) and len(padding) == 2 and all(
            isinstance(p, (tuple, list)) for p in padding):
        amounts = [v for p in padding for v in pair(tuple(p), "padding")]
    else:
        amounts = pair(padding, "padding")
    if min(amounts) < 0:
        raise ValueError(f"{layer_name}: padding must be >= 0, got {padding!r}")
    return padding


def shape_product(dims):
    """'32·7·7' for (32, 7, 7): the product written out, as the error messages show it."""
    return "·".join(str(d) for d in dims)


def children_repr(title, named_children):
    """PyTorch's repr of a container: ``title(`` then ``  (name): child`` lines, nested ones indented."""
    if not named_children:
        return f"{title}()"
    lines = []
    for name, child in named_children:
        inner = repr(child).replace("\n", "\n  ")
        lines.append(f"  ({name}): {inner}")
    return f"{title}(\n" + "\n".join(lines) + "\n)"
