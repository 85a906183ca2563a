"""minicnn.trace: the shape of every tensor at every layer, for minicnn, PyTorch and Keras models.

The shapes are checked against what the frameworks themselves report (torchinfo's
summary_list for PyTorch, model.summary() and the layers' own calls for Keras, each layer's
output_shape for minicnn), computed here; the text output of every zoo model is compared
with a golden file under tests/golden/, rewritten only by ``pytest --update-golden``.
"""
import difflib
import io
import json
import math
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import minicnn as mc
import minicnn.trace as mt
from minicnn.layers.base import Layer
from minicnn.trace.__main__ import main
from twins import keras, requires_keras, requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
GOLDEN = pathlib.Path(__file__).resolve().parent / "golden"
sys.path.insert(0, str(ROOT))  # reference/ (the zoo written in PyTorch and Keras)


def run(argv):
    """(exit status, stdout) of ``python -m minicnn.trace`` run in-process."""
    out = io.StringIO()
    return main(argv, out=out), out.getvalue()


def width(text):
    return max(len(line) for line in text.splitlines())


def leaves(trace):
    return [r for r in trace if not r.container]


def product_text(dims):
    return f"{'·'.join(str(d) for d in dims)} = {math.prod(dims)}"


# ------------------------------------------------------------------------------------------
# golden files: the text output of every zoo model
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", mc.zoo.CHAINS)
def test_golden_text(name, request):
    status, text = run([name, "--batch", "64", "--explain"])
    assert status == 0
    path = GOLDEN / f"{name}.txt"
    if request.config.getoption("--update-golden"):
        GOLDEN.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.exists(), f"{path} is missing: run  pytest tests/test_trace.py --update-golden"
    expected = path.read_text(encoding="utf-8")
    if text != expected:
        diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                              f"golden/{name}.txt", "now", lineterm=""))
        pytest.fail(f"the trace of {name} changed (pytest --update-golden rewrites it after "
                    f"review):\n{diff}")


def test_golden_files_match_the_layers_own_shapes():
    """The golden tables hold the shapes minicnn's layers compute, batch first and labelled."""
    for name in mc.zoo.CHAINS:
        model = mc.zoo.get(name)
        text = (GOLDEN / f"{name}.txt").read_text(encoding="utf-8")
        assert "N = batch = 64" in text
        assert width(text) <= 100
        for layer, src, out in model.shapes((64,) + model.spec.input_shape):
            assert any(f": {type(layer).__name__} " in line and str(list(src)) in line
                       and str(list(out)) in line for line in text.splitlines()), (name, layer)


