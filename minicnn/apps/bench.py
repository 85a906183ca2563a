"""How fast minicnn trains and predicts, next to PyTorch and Keras, on the CPU, and how close it
comes to the machine's own limit.

    python -m minicnn.bench                       # LeNet-5 (a full epoch), mnist_cnn, resnet_small
    python -m minicnn.bench --batches 100 --json  # shorter, machine-readable
    python -m minicnn.bench --smoke               # a few batches: checks that it runs, not speed

Every framework gets the same data, the same batch size (64 for training, 1000 for prediction,
500 for resnet_small), the same optimiser (Adam, lr 1e-3) and the same number of threads
(``--threads``, 2 by default). LeNet-5 and mnist_cnn read Fashion-MNIST (``minicnn.data.load``,
scaled to [0, 1]); resnet_small reads random 3×64×64 images (seeded), since its photos are not
part of every machine. The thread count has to be fixed before NumPy, Numba, PyTorch and
TensorFlow start their thread pools, so ``python -m minicnn.bench`` re-runs itself once with
OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS and NUMBA_NUM_THREADS set;
torch.set_num_threads and TensorFlow's threading config are set too.

Each (model, framework) runs in a process of its own, so that its peak resident memory is its
own: the peak RSS of each row (Linux: the process's high-water mark, reset before each
repetition; elsewhere ``ru_maxrss``, which only grows) includes the interpreter, the framework
and the row's data. The processes of one model are started one after the other, and once all
are ready their repetitions take turns (train of each framework, then predict of each, the
order turning every round), so that a slow spell of a shared machine falls on every framework
alike. Measured, per model:

* train: ``--batches`` (LeNet-5; default a full epoch, 938 batches) or ``--cnn-batches``
  (the others) training steps with Adam;
* predict: forward passes over the test images (10,000; 2,000 for resnet_small), in eval mode.

Each measurement is repeated ``--repeat`` times; the table shows the median and the spread
(min–max). The first call of each (a warm-up batch, where Keras traces its tf.function) is timed
separately and not part of the median. Before anything is timed, minicnn runs one training step
and one prediction of the model: Numba loads its compiled kernels from its on-disk cache there.
Apart from the rows, the benchmark measures:

* the sgemm peak: NumPy's float32 matrix product of large square matrices on the same threads
  (the best of several), the most this machine's BLAS does; each row shows its share of it;
* the cold compile: a fresh process with an empty Numba cache (``NUMBA_CACHE_DIR`` pointing to
  a new temporary folder) starts like ``python -m minicnn train`` on the first model: the
  kernels compile in a background thread while the first batch runs on NumPy's kernels
  (``minicnn.train.warmup``); the seconds from the process's start until that first batch is
  done, and until every kernel of the model is compiled.

GFLOP/s counts 2 FLOPs per multiply-add of the shape tracer (``minicnn.trace``: convolutions and
dense layers only; activations, pooling, normalisation, loss and the optimiser are not counted).
A training step counts 3× the forward multiply-adds: the forward pass, the gradient of the input
and the gradient of the weights each cost about one forward pass.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

FRAMEWORKS = ("minicnn", "torch", "keras")
MODELS = ("lenet5", "mnist_cnn", "resnet_small")
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
_MARK = "MINICNN_BENCH_THREADS"
EPOCH_BATCHES = 938                    # ceil(60000 / 64)
SYNTHETIC_PREDICT = 2000               # resnet_small: 2,000 random images of 3×64×64 (98 MB)
_PAUSE = 0.2                           # s between two repetitions (OpenMP threads spin ~ms)


def parser():
    p = argparse.ArgumentParser(prog="python -m minicnn.bench", description=__doc__.split("\n")[0])
    p.add_argument("--batches", type=int, default=EPOCH_BATCHES,
                   help="LeNet-5 training batches of 64 (default: one epoch, %(default)s)")
    p.add_argument("--cnn-batches", type=int, default=50,
                   help="mnist_cnn and resnet_small training batches of 64 (default %(default)s)")
    p.add_argument("--predict-images", type=int, default=10000,
                   help="test images for the forward-only throughput (default %(default)s)")
    p.add_argument("--repeat", type=int, default=3, help="repetitions; the median is shown")
    p.add_argument("--threads", type=int, default=2, help="threads for every framework")
    p.add_argument("--frameworks", default=",".join(FRAMEWORKS),
                   help="comma-separated subset of minicnn,torch,keras")
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated zoo names")
    p.add_argument("--dataset", default="fashion-mnist")
    p.add_argument("--no-cold", action="store_true",
                   help="skip the cold-compile measurement (it compiles every kernel once)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--smoke", action="store_true",
                   help="tiny batch counts, one repeat: checks that the benchmark runs")
    # internal: one (framework, model) in this process, or the cold compile; prints JSON
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cold-worker", help=argparse.SUPPRESS)
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
# memory and the machine's peak
# ----------------------------------------------------------------------------------------
def _status_kb(field):
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM), or None off Linux."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss():
    """Start a new peak: Linux resets the high-water mark VmHWM to the current RSS when "5" is
    written to clear_refs. Returns True if it could."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def peak_rss_mb():
    """The process's peak resident memory in MB: VmHWM (since the last reset) where Linux gives
    it, else ru_maxrss (since the start; kB on Linux, bytes on macOS)."""
    hwm = _status_kb("VmHWM")
    if hwm is not None:
        return hwm / 1024
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20 if sys.platform == "darwin" else 1024)


