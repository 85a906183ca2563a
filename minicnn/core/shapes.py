"""Output-size arithmetic for sliding windows (convolution and pooling), with the working shown.

    H_out = floor((H + P_top + P_bottom − D·(K − 1) − 1) / S) + 1

which, with symmetric padding P and no dilation, is the familiar (H − K + 2P)/S + 1.
"""
import math

from .errors import ShapeError


def pair(value, name="value"):
    """(a, b) from an int or a pair; ValueError otherwise."""
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (int(value[0]), int(value[1]))
    raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")


def same_padding(size, kernel, stride, dilation=1):
    """Keras/TensorFlow "same" padding along one axis: (before, after).

    The output has ceil(size / stride) positions. When the total padding is odd, TensorFlow puts
    the extra row or column AFTER (bottom / right), which is why a stride-2 "same" convolution
    differs from PyTorch's symmetric padding=1.
    """
    out = math.ceil(size / stride)
    effective = dilation * (kernel - 1) + 1
    total = max((out - 1) * stride + effective - size, 0)
    return (total // 2, total - total // 2)


def resolve_padding(padding, input_hw, kernel, stride, dilation=(1, 1)):
    """((top, bottom), (left, right)) from an int, a pair, a pair of pairs, "valid" or "same"."""
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return ((0, 0), (0, 0))
        if mode == "same":
            return tuple(same_padding(input_hw[a], kernel[a], stride[a], dilation[a]) for a in (0, 1))
        raise ValueError(f'padding must be an int, a pair, "valid" or "same", got {padding!r}')
    if (isinstance(padding, (tuple, list)) and len(padding) == 2
            and all(isinstance(p, (tuple, list)) for p in padding)):
        return tuple((int(p[0]), int(p[1])) for p in padding)
    ph, pw = pair(padding, "padding")
    return ((ph, ph), (pw, pw))


def window_output_size(size, kernel, stride, pad=(0, 0), dilation=1):
    """Number of window positions along one axis (may be < 1 when the window does not fit)."""
    return (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) // stride + 1


def window_formula(size, kernel, stride, pad=(0, 0), dilation=1):
    """The output-size arithmetic as a string with the numbers filled in.

    >>> window_formula(28, 5, 1, (2, 2))
    '(28 + 2·2 − 5)/1 + 1 = 28'
    """
    out = window_output_size(size, kernel, stride, pad, dilation)
    if pad[0] == pad[1]:
        padded = f"{size} + 2·{pad[0]}"
    else:
        padded = f"{size} + {pad[0]} + {pad[1]}"
    numerator = (f"{padded} − {kernel}" if dilation == 1
                 else f"{padded} − {dilation}·({kernel} − 1) − 1")
    exact = (size + pad[0] + pad[1] - dilation * (kernel - 1) - 1) % stride == 0
    quotient = f"({numerator})/{stride}" if exact else f"⌊({numerator})/{stride}⌋"
    return f"{quotient} + 1 = {out}"


def check_window_fits(layer, axis_name, size, kernel, stride, pad, dilation=1):
    """Raise ShapeError naming ``layer`` when the window leaves fewer than one output position."""
    out = window_output_size(size, kernel, stride, pad, dilation)
    if out < 1:
        raise ShapeError(
            f"{layer!r}: the window does not fit the input along {axis_name}: "
            f"{axis_name}_out = {window_formula(size, kernel, stride, pad, dilation)} < 1 "
            f"(input {axis_name} = {size}, padding {pad[0]}+{pad[1]}, kernel {kernel}, "
            f"dilation {dilation}); use a smaller kernel or stride, more padding, or a larger input")
    return out
