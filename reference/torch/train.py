"""Train a zoo network with PyTorch: the options and metrics.json of ``python -m minicnn train``.

    python reference/torch/train.py --model lenet5 --dataset fashion-mnist --epochs 10 \\
        --batch-size 64 --optimizer adam --lr 1e-3 --seed 0 --out runs/torch-lenet5 --device auto
    python reference/torch/train.py --model rps_cnn --dataset path/to/rock-paper-scissors \\
        --image-size 64 --epochs 10 --batch-size 32 --seed 0 --out runs/torch-rps64

This is the road for real-scale runs: CUDA when it is there (``--device auto``), a DataLoader
with pinned memory and non-blocking copies to the GPU, the loss and accuracy summed on the
device so that no step waits for the GPU. The network is ``reference.torch.models.build(name)``,
PyTorch's own default initialisation unless ``train`` is given weights (reference/compare.py
copies minicnn's in). An image folder is read by minicnn.data.ImageFolder, as
``python -m minicnn train`` reads it, so that both train on the same pixels.

The same script runs on many processes, unchanged, under torchrun (one process per GPU):

    torchrun --standalone --nproc_per_node=4 reference/torch/train.py --model lenet5 ...
    torchrun --nnodes=2 --node_rank=0 --nproc_per_node=4 --master_addr=HOST --master_port=29500 \
        reference/torch/train.py --model lenet5 ...          # on machine 0; node_rank=1 on machine 1

DistributedDataParallel (NCCL on GPUs, gloo on the CPU; reference/torch/distributed.py). The
options mean what they mean on one process: ``--batch-size`` is the GLOBAL batch, each process
takes batch-size / processes of it, and the epochs see the same shuffled order of images, so a
step on N processes is the step of one process on the whole batch. Rank 0 alone writes
metrics.json (numbers added over all processes), curves.png, model.pt and, after every epoch,
``torch_checkpoint.npz``, which ``--resume`` continues from on any number of processes.
``--amp`` adds float16 autocast with loss scaling.
"""
import contextlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `minicnn` and `reference` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, TensorDataset  # noqa: E402

from minicnn import zoo  # noqa: E402
from reference import common  # noqa: E402
from reference.torch import checkpoint, distributed  # noqa: E402
from reference.torch.models import MODELS, build  # noqa: E402

#: Keras' epsilon: probabilities are clipped to [ε, 1 − ε] before the log
EPSILON = 1e-7
#: written into --out after every epoch, read by --resume
CHECKPOINT = "torch_checkpoint.npz"


def pick_device(choice="auto"):
    """torch.device for --device auto|cpu|cuda; SystemExit when cuda is asked for but absent."""
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: PyTorch sees no CUDA device (torch.cuda.is_available() "
                         "is False); use --device auto or cpu")
    return torch.device(choice)


def criterion(loss):
    """The loss of a zoo spec ("cross_entropy", "nll", "categorical") as a PyTorch callable."""
    if loss == "cross_entropy":
        return nn.CrossEntropyLoss()     # takes logits
    if loss == "nll":
        return nn.NLLLoss()              # takes log-probabilities (the model ends in log_softmax)
    if loss == "categorical":
        # Keras' SparseCategoricalCrossentropy on probabilities, written in PyTorch: clip, log,
        # then a softmax cross-entropy (which renormalises the clipped row)
        return lambda p, y: F.cross_entropy(torch.log(p.clamp(EPSILON, 1 - EPSILON)), y)
    raise ValueError(f"unknown loss {loss!r}")


def make_optimizer(name, params, lr):
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)   # eps 1e-8, added after the bias correction
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose adam or sgd")


@torch.no_grad()
def evaluate(net, loader, loss_fn, device, world=distributed.SINGLE, amp=False, heartbeat=None):
    """(mean loss, accuracy) over a DataLoader, in eval mode.

    With several processes each one evaluates its own shard (``distributed.shard_of``) and the
    sums are added over the processes: every process returns the numbers of the whole set.
    """
    net.eval()
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            out = net(xb)
            total += loss_fn(out, yb) * len(xb)
        correct += (out.argmax(1) == yb).sum()
        n += len(xb)
        if heartbeat:
            heartbeat()
    total, correct, n = summed(world, total, correct, n)
    return total / n, correct / n


def summed(world, *values):
    """Python numbers: each of ``values`` (tensors or ints) added over the processes."""
    if world.size == 1:
        return tuple(v.item() if torch.is_tensor(v) else v for v in values)
    device = next(v.device for v in values if torch.is_tensor(v))
    sums = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    return tuple(distributed.all_sum(sums, world).tolist())


