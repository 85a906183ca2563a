"""``python -m minicnn.trace``: the shape of every tensor at every layer.

    python -m minicnn.trace lenet5 --batch 64 --explain
    python -m minicnn.trace rps_cnn --framework torch
    python -m minicnn.trace lenet5 --framework all          # minicnn | PyTorch | Keras
    python -m minicnn.trace path/to/net.py:Net --input-shape 1,28,28
    python -m minicnn.trace mypackage.models:build_model --input-shape 28,28,1 --format json

--input-shape is one sample's shape, without the batch: (C, H, W) for minicnn, PyTorch and the
zoo names (also with --framework keras), (H, W, C) for a Keras model given as a file or module.
Exit status: 0, 1 when the model fails (the table shows where and the fix) or when the
frameworks' parameter counts disagree, 2 for a bad command line.
"""
import argparse
import os
import sys

from .. import zoo

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_shape(text):
    try:
        text = text.replace("x", ",").replace("×", ",")
        dims = tuple(int(d) for d in text.split(",") if d.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected dimensions such as 1,28,28, got {text!r}")
    if not dims or min(dims) < 1:
        raise argparse.ArgumentTypeError(f"expected positive dimensions such as 1,28,28, "
                                         f"got {text!r}")
    return dims


def parser():
    p = argparse.ArgumentParser(
        prog="python -m minicnn.trace",
        description="Print the shape of every tensor at every layer of a minicnn, PyTorch or "
                    "Keras model, from a real forward pass on a dummy input.")
    p.add_argument("target", help=f"a zoo name ({', '.join(zoo.NAMES)}), path/to/file.py:NAME "
                                  f"or package.module:NAME (a model or a function returning one)")
    p.add_argument("--input-shape", type=parse_shape, default=None,
                   help="one sample's shape without the batch, e.g. 1,28,28 (Keras files: 28,28,1)")
    p.add_argument("--batch", type=int, default=1, help="the batch size N (default 1)")
    p.add_argument("--framework", choices=("minicnn", "torch", "keras", "all"), default=None,
                   help="for a zoo name: which framework builds it (default minicnn); all: the "
                        "three side by side, parameter counts checked layer by layer")
    p.add_argument("--explain", action="store_true",
                   help="show the arithmetic under each conv, pool and flatten row")
    p.add_argument("--format", choices=("text", "markdown", "json"), default="text")
    return p


def main(argv=None, out=None):
    """Run the command line; returns the exit status."""
    from . import compare, default_input_shape, framework_of, trace
    from .load import TargetError, load, zoo_model

    out = out or sys.stdout
    args = parser().parse_args(argv)
    if args.batch < 1:
        print(f"error: --batch must be >= 1, got {args.batch}", file=sys.stderr)
        return 2
    try:
        if args.target in zoo.NAMES:
            if args.framework == "all":
                if args.input_shape is not None and len(args.input_shape) != 3:
                    raise TargetError("--framework all takes --input-shape C,H,W")
                traces = compare.trace_all(args.target, args.input_shape, args.batch)
                print(compare.render(traces, args.format, args.explain), end="", file=out)
                ok = all(t.ok for t in traces.values())
                return 0 if ok and compare.agree(traces, compare.align(traces)) else 1
            framework = args.framework or "minicnn"
            model, shape = zoo_model(args.target, framework)
            if args.input_shape is not None:
                shape = args.input_shape
                if framework == "keras" and len(shape) == 3:  # zoo shapes are C,H,W
                    shape = (shape[1], shape[2], shape[0])
            name = args.target
        else:
            if args.framework == "all":
                raise TargetError("--framework all needs a zoo name: "
                                  f"{', '.join(zoo.NAMES)}")
            model, name = load(args.target)
            framework = framework_of(model)
            if args.framework not in (None, framework):
                raise TargetError(f"{args.target} is a {framework} model, not {args.framework}")
            shape = args.input_shape or default_input_shape(model, framework)
            if shape is None:
                example = "28,28,1" if framework == "keras" else "1,28,28"
                raise TargetError(f"{args.target}: give --input-shape, one sample's shape "
                                  f"without the batch (e.g. {example})")
    except (TargetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    result = trace(model, shape, args.batch, name=name)
    print(result.render(args.format, args.explain), end="", file=out)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
