"""One network, three frameworks, one starting point: minicnn vs PyTorch vs Keras.

    python reference/compare.py --model lenet5 --dataset fashion-mnist --epochs 10
    python reference/compare.py --model lenet5 --epochs 1 --limit 6000     # a short run
    python reference/compare.py --model lenet5 --epochs 30 --device cuda   # frameworks on the GPU
    python reference/compare.py --model rps_cnn --dataset path/to/rock-paper-scissors --image-size 64
    python reference/compare.py --model lenet5 --epochs 1 --limit 6000 --processes 2  # data parallel

The minicnn zoo model is built (seeded) and its weights are copied into the idiomatic PyTorch
and Keras versions (reference/torch/models.py, reference/keras/models.py) with
``minicnn.interop``; the script checks that the three give the same outputs before training.
Then each is trained for --epochs with the same batches in the same order (minicnn's shuffles),
the same learning rate and each framework's own optimizer, and OUT receives:

    comparison.md      the table: framework, test accuracy, test loss, time per epoch,
                       parameters, how far the final weights are from minicnn's, and notes
    comparison.json    the same numbers, for scripts
    curves.png         the three learning curves
    minicnn/ torch/ keras/   each run's metrics.json (the keys of ``python -m minicnn train``)

What is left to differ is exactly what the articles never separated: float32 rounding in
different orders, and Keras' Adam, which adds its epsilon at another place (lesson 6).
minicnn runs on the CPU (NumPy and Numba); --device moves PyTorch and Keras only.

``--processes N`` trains PyTorch on N processes (DistributedDataParallel, started here with
torch.multiprocessing: gloo on the CPU, NCCL with one GPU each) and Keras on N replicas
(MirroredStrategy: N GPUs, or the CPU split into N logical devices). --batch-size stays the
global batch, each process or replica takes batch-size / N of it, and the batches are still
minicnn's: the table's "processes" column says how many shared each step.
"""
import json
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# `python reference/compare.py` puts reference/ first on sys.path, where reference/torch and
# reference/keras would shadow the real torch and keras packages: put the repository root there.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402


from minicnn import interop, losses, optim, zoo
from minicnn.train import loop as training  # noqa: E402
from minicnn.core.files import atomic_write  # noqa: E402
from minicnn.data import DataLoader  # noqa: E402
from reference import common  # noqa: E402

FRAMEWORKS = ("minicnn", "torch", "keras")
#: the copied weights must reproduce minicnn's outputs to float32 rounding before any training
SAME_START = 1e-5


def parse(argv=None):
    p = common.parser("python reference/compare.py", __doc__.split("\n")[0])
    p.set_defaults(out=None)
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    p.add_argument("--processes", type=int, default=1,
                   help="PyTorch processes (DistributedDataParallel) and Keras replicas "
                        "(MirroredStrategy) that share every batch; minicnn stays one process")
    args = p.parse_args(argv)
    if args.processes < 1 or args.batch_size % args.processes:
        common.usage_error(f"--processes {args.processes}: expected 1 or more processes that "
                           f"divide --batch-size {args.batch_size} (the global batch)")
    args.out = args.out or f"runs/compare-{args.model}"
    return args


def outputs(model, net, keras_model, x):
    """The three frameworks' outputs for the same NCHW batch x, in eval mode, as NumPy."""
    import torch
    from reference.keras.train import to_nhwc
    model.eval()
    ours = model(x)
    model.train()
    was = net.training
    net.eval()
    device = next(net.parameters()).device
    with torch.no_grad():
        theirs_torch = net(torch.from_numpy(x).to(device)).cpu().numpy()
    net.train(was)
    theirs_keras = np.asarray(keras_model(to_nhwc(x), training=False))
    return ours, theirs_torch, theirs_keras


