"""When the forward pass fails: what the failing layer expected, what it received, and the fix.

The tracers say which kind of layer failed and what it expects (``dense``: a number of input
features; ``channels``: a number of input channels); everything else is read from the rows:
where the received number came from (``1568 = 32·7·7``, the Flatten before it) and which
input size would have produced the expected one (the window arithmetic of every conv and
pool on the way, redone for other sizes).
"""
import math
import re

from .records import Failure, channels, spatial

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_NOISE = ("Exception encountered when calling", "Arguments received by", "•")


def error_text(err, max_lines=4):
    """The meaningful lines of an exception's message (Keras wraps it in call context)."""
    text = _ANSI.sub("", str(err))
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if not line.strip().startswith(_NOISE)]
    if not lines:
        return type(err).__name__
    return "\n".join(lines[:max_lines])


def shape_text(shape, batch_symbol=False):
    """'[64, 1568]', or '[N, 1568]' for an expected shape whose batch could be anything."""
    dims = ["N" if batch_symbol and i == 0 else str(d) for i, d in enumerate(shape)]
    return "[" + ", ".join(dims) + "]"


def _chain_to(trace, row):
    """The leaf rows that carried the model's input to ``row``'s input, in order, or None.

    Walks back from ``row``: the latest earlier row whose output has the shape we are looking
    for produced it (for a residual ``x + y``, the first operand is followed).
    """
    target = row.input_shape
    chain = []
    for r in reversed(trace.rows[:row.index]):
        if r.container or r.status != "ok" or r.output_shape != target:
            continue
        chain.append(r)
        target = r.input_shape
        if target == tuple(trace.input_shape):
            return chain[::-1]
    return chain[::-1] if target == tuple(trace.input_shape) else None


def _spatial_after(chain, layout, hw):
    """Redo the chain's spatial arithmetic for an input of ``hw``; None where it cannot."""
    h, w = hw
    for r in chain:
        src, out = r.input_shape, r.output_shape
        if len(src) != 4:
            break
        if r.window is not None:
            h, w = r.window.out(h, w)
        elif len(out) == 4 and spatial(src, layout) == spatial(out, layout):
            continue
        elif len(out) == 4:
            return None  # a layer that resizes without a known window: no arithmetic to redo
        else:
            break
        if h < 1 or w < 1:
            return (h, w)
    return (h, w)


def feed_size(trace, chain, condition, limit=1024):
    """The smallest square input (H = W) for which ``condition(h_out, w_out)`` holds, or None."""
    h, w = spatial(trace.input_shape, trace.layout)
    if h != w or chain is None:
        return None
    for size in range(1, max(limit, 4 * h) + 1):
        out = _spatial_after(chain, trace.layout, (size, size))
        if out is None:
            return None
        if condition(*out):
            return size
    return None


def _flatten_source(trace, row):
    """The row that flattened feature maps into ``row``'s input, or None."""
    chain = _chain_to(trace, row)
    if not chain:
        return None, None
    last = chain[-1]
    src, out = last.input_shape, last.output_shape
    if len(src) >= 3 and len(out) == 2 and out[1] == math.prod(src[1:]):
        return last, chain[:-1]
    return None, chain


def dense_failure(trace, row, layer, expected, err, framework):
    """A Dense / Linear layer received the wrong number of features."""
    received = row.input_shape[-1]
    flat, chain = _flatten_source(trace, row)
    origin = ""
    size = None
    if flat is not None:
        dims = flat.input_shape[1:]
        origin = " = " + "·".join(str(d) for d in dims)
        c = channels(flat.input_shape, trace.layout)
        if expected % c == 0:
            size = feed_size(trace, chain, lambda h, w: c * h * w == expected)
    if framework == "keras":
        shape = ", ".join(str(d) for d in trace.input_shape[1:])
        what = f"Dense (built for {expected} input features) received {received}{origin}"
        fix = (f"build the model for this input, keras.Input(shape=({shape})), and Dense "
               f"takes {received} features")
    else:
        cls = "Linear" if framework == "torch" else "Dense"
        what = f"{cls}(in_features={expected}) received {received}{origin}"
        fix = f"set in_features={received}"
    if size is not None:
        fix += f", or feed {size}×{size} inputs"
    expected_shape = list(row.input_shape)
    expected_shape[-1] = expected
    return Failure(row.index, layer, error_text(err), shape_text(expected_shape, True),
                   shape_text(row.input_shape), [f"{what}: {fix}"], err)


def channel_failure(trace, row, layer, expected, err, framework):
    """A convolution received the wrong number of channels."""
    got = channels(row.input_shape, trace.layout)
    if framework == "keras":
        fix = (f"the Conv2D was built for {expected} channels: build the model for this input "
               f"so that it takes {got}")
    else:
        fix = f"set in_channels={got}"
    first = row.input_shape == tuple(trace.input_shape)
    if first:
        fix += f", or feed {expected}-channel inputs"
    shape = tuple(row.input_shape)
    if first and framework == "keras" and trace.layout == "NHWC" and len(shape) == 4 \
            and shape[1] == expected:
        # (N, C, H, W) read as (N, H, W, C): the input shape was given channels-first
        fix = (f"Keras is channels-last and this input {list(shape[1:])} reads as H={shape[1]}, "
               f"W={shape[2]}, C={shape[3]}: it looks channels-first (C, H, W). Give the shape as "
               f"H,W,C: --input-shape {shape[2]},{shape[3]},{shape[1]}")
    expected_shape = list(row.input_shape)
    expected_shape[1 if trace.layout == "NCHW" else -1] = expected
    return Failure(row.index, layer, error_text(err), shape_text(expected_shape, True),
                   shape_text(row.input_shape),
                   [f"{layer} received {got} channels: {fix}"], err)


def window_failure(trace, row, layer, err):
    """A conv/pool window larger than its (padded) input: the input is too small."""
    chain = _chain_to(trace, row)
    size = None
    if chain is not None:
        size = feed_size(trace, chain + [row], lambda h, w: h >= 1 and w >= 1)
    h, w = spatial(row.input_shape, trace.layout)
    kh, kw = row.window.kernel
    lines = [f"{layer} received {h}×{w} feature maps, smaller than its {kh}×{kw} window: "]
    if size is not None:
        lines[0] += f"inputs of at least {size}×{size} get past this layer; or "
    lines[0] += "use smaller kernels or strides, or more padding, up to here"
    return Failure(row.index, layer, error_text(err), "", shape_text(row.input_shape), lines, err)


def reshape_failure(row, layer, err):
    """A view/reshape with a hard-coded size: say what one sample holds and how to flatten it."""
    shape = row.input_shape
    per_sample = math.prod(shape[1:])
    fix = (f"one sample holds {per_sample} = {'·'.join(str(d) for d in shape[1:])} numbers: "
           f"flatten with x.view(x.size(0), -1) or torch.flatten(x, 1), which give "
           f"{shape_text((shape[0], per_sample))}, and make the next layer take {per_sample}")
    return Failure(row.index, layer, error_text(err), "", shape_text(shape), [fix], err)


def generic_failure(row, layer, err):
    received = shape_text(row.input_shape) if row.input_shape is not None else ""
    return Failure(row.index, layer, error_text(err), "", received, [], err)


def window_too_small(trace, row):
    if row.window is None or row.input_shape is None or len(row.input_shape) != 4:
        return False
    try:
        out = row.window.out(*spatial(row.input_shape, trace.layout))
    except (ValueError, TypeError):
        return False
    return min(out) < 1
