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
"""
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: make `minicnn` and `reference` importable
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402
from torch.utils.data import BatchSampler, DataLoader, RandomSampler, Sampler, TensorDataset  # noqa: E402

from minicnn import zoo  # noqa: E402
from reference import common  # noqa: E402
from reference.torch.models import MODELS, build  # noqa: E402

#: Keras' epsilon: probabilities are clipped to [ε, 1 − ε] before the log
EPSILON = 1e-7


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


class EpochOrder(Sampler):
    """Sample indices in an order given per epoch: ``order(epoch)`` -> (N,) indices.

    reference/compare.py passes minicnn's shuffles so that all frameworks see the same batches.
    """

    def __init__(self, order):
        self.order, self.epoch = order, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        return iter(self.order(self.epoch).tolist())

    def __len__(self):
        return len(self.order(self.epoch))


@torch.no_grad()
def evaluate(net, loader, loss_fn, device):
    """(mean loss, accuracy) over a DataLoader, in eval mode."""
    net.eval()
    total = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        out = net(xb)
        total += loss_fn(out, yb) * len(xb)
        correct += (out.argmax(1) == yb).sum()
        n += len(xb)
    return total.item() / n, correct.item() / n


def train(net, x_train, y_train, x_test, y_test, *, loss, epochs=1, batch_size=64,
          optimizer="adam", lr=1e-3, seed=0, device="auto", order=None, batch_losses=None,
          verbose=True):
    """Train ``net`` (an nn.Module) on NCHW float32 arrays; returns the history dict.

    history: {"loss", "accuracy", "val_loss", "val_accuracy", "seconds"}, one value per epoch,
    as minicnn's fit(); "seconds" is the wall time of the epoch, evaluation included.
    order: None to let the DataLoader shuffle (seeded), or ``order(epoch)`` -> indices.
    batch_losses: a list that receives every step's loss (a float), for learning curves.
    """
    device = pick_device(device) if isinstance(device, str) else device
    cuda = device.type == "cuda"
    torch.manual_seed(seed)  # dropout masks and the DataLoader's shuffles
    net.to(device)
    loss_fn = criterion(loss)
    opt = make_optimizer(optimizer, net.parameters(), lr)
    train_set = TensorDataset(torch.from_numpy(x_train), torch.from_numpy(y_train))
    test_set = TensorDataset(torch.from_numpy(x_test), torch.from_numpy(y_test))
    sampler = (EpochOrder(order) if order is not None
               else RandomSampler(train_set, generator=torch.Generator().manual_seed(seed)))
    # Whole batches of indices (BatchSampler, batch_size=None): a TensorDataset then slices
    # 64 rows at once instead of fetching and stacking 64 single images. The arrays are in
    # memory, so worker processes would only copy them; pinned pages let the copy to the GPU
    # overlap with the previous step.
    loader = DataLoader(train_set, sampler=BatchSampler(sampler, batch_size, drop_last=False),
                        batch_size=None, pin_memory=cuda)
    test_loader = DataLoader(test_set, sampler=BatchSampler(range(len(test_set)), 1000, False),
                             batch_size=None, pin_memory=cuda)
    history = {}
    for epoch in range(epochs):
        if order is not None:
            sampler.set_epoch(epoch)
        started = time.perf_counter()
        net.train()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        seen, steps = 0, []
        for xb, yb in loader:
            xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            opt.zero_grad()
            out = net(xb)
            batch_loss = loss_fn(out, yb)
            batch_loss.backward()
            opt.step()
            # summed on the device: .item() here would wait for the GPU after every step
            loss_sum += batch_loss.detach() * len(xb)
            correct += (out.argmax(1) == yb).sum()
            seen += len(xb)
            if batch_losses is not None:
                steps.append(batch_loss.detach())
        if steps:
            batch_losses.extend(torch.stack(steps).tolist())  # one transfer per epoch
        val_loss, val_acc = evaluate(net, test_loader, loss_fn, device)
        if cuda:
            torch.cuda.synchronize()
        logs = {"loss": loss_sum.item() / seen, "accuracy": correct.item() / seen,
                "val_loss": val_loss, "val_accuracy": val_acc,
                "seconds": time.perf_counter() - started}
        for key, value in logs.items():
            history.setdefault(key, []).append(value)
        if verbose:
            print("torch " + common.epoch_line(epoch, epochs, logs), flush=True)
    return history


def main(argv=None):
    args = common.parser("python reference/torch/train.py", __doc__.split("\n")[0]).parse_args(argv)
    common.check_model(args.model, ("torch", MODELS))
    device = pick_device(args.device)
    spec = zoo.spec(args.model)
    run = common.load_run(args)
    dataset, classes, preprocessing, kwargs = run.dataset, run.classes, run.preprocessing, run.model_kwargs
    x_train, y_train, x_test, y_test = run.x_train, run.y_train, run.x_test, run.y_test
    torch.manual_seed(args.seed)
    net = build(args.model, **kwargs)
    history = train(net, x_train, y_train, x_test, y_test, loss=spec.loss, epochs=args.epochs,
                    batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr,
                    seed=args.seed, device=device)
    metrics = common.write_run(args.out, common.config(args, "torch", device, classes, preprocessing),
                               history, f"{args.model} on {Path(dataset).name} (PyTorch, {device})")
    torch.save(net.state_dict(), Path(args.out) / "model.pt")
    print(f"test accuracy {metrics['test_accuracy']:.4f} after {args.epochs} epochs on {device}; "
          f"wrote {args.out}/metrics.json, curves.png, model.pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
