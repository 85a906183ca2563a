"""A class-based PyTorch model, read through its ``forward`` with ``torch.fx``, as an nn.Sequential.

The articles write their networks as a class whose ``forward`` mixes modules and functional
calls::

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = x.view(x.size(0), -1)
        return F.log_softmax(self.fc(x), dim=1)

``torch.fx.symbolic_trace`` records every call of such a ``forward`` as a graph node. When the
graph is one chain (each call takes the previous call's output), every node becomes a module:
the model's own modules as they are (their weights included) and a module for each
functional call (F.relu -> nn.ReLU(), x.view(x.size(0), -1) -> nn.Flatten(), ...). The result
is an ``nn.Sequential``, which ``from_torch`` already knows how to read.

A call minicnn has no layer for, or a graph that is not a chain (a residual sum, a gate
``x * torch.sigmoid(...)``), raises TypeError naming the call and the line of ``forward``
it comes from. torch is imported inside the functions only.
"""
import operator
import re

_FRAME = re.compile(r'File "([^"]+)", line (\d+), in (\w+)\n\s*(.*)')


def _where(node, module):
    """'line 12 of Net.forward (net.py): x = F.gelu(x)', from the node's recorded stack."""
    frames = _FRAME.findall(node.stack_trace or "")
    ours = [f for f in frames if "/torch/" not in f[0].replace("\\", "/")]
    if not ours:
        return f"in {type(module).__name__}.forward"
    path, line, function, code = ours[-1]
    return f"line {line} of {function}() ({path}): {code.strip()}"


def _functional_modules():
    """{callable: (name, builder(args, kwargs) -> nn.Module)} for the functional calls minicnn
    has a layer for. ``args`` exclude the tensor (the chain's value)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def arg(args, kwargs, i, name, default):
        return args[i] if len(args) > i else kwargs.get(name, default)

    def pool(cls, *names):
        def build(args, kwargs):
            kernel = arg(args, kwargs, 0, "kernel_size", None)
            stride = arg(args, kwargs, 1, "stride", None)
            options = {n: arg(args, kwargs, i + 2, n, d) for i, (n, d) in enumerate(names)}
            return cls(kernel, stride if stride not in (None, []) else kernel, **options)
        return build

    def softmax(cls):
        def build(args, kwargs):
            dim = arg(args, kwargs, 0, "dim", None)
            if dim is None:
                raise ValueError("give the softmax its dim (dim=1 for classes)")
            return cls(dim=dim)
        return build

    def flatten(args, kwargs):
        start, end = arg(args, kwargs, 0, "start_dim", 0), arg(args, kwargs, 1, "end_dim", -1)
        return nn.Flatten(start, end)

    def dropout(args, kwargs):
        return nn.Dropout(arg(args, kwargs, 0, "p", 0.5))

    plain = {nn.ReLU: (F.relu, torch.relu), nn.Tanh: (F.tanh, torch.tanh),
             nn.Sigmoid: (F.sigmoid, torch.sigmoid)}
    table = {fn: (cls.__name__, lambda args, kwargs, cls=cls: cls())
             for cls, fns in plain.items() for fn in fns}
    table.update({
        F.max_pool2d: ("MaxPool2d", pool(nn.MaxPool2d, ("padding", 0), ("dilation", 1),
                                         ("ceil_mode", False), ("return_indices", False))),
        F.avg_pool2d: ("AvgPool2d", pool(nn.AvgPool2d, ("padding", 0), ("ceil_mode", False),
                                         ("count_include_pad", True), ("divisor_override", None))),
        F.softmax: ("Softmax", softmax(nn.Softmax)), torch.softmax: ("Softmax", softmax(nn.Softmax)),
        F.log_softmax: ("LogSoftmax", softmax(nn.LogSoftmax)),
        torch.log_softmax: ("LogSoftmax", softmax(nn.LogSoftmax)),
        torch.flatten: ("Flatten", flatten), F.dropout: ("Dropout", dropout),
    })
    return table


#: tensor methods and the functional call they mean (x.relu() is F.relu(x))
_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax",
            "log_softmax": "log_softmax", "flatten": "flatten"}


def _is_batch_size(value, chain_node):
    """True for ``x.size(0)`` / ``x.shape[0]`` of the chain's value x, or -1."""
    if isinstance(value, int):
        return value == -1
    op, target, args = getattr(value, "op", None), getattr(value, "target", None), getattr(value, "args", ())
    if op == "call_method" and target == "size":
        return args[0] is chain_node and (tuple(args[1:]) or (value.kwargs.get("dim"),)) == (0,)
    if op == "call_function" and target is operator.getitem and args[1] == 0:
        base = args[0]
        return (getattr(base, "target", None) is getattr and base.args[0] is chain_node
                and base.args[1] == "shape")
    return False