def train_minicnn(model, x_train, y_train, x_test, y_test, *, loss, epochs, batch_size,
                  optimizer, lr, seed, batch_losses, verbose=True):
    """minicnn's fit(), written out (lesson 7) so that every step's loss is kept for the curves.

    The same DataLoader, seed and train_step as fit(): the same batches and the same weights.
    """
    criterion = losses.get(loss)
    opt = optim.get(optimizer, model.parameters(), lr)
    loader = DataLoader(x_train, y_train, batch_size=batch_size, shuffle=True, seed=seed)
    history = {}
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        started = time.perf_counter()
        model.train()
        loss_sum, correct, seen = 0.0, 0, 0
        for xb, yb in loader:
            step_loss, step_correct = training.train_step(model, criterion, opt, xb, yb)
            batch_losses.append(step_loss)
            loss_sum, correct, seen = loss_sum + step_loss * len(xb), correct + step_correct, seen + len(xb)
        val_loss, val_acc = training.evaluate(model, x_test, y_test, criterion)
        logs = {"loss": loss_sum / seen, "accuracy": correct / seen, "val_loss": val_loss,
                "val_accuracy": val_acc, "seconds": time.perf_counter() - started}
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose:
            print("minicnn " + common.epoch_line(epoch, epochs, logs), flush=True)
    return history


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now, for the processes' rendezvous."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torch_rank(rank, size, port, args, start, result, options):
    """One of ``size`` PyTorch processes (torch.multiprocessing calls it with ``rank``).

    Joins the group on 127.0.0.1:``port``, loads the data as the parent did, starts from the
    ``start`` state_dict, trains on its shares of minicnn's batches; rank 0 writes the history,
    the step losses and the final weights to ``result`` (a reference/torch/checkpoint.py file).
    """
    from reference.torch import checkpoint
    from reference.torch import distributed
    from reference.torch import models as torch_models
    from reference.torch import train as torch_train
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                   "WORLD_SIZE": str(size), "LOCAL_RANK": str(rank)}
    world, device = distributed.start(args.device)
    try:
        run = common.load_run(args)
        net = torch_models.build(args.model, **run.model_kwargs)
        net.load_state_dict(start)
        order = DataLoader(run.x_train, run.y_train, batch_size=args.batch_size, shuffle=True,
                           seed=args.seed).order
        steps = []
        history = torch_train.train(net, run.x_train, run.y_train, run.x_test, run.y_test,
                                    device=device, order=order, batch_losses=steps, world=world,
                                    **options)
        if world.main:
            checkpoint.save(result, {"history": history, "steps": steps, "model": net.state_dict()})
        distributed.leave_together(world)
    finally:
        distributed.stop()


def train_torch_processes(net, args, options):
    """Train ``net`` on ``args.processes`` processes; returns (history, step losses), and leaves
    the trained weights in ``net``."""
    import torch.multiprocessing as mp
    from reference.torch import checkpoint
    with tempfile.TemporaryDirectory() as folder:
        result = os.path.join(folder, "result.npz")
        start = {k: v.detach().cpu() for k, v in net.state_dict().items()}
        mp.start_processes(torch_rank, nprocs=args.processes, start_method="spawn",
                           args=(args.processes, free_port(), args, start, result, options))
        trained = checkpoint.load(result)
    net.load_state_dict(trained["model"])
    return trained["history"], trained["steps"]


def weight_gap(model, other):
    """max |Δ| over all parameters between two minicnn models of the same architecture."""
    return max(float(np.max(np.abs(a.data.astype(np.float64) - b.data)))
               for a, b in zip(model.parameters(), other.parameters()))


