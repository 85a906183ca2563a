"""How fast minicnn trains and predicts, next to PyTorch and Keras, in one process, on the CPU.

    python -m minicnn.bench                       # full epoch of LeNet-5, 2 threads, 3 repeats
    python -m minicnn.bench --batches 100 --json  # shorter, machine-readable
    python -m minicnn.bench --smoke               # a few batches: checks that it runs, not speed

Every framework gets the same data (Fashion-MNIST via ``minicnn.data.load``, scaled to [0, 1]),
the same batch size (64 for training, 1000 for prediction), the same optimiser (Adam, lr 1e-3)
and the same number of threads (``--threads``, 2 by default). The thread count has to be fixed
before NumPy, Numba, PyTorch and TensorFlow start their thread pools, so ``python -m
minicnn.bench`` re-runs itself once with OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS
and NUMBA_NUM_THREADS set; torch.set_num_threads and TensorFlow's threading config are set too.
minicnn computes on Numba's threads (its matrix products run inside them, one thread each);
PyTorch is imported first, so that the one OpenMP runtime of the process is PyTorch's own.

Measured, per model:

* train: ``--batches`` (LeNet-5; default a full epoch, 938 batches) or ``--cnn-batches``
  (mnist_cnn) training steps with Adam;
* predict: forward passes over the 10,000 test images, batch 1000, in eval mode.

Each measurement is repeated ``--repeat`` times; the table shows the median and the spread
(min–max). The first call of each (a warm-up batch, where Keras traces its tf.function) is timed
separately and not part of the median. Before anything is timed, minicnn runs one training step
and one prediction of every model: there Numba compiles its kernels, once per machine (or loads
them from its on-disk cache); that time, and how many kernel versions were compiled or loaded,
is reported on its own line.

GFLOP/s counts 2 FLOPs per multiply-add of the shape tracer (``minicnn.trace``: convolutions and
dense layers only; activations, pooling, loss and the optimiser are not counted). A training
step counts 3× the forward multiply-adds: the forward pass, the gradient of the input and the
gradient of the weights each cost about one forward pass.
"""
import argparse
import json
import os
import sys
import time

FRAMEWORKS = ("minicnn", "torch", "keras")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_MARK = "MINICNN_BENCH_THREADS"
EPOCH_BATCHES = 938                    # ceil(60000 / 64)


def parser():
    p = argparse.ArgumentParser(prog="python -m minicnn.bench", description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=EPOCH_BATCHES,
                   help="LeNet-5 training batches of 64 (default: one epoch, %(default)s)")
    p.add_argument("--cnn-batches", type=int, default=50,
                   help="mnist_cnn training batches of 64 (default %(default)s)")
    p.add_argument("--predict-images", type=int, default=10000,
                   help="test images for the forward-only throughput (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; the median is shown")
    p.add_argument("--threads", type=int, default=2, help="threads for every framework")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of minicnn,torch,keras")
    p.add_argument("--models", default="lenet5,mnist_cnn", help="comma-separated zoo names")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--smoke", action="store_true",
                   help="tiny batch counts, one repeat: checks that the benchmark runs")
    return p


def set_thread_env(threads):
    """Set the thread variables; True if they were already set to ``threads`` (no re-run needed)."""
    ok = os.environ.get(_MARK) == str(threads)
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    os.environ[_MARK] = str(threads)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    return ok


# ----------------------------------------------------------------------------------------
# one framework at a time: each returns (first_call_seconds, [seconds per repetition])
# ----------------------------------------------------------------------------------------
def _batches(x, y, count, batch_size):
    """count (x, y) batches cycling through the data in order."""
    n_full = len(x) // batch_size
    for k in range(count):
        start = (k % n_full) * batch_size
        yield x[start:start + batch_size], y[start:start + batch_size]


def _time(fn, repeat):
    first = time.perf_counter()
    fn(warmup=True)
    first = time.perf_counter() - first
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn(warmup=False)
        times.append(time.perf_counter() - t)
    return first, times


def warm_up_minicnn(models, x, y):
    """Compile (or load from Numba's cache) every kernel the models use, timed.

    Returns {"seconds", "compiled", "loaded", "threading_layer", "threads"}; the counts are
    kernel versions (one per dtype and argument layout), None when the kernels are not Numba's.
    """
    from .. import kernels, losses, optim, zoo
    from ..train import loop as training
    if kernels.backend() != "numba":
        return {"seconds": 0.0, "compiled": None, "loaded": None, "threading_layer": None,
                "threads": None}
    import numba

    from ..kernels import jit
    before = jit.compile_counts()
    start = time.perf_counter()
    for name in models:
        model = zoo.get(name, rng=0)
        opt = optim.Adam(model.parameters(), lr=1e-3)
        training.train_step(model, losses.get(model.spec.loss), opt, x[:64], y[:64])
        model.eval()
        model(x[:64])
    seconds = time.perf_counter() - start
    after = jit.compile_counts()
    return {"seconds": seconds, "compiled": after[0] - before[0], "loaded": after[1] - before[1],
            "threading_layer": numba.threading_layer(), "threads": numba.get_num_threads()}


