"""python -m minicnn.check FILE.py:CLASS [--kind KIND] [--against torch,keras,numeric]

Grades the learner's layer CLASS in FILE.py against minicnn's layer of the same kind, PyTorch,
Keras and central differences. Exit status: 0 passed, 1 failed (or not implemented yet),
2 bad usage (one ``error:`` line).
"""
import argparse
import importlib.util
import sys

from .kinds import KINDS
from .loading import UsageError, load_target
from .runner import DEFAULT_EXAMPLES, REFERENCES, check, infer_kind, installed_references


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, no usage block: the house style for CLI errors
        print(f"error: {message} (see python -m minicnn.check --help)", file=sys.stderr)
        sys.exit(2)


def parse_args(argv):
    p = _Parser(prog="python -m minicnn.check",
                description="Grade your layer against minicnn, PyTorch and Keras.")
    p.add_argument("target", help="FILE.py:CLASS, e.g. lessons/exercises/03_maxpool.py:MaxPool2D")
    p.add_argument("--kind", choices=sorted(KINDS),
                   help="which layer CLASS is (default: from its name or its base class)")
    p.add_argument("--against", default=None,
                   help="comma-separated references besides minicnn: torch, keras, numeric "
                        "(default: every one installed)")
    p.add_argument("--examples", type=int, default=DEFAULT_EXAMPLES,
                   help=f"how many configurations to try (default {DEFAULT_EXAMPLES})")
    p.add_argument("--seed", type=int, default=None,
                   help="draw other configurations (default: the same ones every run)")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if importlib.util.find_spec("hypothesis") is None:
            raise UsageError("the checker needs hypothesis: pip install 'minicnn[check]' "
                             "(or pip install hypothesis)")
        if args.examples < 1:
            raise UsageError(f"--examples must be >= 1, got {args.examples}")
        against = None
        if args.against is not None:
            against = tuple(a.strip() for a in args.against.split(",") if a.strip())
            for a in against:
                if a not in REFERENCES:
                    raise UsageError(f"--against: unknown reference {a!r}; choose from "
                                     f"{', '.join(REFERENCES)}")
                if a not in installed_references():
                    raise UsageError(f"--against {a}: {a} is not installed "
                                     f"(pip install 'minicnn[reference]')")
        cls = load_target(args.target)
        kind = args.kind or infer_kind(cls)
        if kind is None:
            raise UsageError(f"cannot tell which layer {cls.__name__} is: name it after one "
                             f"(Conv2D, MaxPool2D, ...) or pass --kind, one of "
                             f"{', '.join(sorted(KINDS))}")
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = check(cls, kind=kind, against=against, examples=args.examples, seed=args.seed)
    print(result)
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