def run(args):
    """Train the three frameworks; returns the comparison dict written to comparison.json."""
    import keras
    import tensorflow as tf
    import torch
    from reference.keras import models as keras_models
    from reference.keras import train as keras_train
    from reference.torch import models as torch_models
    from reference.torch import train as torch_train

    common.check_model(args.model, ("torch", torch_models.MODELS), ("keras", keras_models.MODELS))
    # before TensorFlow starts: Keras' replicas (the CPU is split into logical devices then)
    strategy = (tf.distribute.MirroredStrategy(keras_train.replica_devices(args.processes, args.device))
                if args.processes > 1 else None)
    spec = zoo.spec(args.model)
    # size: an image folder's number of classes and --image-size, for the models that take them
    run = common.load_run(args)
    dataset, classes, preprocessing, size = run.dataset, run.classes, run.preprocessing, run.model_kwargs
    x_train, y_train, x_test, y_test = run.x_train, run.y_train, run.x_test, run.y_test
    verbose = not args.quiet

    # -- the same start: minicnn's initial weights, copied into both frameworks ------------
    model = zoo.get(args.model, rng=args.seed, **size)
    net = interop.to_torch(model, module=torch_models.build(args.model, **size))
    keras_device = keras_train.pick_device(args.device)
    with strategy.scope() if strategy is not None else tf.device(keras_device):
        keras_model = interop.to_keras(model, keras_model=keras_models.build(args.model, **size))
    probe = x_test[:64]
    ours, theirs_torch, theirs_keras = outputs(model, net, keras_model, probe)
    start = {"torch": float(np.max(np.abs(ours - theirs_torch))),
             "keras": float(np.max(np.abs(ours - theirs_keras)))}
    if max(start.values()) > SAME_START:
        raise SystemExit(f"the copied weights do not reproduce minicnn's outputs: max |Δ| {start}")
    if verbose:
        print(f"same start: max |Δ output| vs minicnn on {len(probe)} test images: "
              f"torch {start['torch']:.1e}, keras {start['keras']:.1e}", flush=True)

    # -- the same batches: minicnn's shuffle of each epoch, fed to all three ---------------
    order = DataLoader(x_train, y_train, batch_size=args.batch_size, shuffle=True,
                       seed=args.seed).order
    steps = {fw: [] for fw in FRAMEWORKS}
    options = dict(loss=spec.loss, epochs=args.epochs, batch_size=args.batch_size,
                   optimizer=args.optimizer, lr=args.lr, seed=args.seed, verbose=verbose)
    histories, devices = {}, {"minicnn": "cpu (NumPy + Numba)"}
    histories["minicnn"] = train_minicnn(model, x_train, y_train, x_test, y_test,
                                         batch_losses=steps["minicnn"], **options)
    torch_device = torch_train.pick_device(args.device)
    devices["torch"] = str(torch_device)
    if args.processes > 1:
        histories["torch"], steps["torch"] = train_torch_processes(net, args, options)
    else:
        histories["torch"] = torch_train.train(net, x_train, y_train, x_test, y_test,
                                               device=torch_device, order=order,
                                               batch_losses=steps["torch"], **options)
    devices["keras"] = keras_device
    if strategy is not None:
        replicas = [d.split("device:")[-1] for d in strategy.extended.worker_devices]
        devices["keras"] = f"mirrored over {', '.join(replicas)}"
    histories["keras"] = keras_train.train(keras_model, x_train, y_train, x_test, y_test,
                                           device=keras_device, order=order, strategy=strategy,
                                           batch_losses=steps["keras"], **options)
    processes = {"minicnn": 1, "torch": args.processes, "keras": args.processes}

    # -- where they ended -------------------------------------------------------------------
    net.cpu()
    ended = {"minicnn": 0.0,
             "torch": weight_gap(model, interop.from_torch(net, model=zoo.get(args.model, **size))),
             "keras": weight_gap(model, interop.from_keras(keras_model,
                                                           model=zoo.get(args.model, **size)))}
    parameters = {"minicnn": interop.count_parameters(model),
                  "torch": interop.count_parameters(net),
                  "keras": interop.count_parameters(keras_model)}
    versions = {"minicnn": "minicnn (NumPy + Numba)", "torch": f"PyTorch {torch.__version__}",
                "keras": f"Keras {keras.__version__} / TensorFlow {tf.__version__}"}
    rows = []
    for fw in FRAMEWORKS:
        h = histories[fw]
        rows.append({"framework": fw, "name": versions[fw], "device": devices[fw],
                     "processes": processes[fw],
                     "test_accuracy": h["val_accuracy"][-1], "test_loss": h["val_loss"][-1],
                     "seconds_per_epoch": float(np.mean(h["seconds"])),
                     "first_epoch_seconds": h["seconds"][0], "parameters": parameters[fw],
                     "weight_gap": ended[fw], "start_gap": start.get(fw, 0.0)})
        config = common.config(args, fw, devices[fw], classes, preprocessing) | {
            "compare": True, "processes": processes[fw]}
        common.write_run(os.path.join(args.out, fw), config, h,
                         f"{args.model} on {dataset} ({versions[fw]})")
    return {"model": args.model, "dataset": dataset, "epochs": args.epochs,
            "batch_size": args.batch_size, "processes": args.processes,
            "optimizer": args.optimizer, "lr": args.lr,
            "seed": args.seed, "train_images": len(x_train), "test_images": len(x_test),
            "loss": spec.loss, "rows": rows, "histories": histories, "step_losses": steps}


