"""Data parallelism three ways, as workers for ``reference.allreduce.run`` (lesson 17).

Every worker is ``worker(rank, size, send, recv, ...)`` and runs in its own process: process
``rank`` of ``size`` takes the rank-th contiguous share of the batch, computes the gradient of
its share's mean loss, and the processes average their gradients with an all-reduce:

* ``minicnn_step``: minicnn's LeNet-5 and ``allreduce.ring_allreduce`` (NumPy, over pipes);
* ``torch_step``: the same gradients, and PyTorch's LeNet-5, through ``torch.distributed``
  (gloo on 127.0.0.1);
* ``keras_step``: one process whose CPU is split into logical devices, Keras' LeNet-5 trained
  one step under ``tf.distribute.MirroredStrategy`` and on one device.

The frameworks are imported inside the workers, so that a spawned process loads only its own.
"""
import os
import time

import numpy as np

from reference.allreduce import ring_allreduce


def share(x, rank, size):
    """Process ``rank``'s contiguous share of the batch ``x`` (N, ...): N / size rows."""
    n = len(x) // size
    return x[rank * n:(rank + 1) * n]


def best_time(fn, repeat):
    """The fastest of ``repeat`` calls of ``fn()``, in seconds: other work only adds time."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def minicnn_step(rank, size, send, recv, x, y, seed, sizes=(), repeat=3):
    """minicnn's gradient of this process's share of (x (N, 1, 28, 28), y (N,)), averaged over
    the processes with the NumPy ring all-reduce.

    Returns {"local": this share's gradient, "averaged": the average over the processes (both
    flat float32, the order of ``model.parameters()``), "compute": seconds of one forward and
    backward pass on the share, "ring": {n: seconds of one all-reduce of n float32}}.
    """
    import minicnn as mc
    model = mc.zoo.lenet5(rng=seed)  # the same seed in every process: the same weights
    criterion = mc.CrossEntropyLoss()
    xb, yb = share(x, rank, size), share(y, rank, size)

    def gradient():
        criterion(model(xb), yb)
        model.backward(criterion.backward())
        return np.concatenate([p.grad.ravel() for p in model.parameters()])

    local = gradient()
    averaged = ring_allreduce(local, rank, size, send, recv) / np.float32(size)
    compute = best_time(gradient, repeat)
    ring = {n: best_time(lambda n=n: ring_allreduce(np.ones(n, np.float32), rank, size, send, recv),
                         repeat) for n in sizes}
    return {"local": local, "averaged": averaged, "compute": compute, "ring": ring}


def torch_step(rank, size, send, recv, port, state, x, y, local, sizes=(), repeat=3):
    """torch.distributed (gloo) on the same work.

    port: a free TCP port on 127.0.0.1 for the rendezvous; state: a state_dict of NumPy
    arrays for ``reference.torch.models.LeNet5``; local: every process's minicnn gradient
    (``minicnn_step``'s "local"), of which this process all-reduces its own.
    Returns {"allreduce": the sum of ``local`` over the processes (torch's all_reduce),
    "averaged": PyTorch's own data-parallel gradient, flat, "gloo": {n: seconds}}.
    """
    import datetime

    import torch
    import torch.distributed as dist
    from torch.nn import functional as F

    from reference.torch.models import build
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=size, timeout=datetime.timedelta(seconds=60))
    try:
        summed = torch.from_numpy(local[rank].copy())
        dist.all_reduce(summed)  # op=SUM: every process ends with the sum
        net = build("lenet5")
        net.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        xb, yb = torch.from_numpy(share(x, rank, size)), torch.from_numpy(share(y, rank, size))
        F.cross_entropy(net(xb), yb).backward()
        grad = torch.cat([p.grad.ravel() for p in net.parameters()])
        dist.all_reduce(grad)
        grad /= size
        gloo = {n: best_time(lambda n=n: dist.all_reduce(torch.ones(n)), repeat) for n in sizes}
        return {"allreduce": summed.numpy(), "averaged": grad.numpy(), "gloo": gloo}
    finally:
        dist.destroy_process_group()


def keras_step(rank, size, send, recv, seed, x, y, lr, replicas=2):
    """One SGD step of Keras' LeNet-5 on the whole batch x (N, 1, 28, 28), y (N,), from minicnn's
    seeded weights: under MirroredStrategy over ``replicas`` logical CPU devices, and on one.

    Returns (mirrored, single, replicas in sync): the weights after the step, each a list of
    arrays in minicnn's layout (``minicnn.interop.from_keras``).
    """
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from reference.keras.train import replica_devices  # imports TensorFlow
    devices = replica_devices(replicas, "cpu")  # first, before TensorFlow starts
    import keras
    import tensorflow as tf

    import minicnn as mc
    from minicnn import interop
    from reference.keras.models import build

    def stepped():
        model = interop.to_keras(mc.zoo.lenet5(rng=seed), keras_model=build("lenet5"))
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=lr),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x.transpose(0, 2, 3, 1), y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
        return [p.data for p in interop.from_keras(model, model=mc.zoo.lenet5()).parameters()]

    strategy = tf.distribute.MirroredStrategy(devices)
    with strategy.scope():
        mirrored = stepped()
    with tf.device("/cpu:0"):
        single = stepped()
    return mirrored, single, strategy.num_replicas_in_sync
