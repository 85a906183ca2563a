"""Trace a torch.nn.Module: forward hooks for the modules, a TorchFunctionMode for the rest.

Module hooks alone (what torchinfo sees) miss everything ``forward`` does with functions:
``F.relu``, ``F.max_pool2d``, ``torch.flatten``, ``x.view(x.size(0), -1)``, ``x + shortcut``.
A ``TorchFunctionMode`` sees every torch call; the calls made inside PyTorch's own layers
(``nn.Conv2d`` calling ``F.conv2d``) are left out, so nothing appears twice.

torch is imported here, and this module is imported only to trace a torch model.
"""
import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode

from .. import explain
from ..records import Recorder, Trace, Window, finish, to_pair

# tensor methods whose result is the same data or bookkeeping, not a step of the network
_QUIET = {"__get__", "__set__", "__delete__", "size", "dim", "numel", "item", "tolist",
          "is_contiguous", "stride", "data_ptr", "untyped_storage", "storage_offset",
          "element_size", "is_floating_point", "requires_grad_", "detach", "numpy",
          "__repr__", "__format__", "__len__", "__bool__", "__iter__"}
_OPERATORS = {"__add__": "+", "__radd__": "+", "__iadd__": "+=", "__sub__": "−", "__rsub__": "−",
              "__mul__": "·", "__rmul__": "·", "__imul__": "·=", "__truediv__": "/",
              "__matmul__": "@"}
_CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)


def _tensors(value):
    """Every tensor in an argument tree (tuples, lists, dicts), in order."""
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    return []


def function_name(func):
    """'F.relu', 'torch.flatten', 'x.view', 'x + y' for a function seen by the mode."""
    name = getattr(func, "__name__", None) or repr(func)
    if name in _OPERATORS:
        return f"x {_OPERATORS[name]} y"
    if name == "__getitem__":
        return "x[...]"
    if getattr(F, name, None) is func:
        return f"F.{name}"
    if getattr(torch, name, None) is func:
        return f"torch.{name}"
    qualname = getattr(func, "__qualname__", "")
    if getattr(torch.Tensor, name, None) is func or qualname.startswith(("TensorBase.", "Tensor.")):
        return f"x.{name}"
    module = getattr(func, "__module__", None) or ""
    return f"{module}.{name}" if module else name


def _arg(args, kwargs, i, name, default=None):
    return args[i] if len(args) > i else kwargs.get(name, default)


def _module_window(mod):
    if isinstance(mod, nn.Conv2d):
        padding = mod.padding if isinstance(mod.padding, str) else to_pair(mod.padding)
        return Window(to_pair(mod.kernel_size), to_pair(mod.stride), padding, to_pair(mod.dilation))
    if isinstance(mod, nn.MaxPool2d):
        stride = mod.stride if mod.stride is not None else mod.kernel_size
        return Window(to_pair(mod.kernel_size), to_pair(stride), to_pair(mod.padding),
                      to_pair(mod.dilation), bool(mod.ceil_mode))
    if isinstance(mod, nn.AvgPool2d):
        stride = mod.stride if mod.stride is not None else mod.kernel_size
        return Window(to_pair(mod.kernel_size), to_pair(stride), to_pair(mod.padding),
                      ceil_mode=bool(mod.ceil_mode))
    return None


def _function_window(name, args, kwargs):
    if name in ("F.max_pool2d", "F.avg_pool2d"):
        kernel = to_pair(_arg(args, kwargs, 1, "kernel_size"))
        stride = _arg(args, kwargs, 2, "stride")
        stride = kernel if stride is None or stride == [] or stride == () else to_pair(stride)
        padding = to_pair(_arg(args, kwargs, 3, "padding", 0))
        if name == "F.max_pool2d":
            return Window(kernel, stride, padding, to_pair(_arg(args, kwargs, 4, "dilation", 1)),
                          bool(_arg(args, kwargs, 5, "ceil_mode", False)))
        ceil_mode = bool(_arg(args, kwargs, 4, "ceil_mode", False))
        return Window(kernel, stride, padding, ceil_mode=ceil_mode)
    if name == "F.conv2d":
        weight = _arg(args, kwargs, 1, "weight")
        padding = _arg(args, kwargs, 4, "padding", 0)
        padding = padding if isinstance(padding, str) else to_pair(padding)
        return Window(tuple(weight.shape[2:]), to_pair(_arg(args, kwargs, 3, "stride", 1)), padding,
                      to_pair(_arg(args, kwargs, 5, "dilation", 1)))
    return None


