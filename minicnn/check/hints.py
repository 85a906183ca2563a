"""Name the mistake when a wrong quantity has the pattern of a known one.

``hint_for`` looks, in order, for:
* a shape that a known mistake produces (the kind lists them in ``ctx["shapes"]``: an output
  size off by one, the padding applied on one side only) or the transposed shape;
* what a known mistake computes (``ctx["alternatives"]``: every tied entry getting the max-pool
  gradient, Adam without its bias correction, batch statistics treated as constants, the
  kernel turned by 180°);
* the transpose;
* differences only where windows overlap (``ctx["reads"]``: how many window taps read each
  input entry): ``=`` instead of ``+=`` in the backward pass;
* a dx that is zero past the rows a stride-1 layer would reach: the stride ignored in dx;
* one constant factor everywhere (``ctx["factors"]``: 1/N is a mean where a sum belongs).
It returns the hint's text, or None.
"""
import numpy as np


def _close(a, b, tol):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    t = np.broadcast_to(tol, a.shape) if tol is not None else 0
    return bool(np.all(np.abs(a - b) <= t + 1e-9 * np.max(np.abs(b), initial=0)))


def hint_for(quantity, mine, theirs, bad, tol, ctx):
    """The hint for ``mine`` (wrong) against ``theirs``; ``bad`` marks the differing entries
    (None when the shapes differ); ``tol`` is the allowed error. None when no pattern fits."""
    if bad is None:
        for shape, text in ctx.get("shapes", {}).get(quantity, []):
            if mine.shape == tuple(shape):
                return text
        if mine.ndim >= 2 and mine.shape == theirs.shape[::-1]:
            return f"{quantity} has the transposed shape: it is (out, in) like the weight"
        return None
    for text, alternative in ctx.get("alternatives", {}).get(quantity, []):
        if _close(mine, alternative, tol):
            return text
    if mine.ndim == 2 and mine.shape[0] == mine.shape[1] and _close(mine, theirs.T, tol):
        return f"{quantity} is the transpose of the right one"
    if mine.ndim == 4 and mine.shape[0] == mine.shape[1] and _close(mine, theirs.transpose(1, 0, 2, 3), tol):
        return f"{quantity} has its first two axes swapped (O, C) -> (C, O)"
    reads = ctx.get("reads", {}).get(quantity)
    if reads is not None and np.any(reads > 1) and np.all(reads[bad] > 1):
        return ("the differences sit only where windows overlap (or channels share an input): "
                "the backward pass assigns (=) where it must add (+=) each window's share")
    reach = ctx.get("stride_reach", {}).get(quantity)
    if reach is not None:
        h, w = reach
        outside = np.ones(mine.shape, bool)
        outside[..., :h, :w] = False
        if not np.any(mine[outside]) and np.any(theirs[outside]):
            return ("dx is zero past the first rows/columns: the stride is ignored in dx; output "
                    "(i, j) reads input rows i·S + p·D, so its gradient goes back there")
    ratio = _constant_ratio(mine, theirs)
    if ratio is not None:
        for value, text in ctx.get("factors", {}).get(quantity, []):
            if abs(ratio / value - 1) < 1e-3:
                return text
        if np.count_nonzero(theirs) > 1:  # one entry is always "a constant factor" off
            return f"{quantity} is {ratio:.4g} times the right one everywhere: a constant factor is wrong"
    return None


def _constant_ratio(mine, theirs):
    """mine / theirs when it is one number (not 1) on every entry that is not tiny, else None."""
    theirs = np.asarray(theirs, np.float64)
    big = np.abs(theirs) > 1e-3 * np.max(np.abs(theirs), initial=0)
    if not big.any() or np.any(np.asarray(mine)[~big] != 0) and np.any(np.abs(theirs[~big]) == 0):
        return None
    r = np.asarray(mine, np.float64)[big] / theirs[big]
    median = float(np.median(r))
    if median == 0 or abs(median - 1) < 1e-3 or np.max(np.abs(r - median)) > 1e-3 * abs(median):
        return None
    return median