def train(net, x_train, y_train, x_test, y_test, *, loss, epochs=1, batch_size=64,
          optimizer="adam", lr=1e-3, seed=0, device="auto", order=None, batch_losses=None,
          verbose=True, world=distributed.SINGLE, amp=False, resume=None, on_epoch_end=None,
          heartbeat=None):
    """Train ``net`` (an nn.Module) on NCHW float32 arrays; returns the history dict.

    history: {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}, one value per epoch,
    as minicnn's fit(); "seconds" is the wall time of the epoch, evaluation included.
    order: None to shuffle as RandomSampler(seeded) does, or ``order(epoch)`` -> indices.
    batch_losses: a list that receives every step's loss (a float), for learning curves.

    Several processes: ``world`` (``distributed.start``) is this process's place in a started
    process group. ``batch_size`` stays the GLOBAL batch: each of the ``world.size`` processes
    takes ``batch_size / world.size`` of it, DistributedDataParallel averages the gradients,
    and the history holds the numbers of the whole batch, added over the processes.
    amp: mixed precision, float16 autocast with GradScaler's loss scaling (disabled, the same
    calls pass everything through unchanged). resume: a checkpoint state (``checkpoint.load``)
    to continue from. on_epoch_end(state): called by every process after each epoch with what a
    checkpoint holds. heartbeat(): called after every step (a ``distributed.Watchdog``'s beat).
    """
    device = pick_device(device) if isinstance(device, str) else device
    cuda = device.type == "cuda"
    if batch_size % world.size:
        raise ValueError(f"batch_size {batch_size} is the global batch: it must be a multiple of "
                         f"the {world.size} processes, which take one share each")
    torch.manual_seed(seed + world.rank)  # dropout masks: each process draws its own
    net.to(device)
    loss_fn = criterion(loss)
    opt = make_optimizer(optimizer, net.parameters(), lr)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    history, first_epoch = {}, 0
    if resume is not None:
        net.load_state_dict(resume["model"])
        opt.load_state_dict(resume["optimizer"])
        if amp and resume["scaler"]:  # a run without --amp saved a disabled (empty) scaler
            scaler.load_state_dict(resume["scaler"])
        history, first_epoch = {k: list(v) for k, v in resume["history"].items()}, resume["epoch"]
    # DDP starts by copying rank 0's weights to every process, then all-reduces the gradients
    # bucket by bucket while the backward pass is still running
    model = (nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if cuda else None)
             if world.size > 1 else net)
    train_set = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    test_set = TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test))
    sampler = distributed.EpochShards(train_set, order or distributed.Shuffles(len(train_set), seed),
                                      world.size, world.rank)
    # Whole batches of indices (BatchSampler, batch_size=None): a TensorDataset then slices
    # 64 rows at once instead of fetching and stacking 64 single images. The arrays are in
    # memory, so worker processes would only copy them; pinned pages let the copy to the GPU
    # overlap with the previous step.
    loader = DataLoader(train_set, batch_size=None, pin_memory=cuda,
                        sampler=BatchSampler(sampler, batch_size // world.size, drop_last=False))
    test_loader = DataLoader(test_set, batch_size=None, pin_memory=cuda, sampler=BatchSampler(
        distributed.shard_of(len(test_set), world), 1000, False))
    for epoch in range(first_epoch, epochs):
        sampler.set_epoch(epoch)
        started = time.perf_counter()
        model.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, steps = 0, []
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad()
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                out = model(xb)
                batch_loss = loss_fn(out, yb)
            scaler.scale(batch_loss).backward()   # DDP's all-reduce happens in here
            scaler.step(opt)                      # skipped when float16 overflowed
            scaler.update()
            # summed on the device: .item() here would wait for the GPU after every step
            loss_sum += batch_loss.detach() * len(xb)
            correct += (out.argmax(1) == yb).sum()
            seen += len(xb)
            if batch_losses is not None:
                steps.append(batch_loss.detach().float())
            if heartbeat:
                heartbeat()
        if batch_losses is not None and steps:  # one transfer per epoch
            step_losses = distributed.all_sum(torch.stack(steps), world) / world.size
            batch_losses.extend(step_losses.tolist())
        loss_sum, correct, seen = summed(world, loss_sum, correct, seen)
        val_loss, val_acc = evaluate(net, test_loader, loss_fn, device, world, amp, heartbeat)
        if cuda:
            torch.cuda.synchronize()
        logs = {"loss": loss_sum / seen, "accuracy": correct / seen,
                "val_loss": val_loss, "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started}
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose and world.main:
            print("torch " + common.epoch_line(epoch, epochs, logs), flush=True)
        if on_epoch_end is not None:
            on_epoch_end({"model": net.state_dict(), "optimizer": opt.state_dict(),
                          "scaler": scaler.state_dict(), "epoch": epoch + 1, "history": history})
    return history


def parse(argv=None):
    p = common.parser("python reference/torch/train.py", __doc__.split("\n")[0])
    p.add_argument("--amp", action="store_true",
                   help="mixed precision: float16 autocast with GradScaler's loss scaling (for "
                        "CUDA; on the CPU it runs the same code, slowly)")
    p.add_argument("--resume", action="store_true",
                   help=f"continue from OUT/{CHECKPOINT} (written after every epoch) when it "
                        f"exists, on any number of processes")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="several processes: seconds one waits for the others (start-up, every "
                        "all-reduce) before it stops with an error")
    return p.parse_args(argv)


def main(argv=None):
    """The script: one process, or one of the processes torchrun started (RANK in the environment)."""
    args = parse(argv)
    common.check_model(args.model, ("torch", MODELS))
    common.check_out(args)
    processes = int(os.environ.get("WORLD_SIZE", 1)) if distributed.launched() else 1
    if args.batch_size % processes:
        common.usage_error(f"--batch-size {args.batch_size} is the global batch, shared by the "
                           f"{processes} processes: it must be a multiple of {processes}")
    if distributed.launched():
        world, device = distributed.start(args.device, args.timeout)
    else:
        world, device = distributed.SINGLE, pick_device(args.device)
    try:
        result = run(args, world, device)
        distributed.leave_together(world)
        return result
    finally:
        distributed.stop()


def run(args, world, device):
    """Load the data, build (or resume) the network, train, and write the run's files (rank 0)."""
    spec = zoo.spec(args.model)
    data = common.load_run(args)
    path = Path(args.out) / CHECKPOINT
    resume = distributed.from_main(lambda: load_checkpoint(path, args), world, device)
    torch.manual_seed(args.seed)  # the same initial weights in every process
    net = build(args.model, **data.model_kwargs)
    saved = [resume["epoch"] if resume else 0]  # epochs in the checkpoint on disk
    run_info = {"model": args.model, "dataset": data.dataset, "processes": world.size}

    def on_epoch_end(state):
        if world.main:
            checkpoint.save(path, state | {"run": run_info})
        saved[0] = state["epoch"]

    where = f"rank {world.rank} of {world.size}"

    def kept():
        if not saved[0]:
            return "no epoch had finished, so there is no checkpoint yet"
        return (f"the last checkpoint, {path} (epoch {saved[0]}), is intact; to continue, run the "
                f"same command with --resume, on any number of processes")

    guard = (distributed.Watchdog(args.timeout, lambda: f"{where}: the training loop made no "
                                  f"progress within --timeout {args.timeout:g} s, another process "
                                  f"is gone or stuck; {kept()}")
             if world.size > 1 else contextlib.nullcontext())
    try:
        with distributed.SigtermStops(), guard as watchdog:
            history = train(net, data.x_train, data.y_train, data.x_test, data.y_test,
                            loss=spec.loss, epochs=args.epochs, batch_size=args.batch_size,
                            optimizer=args.optimizer, lr=args.lr, seed=args.seed, device=device,
                            world=world, amp=args.amp, resume=resume, on_epoch_end=on_epoch_end,
                            heartbeat=watchdog.beat if watchdog else None)
    except (distributed.Stopped, dist.DistError, RuntimeError) as err:
        if world.size == 1:
            raise
        # gloo reports a lost peer as a RuntimeError from inside the backward pass
        reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0]}"
        print(f"error: {where} stopped: {reason}. {kept()}", file=sys.stderr, flush=True)
        os._exit(1)  # not sys.exit: leaving the group cleanly would wait for the lost process
    if world.main:
        config = common.config(args, "torch", device, data.classes, data.preprocessing)
        config |= {"processes": world.size, "backend": world.backend or None}
        on = f"{device}" + (f", {world.size} processes" if world.size > 1 else "")
        metrics = common.write_run(args.out, config, history,
                                   f"{args.model} on {Path(data.dataset).name} (PyTorch, {on})")
        torch.save(net.state_dict(), Path(args.out) / "model.pt")
        print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epochs on {on}; "
              f"wrote {args.out}/metrics.json, curves.png, model.pt, {CHECKPOINT}")
    return 0


def load_checkpoint(path, args):
    """The state to resume from (``checkpoint.load``), None without --resume or without a file."""
    if not args.resume:
        return None
    if not path.exists():
        print(f"--resume: no checkpoint at {path} yet; starting at epoch 1", flush=True)
        return None
    try:
        state = checkpoint.load(path)
    except (OSError, ValueError) as err:
        raise SystemExit(f"--resume: cannot read {path}: {err}") from None
    if state["run"]["model"] != args.model:
        common.usage_error(f"--resume: {path} holds a {state['run']['model']} run; this command "
                           f"trains --model {args.model}")
    print(f"resuming from {path}: {state['epoch']} epoch(s) done, written by "
          f"{state['run']['processes']} process(es)", flush=True)
    return state


if __name__ == "__main__":
    code = main()
    if distributed.launched():      # one of torchrun's processes: no interpreter teardown
        distributed.exit_now(code)
    sys.exit(code)