def test_cli_runs_as_a_module():
    """The real command line, in a subprocess: same text as the golden file, exit status 0."""
    done = subprocess.run([sys.executable, "-m", "minicnn.trace", "lenet5", "--batch", "64",
                           "--explain"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "PYTHONIOENCODING": "utf-8"}, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (GOLDEN / "lenet5.txt").read_text(encoding="utf-8")


def test_import_does_not_import_torch_or_keras():
    code = ("import sys, minicnn.trace, minicnn.trace.__main__, minicnn as mc\n"
            "minicnn.trace.trace(mc.zoo.lenet5(), batch=2)\n"
            "with minicnn.trace.tracing(file=open('/dev/null', 'w')):\n"
            "    mc.zoo.lenet5()(__import__('numpy').zeros((1, 1, 28, 28)))\n"
            "print(sorted(m for m in ('torch', 'keras', 'tensorflow', 'torchinfo') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


# ------------------------------------------------------------------------------------------
# minicnn: rows, totals, the articles' numbers
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", mc.zoo.CHAINS)
def test_minicnn_rows_equal_the_layers_output_shapes(name):
    model = mc.zoo.get(name)
    trace = mt.trace(model, batch=3)
    expected = model.shapes((3,) + model.spec.input_shape)
    work = leaves(trace)
    assert [(r.type, r.input_shape, r.output_shape) for r in work] == \
        [(type(layer).__name__, src, out) for layer, src, out in expected]
    assert [r.params for r in work] == [sum(p.size for p in layer.parameters())
                                        for layer, _, _ in expected]
    assert trace.rows[0].depth == 0 and all(r.depth == 1 for r in work)
    assert trace.totals()["params"] == sum(p.size for p in model.parameters())
    # multiply-adds: every output of a conv / dense sums (C·kh·kw) or in_features products
    macs = 0
    for layer, src, out in expected:
        if isinstance(layer, (mc.Conv2D, mc.Dense)):
            macs += math.prod(out) * math.prod(layer.weight.shape[1:])
    assert trace.totals()["macs"] == macs
    assert trace.totals()["activation_bytes"] == sum(
        math.prod(out) * 4 for layer, _, out in expected if not isinstance(layer, mc.Flatten))


@pytest.mark.parametrize("name, dims", [("lenet5", (16, 5, 5)), ("rps_cnn", (32, 7, 7)),
                                        ("mnist_cnn", (64, 12, 12))])
def test_the_articles_flatten_numbers(name, dims):
    """lenet5 flattens 16·5·5 = 400, rock-paper-scissors 32·7·7 = 1568, MNIST 64·12·12 = 9216."""
    model = mc.zoo.get(name)
    status, text = run([name, "--explain"])
    assert status == 0
    assert product_text(dims) in text
    dense = next(layer for layer in model if isinstance(layer, mc.Dense))
    assert dense.in_features == math.prod(dims)  # the number the article's Dense was given


@requires_torch
@pytest.mark.parametrize("name, dims", [("lenet5", (16, 5, 5)), ("rps_cnn", (32, 7, 7)),
                                        ("mnist_cnn", (64, 12, 12))])
def test_the_articles_flatten_numbers_in_torch(name, dims):
    status, text = run([name, "--framework", "torch", "--explain"])
    assert status == 0
    assert product_text(dims) in text


def test_explain_shows_the_window_arithmetic():
    status, text = run(["lenet5", "--explain"])
    assert "H: (28 + 2·2 − 5)/1 + 1 = 28" in text
    assert "W: (14 + 2·0 − 5)/1 + 1 = 10" in text
    assert "H: (28 + 2·0 − 2)/2 + 1 = 14" in text
    status, plain = run(["lenet5"])
    assert "H: (28" not in plain


def test_summary_prints_and_returns_the_rows(capsys):
    model = mc.zoo.rps_cnn()
    trace = mt.summary(model, (3, 28, 28), batch=64)
    printed = capsys.readouterr().out
    assert printed == trace.render()
    assert trace.ok and len(trace) == len(model) + 1
    assert [r.output_shape for r in trace][1:] == [out for _, _, out in
                                                   model.shapes((64, 3, 28, 28))]
    data = trace.to_dict()
    assert data["rows"][1]["output_shape"] == [64, 16, 28, 28]
    assert data["batch"] == 64 and data["layout"] == "NCHW"


def test_nested_minicnn_sequential_has_depth_and_no_duplicates():
    inner = mc.Sequential([mc.Conv2D(1, 4, 3), mc.ReLU()])
    model = mc.Sequential([inner, mc.MaxPool2D(2), mc.Flatten(), mc.Dense(4 * 13 * 13, 2)])
    trace = mt.trace(model, (1, 28, 28), batch=2)
    assert [(r.name, r.depth) for r in trace] == [
        ("Sequential", 0), ("0", 1), ("0.0", 2), ("0.1", 2), ("1", 1), ("2", 1), ("3", 1)]
    assert trace[1].container and trace[1].output_shape == inner.output_shape((2, 1, 28, 28))


def test_frozen_parameters_are_counted_apart():
    model = mc.zoo.lenet5()
    for p in model[0].parameters():
        p.trainable = False
    trace = mt.trace(model, batch=1)
    assert trace[1].frozen == model[0].weight.size + model[0].bias.size
    assert trace[1].trainable == 0
    assert trace.totals()["frozen"] == trace[1].frozen
    assert "frozen" in trace.render().splitlines()[3]


# ------------------------------------------------------------------------------------------
# failing models: the rows up to the failure, the failing row marked, the fix
# ------------------------------------------------------------------------------------------
DESIGNED = 64  # the failing networks were written for 64×64 images and are fed 28×28 ones


def broken_minicnn(features):
    return mc.Sequential([
        mc.Conv2D(3, 16, 5, padding=2), mc.ReLU(), mc.MaxPool2D(2),
        mc.Conv2D(16, 32, 5, padding=2), mc.ReLU(), mc.MaxPool2D(2),
        mc.Flatten(), mc.Dense(features, 10), mc.ReLU(), mc.Dense(10, 3)])


def check_failure(trace, text, received_dims, expected_features, fix_words):
    received = math.prod(received_dims)
    failed = [r for r in trace if r.status == "failed"]
    assert len(failed) == 1 and trace.failure.row == failed[0].index
    row = failed[0]
    assert row.input_shape[-1] == received
    assert all(r.status == "ok" for r in trace if r.index < row.index and not r.container)
    assert all(r.index <= row.index for r in trace)  # nothing after the failure
    fix = trace.failure.fix[0]
    assert f"received {received} = {'·'.join(map(str, received_dims))}" in fix
    for words in fix_words:
        assert words in fix, fix
    assert str(expected_features) in trace.failure.expected
    assert "✗ failed" in text and "fix: " in text
    assert width(text) <= 100


def test_failing_minicnn_model():
    model = broken_minicnn(32 * (DESIGNED // 4) ** 2)
    trace = mt.trace(model, (3, 28, 28), batch=64)
    text = trace.render()
    head = mc.Sequential(model.layers[:7])  # up to the Flatten: what the Dense receives
    received_dims = head.output_shape((64, 3, 28, 28))
    src_dims = mc.Sequential(model.layers[:6]).output_shape((64, 3, 28, 28))[1:]
    assert received_dims[1] == math.prod(src_dims)
    check_failure(trace, text, src_dims, model[7].in_features,
                  [f"set in_features={received_dims[1]}", f"feed {DESIGNED}×{DESIGNED} inputs"])
    assert trace[8].type == "Dense" and len(trace) == 9  # the layers after it never ran
    for r, (layer, src, out) in zip(trace.rows[1:8], head.shapes((64, 3, 28, 28)), strict=True):
        assert (r.type, r.input_shape, r.output_shape) == (type(layer).__name__, src, out)


def test_failing_minicnn_model_prints_the_issues_example():
    """The MNIST network's Dense(9216) after the rock-paper-scissors features: 32·7·7 = 1568."""
    status, text = run([f"{__file__}:issue_example"])
    assert status == 1
    assert "Dense(in_features=9216) received 1568 = 32·7·7: set in_features=1568" in text


def issue_example():
    """Used by the test above through the command line (file.py:NAME)."""
    model = broken_minicnn(9216)
    model.spec = mc.zoo.spec("rps_cnn")
    return model


def test_failing_input_too_small_names_the_smallest_input():
    model = mc.zoo.lenet5()
    trace = mt.trace(model, (1, 8, 8), batch=1)
    assert trace.failure is not None and trace[trace.failure.row].type == "Conv2D"
    # the smallest square input that gets past that layer, found by the layers themselves
    head = mc.Sequential(model.layers[:trace.failure.row])
    smallest = next(s for s in range(1, 64) if _fits(head, s))
    assert f"at least {smallest}×{smallest}" in trace.failure.fix[0]


def _fits(model, size):
    try:
        model.output_shape((1, 1, size, size))
        return True
    except mc.ShapeError:
        return False


def test_failing_channels_fix():
    trace = mt.trace(mc.zoo.lenet5(), (3, 28, 28))
    assert "set in_channels=3, or feed 1-channel inputs" in trace.failure.fix[0]
    assert run(["lenet5", "--input-shape", "3,28,28"])[0] == 1


@requires_torch
def test_failing_torch_model():
    import torch
    from torch import nn

    class BrokenRps(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer1 = nn.Sequential(nn.Conv2d(3, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.layer2 = nn.Sequential(nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2))
            self.fc = nn.Linear(32 * (DESIGNED // 4) ** 2, 3)

        def forward(self, x):
            out = self.layer2(self.layer1(x))
            return self.fc(out.view(out.size(0), -1))

    model = BrokenRps()
    trace = mt.trace(model, (3, 28, 28), batch=64)
    with torch.no_grad():
        dims = tuple(model.layer2(model.layer1(torch.zeros(64, 3, 28, 28))).shape[1:])
    check_failure(trace, trace.render(), dims, model.fc.in_features,
                  [f"Linear(in_features={model.fc.in_features})",
                   f"set in_features={math.prod(dims)}", f"feed {DESIGNED}×{DESIGNED} inputs"])
    assert trace[trace.failure.row].name == "fc"
    assert [r.name for r in trace][-2] == "x.view"


@requires_keras
def test_failing_keras_model():
    k = keras()
    L = k.layers
    model = k.Sequential([
        k.Input((DESIGNED, DESIGNED, 3)),
        L.Conv2D(16, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Conv2D(32, 5, padding="same", activation="relu"), L.MaxPooling2D(2),
        L.Flatten(), L.Dense(3)])
    trace = mt.trace(model, (28, 28, 3), batch=64)
    features = k.Sequential(model.layers[:4])(np.zeros((64, 28, 28, 3), "float32"))
    dims = tuple(int(d) for d in features.shape[1:])   # (7, 7, 32): Keras flattens H·W·C
    check_failure(trace, trace.render(), dims, model.layers[-1].kernel.shape[0],
                  ["keras.Input(shape=(28, 28, 3))", f"takes {math.prod(dims)} features",
                   f"feed {DESIGNED}×{DESIGNED} inputs"])


# ------------------------------------------------------------------------------------------
# PyTorch: the same shapes as torchinfo, plus the functional calls
# ------------------------------------------------------------------------------------------
def compare_with_torchinfo(model, input_shape, batch):
    torchinfo = pytest.importorskip("torchinfo")
    trace = mt.trace(model, input_shape, batch)
    stats = torchinfo.summary(model, input_size=(batch,) + tuple(input_shape), verbose=0)
    called = [info for info in stats.summary_list if info.input_size]  # ModuleList: never called
    modules = [r for r in trace if not r.function]
    assert [(r.type, list(r.input_shape), list(r.output_shape)) for r in modules] == \
        [(i.class_name, i.input_size, i.output_size) for i in called]
    for r, info in zip(modules, called):
        assert (r.nested_params if r.container else r.params) == info.num_params, r.name
        if not r.container:
            assert r.trainable == info.trainable_params, r.name
        if r.type in ("Conv2d", "Linear"):
            # torchinfo counts the bias as one more multiply-add per output element
            bias = math.prod(r.output_shape) if info.module.bias is not None else 0
            assert r.macs + bias == info.macs, r.name
    return trace, called


@requires_torch
@pytest.mark.parametrize("name", [n for n in mc.zoo.NAMES if n != "resnet50_keras"])
def test_torch_zoo_matches_torchinfo(name):
    from reference.torch.models import build
    model = build(name)
    trace, called = compare_with_torchinfo(model, mc.zoo.spec(name).input_shape, 4)
    assert [r.depth for r in trace if not r.function] == [i.depth for i in called]
    # the same network as minicnn's: same parameter counts, layer by layer, same output
    ours = mt.trace(mc.zoo.get(name), batch=4)
    assert [r.params for r in leaves(trace) if r.params] == \
        [r.params for r in leaves(ours) if r.params]
    assert trace.output_shape == ours.output_shape


@requires_torch
def test_torch_functional_calls_get_rows_and_leaf_internals_do_not():
    from reference.torch.models import build
    trace = mt.trace(build("lenet5"), (1, 28, 28), batch=2)
    names = [r.name for r in trace if r.function]
    assert names == ["F.relu", "F.avg_pool2d", "F.relu", "F.avg_pool2d", "torch.flatten",
                     "F.relu", "F.relu"]
    assert not any(n in names for n in ("F.conv2d", "F.linear", "torch.conv2d"))
    flatten = next(r for r in trace if r.name == "torch.flatten")
    assert flatten.shared and flatten.memory == 0  # a view: no new memory
    assert flatten.explain == [product_text(flatten.input_shape[1:])]


@requires_torch
def test_torch_nested_containers_modulelist_and_residual():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv1 = nn.Conv2d(c, c, 3, padding=1)
            self.bn = nn.BatchNorm2d(c)
            self.conv2 = nn.Conv2d(c, c, 3, padding=1)

        def forward(self, x):
            return F.relu(x + self.conv2(F.relu(self.bn(self.conv1(x)))))

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU()),
                                      nn.MaxPool2d(2, ceil_mode=True))
            self.blocks = nn.ModuleList([Block(8), Block(8)])
            self.head = nn.Linear(8 * 14 * 14, 10)
            for p in self.stem.parameters():
                p.requires_grad_(False)

        def forward(self, x):
            x = self.stem(x)
            for block in self.blocks:
                x = block(x)
            return self.head(torch.flatten(x, 1))

    model = Net()
    trace, called = compare_with_torchinfo(model, (1, 28, 28), 4)
    modules = [r for r in trace if not r.function]
    assert len({r.name for r in modules}) == len(modules)  # each module once: no duplicates
    assert [(r.name, r.depth) for r in modules][:6] == [
        ("Net", 0), ("stem", 1), ("stem.0", 2), ("stem.0.0", 3), ("stem.0.1", 3), ("stem.1", 2)]
    blocks = [r for r in trace if r.type == "Block"]
    assert [r.name for r in blocks] == ["blocks.0", "blocks.1"]
    for block in blocks:  # the residual sum and the functional relus are rows inside the block
        inside = [r.label for r in trace if r.parent == block.index]
        assert inside == ["conv1: Conv2d", "bn: BatchNorm2d", "F.relu", "conv2: Conv2d", "x.add",
                          "F.relu"]
    assert trace.frozen == sum(p.numel() for p in model.stem.parameters())
    assert trace.totals()["trainable"] == sum(p.numel() for p in model.parameters()
                                              if p.requires_grad)
    text = trace.render(explain=True)
    assert "frozen" in text and width(text) <= 100
    assert "H: ⌈(28 + 2·0 − 2)/2⌉ + 1 = 14" in text  # ceil_mode pooling


@requires_torch
def test_torch_view_that_folds_the_batch_is_flagged():
    from torch import nn

    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 4, 3)
            self.fc = nn.Linear(4 * 13 * 13, 2)

        def forward(self, x):
            return self.fc(self.conv(x).view(-1, 4 * 13 * 13))

    trace = mt.trace(Bad(), (1, 15, 15), batch=4)  # 4·13·13 per sample: the batch survives
    assert trace.ok
    trace = mt.trace(Bad(), (1, 28, 28), batch=13)  # 13·4·26·26 = 52·676: batch 13 → 52
    view = next(r for r in trace if r.name == "x.view")
    assert view.output_shape[0] != 13 and any("batch dimension changed" in x for x in view.explain)


# ------------------------------------------------------------------------------------------
# Keras: the same shapes as model.summary(), NHWC, subclassed models with real shapes
# ------------------------------------------------------------------------------------------
def keras_summary_rows(model):
    """[(name, type, output shape, params), ...] read from model.summary()'s table.

    Keras draws it with box characters and wraps long names onto a second line: the lines
    between two rules are one row, their cells joined column by column.
    """
    lines = []
    model.summary(print_fn=lambda line, **kwargs: lines.append(line))
    rows, block = [], []
    for line in "\n".join(lines).splitlines() + ["└"]:
        if line.startswith(("├", "└")):
            if block:
                cells = [" ".join(part) for part in zip(*block)]
                name, kind = re.fullmatch(r"(\S+)\s*\((\w+)\)", " ".join(cells[0].split())).groups()
                dims = tuple(None if d.strip() == "None" else int(d)
                             for d in cells[1].strip().strip("()").split(","))
                rows.append((name, kind, dims, int(cells[2].strip().replace(",", ""))))
            block = []
        elif line.startswith("│"):
            block.append([c.strip() for c in line.strip().strip("│").split("│")])
    return rows


@requires_keras
@pytest.mark.parametrize("name", mc.zoo.CHAINS)
def test_keras_zoo_matches_model_summary(name):
    from reference.keras.models import build
    model = build(name)
    trace = mt.trace(model, batch=4)
    summary = keras_summary_rows(model)
    assert summary and len(summary) == len(model.layers)
    assert [(r.name, r.type, (None,) + r.output_shape[1:], r.params) for r in leaves(trace)] == \
        summary
    assert trace.layout == "NHWC"
    # the same network as minicnn's, channels last
    ours = mt.trace(mc.zoo.get(name), batch=4)
    assert [r.params for r in leaves(trace) if r.params] == \
        [r.params for r in leaves(ours) if r.params]
    s = ours.output_shape
    assert trace.output_shape == (s if len(s) == 2 else (s[0], s[2], s[3], s[1]))


@requires_keras
def test_keras_subclassed_model_shows_real_shapes():
    k = keras()
    L = k.layers

    class Net(k.Model):
        def __init__(self):
            super().__init__()
            self.conv = L.Conv2D(4, 3, activation="relu")
            self.pool = L.MaxPooling2D(2)
            self.head = k.Sequential([L.Flatten(), L.Dense(5)])

        def call(self, x):
            return self.head(self.pool(self.conv(x)))

    model = Net()
    trace = mt.trace(model, (28, 28, 1), batch=2)
    x = np.zeros((2, 28, 28, 1), "float32")
    a = model.conv(x)
    b = model.pool(a)
    c = model.head.layers[0](b)
    d = model.head.layers[1](c)
    expected = [tuple(int(n) for n in t.shape) for t in (a, b, c, d)]
    work = leaves(trace)
    assert [r.output_shape for r in work] == expected
    assert all(isinstance(n, int) for r in trace for n in r.output_shape)
    assert [r.depth for r in trace] == [0, 1, 1, 1, 2, 2]
    assert trace.totals()["params"] == model.count_params()
    assert "multiple" not in trace.render() and "?" not in trace.render()


@requires_keras
def test_keras_flatten_is_h_w_c_order():
    from reference.keras.models import build
    trace = mt.trace(build("rps_cnn"), batch=1)
    flatten = next(r for r in trace if r.type == "Flatten")
    h, w, c = flatten.input_shape[1:]
    assert flatten.explain == [product_text((h, w, c))]


# ------------------------------------------------------------------------------------------
# --framework all: three frameworks side by side, parameter counts checked layer by layer
# ------------------------------------------------------------------------------------------
@requires_torch
@requires_keras
@pytest.mark.parametrize("name", ["lenet5", "mnist_cnn_keras"])
def test_framework_all(name):
    status, text = run([name, "--framework", "all", "--batch", "64", "--explain"])
    assert status == 0, text
    assert width(text) <= 100
    assert "✓ parameter counts agree layer by layer" in text
    model = mc.zoo.get(name)
    for layer, _, out in model.shapes((64,) + model.spec.input_shape):
        if len(out) == 4:  # NCHW for minicnn and PyTorch, NHWC in the Keras column
            n, c, h, w = out
            line = next(line for line in text.splitlines()
                        if f"[{n},{c},{h},{w}]" in line and type(layer).__name__ in line)
            assert f"[{n},{h},{w},{c}]" in line or "fused" in line
    status, data = run([name, "--framework", "all", "--format", "json"])
    data = json.loads(data)
    assert data["params_agree"] is True
    assert data["params"]["minicnn"] == data["params"]["torch"] == data["params"]["keras"] == \
        [sum(p.size for p in layer.parameters()) for layer in model if layer.parameters()]


@requires_torch
@requires_keras
def test_framework_all_reports_a_mismatch():
    from minicnn.trace import compare
    traces = compare.trace_all("lenet5", batch=1)
    other = mt.trace(mc.Sequential(list(mc.zoo.lenet5().layers[:-1]) + [mc.Dense(84, 9)]),
                     (1, 28, 28))
    traces["minicnn"] = other
    text = compare.render(traces)
    assert "✗ parameter counts differ" in text and "✗ params" in text
    assert not compare.agree(traces, compare.align(traces))


# ------------------------------------------------------------------------------------------
# command line: targets, formats, errors
# ------------------------------------------------------------------------------------------
NET_FILE = '''
import torch
from torch import nn
from torch.nn import functional as F
import minicnn as mc


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv(x)), 2)
        return self.fc(torch.flatten(x, 1))


model = Net()


def small():
    return mc.Sequential([mc.Conv2D(1, 2, 3), mc.Flatten(), mc.Dense(2 * 26 * 26, 3)])
'''


@requires_torch
def test_cli_file_targets(tmp_path):
    path = tmp_path / "net.py"
    path.write_text(NET_FILE)
    for target in (f"{path}:model", f"{path}:Net"):
        status, text = run([target, "--input-shape", "1,28,28", "--batch", "8", "--format",
                            "json"])
        data = json.loads(text)
        assert status == 0 and data["framework"] == "torch"
        assert [r["name"] for r in data["rows"]] == ["Net", "conv", "F.relu", "F.max_pool2d",
                                                     "torch.flatten", "fc"]
        assert data["rows"][3]["output_shape"] == [8, 4, 13, 13]
    status, text = run([f"{path}:small", "--input-shape", "1x28x28", "--format", "markdown"])
    assert status == 0
    assert text.splitlines()[4].startswith("| # | d | layer (type) | input | output |")
    assert "[1, 1352]" in text
    status, _ = run([f"{path}:model"])  # a torch model needs --input-shape
    assert status == 2
    status, _ = run([f"{path}:nothing", "--input-shape", "1,28,28"])
    assert status == 2


@requires_torch
def test_cli_module_targets():
    status, text = run(["minicnn.zoo:rps_cnn", "--format", "json"])  # spec gives the input
    assert status == 0 and json.loads(text)["input_shape"] == [1, 3, 28, 28]
    status, text = run(["reference.torch.models:MnistCNN", "--input-shape", "1,28,28",
                        "--explain"])
    assert status == 0 and product_text((64, 12, 12)) in text
    status, _ = run(["no.such.module:x"])
    assert status == 2
    status, _ = run(["lenet5", "--framework", "torch", "--format", "json"])
    assert status == 0
    with pytest.raises(SystemExit):
        run(["lenet5", "--format", "html"])


@requires_keras
def test_cli_keras_zoo_takes_c_h_w():
    status, text = run(["rps_cnn", "--framework", "keras", "--input-shape", "3,28,28",
                        "--format", "json"])
    data = json.loads(text)
    assert status == 0 and data["input_shape"] == [1, 28, 28, 3] and data["layout"] == "NHWC"
    assert data["shape_format"] == "[N, H, W, C]"


# ------------------------------------------------------------------------------------------
# tracing(): shapes printed as data flows through a real training step
# ------------------------------------------------------------------------------------------
def test_tracing_a_training_step_prints_and_restores():
    model = mc.zoo.lenet5(rng=0)
    x = np.random.default_rng(0).standard_normal((4, 1, 28, 28)).astype(np.float32)
    y = np.array([1, 2, 3, 4])
    loss = mc.CrossEntropyLoss()
    call, backward = Layer.__call__, mc.Dense.__dict__["backward"]
    out = io.StringIO()
    with mt.tracing(file=out) as events:
        loss(model(x), y)
        model.backward(loss.backward())
    assert Layer.__call__ is call and mc.Dense.__dict__["backward"] is backward
    shapes = model.shapes(x.shape)
    forward = [e for e in events if e.phase == "forward" and e.depth == 1]
    assert [(e.type, e.input_shape, e.output_shape) for e in forward] == \
        [(type(layer).__name__, src, dst) for layer, src, dst in shapes]
    back = [e for e in events if e.phase == "backward" and e.depth == 1]
    assert [(e.type, e.input_shape, e.output_shape) for e in back] == \
        [(type(layer).__name__, dst, src) for layer, src, dst in reversed(shapes)]
    text = out.getvalue()
    assert len(text.splitlines()) == len(events)
    assert "→   Conv2D" in text and "[4, 1, 28, 28] → [4, 6, 28, 28]" in text
    with mt.tracing(file=io.StringIO()) as events:  # nothing printed outside the block
        pass
    model(x)
    assert events == []


def test_tracing_restores_after_an_error():
    call = Layer.__call__
    with pytest.raises(mc.ShapeError):
        with mt.tracing(file=io.StringIO()):
            mc.zoo.lenet5()(np.zeros((1, 3, 28, 28)))
    assert Layer.__call__ is call


@requires_torch
def test_tracing_torch_modules():
    import torch
    from reference.torch.models import build
    model = build("rps_cnn")
    x = torch.zeros(2, 3, 28, 28, requires_grad=True)
    with mt.tracing(file=io.StringIO()) as events:
        model(x).sum().backward()
    linear = [e for e in events if e.framework == "torch" and e.type == "Linear"]
    assert [(e.phase, e.input_shape, e.output_shape) for e in linear] == [
        ("forward", (2, 1568), (2, 3)), ("backward", (2, 3), (2, 1568))]
    n = len(events)
    model(x)
    assert len(events) == n  # the global hooks are gone


@requires_torch
def test_torch_functional_failures_are_diagnosed():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Net(nn.Module):
        def __init__(self, view):
            super().__init__()
            self.view = view
            self.conv = nn.Conv2d(1, 4, 3)
            self.weight = nn.Parameter(torch.zeros(3, 100))

        def forward(self, x):
            x = F.max_pool2d(self.conv(x), 2)
            x = x.view(-1, 9216) if self.view else torch.flatten(x, 1)
            return F.linear(x, self.weight)

    trace = mt.trace(Net(view=True), (1, 28, 28), batch=5)  # the x.view(-1, 9216) trap
    row = trace[trace.failure.row]
    assert row.name == "x.view" and row.status == "failed"
    per_sample = math.prod(row.input_shape[1:])
    assert f"one sample holds {per_sample}" in trace.failure.fix[0]
    assert "x.view(x.size(0), -1)" in trace.failure.fix[0]

    model = Net(view=False)
    trace = mt.trace(model, (1, 3, 3), batch=5)  # too small for the 2×2 pooling
    assert trace[trace.failure.row].name == "F.max_pool2d"

    def fits(size):
        try:
            F.max_pool2d(model.conv(torch.zeros(1, 1, size, size)), 2)
            return True
        except RuntimeError:
            return False
    smallest = next(s for s in range(1, 32) if fits(s))
    assert f"at least {smallest}×{smallest}" in trace.failure.fix[0]


def test_json_and_markdown_of_a_failure():
    status, text = run([f"{__file__}:issue_example", "--format", "json"])
    data = json.loads(text)
    assert status == 1 and data["failure"]["row"] == 8
    assert data["rows"][8]["status"] == "failed" and data["rows"][0]["status"] == "unfinished"
    assert "set in_features=1568" in data["failure"]["fix"][0]
    status, text = run([f"{__file__}:issue_example", "--format", "markdown"])
    assert status == 1 and "**fix**: Dense(in_features=9216) received 1568" in text


@requires_keras
def test_tracing_keras_layers():
    from reference.keras.models import build
    k = keras()
    model = build("lenet5")
    call = k.layers.Layer.__call__
    with mt.tracing(file=io.StringIO()) as events:
        model(np.zeros((2, 28, 28, 1), "float32"))
    assert k.layers.Layer.__call__ is call
    dense = [e for e in events if e.framework == "keras" and e.type == "Dense"]
    assert [e.output_shape for e in dense] == [(2, layer.units) for layer in model.layers
                                               if isinstance(layer, k.layers.Dense)]