def _function_macs(name, args, kwargs, out):
    if name in ("F.conv2d", "F.linear", "torch.conv2d"):
        weight = _arg(args, kwargs, 1, "weight")
        return out.numel() * (weight.numel() // weight.shape[0])
    if name in ("torch.matmul", "torch.mm", "torch.bmm", "x.matmul", "x.mm", "x.bmm", "x @ y"):
        return out.numel() * args[0].shape[-1]
    return 0


def _hides_internals(mod):
    """PyTorch's own layers: their forward's torch calls are the layer, not extra rows."""
    return type(mod).__module__.startswith("torch.") and not isinstance(mod, _CONTAINERS)


def _shares(out, inputs):
    try:
        ptr = out.untyped_storage().data_ptr()
        return any(t.untyped_storage().data_ptr() == ptr for t in inputs)
    except (RuntimeError, NotImplementedError):
        return False


def _params(mod, recurse):
    return list(mod.parameters(recurse=recurse))


def _diagnose(trace, row, mod, call, err):
    shape = row.input_shape
    if mod is not None:
        layer = repr(mod)
        if isinstance(mod, nn.Linear) and shape and shape[-1] != mod.in_features:
            return explain.dense_failure(trace, row, layer, mod.in_features, err, "torch")
        if (isinstance(mod, nn.Conv2d) and shape and len(shape) == 4
                and shape[1] != mod.in_channels):
            return explain.channel_failure(trace, row, layer, mod.in_channels, err, "torch")
    elif call is not None:
        name, args, kwargs = call
        layer = name
        if name == "F.linear":
            weight = _arg(args, kwargs, 1, "weight")
            if shape and shape[-1] != weight.shape[1]:
                return explain.dense_failure(trace, row, f"F.linear(weight {list(weight.shape)})",
                                              weight.shape[1], err, "torch")
        if name in ("x.view", "x.reshape", "torch.reshape") and shape and len(shape) >= 2:
            return explain.reshape_failure(row, name, err)
    else:
        layer = row.label
    if explain.window_too_small(trace, row):
        return explain.window_failure(trace, row, layer, err)
    return explain.generic_failure(row, layer, err)


def trace(model, input_shape, batch=1, name=None, seed=0):
    """Run ``model`` on a random (batch, *input_shape) tensor and return the Trace.

    input_shape: (C, H, W) without the batch. The model runs in eval mode under no_grad, on
    the device and in the dtype of its first parameter, and gets its modes back after.
    """
    names = {}
    for module_name, mod in model.named_modules():
        names.setdefault(id(mod), module_name)
    params = _params(model, True)
    floating = [p for p in params if p.is_floating_point()]
    dtype = floating[0].dtype if floating else torch.get_default_dtype()
    device = params[0].device if params else torch.device("cpu")
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn((batch,) + tuple(input_shape), generator=generator, dtype=dtype).to(device)

    rec = Recorder()
    open_modules = []            # (module, row, input tensors), innermost last
    module_of, call_of = {}, {}  # row index -> module / (function name, args, kwargs)
    busy = [False]               # our own bookkeeping runs torch calls too: not rows

    def pre(mod, args):
        if busy[0]:
            return
        busy[0] = True
        try:
            inputs = _tensors(args)
            row = rec.open(names.get(id(mod)) or type(mod).__name__, type(mod).__name__,
                           [tuple(t.shape) for t in inputs], window=_module_window(mod))
            own = _params(mod, False)
            row.trainable = sum(p.numel() for p in own if p.requires_grad)
            row.frozen = sum(p.numel() for p in own if not p.requires_grad)
            module_of[row.index] = mod
            open_modules.append((mod, row, inputs))
        finally:
            busy[0] = False

    def post(mod, args, output):
        if busy[0] or not open_modules or open_modules[-1][0] is not mod:
            return
        busy[0] = True
        try:
            _, row, inputs = open_modules.pop()
            outs = _tensors(output)
            if outs and isinstance(mod, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):
                row.macs = outs[0].numel() * (mod.weight.numel() // mod.weight.shape[0])
            row.shared = bool(outs) and _shares(outs[0], inputs)
            row.memory = 0 if row.shared else sum(t.numel() * t.element_size() for t in outs)
            rec.close(row, [tuple(t.shape) for t in outs])
        finally:
            busy[0] = False

    class Functions(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            name = getattr(func, "__name__", "")
            if (busy[0] or not open_modules or name in _QUIET
                    or (name.startswith("_") and name not in _OPERATORS and name != "__getitem__")
                    or _hides_internals(open_modules[-1][0])):
                return func(*args, **kwargs)
            inputs = [t for t in _tensors((args, kwargs)) if not isinstance(t, nn.Parameter)]
            if not inputs:
                return func(*args, **kwargs)
            label = function_name(func)
            try:
                out = func(*args, **kwargs)
            except Exception:
                row = rec.open(label, "function", [tuple(t.shape) for t in inputs], function=True)
                try:
                    row.window = _function_window(label, args, kwargs)
                except (TypeError, ValueError, AttributeError, IndexError):
                    pass
                call_of[row.index] = (label, args, kwargs)
                rec.fail(row)
                raise
            outs = _tensors(out)
            if not outs or not isinstance(out, (torch.Tensor, tuple, list)):
                return out
            busy[0] = True
            try:
                row = rec.add_function(label, [tuple(t.shape) for t in inputs],
                                       [tuple(t.shape) for t in outs],
                                       window=_function_window(label, args, kwargs))
                row.macs = _function_macs(label, args, kwargs, outs[0])
                row.shared = _shares(outs[0], inputs)
                row.memory = 0 if row.shared else sum(t.numel() * t.element_size() for t in outs)
            finally:
                busy[0] = False
            return out

    modes = {id(m): m.training for m in model.modules()}
    handles = []
    for mod in model.modules():
        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    model.eval()
    error = None
    try:
        with torch.no_grad(), Functions():
            model(x)
    except Exception as err:  # noqa: BLE001 - any failure becomes the trace's failure row
        error = err
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            m.training = modes[id(m)]
    while rec.stack:  # the modules the exception went through
        rec.fail(rec.stack[-1])

    for row in rec.rows:
        if row.container and row.index in module_of:
            row.nested_params = sum(p.numel() for p in module_of[row.index].parameters())
    result = Trace(name or type(model).__name__, "torch", "NCHW", tuple(x.shape),
                   str(dtype).replace("torch.", ""), torch.empty((), dtype=dtype).element_size(),
                   rec.rows,
                   trainable=sum(p.numel() for p in params if p.requires_grad),
                   frozen=sum(p.numel() for p in params if not p.requires_grad),
                   param_bytes=sum(p.numel() * p.element_size() for p in params))
    finish(rec.rows, "NCHW")
    if error is not None:
        row = rec.failed_row(error, x.shape)
        result.failure = _diagnose(result, row, module_of.get(row.index), call_of.get(row.index),
                                   error)
    return result


def is_model(obj):
    return isinstance(obj, nn.Module)