def sgemm_peak(size=3072, tries=5):
    """The machine's float32 matrix-product speed, GFLOP/s: NumPy's sgemm of two (size, size)
    matrices on the threads BLAS was given, the best of ``tries`` (after one untimed call)."""
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    best = float("inf")
    for _ in range(tries):
        t = time.perf_counter()
        np.matmul(a, b, out=c)
        best = min(best, time.perf_counter() - t)
    return 2 * size ** 3 / best / 1e9


def cpu_name():
    """The CPU's model name (Linux /proc/cpuinfo), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform
    return platform.processor() or "unknown"


# ----------------------------------------------------------------------------------------
# one framework at a time: each returns (first_call_seconds, [seconds per repetition], peak MB)
# ----------------------------------------------------------------------------------------
def _batches(x, y, count, batch_size):
    """count (x, y) batches cycling through the data in order."""
    n_full = len(x) // batch_size
    for k in range(count):
        start = (k % n_full) * batch_size
        yield x[start:start + batch_size], y[start:start + batch_size]


class _Task:
    """One task of a worker (train or predict): its first call, then one timed repetition per
    ``run()``, each with the peak resident memory since it started."""

    def __init__(self, fn):
        self.fn, self.times, self.peak_mb = fn, [], 0.0
        reset_peak_rss()
        start = time.perf_counter()
        fn(warmup=True)
        self.first = time.perf_counter() - start
        self.peak_mb = peak_rss_mb()

    def run(self):
        reset_peak_rss()
        start = time.perf_counter()
        self.fn(warmup=False)
        self.times.append(time.perf_counter() - start)
        self.peak_mb = max(self.peak_mb, peak_rss_mb())
        return self.times[-1]

    def result(self):
        """(first call s, [repetition times s], peak RSS MB), as the rows read it."""
        return self.first, self.times, self.peak_mb


def predict_batch_size(name):
    return 500 if name == "resnet_small" else 1000


def model_data(name, dataset, batches, predict_images):
    """x (N, C, H, W) float32, y (N,) int64 for training, x_test for prediction. The zoo models
    of 1×28×28 read ``dataset``; the others random images of their input shape (seeded)."""
    import numpy as np

    from .. import data, zoo
    shape = tuple(zoo.spec(name).input_shape)
    if shape == (1, 28, 28):
        x, y = data.load(dataset, "train")
        x_test, _ = data.load(dataset, "test")
        return data.to_float(x), y.astype(np.int64), data.to_float(x_test)[:predict_images]
    rng = np.random.default_rng(0)
    n = 64 * min(batches, 20)                 # the batches cycle through 20 distinct ones
    x = rng.random((n,) + shape, dtype=np.float32)
    classes = list(zoo.get(name, rng=0).parameters())[-1].data.shape[0]   # the last bias
    y = rng.integers(0, classes, n).astype(np.int64)
    x_test = rng.random((min(predict_images, SYNTHETIC_PREDICT),) + shape, dtype=np.float32)
    return x, y, x_test


def warm_up_minicnn(models, x, y):
    """Compile (or load from Numba's cache) every kernel the models use, timed: one training
    step and one prediction of each model on x[:64], y[:64].

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


def bench_minicnn(name, x, y, x_test, batches, repeat, predict_batch, threads):
    from .. import losses, optim, zoo
    from ..layers import no_grad
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
        with no_grad():         # as PyTorch's torch.no_grad: no caches kept for backward
            for start in range(0, predict_batch if warmup else len(x_test), predict_batch):
                model(x_test[start:start + predict_batch])

    return train, predict


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

    return train, predict


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
    del x

    def train(warmup):
        n = 64 * (1 if warmup else batches)
        model.fit(xs[:n], ys[:n], batch_size=64, epochs=1, shuffle=False, verbose=0)

    def predict(warmup):
        data = x_test[:predict_batch] if warmup else x_test
        model.predict(data, batch_size=predict_batch, verbose=0)

    return train, predict


def has_twin(framework, name):
    """Whether reference/ has the model for this framework (read from the source, so that
    asking does not import the framework)."""
    if framework == "minicnn":
        return True
    import re
    path = os.path.join(os.path.dirname(__file__), "..", "..", "reference", framework,
                        "models.py")
    try:
        with open(path) as f:
            source = f.read()
    except OSError:
        return False
    block = source[source.index("MODELS = {"):] if "MODELS = {" in source else ""
    return re.search(r'"%s"\s*:' % re.escape(name), block[:block.find("}") + 1]) is not None


def worker(spec, args, commands=sys.stdin, answers=sys.stdout):
    """``--worker framework:model``: this process runs one framework on one model. It prepares
    both tasks (data, model, each task's first call), answers {"ready": ...}, then runs one
    timed repetition of "train" or "predict" for each such line it reads, answering its
    seconds, until "done": then {"train": ..., "predict": ..., "images": ...,
    "first_run": ...}. The parent alternates the frameworks' repetitions this way."""
    framework, name = spec.split(":")
    if framework == "torch":
        import torch  # noqa: F401  (before Numba: the one OpenMP runtime is PyTorch's own)
    batches = args.batches if name == "lenet5" else args.cnn_batches
    x, y, x_test = model_data(name, args.dataset, batches, args.predict_images)
    predict_batch = min(predict_batch_size(name), len(x_test))
    common = (name, x, y, x_test, batches, args.repeat, predict_batch, args.threads)
    first_run = None
    if framework == "minicnn":
        first_run = warm_up_minicnn([name], x, y)
        train, predict = bench_minicnn(*common)
    elif framework == "torch":
        train, predict = bench_torch(*common)
    else:
        train, predict = bench_keras(*common)
    tasks = {"train": _Task(train), "predict": _Task(predict)}

    def answer(value):
        answers.write(json.dumps(value) + "\n")
        answers.flush()

    answer({"ready": spec})
    for line in commands:
        command = line.strip()
        if command == "done":
            break
        answer({command: tasks[command].run()})
    return {"train": tasks["train"].result(), "predict": tasks["predict"].result(),
            "first_run": first_run, "images": {"train": 64 * batches, "predict": len(x_test)},
            "predict_batch": predict_batch}


class _Worker:
    """A ``--worker`` process and the lines it answers."""

    def __init__(self, spec, args):
        self.spec = spec
        # its messages to a file: a pipe nobody reads would stop it once full
        self.log = tempfile.TemporaryFile("w+")
        self.process = subprocess.Popen(_argv("--worker", spec, args), stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, text=True)
        self.read()                                     # {"ready": spec}

    def read(self):
        line = self.process.stdout.readline()
        if not line:
            self.process.wait()
            self.log.seek(0)
            raise SystemExit(f"error: the benchmark's worker {self.spec} failed:\n"
                             f"{self.log.read()[-3000:]}")
        return json.loads(line)

    def ask(self, command):
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        return self.read()

    def finish(self):
        answer = self.ask("done")
        self.process.stdin.close()
        self.process.wait()
        return answer


def measure_interleaved(name, frameworks, args, log):
    """{framework: worker result} for ``name``: every framework's process prepares its model
    (one after the other), then the repetitions go round: train of each framework, predict of
    each, ``--repeat`` times, the order turning by one framework each round. A slow spell of a
    shared machine then falls on every framework alike, not on whichever ran during it."""
    workers = []
    try:
        for fw in frameworks:
            log(f"  {name:<12} {fw:<8} preparing, in its own process ...")
            workers.append(_Worker(f"{fw}:{name}", args))
        log(f"  {name:<12} {args.repeat} rounds of train and predict, frameworks in turn ...")
        for r in range(args.repeat):
            turn = workers[r % len(workers):] + workers[:r % len(workers)]
            for task in ("train", "predict"):
                for w in turn:
                    time.sleep(_PAUSE)     # the last one's threads stop spinning
                    w.ask(task)
        return {w.spec.split(":")[0]: w.finish() for w in workers}
    finally:
        for w in workers:
            if w.process.poll() is None:
                w.process.kill()


def cold_worker(name, dataset):
    """``--cold-worker model``, run with NUMBA_CACHE_DIR pointing to an empty folder, as
    ``python -m minicnn train`` starts: the kernels compile in the background
    (``minicnn.train.warmup``) while the first training batch runs on NumPy's kernels. Returns
    the seconds from the start of this process until that first batch is done, and until every
    kernel is compiled."""
    start = time.perf_counter()
    from .. import zoo
    from ..kernels import jit
    from ..train import loop as training
    from ..train import warmup
    x, y, _ = model_data(name, dataset, 1, 64)
    ready = time.perf_counter()
    model = zoo.get(name, rng=0)
    model.compile(optimizer="adam", loss=model.spec.loss, lr=1e-3)
    thread = warmup.compile_in_background(model, x[:64], y[:64], build=(name, {}),
                                           log=lambda line: None)
    training.train_step(model, model.loss, model.optimizer, x[:64], y[:64])
    first_batch = time.perf_counter()
    if thread is not None:
        thread.join()
    compiled_all = time.perf_counter()
    compiled, loaded = jit.compile_counts()
    return {"model": name, "import_and_data_s": ready - start,
            "first_batch_s": first_batch - start, "all_compiled_s": compiled_all - start,
            "background": thread is not None, "compiled": compiled, "loaded": loaded}


def _argv(flag, value, args):
    """The command line of this benchmark's ``flag value`` in a fresh Python."""
    return [sys.executable, "-m", "minicnn.bench", flag, value, "--threads", str(args.threads),
            "--batches", str(args.batches), "--cnn-batches", str(args.cnn_batches),
            "--repeat", str(args.repeat), "--predict-images", str(args.predict_images),
            "--dataset", args.dataset]


def _subprocess(flag, value, args, env=None):
    """Run this benchmark's ``flag value`` in a fresh Python; returns its JSON answer."""
    done = subprocess.run(_argv(flag, value, args), capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"error: the benchmark's {flag} {value} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout)


def cold_compile(name, args):
    """The cold compile of ``name`` in a fresh process with an empty Numba cache."""
    with tempfile.TemporaryDirectory(prefix="minicnn-cold-") as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        env.pop("MINICNN_COMPILE", None)   # what a new user's first run does: compile behind it
        return _subprocess("--cold-worker", name, args, env)


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


def make_row(model, task, framework, images, flops_per_image, first, times, peak_mb=None,
             sgemm_gflops=None):
    """One table row: times in seconds, images/s and GFLOP/s from the median time, the share of
    the sgemm peak, the peak resident memory in MB."""
    med = _median(times)
    gflops = images * flops_per_image / med / 1e9
    return {"model": model, "task": task, "framework": framework, "images": images,
            "first_call_s": first, "times_s": times, "median_s": med,
            "min_s": min(times), "max_s": max(times),
            "images_per_s": images / med, "gflops": gflops,
            "sgemm_share": gflops / sgemm_gflops if sgemm_gflops else None,
            "peak_rss_mb": peak_mb}


def add_ratios(rows):
    """time(minicnn) / time(other) for each (model, task): 1.0 = as fast, 2.0 = twice as slow."""
    by_key = {(r["model"], r["task"], r["framework"]): r for r in rows}
    for r in rows:
        mine = by_key.get((r["model"], r["task"], "minicnn"))
        r["ratio_minicnn_over"] = (mine["median_s"] / r["median_s"]) if mine else None
    return rows


def summarise(rows):
    """One line per (model, task): minicnn's GFLOP/s and sgemm share, time(minicnn) / time(x)
    for PyTorch, Keras and the faster of them, and each framework's peak memory."""
    out = []
    for key in dict.fromkeys((r["model"], r["task"]) for r in rows):
        here = {r["framework"]: r for r in rows if (r["model"], r["task"]) == key}
        mine = here.get("minicnn")
        others = [r for f, r in here.items() if f != "minicnn"]
        fastest = min(others, key=lambda r: r["median_s"]) if others else None
        out.append({
            "model": key[0], "task": key[1],
            "gflops": mine and mine["gflops"], "sgemm_share": mine and mine["sgemm_share"],
            "vs_torch": here["torch"]["ratio_minicnn_over"] if "torch" in here and mine else None,
            "vs_keras": here["keras"]["ratio_minicnn_over"] if "keras" in here and mine else None,
            "vs_fastest": fastest["ratio_minicnn_over"] if fastest and mine else None,
            "peak_rss_mb": {f: r["peak_rss_mb"] for f, r in here.items()}})
    return out


def run(args, log=print):
    frameworks = [f for f in args.frameworks.split(",") if f]
    for f in frameworks:
        if f not in FRAMEWORKS:
            raise SystemExit(f"unknown framework {f!r}; choose from {','.join(FRAMEWORKS)}")
    models = [m for m in args.models.split(",") if m]
    from .. import kernels, zoo
    for name in models:
        zoo.spec(name)          # an unknown name fails here, before anything runs

    log(f"  sgemm peak: NumPy float32 3072×3072 products on {args.threads} threads ...")
    peaks = [sgemm_peak()]
    cold = None
    if "minicnn" in frameworks and not args.no_cold:
        log(f"  cold compile: {models[0]} in a fresh process, empty Numba cache ...")
        cold = cold_compile(models[0], args)
    rows, first_runs, missing, measured = [], [], [], []
    for name in models:
        flops = 2 * macs_per_sample(name)
        present = []
        for fw in frameworks:
            if has_twin(fw, name):
                present.append(fw)
            else:
                missing.append({"model": name, "framework": fw,
                                "why": f"no {name} in reference/{fw}/models.py"})
        results = measure_interleaved(name, present, args, log) if present else {}
        for fw, got in results.items():
            if got["first_run"]:
                first_runs.append(got["first_run"])
            for task, per_image in (("train", 3 * flops), ("predict", flops)):
                measured.append((name, task, fw, got["images"][task], per_image, *got[task]))
    # the peak again at the end: other programs only ever lower it, so the higher one counts
    log("  sgemm peak, again ...")
    peaks.append(sgemm_peak())
    peak = max(peaks)
    for name, task, fw, images, per_image, first, times, peak_mb in measured:
        rows.append(make_row(name, task, fw, images, per_image, first, times, peak_mb, peak))
    first_run = None
    if first_runs:
        first_run = dict(first_runs[0], seconds=sum(f["seconds"] for f in first_runs))
        for key in ("compiled", "loaded"):
            counts = [f[key] for f in first_runs]
            first_run[key] = None if None in counts else sum(counts)
    rows = add_ratios(rows)
    return {"threads": args.threads, "kernels": kernels.backend(), "cpu": cpu_name(),
            "sgemm_peak_gflops": peak, "sgemm_peaks_gflops": peaks, "cold_compile": cold,
            "minicnn_first_run": first_run,
            "dataset": args.dataset, "models": models,
            "batch_size": {"train": 64, "predict": {m: predict_batch_size(m) for m in models}},
            "repeat": args.repeat,
            "flops": "2 per multiply-add of conv/dense layers (minicnn.trace); train = 3x forward",
            "ratio": "time(minicnn) / time(framework): 1.0 = as fast, 2.0 = twice as slow",
            "memory": "peak resident memory of the row's own process (interpreter, framework, "
                      "data), MB",
            "rows": rows, "summary": summarise(rows), "missing": missing}


def _fmt(value, spec, empty="–"):
    return empty if value is None else format(value, spec)


def table(result):
    lines = [f"CPU: {result['cpu']}   threads: {result['threads']} (OMP/OPENBLAS/MKL/"
             f"NUMBA_NUM_THREADS, torch.set_num_threads, tf intra/inter-op)   minicnn kernels: "
             f"{result['kernels']}   repeats: {result['repeat']} (median, min–max)",
             f"sgemm peak: {result['sgemm_peak_gflops']:.0f} GFLOP/s (NumPy float32, 3072×3072, "
             f"best of 5, measured before and after the rows: "
             f"{' and '.join(f'{p:.0f}' for p in result['sgemm_peaks_gflops'])}); "
             f"'% peak' = a row's GFLOP/s / this",
             f"GFLOP/s: {result['flops']}",
             f"ratio: {result['ratio']}",
             f"peak MB: {result['memory']}"]
    cold = result.get("cold_compile")
    if cold:
        # the warm-up compiles in a child process: this one counts only what it compiled itself
        where = (f"{cold['compiled']} kernel versions compiled in this process"
                 if cold["compiled"] else "compiled in a child process")
        lines.append(f"cold compile ({cold['model']}, empty Numba cache, as `python -m minicnn "
                     f"train` starts): first training batch done after "
                     f"{cold['first_batch_s']:.1f} s (NumPy kernels while Numba compiles in the "
                     f"background), every kernel compiled after {cold['all_compiled_s']:.1f} s "
                     f"({where}; import and data: {cold['import_and_data_s']:.1f} s)")
    first = result.get("minicnn_first_run")
    if first and first["compiled"] is not None:
        done = (f"compiled {first['compiled']} kernel versions" if first["compiled"]
                else "nothing to compile")
        lines.append(f"minicnn first run (not in the table): {first['seconds']:.1f} s, {done}, "
                     f"loaded {first['loaded']} from Numba's cache; Numba threads: "
                     f"{first['threads']} ({first['threading_layer']})")
    for m in result.get("missing", []):
        lines.append(f"not measured: {m['model']} {m['framework']} ({m['why']})")
    lines.append("")
    head = (f"{'model':<12} {'task':<8} {'framework':<9} {'images':>7} {'median s':>9} "
            f"{'min–max s':>15} {'images/s':>9} {'GFLOP/s':>8} {'% peak':>6} {'ratio':>6} "
            f"{'peak MB':>8} {'1st call s':>10}")
    lines += [head, "-" * len(head)]
    for r in result["rows"]:
        ratio = "" if r["framework"] == "minicnn" else _fmt(r["ratio_minicnn_over"], ".2f")
        share = _fmt(r["sgemm_share"] and 100 * r["sgemm_share"], ".0f")
        lines.append(f"{r['model']:<12} {r['task']:<8} {r['framework']:<9} {r['images']:>7} "
                     f"{r['median_s']:>9.3f} {r['min_s']:>7.3f}–{r['max_s']:<7.3f} "
                     f"{r['images_per_s']:>9.0f} {r['gflops']:>8.2f} {share:>6} {ratio:>6} "
                     f"{_fmt(r['peak_rss_mb'], '.0f'):>8} {r['first_call_s']:>10.3f}")
    lines.append("")
    head = (f"{'model':<12} {'task':<8} {'GFLOP/s':>8} {'% peak':>6} {'vs torch':>8} "
            f"{'vs keras':>8} {'vs best':>7}  peak MB minicnn / torch / keras")
    lines += [head, "-" * len(head)]
    for s in result["summary"]:
        mb = " / ".join(_fmt(s["peak_rss_mb"].get(f), ".0f") for f in FRAMEWORKS)
        lines.append(f"{s['model']:<12} {s['task']:<8} {_fmt(s['gflops'], '.1f'):>8} "
                     f"{_fmt(s['sgemm_share'] and 100 * s['sgemm_share'], '.0f'):>6} "
                     f"{_fmt(s['vs_torch'], '.2f'):>8} {_fmt(s['vs_keras'], '.2f'):>8} "
                     f"{_fmt(s['vs_fastest'], '.2f'):>7}  {mb}")
    return "\n".join(lines) + "\n"


def main(argv=None, out=None):
    args = parser().parse_args(argv)
    out = out or sys.stdout
    if args.worker or args.cold_worker:
        answer = (worker(args.worker, args) if args.worker
                  else cold_worker(args.cold_worker, args.dataset))
        json.dump(answer, out)
        out.write("\n")
        return 0
    if args.smoke:
        args.batches, args.cnn_batches, args.repeat = 2, 1, 2
        args.predict_images = min(args.predict_images, 200)
    if args.batches < 1 or args.cnn_batches < 1 or args.repeat < 1 or args.threads < 1:
        raise SystemExit("--batches, --cnn-batches, --repeat and --threads must be >= 1")
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
