"""Many processes: reference/torch/train.py under torchrun, reference/keras/train.py under
tf.distribute, and compare.py --processes.

The launch commands are read from reference/README.md ("Many processes and GPUs") and run with
smaller sizes, on this machine's CPU: 2 PyTorch processes talking gloo over 127.0.0.1, and the
CPU split into 2 logical devices for Keras' MirroredStrategy (in a subprocess: logical devices
must be set up before TensorFlow starts, and this process may have started it already). Each
equality is asserted against the one-process run of the same test. Every subprocess has a
timeout: nothing here can hang.
"""
import copy
import json
import os
import pathlib
import re
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from realdata import load_or_skip
from twins import requires_keras, requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # reference/

pytestmark = [requires_torch, requires_keras]

ENV = os.environ | {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1",
                    "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg",
                    "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
#: float32's unit roundoff: a correctly rounded operation is off by at most u relative
U = 2.0 ** -24
SECTION = "## Many processes and GPUs"


# ----------------------------------------------------------------------------------------
# the README's commands
# ----------------------------------------------------------------------------------------
def readme_commands(path=ROOT / "reference" / "README.md"):
    """{comment: command} for the ```bash blocks of the page's "Many processes" section; each
    command is one string (continuation lines joined), under the comment line before it."""
    text = pathlib.Path(path).read_text(encoding="utf-8")
    assert SECTION in text, f"{path} has no section {SECTION!r}"
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    commands = {}
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        comment = None
        for line in block.replace("\\\n", " ").splitlines():
            if line.startswith("#"):
                comment = line[1:].strip()
            elif line.strip():
                commands[comment] = " ".join(line.split())
    return commands


def command(title, options=(), env=None):
    """(argv, environment) of the README command whose comment starts with ``title``.

    options: {"--option": value} replacing the value the README gives (``--x=v`` or ``--x v``)
    or added at the end; value None for a flag. ``python`` is this interpreter and
    ``torchrun`` is ``python -m torch.distributed.run``. Variables set before the command
    (TF_CONFIG=...) come back in the environment, after ``env`` edits them.
    """
    matches = [c for t, c in readme_commands().items() if t and t.startswith(title)]
    assert len(matches) == 1, f"reference/README.md: {len(matches)} commands under '# {title}'"
    tokens = shlex.split(matches[0])
    variables = {}
    while "=" in tokens[0] and tokens[0].split("=")[0].isupper():
        name, value = tokens.pop(0).split("=", 1)
        variables[name] = value
    program = {"python": [sys.executable], "torchrun": [sys.executable, "-m", "torch.distributed.run"]}
    argv, options = list(program[tokens[0]]), dict(options)
    i = 1
    while i < len(tokens):
        token = tokens[i]
        name = token.split("=", 1)[0]
        takes_value = "=" not in token and i + 1 < len(tokens) and not tokens[i + 1].startswith("--")
        if name in options:
            value = options.pop(name)
            if value is not None:
                argv += [f"{name}={value}"] if "=" in token else [name, str(value)]
            i += 2 if takes_value else 1
            continue
        argv.append(token)
        i += 1
    for name, value in options.items():
        argv += [name] if value is None else [name, str(value)]
    return argv, ENV | (env(variables) if env else variables)


def run(argv, environment=ENV, timeout=180):
    """Run a command from the repository root; returns stdout; fails with its output."""
    done = subprocess.run(argv, cwd=ROOT, env=environment, text=True, capture_output=True,
                          timeout=timeout)
    assert done.returncode == 0, f"{argv} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"
    return done.stdout


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def fashion_mnist():
    load_or_skip("fashion-mnist", "train")
    load_or_skip("fashion-mnist", "test")


def test_the_main_readme_shows_the_same_commands():
    """README.md's section (README_distributed_section.md until it is pasted in) and
    reference/README.md launch with the same commands."""
    main = ROOT / "README.md"
    if SECTION not in main.read_text(encoding="utf-8"):
        main = ROOT / "README_distributed_section.md"
    ours, theirs = readme_commands(), readme_commands(main)
    assert len(ours) == 6 and ours == theirs


# ----------------------------------------------------------------------------------------
# the pieces, in this process
# ----------------------------------------------------------------------------------------
def test_the_epoch_order_is_the_one_random_sampler_always_drew():
    import torch
    from torch.utils.data import RandomSampler
    from reference.torch.distributed import Shuffles
    sampler = RandomSampler(range(50), generator=torch.Generator().manual_seed(7))
    drawn = [list(sampler) for _ in range(4)]  # one process, epoch after epoch
    order = Shuffles(50, 7)
    assert [order(e).tolist() for e in (3, 0, 1, 2, 2)] == [drawn[3], drawn[0], drawn[1], drawn[2], drawn[2]]


@pytest.mark.parametrize("n, batch, size", [(70, 8, 2), (70, 8, 4), (65, 12, 3), (5, 4, 4)])
def test_the_shards_of_a_step_are_the_global_batch(n, batch, size):
    """The k-th local batches of all processes together are the k-th global batch (of the order
    padded to a multiple of the processes), and every process takes the same number of steps."""
    import torch
    from torch.utils.data import BatchSampler
    from reference.torch.distributed import EpochShards
    permutation = torch.randperm(n, generator=torch.Generator().manual_seed(n))
    order = lambda epoch: permutation.roll(epoch)  # noqa: E731
    padded = lambda epoch: (order(epoch).tolist() * 2)[:-(-n // size) * size]  # noqa: E731
    for epoch in (0, 1):
        local = []
        for rank in range(size):
            shards = EpochShards(range(n), order, size, rank)
            shards.set_epoch(epoch)
            local.append(list(BatchSampler(shards, batch // size, drop_last=False)))
        assert len({len(batches) for batches in local}) == 1
        steps = [sorted(sum((batches[k] for batches in local), [])) for k in range(len(local[0]))]
        whole = padded(epoch)
        assert steps == [sorted(whole[i:i + batch]) for i in range(0, len(whole), batch)]


def test_a_checkpoint_round_trips_without_pickle(tmp_path):
    import torch
    from reference.torch import checkpoint
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = {"model": net.state_dict(), "optimizer": opt.state_dict(), "scaler": {}, "epoch": 3,
             "history": {"loss": [1.5, 0.25]}, "run": {"model": "x", "processes": 2}}
    checkpoint.save(tmp_path / "c.npz", state)
    assert np.load(tmp_path / "c.npz", allow_pickle=False).files  # data only
    back = checkpoint.load(tmp_path / "c.npz")
    assert back["epoch"] == 3 and back["history"] == state["history"] and back["run"] == state["run"]
    assert all(torch.equal(back["model"][k], v) for k, v in state["model"].items())
    again = torch.optim.Adam(net.parameters(), lr=1e-3)
    again.load_state_dict(back["optimizer"])  # integer keys of the state kept integers
    for key, value in opt.state_dict()["state"][0].items():
        assert torch.equal(again.state_dict()["state"][0][key], value)
    np.savez(tmp_path / "other.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a checkpoint of reference/torch/train.py"):
        checkpoint.load(tmp_path / "other.npz")


def test_the_watchdog_ends_a_loop_that_stopped_moving(capsys):
    from reference.torch.distributed import Watchdog
    fired = threading.Event()
    with Watchdog(0.5, "rank 1 of 2: stuck", on_timeout=fired.set) as dog:
        for _ in range(10):  # a loop that beats every 0.1 s is left alone
            time.sleep(0.1)
            dog.beat()
        assert not fired.is_set()
        assert fired.wait(10), "the watchdog did not fire"
    assert "error: rank 1 of 2: stuck (nothing moved for" in capsys.readouterr().err


def test_the_global_batch_must_divide_among_the_processes(monkeypatch, capsys):
    from reference.torch.train import main
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(SystemExit) as stop:
        main(["--batch-size", "64", "--epochs", "1"])
    assert stop.value.code == 2
    assert capsys.readouterr().err == ("error: --batch-size 64 is the global batch, shared by the "
                                       "3 processes: it must be a multiple of 3\n")


def test_keras_strategy_options_are_checked(monkeypatch, capsys):
    from reference.keras.train import main
    with pytest.raises(SystemExit) as stop:
        main(["--replicas", "2", "--epochs", "1"])
    assert stop.value.code == 2 and "--replicas 2: replicas need --strategy mirrored" in capsys.readouterr().err
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(SystemExit) as stop:
        main(["--strategy", "multiworker", "--epochs", "1"])
    assert stop.value.code == 2 and "set TF_CONFIG on every worker" in capsys.readouterr().err


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(fashion_mnist, tmp_path):
    """One process: 1 epoch, then --resume to 2, ends bit for bit where 2 straight epochs end
    (the order of an epoch depends on (seed, epoch) only; Adam's state is in the checkpoint)."""
    import torch
    from reference.torch.train import main
    options = ["--epochs", "2", "--limit", "256", "--batch-size", "32", "--device", "cpu"]
    assert main(options + ["--out", str(tmp_path / "straight")]) == 0
    assert main(options[:1] + ["1"] + options[2:] + ["--out", str(tmp_path / "resumed")]) == 0
    assert main(options + ["--resume", "--out", str(tmp_path / "resumed")]) == 0
    weights = [torch.load(tmp_path / run / "model.pt", weights_only=True) for run in ("straight", "resumed")]
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
    history = [json.loads((tmp_path / run / "metrics.json").read_text())["history"]
               for run in ("straight", "resumed")]
    assert history[0]["loss"] == history[1]["loss"] and history[0]["val_loss"] == history[1]["val_loss"]


def test_resuming_another_models_run_is_refused(fashion_mnist, tmp_path, capsys):
    from reference.torch import checkpoint
    from reference.torch.train import CHECKPOINT, main
    checkpoint.save(tmp_path / CHECKPOINT, {"epoch": 1, "run": {"model": "mnist_cnn", "processes": 1}})
    with pytest.raises(SystemExit) as stop:
        main(["--model", "lenet5", "--resume", "--limit", "64", "--out", str(tmp_path)])
    assert stop.value.code == 2
    assert f"error: --resume: {tmp_path / CHECKPOINT} holds a mnist_cnn run; this command trains " \
           f"--model lenet5" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------
# one step on two processes is one step on the whole batch
# ----------------------------------------------------------------------------------------
#: one step of plain SGD on the first 64 images: the equality is about the averaged gradient.
#: (Adam's first step divides each gradient by its own magnitude, which turns float32 rounding
#: in a near-zero gradient into a full step of ±lr: lesson 6.)
LR = 0.1
ONE_STEP = {"--epochs": 1, "--limit": 64, "--batch-size": 64, "--optimizer": "sgd", "--lr": LR}
#: additions along one image's forward and backward pass in LeNet-5, longest dot products
#: first: conv1 25, conv2 150, fc1 400, fc2 120, fc3 84, twice
PATH_ADDITIONS = 2 * (25 + 150 + 400 + 120 + 84)


def term_sums(net, x, y):
    """{parameter: (Σ |term| per entry, terms per entry)} for the gradient of the mean
    cross-entropy over the batch (x (N, 1, 28, 28), y (N,)), computed in float64.

    A weight's gradient entry is a sum over the images (and a convolution's positions) of
    input × output-gradient products; the sum of their magnitudes is |input|ᵀ|output grad|.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F
    net = copy.deepcopy(net).double()
    layers = {n: m for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    inputs, grads = {}, {}
    for name, m in layers.items():
        m.register_forward_hook(lambda m, i, o, name=name: inputs.__setitem__(name, i[0].detach()))
        m.register_full_backward_hook(lambda m, gi, go, name=name: grads.__setitem__(name, go[0].detach()))
    F.cross_entropy(net(torch.from_numpy(x).double().requires_grad_()), torch.from_numpy(y)).backward()
    sums = {}
    for name, m in layers.items():
        a, d = inputs[name].abs(), grads[name].abs()
        if isinstance(m, nn.Conv2d):
            weight = nn.grad.conv2d_weight(a, m.weight.shape, d, stride=m.stride, padding=m.padding)
            sums[f"{name}.weight"] = (weight, d[:, 0].numel())
            sums[f"{name}.bias"] = (d.sum((0, 2, 3)), d[:, 0].numel())
        else:
            sums[f"{name}.weight"] = (d.T @ a, len(d))
            sums[f"{name}.bias"] = (d.sum(0), len(d))
    return {k: (v.numpy(), n) for k, (v, n) in sums.items()}


def one_step_bound(weights, sums):
    """How far two float32 runs of the same SGD step may end apart, entry by entry.

    (1) Each run rounds w − lr·g to float32 once: at most u·|w| each, 2u·|w| between them.
    (2) The gradients: the same terms added in another order (one process sums the 64 images;
    two sum 32 each and DistributedDataParallel or the mirrored strategy adds the two halves —
    the 1/64 vs 1/32 and the halving are powers of two, exact). Any order of a float32 sum of K
    terms is within γ_K·Σ|terms| of the exact sum, γ_K = K·u / (1 − K·u) (Higham, Accuracy and
    Stability of Numerical Algorithms, §4.2), so two orders are within 2γ_K·Σ|terms|. The terms
    themselves come from the same per-image arithmetic in both runs; we allow them the same
    bound again for the additions along one image's pass (PATH_ADDITIONS), should a kernel block
    a batch of 32 differently from one of 64.
    """
    bounds = {}
    for name, w in weights.items():
        s, k = sums[name]
        gamma = (k + PATH_ADDITIONS) * U / (1 - (k + PATH_ADDITIONS) * U)
        bounds[name] = 2 * U * (1 + U) * np.abs(w) + LR * 2 * gamma * s
    return bounds


def assert_same_step(start, one, many, bounds, half):
    """``many`` (the multi-process weights) is within ``bounds`` of ``one``, and ``half`` (one
    process's step on half the batch, what a wrong average would give) is not."""
    for name in one:
        gap = np.abs(many[name].astype(np.float64) - one[name])
        assert np.all(gap <= bounds[name]), (
            f"{name}: max |Δ| {gap.max():.3g} beyond float32 rounding (bound "
            f"{bounds[name].flat[np.argmax(gap - bounds[name])]:.3g} there)")
        assert np.abs(one[name] - start[name]).max() > 0, f"{name}: the step moved nothing"
    outside = [np.mean(np.abs(half[n].astype(np.float64) - one[n]) > bounds[n]) for n in one]
    # most entries of a half-batch step fall outside the bound: it tells a wrong average apart
    assert np.mean(outside) > 0.5, f"the bound cannot tell half a batch apart: {outside}"


@pytest.fixture(scope="module")
def first_batch(fashion_mnist):
    """The 64 training images of ONE_STEP, NCHW float32 in [0, 1], and their labels."""
    from reference import common
    x, y, _, _ = common.load("fashion-mnist", limit=64)
    return x, y


def torch_weights(path):
    import torch
    return {k: v.numpy() for k, v in torch.load(path, weights_only=True).items()}


@pytest.mark.slow
def test_two_ddp_processes_step_like_one_process_on_the_whole_batch(first_batch, tmp_path):
    import torch
    from torch.nn import functional as F
    from reference.torch.models import build
    x, y = first_batch
    argv, env = command("PyTorch, one GPU", ONE_STEP | {"--out": tmp_path / "one"})
    run(argv, env)
    argv, env = command("PyTorch, the GPUs of one machine",
                        ONE_STEP | {"--nproc_per_node": 2, "--out": tmp_path / "two"})
    stdout = run(argv, env)
    assert "on cpu, 2 processes" in stdout
    one, two = torch_weights(tmp_path / "one" / "model.pt"), torch_weights(tmp_path / "two" / "model.pt")
    torch.manual_seed(0)  # the script's --seed 0: the initial weights of both runs
    net = build("lenet5")
    start = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    bounds = one_step_bound(one, term_sums(net, x, y))
    F.cross_entropy(net(torch.from_numpy(x[:32])), torch.from_numpy(y[:32])).backward()
    half = {k: start[k] - LR * p.grad.numpy() for k, p in net.named_parameters()}
    assert_same_step(start, one, two, bounds, half)
    losses = [json.loads((tmp_path / r / "metrics.json").read_text())["history"]["loss"][0]
              for r in ("one", "two")]
    # the mean of 64 positive losses, summed in another order: 2γ_64 relative, plus the same
    # allowance for each image's log-softmax over 10 logits
    assert abs(losses[0] - losses[1]) <= 2 * (64 + 10) * U / (1 - 74 * U) * losses[0] * 1.01
    config = json.loads((tmp_path / "two" / "metrics.json").read_text())["config"]
    assert config["processes"] == 2 and config["backend"] == "gloo" and config["batch_size"] == 64


# ----------------------------------------------------------------------------------------
# a lost process
# ----------------------------------------------------------------------------------------
def children(pid):
    """The ids of the processes whose parent is ``pid`` (Linux /proc)."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.slow
@pytest.mark.skipif(not pathlib.Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_a_killed_process_stops_the_other_and_the_checkpoint_resumes(fashion_mnist, tmp_path):
    """Two "machines" (two torchrun agents on 127.0.0.1, one process each): kill machine 1's
    process mid-run; machine 0's must stop by itself (its own agent sees nothing wrong) with the
    message, within a timeout; the checkpoint loads, and the run resumes on one process."""
    from reference.torch import checkpoint
    out, port = tmp_path / "run", free_port()
    sizes = {"--nproc_per_node": 1, "--master_addr": "127.0.0.1", "--master_port": port,
             "--epochs": 100000, "--limit": 640, "--out": out}
    nodes = []
    try:
        for rank in (0, 1):
            argv, env = command("PyTorch, several machines", sizes | {"--node_rank": rank})
            nodes.append(subprocess.Popen(argv, cwd=ROOT, env=env, text=True, start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        deadline = time.monotonic() + 120
        while not (out / "torch_checkpoint.npz").exists():
            assert time.monotonic() < deadline and nodes[0].poll() is None, "no checkpoint appeared"
            time.sleep(0.2)
        time.sleep(1.0)  # a few more epochs: the kill lands mid-training
        workers = children(nodes[1].pid)
        assert len(workers) == 1, workers
        os.kill(workers[0], signal.SIGKILL)
        stdout, stderr = nodes[0].communicate(timeout=60)  # nothing hangs
        nodes[1].communicate(timeout=60)
    finally:
        for node in nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)
                node.wait()
    assert nodes[0].returncode != 0 and nodes[1].returncode != 0
    line = next((l for l in stderr.splitlines() if l.startswith("error: rank 0 of 2 stopped:")), None)
    assert line, stderr[-3000:]
    saved = checkpoint.load(out / "torch_checkpoint.npz")  # whole: it loads
    assert f"the last checkpoint, {out / 'torch_checkpoint.npz'} (epoch " in line
    assert "is intact; to continue, run the same command with --resume" in line
    done = saved["epoch"]
    assert done >= 1 and len(saved["history"]["loss"]) == done and saved["run"]["processes"] == 2
    assert saved["scaler"]["scale"] > 0  # --amp's loss scale travels with the checkpoint
    # the same command on one machine of one process continues for two more epochs
    argv, env = command("PyTorch, several machines", sizes | {
        "--nnodes": 1, "--node_rank": 0, "--master_port": free_port(), "--epochs": done + 2})
    stdout = run(argv, env)
    assert f"resuming from {out / 'torch_checkpoint.npz'}: {done} epoch(s) done, written by 2" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == done + 2 and metrics["config"]["processes"] == 1
    assert metrics["history"]["loss"][:done] == saved["history"]["loss"]
    assert checkpoint.load(out / "torch_checkpoint.npz")["epoch"] == done + 2


# ----------------------------------------------------------------------------------------
# Keras: MirroredStrategy on 2 logical CPU devices, MultiWorkerMirroredStrategy on 2 workers
# ----------------------------------------------------------------------------------------
def keras_weights(path):
    """{torch-style name: array} of a saved Keras LeNet-5, in the order of its weights."""
    import keras
    names = [f"{layer}.{kind}" for layer in ("conv1", "conv2", "fc1", "fc2", "fc3")
             for kind in ("weight", "bias")]
    return dict(zip(names, (np.asarray(w) for w in keras.saving.load_model(path).weights)))


@pytest.fixture(scope="module")
def keras_step(first_batch, tmp_path_factory):
    """(start, one device's weights, bounds, half-batch weights) of ONE_STEP in Keras.

    The bounds come from PyTorch's float64 gradient terms of the same network: minicnn.interop
    carries the Keras weights to PyTorch, and the terms' magnitudes back to Keras' layout (HWIO
    kernels, a Flatten in (H, W, C) order).
    """
    import keras
    import tensorflow as tf
    import torch
    import minicnn as mc
    from minicnn import interop
    from reference.keras.models import build as keras_build
    from reference.torch.models import build as torch_build
    x, y = first_batch
    out = tmp_path_factory.mktemp("keras-one")
    argv, env = command("Keras, one GPU", ONE_STEP | {"--out": out})
    run(argv, env)
    one = keras_weights(out / "model.keras")
    keras.utils.set_random_seed(0)  # the script's --seed 0
    model = keras_build("lenet5")
    start = dict(zip(one, (w.numpy().copy() for w in model.weights)))
    net = interop.to_torch(interop.from_keras(model, model=mc.zoo.lenet5()), module=torch_build("lenet5"))
    sums = term_sums(net, x, y)
    carrier = torch_build("lenet5")  # the magnitudes, as if they were weights
    with torch.no_grad():
        for name, p in carrier.named_parameters():
            p.copy_(torch.from_numpy(sums[name][0]))
    in_keras = interop.to_keras(interop.from_torch(carrier, model=mc.zoo.lenet5()),
                                keras_model=keras_build("lenet5"))
    sums = {k: (np.asarray(w, dtype=np.float64), sums[k][1]) for k, w in zip(one, in_keras.weights)}
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(
            y[:32], model(x[:32].transpose(0, 2, 3, 1), training=True))
    grads = tape.gradient(loss, model.trainable_weights)
    half = {k: start[k] - LR * np.asarray(g) for k, g in zip(one, grads)}
    # the magnitudes went through float32 on the way: one rounding, covered by 1 + 2u
    return start, one, {k: b * (1 + 2 * U) for k, b in one_step_bound(one, sums).items()}, half


@pytest.mark.slow
def test_keras_mirrored_on_two_devices_steps_like_one_device(keras_step, tmp_path):
    start, one, bounds, half = keras_step
    argv, env = command("Keras, the GPUs of one machine", ONE_STEP | {"--replicas": 2, "--out": tmp_path})
    stdout = run(argv, env)
    assert "on mirrored over /cpu:0, /cpu:1" in stdout
    assert_same_step(start, one, keras_weights(tmp_path / "model.keras"), bounds, half)
    assert json.loads((tmp_path / "metrics.json").read_text())["config"]["processes"] == 2


@pytest.mark.slow
def test_keras_multiworker_on_two_workers_steps_like_one_device(keras_step, tmp_path):
    start, one, bounds, half = keras_step
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    procs = []
    try:
        for index in (0, 1):
            def cluster(variables, index=index):
                config = json.loads(variables["TF_CONFIG"])
                config["cluster"]["worker"], config["task"]["index"] = workers, index
                return variables | {"TF_CONFIG": json.dumps(config)}
            argv, env = command("Keras, several machines", ONE_STEP | {"--out": tmp_path}, cluster)
            procs.append(subprocess.Popen(argv, cwd=ROOT, env=env, text=True, start_new_session=True,
                                          stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    for p, (stdout, stderr) in zip(procs, outputs):
        assert p.returncode == 0, stderr[-5000:]
    assert "on multiworker, 2 replica(s)" in outputs[0][0] and "test accuracy" not in outputs[1][0]
    assert_same_step(start, one, keras_weights(tmp_path / "model.keras"), bounds, half)


# ----------------------------------------------------------------------------------------
# compare.py --processes
# ----------------------------------------------------------------------------------------
@pytest.mark.slow
def test_compare_trains_on_processes_from_the_same_start(fashion_mnist, tmp_path):
    stdout = run([sys.executable, "reference/compare.py", "--model", "lenet5", "--epochs", "1",
                  "--limit", "640", "--processes", "2", "--device", "cpu", "--quiet", "--out",
                  str(tmp_path)], timeout=300)
    result = json.loads((tmp_path / "comparison.json").read_text())
    rows = {row["framework"]: row for row in result["rows"]}
    assert {fw: row["processes"] for fw, row in rows.items()} == {"minicnn": 1, "torch": 2, "keras": 2}
    assert "| PyTorch" in stdout and "| 2 |" in stdout and "- Processes: PyTorch trained on 2" in stdout
    assert rows["keras"]["device"] == "mirrored over CPU:0, CPU:1"
    # the first step: the same weights on the same 64 images, half on each process or replica;
    # as compare.py's own test, the three losses agree to float32 rounding
    first = {fw: losses[0] for fw, losses in result["step_losses"].items()}
    assert abs(first["torch"] - first["minicnn"]) <= 1e-5 and abs(first["keras"] - first["minicnn"]) <= 1e-5
    assert {len(losses) for losses in result["step_losses"].values()} == {640 // 64}