def bench_minicnn(name, x, y, x_test, batches, repeat, predict_batch):
    from .. import losses, optim, zoo
    from ..train import loop as training
    model = zoo.get(name, rng=0)
    criterion = losses.get(model.spec.loss)
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def train(warmup):
        model.train()
        for xb, yb in _batches(x, y, 1 if warmup else batches, 64):
            training.train_step(model, criterion, opt, xb, yb)

    def predict(warmup):
        model.eval()
        for start in range(0, predict_batch if warmup else len(x_test), predict_batch):
            model(x_test[start:start + predict_batch])

    return _time(train, repeat), _time(predict, repeat)


def bench_torch(name, x, y, x_test, batches, repeat, predict_batch, threads):
    import torch

    from reference.torch.models import build
    from reference.torch.train import criterion as torch_criterion

    from .. import zoo
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = build(name)
    criterion = torch_criterion(zoo.spec(name).loss)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y, x_test = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(x_test)

    def train(warmup):
        model.train()
        for xb, yb in _batches(x, y, 1 if warmup else batches, 64):
            opt.zero_grad()
            loss = criterion(model(xb), yb)
            loss.backward()
            opt.step()

    def predict(warmup):
        model.eval()
        with torch.no_grad():
            for start in range(0, predict_batch if warmup else len(x_test), predict_batch):
                model(x_test[start:start + predict_batch])

    return _time(train, repeat), _time(predict, repeat)


def bench_keras(name, x, y, x_test, batches, repeat, predict_batch, threads):
    import numpy as np
    import tensorflow as tf
    try:  # only possible before TensorFlow's runtime starts
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        pass
    import keras

    from reference.keras.models import build
    from reference.keras.train import loss_for

    from .. import zoo
    keras.utils.set_random_seed(0)
    model = build(name)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_for(zoo.spec(name).loss))
    # NHWC once, outside the timing (Keras' layout; minicnn and PyTorch read NCHW)
    x, x_test = x.transpose(0, 2, 3, 1).copy(), x_test.transpose(0, 2, 3, 1).copy()

    # the same batches as the others (cycling through the data in order), laid out once
    xs, ys = (np.concatenate([b[i] for b in _batches(x, y, batches, 64)]) for i in (0, 1))

    def train(warmup):
        n = 64 * (1 if warmup else batches)
        model.fit(xs[:n], ys[:n], batch_size=64, epochs=1, shuffle=False, verbose=0)

    def predict(warmup):
        data = x_test[:predict_batch] if warmup else x_test
        model.predict(data, batch_size=predict_batch, verbose=0)

    return _time(train, repeat), _time(predict, repeat)


# ----------------------------------------------------------------------------------------
# results
# ----------------------------------------------------------------------------------------
def macs_per_sample(name):
    """Forward multiply-adds of one image, from the shape tracer."""
    from .. import trace, zoo
    return trace.trace(zoo.get(name, rng=0), batch=1).totals()["macs_per_sample"]


def _median(values):
    s = sorted(values)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def make_row(model, task, framework, images, flops_per_image, first, times):
    """One table row: times in seconds, images/s and GFLOP/s from the median time."""
    med = _median(times)
    return {"model": model, "task": task, "framework": framework, "images": images,
            "first_call_s": first, "times_s": times, "median_s": med,
            "min_s": min(times), "max_s": max(times),
            "images_per_s": images / med, "gflops": images * flops_per_image / med / 1e9}


def add_ratios(rows):
    """time(minicnn) / time(other) for each (model, task): 1.0 = as fast, 2.0 = twice as slow."""
    by_key = {(r["model"], r["task"], r["framework"]): r for r in rows}
    for r in rows:
        mine = by_key.get((r["model"], r["task"], "minicnn"))
        r["ratio_minicnn_over"] = (mine["median_s"] / r["median_s"]) if mine else None
    return rows


