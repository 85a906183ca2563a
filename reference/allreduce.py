"""An all-reduce written in NumPy: processes in a ring of pipes, each ending with the sum.

    from reference import allreduce
    results = allreduce.run(worker, 2, x, y)   # worker(rank, size, send, recv, x, y) in 2 processes

``run`` starts ``size`` processes (multiprocessing, "spawn": a fresh interpreter each, as
torchrun starts them), links process r to process r + 1 with a one-way pipe, calls
``worker(rank, size, send, recv, *args)`` in each, and returns what each returned, in rank
order. ``worker`` must be importable (a function of a module, not of ``__main__``): a spawned
process finds it by its module and name. ``ring_allreduce`` is what the workers call to add
their arrays together. NumPy only.
"""
import multiprocessing
import threading
import traceback

import numpy as np


def ring_allreduce(x, rank, size, send, recv):
    """The sum of ``x`` over the ``size`` processes of the ring; each process calls it with its
    own ``x`` (same shape and dtype everywhere) and gets the same sum back, shaped like ``x``.

    The array is cut into ``size`` chunks. Reduce-scatter: ``size − 1`` times, every process
    passes one chunk to the next, which adds it to its own; then process r holds chunk r + 1
    summed over everyone. All-gather: ``size − 1`` more passes hand the finished chunks round.
    Each process sends 2·(size − 1)/size times the array, however many processes there are.
    """
    chunks = np.array_split(np.array(x).ravel(), size)  # views of a copy: x stays as it is
    for step in range(size - 1):
        incoming = exchange(send, recv, chunks[(rank - step) % size])
        chunks[(rank - step - 1) % size] += incoming
    for step in range(size - 1):
        incoming = exchange(send, recv, chunks[(rank - step + 1) % size])
        chunks[(rank - step) % size][...] = incoming
    return np.concatenate(chunks).reshape(x.shape)


def exchange(send, recv, chunk):
    """Send ``chunk`` to the next process while receiving the previous one's; returns it.

    At the same time, in a thread: a pipe holds about 64 kB, so if every process first sent a
    bigger chunk and only then received, each would wait for the next one forever.
    """
    sender = threading.Thread(target=send.send_bytes, args=(chunk,))
    sender.start()
    incoming = np.frombuffer(recv.recv_bytes(), dtype=chunk.dtype)
    sender.join()
    return incoming


def sum_of(rank, size, send, recv, arrays):
    """A worker for ``run``: process ``rank`` all-reduces ``arrays[rank]``; returns the sum."""
    return ring_allreduce(arrays[rank], rank, size, send, recv)


def run(worker, size, *args, timeout=180):
    """[worker(rank, size, send, recv, *args) for rank in range(size)], each in its own process.

    ``send`` goes to process (rank + 1) % size, ``recv`` comes from (rank − 1) % size. A worker
    that raises fails the call with its traceback; one that returns nothing within ``timeout``
    seconds fails it with a TimeoutError; in every case all processes are ended.
    """
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe(duplex=False) for _ in range(size)]  # pipe r: (r's end, r + 1's end)
    results = [context.Pipe(duplex=False) for _ in range(size)]
    processes = [context.Process(target=_main, daemon=True, args=(
        worker, rank, size, pipes[rank][1], pipes[(rank - 1) % size][0], results[rank][1], args))
        for rank in range(size)]
    for process in processes:
        process.start()
    for connection in [end for pipe in pipes for end in pipe] + [end for _, end in results]:
        connection.close()  # the children hold their own copies: a dead child reads as EOF
    try:
        returned = []
        for rank, (answer, _) in enumerate(results):
            if not answer.poll(timeout):
                raise TimeoutError(f"process {rank} of {size} returned nothing within {timeout} s")
            try:
                ok, value = answer.recv()
            except EOFError:
                raise RuntimeError(f"process {rank} of {size} ended without a result") from None
            if not ok:
                raise RuntimeError(f"process {rank} of {size} failed:\n{value}")
            returned.append(value)
        return returned
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.terminate()
                process.join()


def _main(worker, rank, size, send, recv, answer, args):
    """A spawned process: run the worker, send back (True, result) or (False, traceback)."""
    try:
        answer.send((True, worker(rank, size, send, recv, *args)))
    except BaseException:  # noqa: BLE001 - reported to the parent, which raises it
        answer.send((False, traceback.format_exc()))
