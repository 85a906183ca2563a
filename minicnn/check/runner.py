"""``check(cls)``: grade a learner's layer on hypothesis configurations; a ``Result`` tells how.

One fixed small configuration runs first, so a stub answers at once with the method still to
write; then hypothesis draws ``examples`` configurations and, on a failure, shrinks it to the
smallest configuration that still fails. The references run on minicnn's NumPy kernels
(``kernels.using("fast")``): the same numbers as the compiled ones, without compiling.
"""
import importlib.util
from dataclasses import dataclass, field

from .. import kernels
from . import twins
from .kinds import KINDS, Tally
from .outcome import NotImplementedYet, Outcome

#: substrings of a class's (or a base class's) lower-cased name, and the kind each means;
#: the first that matches wins, so "maxpool" is looked for before "pool"-less "conv"
NAME_PATTERNS = [("maxpool", "maxpool2d"), ("avgpool", "avgpool2d"), ("averagepool", "avgpool2d"),
                 ("sumpool", "sumpool2d"), ("batchnorm", "batchnorm2d"),
                 ("crossentropy", "cross_entropy"), ("conv", "conv2d"), ("dense", "dense"),
                 ("linear", "dense"), ("adam", "adam")]
REFERENCES = ("torch", "keras", "numeric")
DEFAULT_EXAMPLES = 30


def infer_kind(cls):
    """The kind of ``cls`` from its name or a base class's ("MyConv2D" -> "conv2d"); "im2col"
    for a class with an ``im2col`` method; None when nothing matches."""
    if callable(getattr(cls, "im2col", None)):
        return "im2col"
    for klass in cls.__mro__[:-1]:
        key = klass.__name__.lower().replace("_", "")
        for pattern, kind in NAME_PATTERNS:
            if pattern in key:
                return kind
    return None


def installed_references():
    """The references available here: torch and keras when installed, numeric always."""
    return tuple(r for r, ok in (("torch", twins.have_torch()), ("keras", twins.have_keras()),
                                 ("numeric", True)) if ok)


@dataclass
class Result:
    """How a check ended: ``passed``, and the ``outcome`` (an ``Outcome``) when it did not."""

    name: str
    kind: str
    passed: bool
    outcome: Outcome = None
    examples: int = 0
    used: Tally = field(default_factory=Tally)

    @property
    def quantity(self):
        """The quantity that is wrong ("dx", "weight.grad", ...), or None."""
        return getattr(self.outcome, "quantity", None)

    def lines(self):
        if self.passed:
            order = ["minicnn", "torch", "keras", "numeric"]
            refs = ", ".join(r for r in order if r in self.used)
            skipped = "".join(f"; {fw} skipped on {n} where it disagrees with minicnn"
                              for fw, n in sorted(self.used.skipped.items()))
            return [f"PASS {self.name} ({self.kind}): {KINDS[self.kind].quantities} agree with "
                    f"{refs} on {self.examples} configurations{skipped}"]
        if isinstance(self.outcome, NotImplementedYet):
            return self.outcome.lines()
        first, *rest = self.outcome.lines()
        return [f"FAIL {self.name} ({self.kind}): {first}"] + rest

    def __str__(self):
        return "\n".join(self.lines())


def check(cls, kind=None, against=None, examples=DEFAULT_EXAMPLES, seed=None):
    """Grade ``cls`` (a class following minicnn's contract for ``kind``, inferred when None).

    against: references besides minicnn's own layer, from ("torch", "keras", "numeric");
    None for every one installed. examples: how many configurations hypothesis draws.
    seed: None for the same configurations every run (derandomized), an int for others.
    Returns a ``Result``; raises ValueError when the kind is unknown or cannot be inferred.
    """
    kind = kind or infer_kind(cls)
    if kind not in KINDS:
        raise ValueError(f"cannot tell which layer {cls.__name__} is: name it after one "
                         f"(Conv2D, MaxPool2D, ...) or give the kind, one of {sorted(KINDS)}"
                         if kind is None else f"unknown kind {kind!r}; one of {sorted(KINDS)}")
    against = installed_references() if against is None else tuple(against)
    unknown = [a for a in against if a not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown reference {unknown[0]!r}; choose from {', '.join(REFERENCES)}")
    if importlib.util.find_spec("hypothesis") is None:
        raise ImportError("minicnn.check needs hypothesis: pip install 'minicnn[check]'")
    spec, used = KINDS[kind], Tally()
    with kernels.using("fast"):
        smoke_failure = None
        try:
            spec.run(cls, spec.smoke(), against, used)
        except NotImplementedYet as outcome:
            return Result(cls.__name__, kind, False, outcome)
        except Outcome as outcome:  # hypothesis looks for a smaller configuration below
            smoke_failure = outcome
        outcome, runs = _search(spec, cls, against, used, examples, seed)
        outcome = outcome or smoke_failure
    return Result(cls.__name__, kind, outcome is None, outcome, runs + 1, used)


def _search(spec, cls, against, used, examples, seed):
    """(the Outcome of the smallest failing configuration hypothesis finds, or None; how many
    configurations ran)."""
    from hypothesis import HealthCheck, Phase, Verbosity, given, settings
    from hypothesis import seed as fixed_seed

    @settings(max_examples=examples, deadline=None, database=None, derandomize=seed is None,
              suppress_health_check=list(HealthCheck), phases=[Phase.generate, Phase.shrink],
              report_multiple_bugs=False, verbosity=Verbosity.quiet, print_blob=False)
    @given(spec.configs())
    def holds(cfg):
        runs[0] += 1
        spec.run(cls, cfg, against, used)

    runs = [0]
    if seed is not None:
        holds = fixed_seed(seed)(holds)
    try:
        holds()
    except Outcome as outcome:
        return outcome, runs[0]
    return None, runs[0]
