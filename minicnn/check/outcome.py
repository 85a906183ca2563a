"""What a check ends with: a mismatch, a method not written yet, a crash; and how each is told.

Each is an exception (hypothesis shrinks the configuration while the same one is raised) that
carries what the report prints: which quantity, against which reference, the configuration,
a Mine / Theirs table of the first differing entries and, when the pattern is a known mistake,
a hint.
"""
import os
import sys
import traceback

import numpy as np


def format_config(cfg):
    """'N=2 C=1 H=5 ... dtype=float32' from a configuration dict (the seed last)."""
    items = [(k, v) for k, v in cfg.items() if k != "seed"] + [("seed", cfg.get("seed"))]
    return " ".join(f"{k}={v}" for k, v in items if v is not None)


class Outcome(Exception):
    """Base of the ways a check fails; ``lines()`` is the report, first line the headline."""

    def lines(self):
        raise NotImplementedError

    def __str__(self):
        return "\n".join(self.lines())


class Mismatch(Outcome):
    """``quantity`` ("output", "dx", "weight.grad", ...) differs from ``against``'s."""

    def __init__(self, quantity, against, cfg, summary, table=(), hint=None):
        super().__init__(quantity)
        self.quantity, self.against, self.cfg = quantity, against, cfg
        self.summary, self.table, self.hint = summary, list(table), hint

    def lines(self):
        out = [f"{self.quantity} is wrong (compared with {self.against})",
               f"  configuration: {format_config(self.cfg)}",
               f"  {self.summary}"]
        out += ["  " + row for row in self.table]
        if self.hint:
            out.append(f"  hint: {self.hint}")
        return out


class NotImplementedYet(Outcome):
    """The learner's ``cls.method`` raised NotImplementedError: the exercise is still a stub."""

    def __init__(self, qualname):
        super().__init__(qualname)
        self.qualname = qualname

    def lines(self):
        return [f"not implemented yet: {self.qualname}"]


class Crashed(Outcome):
    """The learner's code raised ``error`` (any exception but NotImplementedError)."""

    def __init__(self, qualname, error, where, cfg):
        super().__init__(qualname)
        self.qualname, self.error, self.where, self.cfg = qualname, error, where, cfg

    def lines(self):
        return [f"{self.qualname} raised {type(self.error).__name__}: {self.error}",
                f"  at {self.where}",
                f"  configuration: {format_config(self.cfg)}"]


def call(owner, method, cfg, *args, **kwargs):
    """``getattr(owner, method)(*args, **kwargs)`` (``owner(...)`` when ``method`` is None: a
    class is built); NotImplementedError becomes ``NotImplementedYet`` and
    any other exception ``Crashed``, both naming ``Class.method`` of the learner's class."""
    cls_name = owner.__name__ if isinstance(owner, type) else type(owner).__name__
    fn = owner if method is None else getattr(owner, method)
    qualname = f"{cls_name}.{method or '__init__'}"
    try:
        with np.errstate(all="ignore"):  # overflow shows as a non-finite entry in the report
            return fn(*args, **kwargs)
    except NotImplementedError as err:
        frames = traceback.extract_tb(err.__traceback__)
        # the method that raised it: the one to write (Adam._update, MaxPool2D.backward, ...)
        raised_in = frames[-1].name if len(frames) > 1 else (method or "__init__")
        raise NotImplementedYet(f"{cls_name}.{raised_in}") from None
    except Outcome:
        raise
    except Exception as err:  # noqa: BLE001 (the learner's code may raise anything)
        frames = traceback.extract_tb(err.__traceback__)
        module = sys.modules.get(getattr(owner if isinstance(owner, type) else type(owner),
                                         "__module__", ""))
        own_file = getattr(module, "__file__", None)
        mine = [f for f in frames if own_file and os.path.exists(f.filename)
                and os.path.samefile(f.filename, own_file)]
        last = (mine or frames or [None])[-1]  # the learner's own line, rather than NumPy's
        where = f"{os.path.basename(last.filename)}, line {last.lineno}: {last.line}" if last else "?"
        raise Crashed(qualname, err, where, cfg) from None