def table(result):
    """The comparison as markdown: a title, the table, and the notes that explain it."""
    lines = [f"# {result['model']} on {result['dataset']}: minicnn, PyTorch and Keras",
             "",
             "| framework | device | processes | test accuracy | test loss | time per epoch (s) "
             "| parameters | max \\|Δ weight\\| vs minicnn |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['name']} | {r['device']} | {r['processes']} | {r['test_accuracy']:.4f} | "
                     f"{r['test_loss']:.4f} | {r['seconds_per_epoch']:.1f} | "
                     f"{r['parameters']:,} | {r['weight_gap']:.2e} |")
    rows = {r["framework"]: r for r in result["rows"]}
    adam = (f"Adam, lr {result['lr']:g}: minicnn and PyTorch add eps = 1e-8 to the bias-corrected "
            f"√v̂; Keras adds epsilon = 1e-7 to the uncorrected √v (lesson 6), the one intended "
            f"difference in the update rule" if result["optimizer"] == "adam"
            else f"plain SGD, lr {result['lr']:g}, the same rule in all three")
    lines += [
        "",
        f"- Same start: the three began from minicnn's initial weights (seed {result['seed']}), "
        f"copied with minicnn.interop; before training their outputs differed by at most "
        f"{rows['torch']['start_gap']:.1e} (PyTorch) and {rows['keras']['start_gap']:.1e} "
        f"(Keras).",
        f"- Same data: {result['train_images']:,} training and {result['test_images']:,} test "
        f"images scaled to [0, 1] (x / 255, no normalisation), {result['epochs']} epoch(s) of "
        f"batches of {result['batch_size']} in the same order (minicnn's shuffle of each epoch).",
        f"- Optimizer: {adam}.",
        f"- Loss: {result['loss']} (the zoo spec's), written in each framework.",
        "- Time per epoch: the mean over epochs, evaluation included; Keras' first epoch also "
        f"traces its training step ({rows['keras']['first_epoch_seconds']:.1f} s for epoch 1).",
        "- The last column: how far each framework's final weights are from minicnn's; float32 "
        "rounding in a different order grows over the steps, and Keras' epsilon adds to it.",
    ]
    if result.get("processes", 1) > 1:
        n = result["processes"]
        lines.append(f"- Processes: PyTorch trained on {n} processes (DistributedDataParallel) and "
                     f"Keras on {n} replicas (MirroredStrategy), each taking "
                     f"{result['batch_size'] // n} images of every batch of {result['batch_size']}; "
                     f"the gradients were averaged over them before every step, so a step is the "
                     f"step of one process on the whole batch.")
    return "\n".join(lines) + "\n"


def smooth(values, window):
    """Moving average over ``window`` steps (shorter at the start), for a readable curve."""
    values = np.asarray(values, dtype=np.float64)
    sums = np.cumsum(np.concatenate([[0.0], values]))
    lo = np.maximum(np.arange(1, len(values) + 1) - window, 0)
    return (sums[1:] - sums[lo]) / (np.arange(1, len(values) + 1) - lo)


def plot(result, path):
    """Left: the training loss of every step (light) and its moving average, per framework.
    Right: the test accuracy after each epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"minicnn": ("C0", "-", "o"), "torch": ("C1", "--", "s"), "keras": ("C2", ":", "^")}
    rows = {r["framework"]: r for r in result["rows"]}
    for fw, losses in result["step_losses"].items():
        color, line, marker = styles[fw]
        window = max(1, len(losses) // 40)
        ax_loss.plot(np.arange(1, len(losses) + 1), losses, color=color, alpha=0.2, lw=0.8)
        ax_loss.plot(np.arange(1, len(losses) + 1), smooth(losses, window), color=color,
                     ls=line, lw=1.6, label=f"{rows[fw]['name']} (mean of {window} steps)")
        accuracy = result["histories"][fw]["val_accuracy"]
        ax_acc.plot(np.arange(1, len(accuracy) + 1), accuracy, color=color, ls=line, marker=marker,
                    label=f"{rows[fw]['name']}: {accuracy[-1]:.4f}")
    per_epoch = -(-result["train_images"] // result["batch_size"])
    for epoch in range(1, result["epochs"]):
        ax_loss.axvline(epoch * per_epoch, color="grey", lw=0.6, ls=":")
    ax_loss.set(xlabel=f"step (batches of {result['batch_size']})", ylabel="training loss")
    ax_acc.set(xlabel="epoch", ylabel="test accuracy")
    ax_acc.set_xticks(np.arange(1, result["epochs"] + 1))
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{result['model']} on {result['dataset']}: the same start in minicnn, PyTorch "
                 f"and Keras")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main(argv=None):
    args = parse(argv)
    started = time.perf_counter()
    result = run(args)
    text = table(result)
    os.makedirs(args.out, exist_ok=True)
    atomic_write(os.path.join(args.out, "comparison.md"), lambda f: f.write(text.encode()))
    blob = json.dumps(result, indent=2)
    atomic_write(os.path.join(args.out, "comparison.json"), lambda f: f.write(blob.encode()))
    plot(result, os.path.join(args.out, "curves.png"))
    print("\n" + text)
    print(f"wrote {args.out}/comparison.md, comparison.json, curves.png and one metrics.json per "
          f"framework ({time.perf_counter() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
