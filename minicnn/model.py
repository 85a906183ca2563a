"""Sequential: layers applied one after another, and backward through them in reverse."""
from .errors import ShapeError
from .layers.base import Layer


class Sequential(Layer):
    """A chain of layers. ``model(x)`` runs them in order; ``model.backward(dy)`` in reverse.

    forward:  x (N, ...) -> output of the last layer
    backward: dy (shape of the output) -> dx (shape of x), filling every ``param.grad``
    """

    def __init__(self, layers=()):
        super().__init__()
        self.layers = list(layers)
        for i, layer in enumerate(self.layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is {layer!r}, not a minicnn layer")

    def forward(self, x):
        shapes = []
        for i, layer in enumerate(self.layers):
            shapes.append(tuple(x.shape))
            try:
                x = layer(x)
            except ShapeError as err:
                raise self._with_context(err, i, shapes) from None
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy

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

    def _with_context(self, err, index, shapes):
        """Add where the offending shape came from: the previous layer and its arithmetic.

        ``shapes[i]`` is the input shape of layer i, for every layer up to ``index``.
        """
        lines = [str(err), f"  at layer {index} of the Sequential, input shape {shapes[index]}"]
        if index > 0:
            prev = self.layers[index - 1]
            lines.append(f"  from the previous layer {prev!r}: {shapes[index - 1]} -> {shapes[index]}")
            lines += ["    " + line for line in prev.explain(shapes[index - 1])]
        new = ShapeError("\n".join(lines))
        new.layer_index = index
        return new

    def parameters(self):
        return [p for layer in self.layers for p in layer.parameters()]

    def named_parameters(self):
        """[("3.weight", Parameter), ...] with PyTorch's naming: layer index, then attribute."""
        named = []
        for i, layer in enumerate(self.layers):
            if isinstance(layer, Sequential):
                named += [(f"{i}.{name}", p) for name, p in layer.named_parameters()]
            else:
                for attr in ("weight", "bias"):
                    p = getattr(layer, attr, None)
                    if p is not None and p in layer.parameters():
                        named.append((f"{i}.{attr}", p))
        return named

    def train(self, mode=True):
        self.training = mode
        for layer in self.layers:
            layer.train(mode)
        return self

    # -- Keras style: compile once, then fit / evaluate / predict --------------------------
    def compile(self, optimizer="adam", loss="cross_entropy", metrics=("accuracy",), lr=None):
        """Choose the optimizer and loss (objects, or names such as "adam" and "nll").

        Only accuracy is computed as a metric; it is what the articles report.
        """
        from . import training
        self.optimizer = training.make_optimizer(optimizer, self.parameters(), lr)
        self.loss = training.make_loss(loss)
        self.metrics = list(metrics)
        return self

    def _compiled(self):
        if getattr(self, "optimizer", None) is None:
            raise RuntimeError("call model.compile(optimizer=..., loss=...) before fit/evaluate")

    def fit(self, x, y, epochs=1, batch_size=32, validation_data=None, **options):
        """Train like Keras' fit; returns a History. See ``minicnn.training.fit`` for options."""
        from . import training
        self._compiled()
        return training.fit(self, x, y, optimizer=self.optimizer, loss=self.loss, epochs=epochs,
                            batch_size=batch_size, validation_data=validation_data, **options)

    def evaluate(self, x, y, batch_size=1000):
        """[loss, accuracy] over (x, y) in eval mode, as Keras returns them."""
        from . import training
        self._compiled()
        return list(training.evaluate(self, x, y, self.loss, batch_size))

    def predict(self, x, batch_size=1000):
        """The outputs for x (N, C, H, W) in eval mode."""
        from . import training
        return training.predict(self, x, batch_size)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self):
        return len(self.layers)

    def __getitem__(self, index):
        return self.layers[index]

    def __repr__(self):
        inner = "\n".join(f"  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential(\n{inner}\n)"