def _view_as_flatten(node, chain_node):
    """nn.Flatten() for x.view(x.size(0), -1), x.reshape(N, -1), x.view(-1, F); else None."""
    from torch import nn
    shape = node.args[1:]
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    if len(shape) == 2 and _is_batch_size(shape[0], chain_node) and (
            shape[1] == -1 or isinstance(shape[1], int) and shape[0] == -1):
        return nn.Flatten()
    return None


def sequential_from_fx(module):
    """An nn.Sequential computing what ``module.forward`` computes, for a chain of calls.

    The model's modules are reused as they are (same objects, same weights); functional
    calls become new modules without weights. Raises TypeError naming the call and its
    line in ``forward`` when a call has no minicnn layer or the graph is not a chain.
    """
    from torch import fx, nn

    tracer = fx.Tracer()
    tracer.record_stack_traces = True
    try:
        graph = tracer.trace(module)
    except Exception as err:  # data-dependent control flow, etc.
        raise TypeError(f"from_torch: torch.fx cannot read {type(module).__name__}.forward "
                        f"({type(err).__name__}: {err}); pass model=... to copy the weights into "
                        f"a minicnn model you build") from None
    functional = _functional_modules()
    by_name = {getattr(fn, "__name__", None): fn for fn in functional}
    known = sorted({label for label, _ in functional.values()})
    modules, chain, sizes = [], None, set()
    for node in graph.nodes:
        where = _where(node, module)
        if node.op == "placeholder":
            if chain is not None:
                raise TypeError(f"from_torch: {type(module).__name__}.forward takes more than "
                                f"one input ({node.name}); minicnn's models take one")
            chain = node
            continue
        if node.op == "output":
            if node.args[0] is not chain:
                raise TypeError(f"from_torch: {type(module).__name__}.forward returns "
                                f"{node.args[0]!r}, not the end of one chain of calls")
            break
        # x.size(0), x.shape, x.shape[0]: numbers a view reads, not steps of the chain
        if (node.op == "call_method" and node.target == "size"
                or node.op == "call_function" and (node.target is getattr or (
                    node.target is operator.getitem and node.args[0] in sizes))):
            sizes.add(node)
            continue
        tensors = [a for a in list(node.args) + list(node.kwargs.values())
                   if isinstance(a, fx.Node) and a not in sizes]
        label = node.target if isinstance(node.target, str) else getattr(
            node.target, "__name__", str(node.target))
        if tensors != [chain]:
            raise TypeError(f"from_torch: {label!r} at {where} does not simply continue the "
                            f"chain of calls (it takes {[t.name for t in tensors]}, the chain is at "
                            f"{chain.name}); minicnn reads forward() as one chain of layers "
                            f"(no branches, sums or gates)")
        rest, kwargs = node.args[1:], dict(node.kwargs)
        if node.op == "call_module":
            built = module.get_submodule(node.target)
            label = f"self.{node.target} ({type(built).__name__})"
        elif node.op == "call_method" and node.target in ("view", "reshape"):
            built = _view_as_flatten(node, chain)
            if built is None:
                raise TypeError(f"from_torch: x.{node.target}{tuple(node.args[1:])} at {where}: "
                                f"only x.{node.target}(x.size(0), -1) (a flatten) has a minicnn "
                                f"layer")
        elif node.op == "call_method" and node.target == "contiguous":
            continue
        elif node.op == "call_method" and node.target in _METHODS:
            label, builder = functional[by_name[_METHODS[node.target]]]
            built = builder(rest, kwargs)
        elif node.op == "call_function" and node.target in functional:
            label, builder = functional[node.target]
            try:
                built = builder(rest, kwargs)
            except ValueError as err:
                raise TypeError(f"from_torch: {label} at {where}: {err}") from None
        else:
            raise TypeError(f"from_torch: minicnn has no layer for {label!r} at {where}; "
                            f"the calls it reads are {', '.join(known)} (as F.* or torch.*), "
                            f"x.view(x.size(0), -1) and torch.flatten(x, 1)")
        modules.append(built)
        chain = node
    return nn.Sequential(*modules).train(module.training)