def run(args, log=print):
    import numpy as np  # noqa: F401  (after the thread variables are set)
    if "torch" in args.frameworks.split(","):
        # A process holds one OpenMP runtime (libgomp.so.1), shared by PyTorch and Numba's
        # thread pool; whoever loads it first chooses the copy. PyTorch run on the system's
        # copy (loaded by Numba first) was measured 2x slower than on its own: import it first.
        import torch  # noqa: F401

    from .. import data, kernels
    frameworks = [f for f in args.frameworks.split(",") if f]
    for f in frameworks:
        if f not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {f!r}; choose from {','.join(FRAMEWORKS)}")
    models = [m for m in args.models.split(",") if m]
    x, y = data.load(args.dataset, "train")
    x_test, _ = data.load(args.dataset, "test")
    x, x_test = data.to_float(x), data.to_float(x_test)[:args.predict_images]
    y = y.astype(np.int64)
    predict_batch = min(1000, len(x_test))
    first_run = None
    if "minicnn" in frameworks:
        log("  minicnn    first run: compiling (or loading) the Numba kernels ...")
        first_run = warm_up_minicnn(models, x, y)
    rows = []
    for name in models:
        batches = args.batches if name == "lenet5" else args.cnn_batches
        flops = 2 * macs_per_sample(name)
        for fw in frameworks:
            log(f"  {name:<10} {fw:<8} training {batches} batches, predicting "
                f"{len(x_test)} images, {args.repeat}× ...")
            common = (name, x, y, x_test, batches, args.repeat, predict_batch)
            if fw == "minicnn":
                train, predict = bench_minicnn(*common)
            elif fw == "torch":
                train, predict = bench_torch(*common, args.threads)
            else:
                train, predict = bench_keras(*common, args.threads)
            rows.append(make_row(name, "train", fw, 64 * batches, 3 * flops, *train))
            rows.append(make_row(name, "predict", fw, len(x_test), flops, *predict))
    return {"threads": args.threads, "kernels": kernels.backend(), "minicnn_first_run": first_run,
            "dataset": args.dataset,
            "batch_size": {"train": 64, "predict": predict_batch}, "repeat": args.repeat,
            "flops": "2 per multiply-add of conv/dense layers (minicnn.trace); train = 3x forward",
            "ratio": "time(minicnn) / time(framework): 1.0 = as fast, 2.0 = twice as slow",
            "rows": add_ratios(rows)}


def table(result):
    lines = [f"threads: {result['threads']} (OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS, "
             f"torch.set_num_threads, tf intra/inter-op)   minicnn kernels: {result['kernels']}   "
             f"data: {result['dataset']}   repeats: {result['repeat']} (median, min–max)",
             f"GFLOP/s: {result['flops']}",
             f"ratio: {result['ratio']}"]
    first = result.get("minicnn_first_run")
    if first and first["compiled"] is not None:
        done = (f"compiled {first['compiled']} kernel versions" if first["compiled"]
                else "nothing to compile")
        lines.append(f"minicnn first run (not in the table): {first['seconds']:.1f} s, {done}, "
                     f"loaded {first['loaded']} from Numba's cache; Numba threads: "
                     f"{first['threads']} ({first['threading_layer']})")
    lines.append("")
    head = (f"{'model':<10} {'task':<8} {'framework':<9} {'images':>7} {'median s':>9} "
            f"{'min–max s':>15} {'images/s':>9} {'GFLOP/s':>8} {'ratio':>6} {'1st call s':>10}")
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        ratio = "" if r["framework"] == "minicnn" else f"{r['ratio_minicnn_over']:.2f}"
        lines.append(f"{r['model']:<10} {r['task']:<8} {r['framework']:<9} {r['images']:>7} "
                     f"{r['median_s']:>9.3f} {r['min_s']:>7.3f}–{r['max_s']:<7.3f} "
                     f"{r['images_per_s']:>9.0f} {r['gflops']:>8.2f} {ratio:>6} "
                     f"{r['first_call_s']:>10.3f}")
    return "\n".join(lines) + "\n"


def main(argv=None, out=None):
    args = parser().parse_args(argv)
    if args.smoke:
        args.batches, args.cnn_batches, args.repeat = 2, 1, 2
        args.predict_images = min(args.predict_images, 200)
    if args.batches < 1 or args.cnn_batches < 1 or args.repeat < 1 or args.threads < 1:
        raise SystemExit("--batches, --cnn-batches, --repeat and --threads must be >= 1")
    out = out or sys.stdout
    log = (lambda s: print(s, file=sys.stderr)) if args.json else (lambda s: print(s, file=out))
    result = run(args, log)
    if args.json:
        json.dump(result, out, indent=1)
        out.write("\n")
    else:
        out.write(table(result))
    return 0


def command_line(argv=None):
    """``python -m minicnn.bench``: set the thread variables, re-executing if needed, then run."""
    argv = sys.argv[1:] if argv is None else argv
    threads = parser().parse_known_args(argv)[0].threads
    if not set_thread_env(threads):
        # the thread pools start at import: run again with the variables in place
        os.execv(sys.executable, [sys.executable, "-m", "minicnn.bench", *argv])
    return main(argv)


if __name__ == "__main__":
    sys.exit(command_line())
