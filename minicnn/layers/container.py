"""Sequential: layers applied one after another, and backward through them in reverse."""
import math

import numpy as np

from ..core.errors import ShapeError
from . import fusion
from .base import Layer, children_repr, keeping_caches, refuse_integers

#: Keras' compile / fit / evaluate / predict, by name. The training loop lives in
#: ``minicnn.train``, a floor above the layers; it fills this table when it is imported
#: (``import minicnn`` does), so that a layer never imports the code that trains it.
KERAS_METHODS = {}


def _keras_method(name):
    if name not in KERAS_METHODS:
        raise RuntimeError(f"model.{name}() needs minicnn.train: import minicnn (or minicnn.train) "
                           f"first")
    return KERAS_METHODS[name]


# instance attributes of a Sequential (compile() sets some): no layer may take their names
_RESERVED = ("layers", "training", "optimizer", "loss", "metrics", "spec")


class Sequential(Layer):
    """A chain of layers. ``model(x)`` runs them in order; ``model.backward(dy)`` in reverse.

    forward:  x (N, ...) -> output of the last layer
    backward: dy (shape of the output) -> dx (shape of x), filling every ``param.grad``

    ``Sequential([conv, relu, ...])`` names the layers "0", "1", ... as torch.nn.Sequential;
    ``Sequential({"features": ..., "fc": ...})`` or a list of (name, layer) pairs names them
    (torch.nn.Sequential(OrderedDict(...))). A layer is reached as ``model[3]``,
    ``model["fc"]`` or ``model.fc``, and replaced with ``model["fc"] = Dense(2048, 2)`` (a new
    head for transfer learning). Parameter names follow: "3.weight", "fc.weight", "1.2.weight".
    """

    per_image = True

    def __init__(self, layers=()):
        super().__init__()
        if isinstance(layers, dict):
            items = list(layers.items())
        else:
            items = list(layers)
            if items and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                             for item in items):
                items = [(name, layer) for name, layer in items]
            else:
                items = [(str(i), layer) for i, layer in enumerate(items)]
        self._names = []
        self.layers = []
        for i, (name, layer) in enumerate(items):
            self._check_name(name, i)
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} ({name!r}) is {layer!r}, not a minicnn layer")
            self._names.append(name)
            self.layers.append(layer)
        if self._names == [str(i) for i in range(len(self._names))]:
            # index names are computed from positions, so code that edits ``model.layers``
            # directly (``model.layers.insert(0, layer)``) keeps consistent names
            self._names = None

    def _check_name(self, name, i):
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"Sequential: item {i} has name {name!r}; a name is a non-empty "
                             f"string without dots (dots separate names in 'fc.weight')")
        if name in self._names:
            raise ValueError(f"Sequential: the name {name!r} is used twice (items "
                             f"{self._names.index(name)} and {i})")
        if not name.isdigit() and hasattr(type(self), name) or name in _RESERVED:
            raise ValueError(f"Sequential: the name {name!r} would hide Sequential.{name}; "
                             f"choose another")

    @property
    def names(self):
        """The layers' names, in order: ["0", "1", ...] or the names given."""
        if self._names is None:
            return [str(i) for i in range(len(self.layers))]
        if len(self._names) != len(self.layers):
            raise RuntimeError(f"Sequential: {len(self.layers)} layers but {len(self._names)} names: "
                               f"the list model.layers of a named Sequential was edited directly; "
                               f"replace a layer with model[name] = layer instead")
        return list(self._names)

    def named_children(self):
        return list(zip(self.names, self.layers))

    def forward(self, x):
        x = refuse_integers(x, "Sequential.forward")
        size, stop, rows = self._slicing(x)
        if size < len(x) and stop > 0:
            return self._forward_in_slices(x, size, stop, rows)
        return self._forward_layers(x)

    def _slicing(self, x):
        """(size, stop, rows): send x (N, ...) through layers 0 .. stop − 1 ``size`` images at a
        time, the rest whole; rows are ``shapes()`` of one image. All of them at once, except
        in evaluation mode under ``no_grad`` with layers that compute each image on its own.
        Then a slice whose activations, all layers together, hold about ``SLICE_BYTES``: they
        stay in the CPU's cache from one layer to the next, and their memory is reused, not
        requested anew from the system (page faults) for every layer's output. The slicing
        stops at the first layer whose weights outweigh its slice of input (mnist_cnn's first
        Dense, 4.7 MB): it would read them once per slice, so it takes the whole batch. The
        numbers are each image's own either way, up to the last bits of a matrix product
        whose blocking depends on its number of rows. Whether the memory is reused is the
        allocator's call: glibc's ``malloc`` may give a slice's memory back to the system when
        the slice is done (it trims the top of its heap), and the next slice then faults it in
        again; the peak memory is lower either way."""
        whole = (len(x) if x.ndim else 0, 0, None)
        if keeping_caches() or self.training or x.ndim == 0 or not self.computes_per_image():
            return whole
        try:
            rows = self.shapes((1,) + x.shape[1:])
        except ShapeError:
            return whole            # the unsliced pass reports it, with the whole batch's shapes
        itemsize = max(x.itemsize, 4)
        per_image = sum(math.prod(shape) for _, _, shape in rows) * itemsize
        size = max(self.SLICE_MIN, self.SLICE_BYTES // max(per_image, 1))
        stop = next((i for i, (layer, shape_in, _) in enumerate(rows)
                     if sum(p.data.nbytes for p in layer.parameters())
                     > size * math.prod(shape_in) * itemsize), len(rows))
        return size, stop, rows

    #: a slice's activations in bytes, and its fewest images (see ``_slicing``). Measured as
    #: the benchmark runs it (mnist_cnn, 10,000 images in batches of 1000, 2 threads, a
    #: process of its own) on an AMD EPYC: 2.06 to 2.27 s in slices of 64 against 2.19 to
    #: 2.59 s whole, at 527 MB of peak memory against 805 MB. Later, with faster kernels, on an
    #: Intel Xeon (a larger last-level cache), each slice's Python and thread wake-ups cost
    #: more than the cache saved: at 32 MB (slices of 64 mnist_cnn images), mnist_cnn 0.75 s
    #: against 0.66 to 0.68 s whole, resnet_small (2000 images in batches of 500, slices of
    #: 198) 0.21 s against 0.18 s; at 128 MB (slices of 247 and 794) 0.69 to 0.70 s and
    #: 0.18 s. The activations counted are every layer's output, fused or not.
    SLICE_BYTES = 128 << 20
    SLICE_MIN = 64

    def _forward_in_slices(self, x, size, stop, rows):
        """The output for x (N, ...): layers 0 .. stop − 1 ``size`` images at a time, then the
        others on the whole batch (evaluation only)."""
        first = self._forward_layers(x[:size], stop=stop)
        out = np.empty((len(x),) + first.shape[1:], dtype=first.dtype)
        out[:size] = first
        for start in range(size, len(x), size):
            out[start:start + size] = self._forward_layers(x[start:start + size], stop=stop)
        shapes = [(len(x),) + shape_in[1:] for _, shape_in, _ in rows[:stop]]
        return self._forward_layers(out, start=stop, shapes=shapes)

    def _forward_layers(self, x, start=0, stop=None, shapes=()):
        """Layers start .. stop − 1 on x; ``shapes``: the input shapes of the layers before
        ``start`` (for the context of a ShapeError)."""
        shapes = list(shapes)
        i, stop = start, len(self.layers) if stop is None else stop
        while i < stop:
            # Conv2D -> ReLU run as one; under no_grad in eval mode, Conv2D -> BatchNorm2D -> ReLU
            # -> MaxPool2D(2) too (fusion.py)
            n = fusion.chain_length(self.layers[:stop], i)
            shapes.append(tuple(x.shape))
            try:
                # the input shapes of the fused layers, for a later error's context; the one
                # that refuses its input is named by its own index
                for j in range(i, i + n - 1):
                    shapes.append(tuple(self.layers[j].output_shape(shapes[-1])))
                x_in = x
                x = self.layers[i](x) if n == 1 else fusion.run_chain(self.layers[i:i + n], x)
                if i > 0:       # a ReLU before a Conv2D or an average pool: it takes its gradient
                    fusion.hand_relu_gradient(self.layers[i - 1], self.layers[i], x_in)
            except ShapeError as err:
                raise self._with_context(err, len(shapes) - 1, shapes) from None
            if not keeping_caches():
                for layer in self.layers[i:i + n]:
                    layer.forget()
            i += n
        return x

    skips_input_grad = True

    def backward(self, dy, need_input_grad=True):
        """dy (the output's shape) -> dx (the input's shape), every ``param.grad`` filled.

        ``need_input_grad=False`` (training, where the input is the data) lets the first layer
        skip computing dx if it can (a convolution saves a whole col2im), and returns None.
        """
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if i == 0 and not need_input_grad and layer.skips_input_grad:
                return layer.backward(dy, need_input_grad=False)
            dy = layer.backward(dy)
        return None if not need_input_grad else dy

    def output_shape(self, input_shape):
        shapes = [tuple(input_shape)]
        for i, layer in enumerate(self.layers):
            try:
                shapes.append(layer.output_shape(shapes[-1]))
            except ShapeError as err:
                raise self._with_context(err, i, shapes) from None
        return shapes[-1]

    def shapes(self, input_shape):
        """[(layer, input shape, output shape), ...] for every layer, without running."""
        rows, shape = [], tuple(input_shape)
        for layer in self.layers:
            out = layer.output_shape(shape)
            rows.append((layer, shape, out))
            shape = out
        return rows

    def explain(self, input_shape):
        """Each layer's line "name: Type (input) -> (output)", then its own arithmetic indented."""
        lines = []
        for name, (layer, shape_in, shape_out) in zip(self.names, self.shapes(input_shape)):
            lines.append(f"{name}: {type(layer).__name__} {shape_in} -> {shape_out}")
            lines += ["    " + line for line in layer.explain(shape_in)]
        return lines

    def _with_context(self, err, index, shapes):
        """Add where the offending shape came from: the previous layer and its arithmetic.

        ``shapes[i]`` is the input shape of layer i, for every layer up to ``index``.
        """
        name = self.names[index]
        named = f" ({name})" if name != str(index) else ""
        lines = [str(err), f"  at layer {index}{named} of the Sequential, input shape {shapes[index]}"]
        if index > 0:
            prev = self.layers[index - 1]
            lines.append(f"  from the previous layer {prev!r}: {shapes[index - 1]} -> {shapes[index]}")
            lines += ["    " + line for line in prev.explain(shapes[index - 1])]
        new = ShapeError("\n".join(lines))
        new.layer_index = index
        return new

    # -- Keras style: compile once, then fit / evaluate / predict (minicnn.train.fit) -------
    def compile(self, optimizer="adam", loss="cross_entropy", metrics=("accuracy",), lr=None):
        """Choose the optimizer and loss (objects, or names such as "adam" and "nll")."""
        return _keras_method("compile")(self, optimizer=optimizer, loss=loss, metrics=metrics, lr=lr)

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, **options):
        """Train like Keras' fit; returns a History. See ``minicnn.train.fit.fit`` for options."""
        return _keras_method("fit")(self, x, y, epochs=epochs, batch_size=batch_size,
                                    validation_data=validation_data, **options)

    def evaluate(self, x, y, batch_size=1000):
        """[loss, accuracy] over (x, y) in eval mode, as Keras returns them."""
        return _keras_method("evaluate")(self, x, y, batch_size=batch_size)

    def predict(self, x, batch_size=1000):
        """The outputs for x (N, C, H, W) in eval mode."""
        return _keras_method("predict")(self, x, batch_size=batch_size)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def _index(self, key):
        """The position of ``key``: an int (negative counts from the end) or a layer's name."""
        if isinstance(key, str):
            names = self.names
            if key not in names:
                raise KeyError(f"Sequential has no layer named {key!r}; its names are {names}")
            return names.index(key)
        if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
            if not -len(self.layers) <= key < len(self.layers):
                raise IndexError(f"Sequential index {key} out of range for {len(self.layers)} layers")
            return int(key) % len(self.layers)
        raise TypeError(f"Sequential indices are ints, names or slices, not {key!r}")

    def __getitem__(self, key):
        """``model[3]``, ``model["fc"]``, or ``model[:-1]`` (a Sequential of those layers, names kept)."""
        if isinstance(key, slice):
            return Sequential(list(zip(self.names[key], self.layers[key])))
        return self.layers[self._index(key)]

    def __setitem__(self, key, layer):
        """``model["fc"] = Dense(2048, 2)``: replace a layer, keeping its name and position."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential: {layer!r} is not a minicnn layer")
        self.layers[self._index(key)] = layer

    def __getattr__(self, name):
        # called only when ordinary lookup fails: ``model.fc`` finds the layer named "fc"
        names = self.__dict__.get("_names")
        if names and name in names:
            return self.layers[names.index(name)]
        raise AttributeError(f"'Sequential' object has no attribute or layer named {name!r}")

    def __setattr__(self, name, value):
        names = self.__dict__.get("_names")
        if names and name in names:
            self[name] = value
        else:
            super().__setattr__(name, value)

    def __repr__(self):
        return children_repr("Sequential", self.named_children())
