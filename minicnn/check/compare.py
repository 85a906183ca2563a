"""Compare one quantity of the learner's layer with a reference's, entry by entry.

A quantity agrees when every entry satisfies  |mine − theirs| <= tol,  ``tol`` an array (or a
number) that the kind of layer derives from the rounding error of a correct computation
(minicnn/check/kinds.py says how, kind by kind). When it does not, ``Mismatch`` carries the
first differing entries and a hint from minicnn/check/hints.py.
"""
import numpy as np

from .hints import hint_for
from .outcome import Mismatch

#: unit roundoff: a correctly rounded operation errs by at most this fraction of its result
UNIT_ROUNDOFF = {np.dtype(np.float32): 2.0 ** -24, np.dtype(np.float64): 2.0 ** -53}
TABLE_ROWS = 6


def _fmt(v):
    return f"{v:.6g}" if np.isfinite(v) else str(v)


def table(mine, theirs, where):
    """Rows 'index  mine  theirs' for the first entries where ``where`` holds (row-major)."""
    idx = np.argwhere(where)[:TABLE_ROWS]
    rows = [(str(tuple(int(i) for i in ix)), _fmt(mine[tuple(ix)]), _fmt(theirs[tuple(ix)]))
            for ix in idx]
    rows.insert(0, ("index", "mine", "theirs"))
    widths = [max(len(r[c]) for r in rows) for c in range(3)]
    lines = ["  ".join(r[c].ljust(widths[c]) for c in range(3)).rstrip() for r in rows]
    hidden = int(np.count_nonzero(where)) - len(idx)
    if hidden > 0:
        lines.append(f"... and {hidden} more")
    return lines


def central_differences(objective, array, picks, eps=1e-6):
    """(f(a + ε) − f(a − ε)) / 2ε for each flat index in ``picks`` of ``array``, which is
    perturbed in place and restored; ``objective()`` -> float reads it. Returns (len(picks),)."""
    flat = array.reshape(-1)
    numeric = np.empty(len(picks))
    for j, i in enumerate(picks):
        old = flat[i]
        flat[i] = old + eps
        up = objective()
        flat[i] = old - eps
        down = objective()
        flat[i] = old
        numeric[j] = (up - down) / (2 * eps)
    return numeric


def check_quantity(quantity, mine, theirs, tol, *, against, cfg, ctx=None, dtype=None):
    """Raise ``Mismatch`` unless ``mine`` has ``theirs``' shape (and ``dtype``, when given), is
    finite, and is within ``tol`` of it everywhere. ``ctx``: what the hints may use."""
    ctx = ctx or {}
    if mine is None:
        raise Mismatch(quantity, against, cfg, "got None: the method must return it (or fill "
                       "the parameter's .grad)")
    mine, theirs = np.asarray(mine), np.asarray(theirs)
    if mine.shape != theirs.shape:
        raise Mismatch(quantity, against, cfg, f"shape {mine.shape}, expected {theirs.shape}",
                       hint=hint_for(quantity, mine, theirs, None, None, ctx))
    if dtype is not None and mine.dtype != dtype:
        raise Mismatch(quantity, against, cfg, f"dtype {mine.dtype}, expected {np.dtype(dtype)}",
                       hint="the layer computes in its input's dtype: create arrays with "
                            "dtype=x.dtype (np.zeros(shape) alone is float64)")
    finite = np.isfinite(mine)
    if not finite.all():
        hint = ctx.get("nonfinite")
        for text, alternative in ctx.get("alternatives", {}).get(quantity, []):
            if np.shape(alternative) == mine.shape and np.array_equal(np.isfinite(alternative), finite):
                hint = text
        raise Mismatch(quantity, against, cfg,
                       f"{int((~finite).sum())} of {mine.size} entries are inf or nan",
                       table(mine, theirs, ~finite), hint=hint)
    err = np.abs(mine.astype(np.float64) - theirs.astype(np.float64))
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), err.shape)
    bad = err > tol
    if bad.any():
        worst = np.unravel_index(int(np.argmax(err - tol)), err.shape)
        summary = (f"{int(bad.sum())} of {mine.size} entries differ; worst at {tuple(map(int, worst))}: "
                   f"|mine − theirs| = {err[worst]:.3g}, allowed {tol[worst]:.3g}")
        raise Mismatch(quantity, against, cfg, summary, table(mine, theirs, bad),
                       hint=hint_for(quantity, mine, theirs, bad, tol, ctx))
