"""Many processes for reference/torch/train.py: the process group, the shards, the stops.

torchrun (``python -m torch.distributed.run``) starts one process per GPU (or per CPU process
asked for) and gives each RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in its
environment. ``start`` joins them into one process group: NCCL between GPUs, gloo on the CPU.
A plain ``python reference/torch/train.py`` has no RANK and stays one process, no group.

Data parallelism: every process holds the same model and takes its share of every global batch
(``EpochShards``); DistributedDataParallel averages the gradients over the processes during the
backward pass (an all-reduce), so every process applies the same update.

A run must never hang when one process dies: the group has a timeout (every collective gives up
after it), NCCL's watchdog tears the process down on an error, SIGTERM (what torchrun sends the
survivors when a process fails) becomes an exception with a message, and ``Watchdog`` ends a
process whose training loop made no progress for the timeout, whatever it is blocked in.
"""
import datetime
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` in 0..size-1 over all machines, ``local_rank`` on this one."""
    rank: int = 0
    size: int = 1
    local_rank: int = 0
    backend: str = ""

    @property
    def main(self):
        """True for the process that writes the files (rank 0)."""
        return self.rank == 0


#: one process, no process group: a plain ``python reference/torch/train.py``
SINGLE = World()


class Stopped(Exception):
    """The launcher asked this process to stop (SIGTERM), usually because another one failed."""


def launched():
    """True when torchrun (or another launcher with its variables) started this process."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def start(device="auto", timeout=300.0):
    """Join the process group torchrun set up; returns (World, torch.device).

    device: --device auto|cpu|cuda. On CUDA each process takes GPU ``LOCAL_RANK`` and talks
    NCCL; on the CPU, gloo. timeout: seconds any collective (and the rendezvous) may wait for
    the other processes before it raises.
    """
    rank, size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise SystemExit("--device cuda: PyTorch sees no CUDA device (torch.cuda.is_available() "
                         "is False); use --device auto or cpu")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise SystemExit(f"LOCAL_RANK {local_rank}: this machine has {torch.cuda.device_count()} "
                             f"GPU(s); start at most that many processes per node (--nproc_per_node)")
        torch.cuda.set_device(local_rank)
        # an NCCL error or a timed-out collective ends the process instead of leaving it waiting
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    where = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout),
                            device_id=where if cuda else None)
    return World(rank, size, local_rank, backend), where


def leave_together(world):
    """At the normal end of a run: wait until every process is done (rank 0 may still be saving),
    so that they all tear their connections down at the same time."""
    if world.size > 1:
        dist.barrier()


def exit_now(code):
    """End a process that torchrun started, after its run: flush stdout and stderr, then
    ``os._exit(code)``, without the interpreter's teardown. In that teardown, objects that
    still hold the process group (DistributedDataParallel's reducer, freed by the garbage
    collector at exit) destroy gloo's threads while the interpreter is half gone, and the
    process aborted now and then ("terminate called without an active exception", SIGABRT):
    in 3 of 5 full test runs on a loaded 2-core machine, even after ``leave_together`` and
    ``destroy_process_group``. Every file of the run is written and closed before this."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def stop():
    """Leave the process group (a no-op without one)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_sum(tensor, world):
    """Sum ``tensor`` over the processes, in place (one process: unchanged); returns it."""
    if world.size > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def from_main(load, world, device):
    """``load()`` on rank 0, its result sent to every process: only rank 0's machine needs the file.

    load() returns a nested state of tensors and plain values (or None); every process gets it
    with tensors on the CPU.
    """
    if world.size == 1:
        return load()
    box = [load() if world.main else None]
    dist.broadcast_object_list(box, src=0, device=device)  # pickled on the wire, within the run
    return box[0]


class Shuffles:
    """``order(epoch)`` -> (N,) int64 tensor: the permutation that
    ``RandomSampler(generator=torch.Generator().manual_seed(seed))`` draws at that epoch.

    One process has always shuffled this way; as a function of (seed, epoch) the order is the
    same for any number of processes and for a run resumed at any epoch.
    """

    def __init__(self, n, seed):
        self.n, self.seed = n, seed
        self._generator = torch.Generator().manual_seed(seed)
        self._epoch = 0  # the generator is where RandomSampler's is when epoch _epoch begins

    def __call__(self, epoch):
        if epoch < self._epoch:
            self._generator.manual_seed(self.seed)
            self._epoch = 0
        while self._epoch < epoch:
            # RandomSampler draws two permutations per epoch: the order, then one more of
            # which it keeps the first N % N = 0 entries
            torch.randperm(self.n, generator=self._generator)
            torch.randperm(self.n, generator=self._generator)
            self._epoch += 1
        state = self._generator.get_state()
        order = torch.randperm(self.n, generator=self._generator)
        self._generator.set_state(state)  # asking twice for an epoch gives the same order
        return order


class EpochShards(DistributedSampler):
    """A DistributedSampler over ``order(epoch)``: process ``rank`` of ``size`` takes the
    positions rank, rank + size, rank + 2·size, ... of the epoch's order.

    With local batches of ``global_batch / size``, the k-th local batches of all processes
    together are exactly positions [k·B, (k + 1)·B) of the order: the k-th global batch of one
    process. The order is padded with its own first indices to a multiple of ``size`` (as
    DistributedSampler pads), so every process takes the same number of steps; one process
    needs no padding and sees the order itself. ``set_epoch(e)`` selects the epoch.
    """

    def __init__(self, dataset, order, size=1, rank=0):
        super().__init__(dataset, num_replicas=size, rank=rank, shuffle=False, drop_last=False)
        self.order = order

    def __iter__(self):
        indices = self.order(self.epoch).tolist()
        missing = self.total_size - len(indices)
        indices += (indices * math.ceil(missing / len(indices)))[:missing] if missing else []
        return iter(indices[self.rank:self.total_size:self.num_replicas])


def shard_of(n, world):
    """The indices of ``n`` items that process ``world.rank`` evaluates: every size-th one."""
    return range(world.rank, n, world.size)


class Watchdog:
    """Ends this process when ``beat()`` was not called for ``timeout`` seconds.

    The training loop beats after every step; a process stuck in a collective whose peer is
    gone (or in a GPU wait) never returns to Python, and a timeout inside the library may not
    fire for every kind of wait. The watchdog thread prints ``message`` (a string, or a function
    that returns one when it fires) with the seconds waited to stderr and calls ``on_timeout``
    (default: leave at once with status 1).
    """

    def __init__(self, timeout, message, on_timeout=None):
        self.timeout, self.message = timeout, message
        self.on_timeout = on_timeout or (lambda: os._exit(1))
        self.last = time.monotonic()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="watchdog", daemon=True)

    def beat(self):
        self.last = time.monotonic()

    def _watch(self):
        while not self._done.wait(min(self.timeout / 10, 5.0)):
            waited = time.monotonic() - self.last
            if waited > self.timeout:
                message = self.message() if callable(self.message) else self.message
                print(f"error: {message} (nothing moved for {waited:.0f} s)", file=sys.stderr,
                      flush=True)
                self.on_timeout()
                return

    def __enter__(self):
        self.beat()
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        return False


class SigtermStops:
    """Within the block, SIGTERM raises ``Stopped`` in the main thread instead of killing it
    outright: the process reports why it stops (and a write in progress cleans up after itself)."""

    def _handler(self, signum, frame):
        raise Stopped("the launcher sent SIGTERM (torchrun stops every process when one of them "
                      "fails)")

    def __enter__(self):
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
