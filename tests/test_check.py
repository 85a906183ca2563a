"""python -m minicnn.check, proved both ways.

* minicnn's own layers, written as a learner's file, pass every kind, against minicnn, PyTorch,
  Keras and central differences; so do the exercises' stubs filled in with minicnn's code;
* every deliberately wrong layer of tests/wrong_layers/ fails, and the report names the wrong
  quantity (asserted) and, for a known pattern, the hint;
* every untouched stub fails with one "not implemented yet: Class.method" line, no traceback;
* the command line: exit 0 / 1 / 2, one ``error:`` line for bad usage; the pytest fixture.

The hypothesis budget is small (EXAMPLES configurations per check): every failure here is found
within a few examples and the passes are the point of the stress runs, not of CI.
"""
import importlib.util
import os
import pathlib
import re
import subprocess
import sys

import pytest

from minicnn.check import KINDS, check, infer_kind
from minicnn.check.__main__ import main
from minicnn.check.loading import load_target
from twins import HAVE_KERAS, HAVE_TORCH

ROOT = pathlib.Path(__file__).resolve().parent.parent
EXERCISES = ROOT / "lessons" / "exercises"
WRONG = ROOT / "tests" / "wrong_layers"
EXAMPLES = 20

# kind -> a learner's file that is minicnn's layer under the learner's class name
WRAPPED = {
    "conv2d": "class MyConv2D(minicnn.Conv2D):\n    pass\n",
    "im2col": ("from minicnn.kernels import conv_fast\n\n\nclass Conv2D(minicnn.Conv2D):\n"
               "    def im2col(self, x_pad):\n        return conv_fast.im2col(x_pad, self.kernel_size, "
               "self.stride, self.dilation)[0]\n"),
    "maxpool2d": "class MaxPool2D(minicnn.MaxPool2D):\n    pass\n",
    "avgpool2d": "class AvgPool2D(minicnn.AvgPool2D):\n    pass\n",
    "sumpool2d": "class MySumPool(minicnn.SumPool2D):\n    pass\n",
    "dense": "class Linear(minicnn.Dense):\n    pass\n",
    "batchnorm2d": "class BatchNorm2D(minicnn.BatchNorm2D):\n    pass\n",
    "cross_entropy": "class SoftmaxCrossEntropy(minicnn.CrossEntropyLoss):\n    pass\n",
    "adam": "class Adam(minicnn.optim.Adam):\n    pass\n",
}

# (exercise file, class, method) -> the stub's raise line filled in with minicnn's code
FILLED = {
    ("01_conv_forward.py", "Conv2D", "forward"): "return minicnn.Conv2D.forward(self, x)",
    ("02_conv_backward.py", "Conv2D", "backward"): "return minicnn.Conv2D.backward(self, dy)",
    ("03_maxpool.py", "MaxPool2D", "forward"): "return minicnn.MaxPool2D.forward(self, x)",
    ("03_maxpool.py", "MaxPool2D", "backward"): "return minicnn.MaxPool2D.backward(self, dy)",
    ("04_avg_sum_pool.py", "AvgPool2D", "backward"): "return minicnn.AvgPool2D.backward(self, dy)",
    ("04_avg_sum_pool.py", "SumPool2D", "backward"): "return minicnn.SumPool2D.backward(self, dy)",
    ("05_dense_backward.py", "Dense", "backward"): "return minicnn.Dense.backward(self, dy)",
    ("06_softmax_cross_entropy.py", "CrossEntropyLoss", "backward"):
        "minicnn.CrossEntropyLoss.forward(self, z, t); return minicnn.CrossEntropyLoss.backward(self)",
    ("07_im2col.py", "Conv2D", "im2col"):
        "from minicnn.kernels import conv_fast; "
        "return conv_fast.im2col(x_pad, self.kernel_size, self.stride, self.dilation)[0]",
    ("08_adam.py", "Adam", "_update"): "return minicnn.optim.Adam._update(self, p, state)",
    ("09_batchnorm_backward.py", "BatchNorm2D", "backward"):
        "return minicnn.BatchNorm2D.backward(self, dy)",
}
STUBS = sorted({(f, c) for f, c, _ in FILLED})
# the method each untouched stub reports first
FIRST_MISSING = {("03_maxpool.py", "MaxPool2D"): "forward"}

# (wrong_layers file, class, the quantity the report must name, a piece of the hint or None)
WRONG_LAYERS = [
    ("conv.py", "Conv2DOffByOne", "output", "off by one"),
    ("conv.py", "Conv2DPadOneSide", "output", "pad BOTH sides"),
    ("conv.py", "Conv2DFlippedKernel", "output", "turned by 180°"),
    ("conv.py", "Conv2DAssignNotAdd", "dx", "(=) where it must add (+=)"),
    ("conv.py", "Conv2DStrideIgnoredInDx", "dx", "the stride is ignored in dx"),
    ("conv.py", "Conv2DBiasGradAveraged", "bias.grad", "SUM of dy"),
    ("conv.py", "Conv2DWeightGradMeanOverBatch", "weight.grad", "a mean over the batch"),
    ("pool.py", "MaxPool2DEveryTie", "dx", "every tied entry"),
    ("pool.py", "MaxPool2DAssignNotAdd", "dx", "(=) where it must add (+=)"),
    ("pool.py", "MaxPool2DOffByOne", "output", "off by one"),
    ("pool.py", "AvgPool2DNotDivided", "dx", "kh·kw times too large"),
    ("pool.py", "AvgPool2DAssignNotAdd", "dx", "(=) where it must add (+=)"),
    ("pool.py", "SumPool2DDivided", "dx", "divided by kh·kw"),
    ("pool.py", "SumPool2DAssignNotAdd", "dx", "(=) where it must add (+=)"),
    ("dense_loss_adam_bn.py", "DenseWeightGradTransposed", "weight.grad", "transposed"),
    ("dense_loss_adam_bn.py", "DenseBiasGradAveraged", "bias.grad", "a mean over the batch"),
    ("dense_loss_adam_bn.py", "DenseWeightGradMeanOverBatch", "weight.grad", "a mean over the batch"),
    ("dense_loss_adam_bn.py", "CrossEntropyLossNotAveraged", "dz", "N times too large"),
    ("dense_loss_adam_bn.py", "CrossEntropyLossNoOnehot", "dz", "subtract 1 at each row's target"),
    ("dense_loss_adam_bn.py", "CrossEntropyLossUnstable", "dz", "subtract each row's maximum"),
    ("dense_loss_adam_bn.py", "AdamNoBiasCorrection", "weight after step 1", "bias correction is missing"),
    ("dense_loss_adam_bn.py", "AdamKerasEpsilon", "weight after step 1", "uncorrected sqrt(v)"),
    ("dense_loss_adam_bn.py", "AdamGradNotSquared", "weight after step 1", "instead of g²"),
    ("dense_loss_adam_bn.py", "BatchNorm2DConstantStatistics", "dx", "as constants"),
    ("dense_loss_adam_bn.py", "BatchNorm2DBiasGradAveraged", "bias.grad", "averaged over (N, H, W)"),
    ("dense_loss_adam_bn.py", "BatchNorm2DWeightGradWithoutXhat", "weight.grad", None),
    ("im2col.py", "Conv2DIm2colChannelsLast", "cols", "(kh, kw, C)"),
    ("im2col.py", "Conv2DIm2colStrideIgnored", "cols", "the stride is ignored"),
]

needs_frameworks = pytest.mark.skipif(not (HAVE_TORCH and HAVE_KERAS),
                                      reason="torch and keras are the references checked here")
needs_hypothesis = pytest.mark.skipif(importlib.util.find_spec("hypothesis") is None,
                                      reason="the checker needs hypothesis")


def learner_file(tmp_path, body, name="mine.py"):
    path = tmp_path / name
    path.write_text("import minicnn\n\n\n" + body, encoding="utf-8")
    return path


def filled_in(tmp_path, exercise):
    """The exercise's stub with every raise line of FILLED replaced by minicnn's code."""
    lines = (EXERCISES / exercise).read_text(encoding="utf-8").splitlines()
    for (f, cls, method), code in FILLED.items():
        if f != exercise:
            continue
        marker = f'raise NotImplementedError("write {cls}.{method}'
        (i,) = [i for i, line in enumerate(lines) if line.strip().startswith(marker)]
        indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
        lines[i] = indent + code
    path = tmp_path / exercise
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "minicnn.check", *args], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=600)


# -- (a) right layers pass ----------------------------------------------------------------
@needs_hypothesis
@needs_frameworks
@pytest.mark.parametrize("kind", sorted(WRAPPED))
def test_minicnn_layers_written_as_a_learner_file_pass(tmp_path, kind):
    name = re.search(r"^class (\w+)", WRAPPED[kind], re.M).group(1)
    cls = load_target(f"{learner_file(tmp_path, WRAPPED[kind])}:{name}")
    assert infer_kind(cls) == kind
    result = check(cls, examples=EXAMPLES)
    assert result.passed, str(result)
    assert {"minicnn", "torch"} <= result.used
    if kind != "adam":  # Keras' Adam is another algorithm (lesson 6); every other kind has a twin
        assert "keras" in result.used
    assert str(result).startswith(f"PASS {name} ({kind}): ")


@needs_hypothesis
@pytest.mark.parametrize("exercise, name", STUBS)
def test_filled_in_exercises_pass(tmp_path, exercise, name):
    cls = load_target(f"{filled_in(tmp_path, exercise)}:{name}")
    result = check(cls, against=("torch", "numeric") if HAVE_TORCH else ("numeric",),
                   examples=EXAMPLES)
    assert result.passed, str(result)


# written as a learner would, in loops (the wrong layers' code without their mistake): other
# summation orders than minicnn's, which the tolerances must accept, float32 included
LOOP_SOLUTIONS = {
    "conv forward": ("Conv2D", "import conv\n\n\nclass Conv2D(conv._ForwardExercise):\n"
                     "    def forward(self, x):\n        x, x_pad = self._padded(x)\n"
                     "        h_out, w_out = self.output_shape(x.shape)[2:]\n"
                     "        return conv.convolve(x_pad, self.weight.data, self._bias(), self.stride,"
                     " self.dilation, h_out, w_out)\n"),
    "conv backward": ("Conv2D", "import conv\n\n\nclass Conv2D(conv._BackwardExercise):\n"
                      "    def backward(self, dy):\n        return self.loops(dy)\n"),
    "maxpool": ("MaxPool2D", "import pool\n\n\nclass MaxPool2D(pool._MaxPoolLoops):\n    pass\n"),
    "avgpool": ("AvgPool2D", "import pool\n\n\nclass AvgPool2D(pool.AvgPool2DNotDivided):\n"
                "    def backward(self, dy):\n        dy = np.asarray(dy)\n"
                "        count = np.prod(self.kernel_size) if self.count_include_pad else self._counts\n"
                "        return pool._spread(self, dy, (dy / count).astype(dy.dtype))\n"),
    "sumpool": ("SumPool2D", "import pool\n\n\nclass SumPool2D(pool.SumPool2DDivided):\n"
                "    def backward(self, dy):\n        dy = np.asarray(dy)\n"
                "        return pool._spread(self, dy, dy)\n"),
    "dense": ("Dense", "import dense_loss_adam_bn as d\n\n\nclass Dense(d._DenseExercise):\n"
              "    def backward(self, dy):\n        dy = np.asarray(dy, dtype=self.dtype)\n"
              "        self.weight.grad = np.einsum('no,ni->oi', dy, self._x)\n"
              "        if self.bias is not None:\n            self.bias.grad = dy.sum(axis=0)\n"
              "        return np.einsum('no,oi->ni', dy, self.weight.data)\n"),
    "cross-entropy": ("CrossEntropyLoss", "import dense_loss_adam_bn as d\n\n\n"
                      "class CrossEntropyLoss(d._GivenForward):\n    def backward(self):\n"
                      "        w = 1 / len(self._z) if self.reduction == 'mean' else 1\n"
                      "        return ((self.softmax() - self.onehot()) * w).astype(self._z.dtype)\n"),
    "im2col": ("Conv2D", "import im2col\n\n\nclass Conv2D(im2col._Im2colExercise):\n"
               "    def im2col(self, x_pad):\n        w = self.windows(x_pad, self.stride)\n"
               "        return w.reshape(w.shape[0] * w.shape[1] * w.shape[2], -1)\n"),
    "adam": ("Adam", "import dense_loss_adam_bn as d\n\n\nclass Adam(d._AdamLoops):\n"
             "    def _update(self, p, state):\n        self.step_with(p, state)\n"),
    "batchnorm": ("BatchNorm2D", "import dense_loss_adam_bn as d\n\n\n"
                  "class BatchNorm2D(d._BatchNormBackward):\n    def backward(self, dy):\n"
                  "        return self.grads(dy)\n"),
}


@needs_hypothesis
@pytest.mark.parametrize("solution", sorted(LOOP_SOLUTIONS))
def test_solutions_written_in_loops_pass(tmp_path, solution):
    name, body = LOOP_SOLUTIONS[solution]
    path = learner_file(tmp_path, f"import sys\nsys.path.insert(0, {str(WRONG)!r})\n"
                                  f"import numpy as np\n{body}")
    result = check(load_target(f"{path}:{name}"),
                   against=("torch", "numeric") if HAVE_TORCH else ("numeric",), examples=EXAMPLES)
    assert result.passed, str(result)


def test_every_kind_is_wrapped_and_every_exercise_filled():
    assert set(WRAPPED) == set(KINDS)
    assert {f for f, _ in STUBS} == {p.name for p in EXERCISES.glob("*.py")}


# -- (b) wrong layers fail, naming the quantity ----------------------------------------------
@needs_hypothesis
@pytest.mark.parametrize("filename, name, quantity, hint", WRONG_LAYERS,
                         ids=[w[1] for w in WRONG_LAYERS])
def test_wrong_layers_fail_naming_the_quantity(filename, name, quantity, hint):
    cls = load_target(f"{WRONG / filename}:{name}")
    result = check(cls, against=(), examples=EXAMPLES)
    assert not result.passed, f"{name} passed: {result}"
    assert result.quantity == quantity, str(result)
    text = str(result)
    assert text.startswith(f"FAIL {name} ({infer_kind(cls)}): {quantity} is wrong")
    assert "configuration: " in text and "Traceback" not in text
    if hint is not None:
        assert "hint: " in text and hint in text, text


def test_every_wrong_layer_is_listed_and_every_exercise_has_two():
    listed = {(f, c) for f, c, _, _ in WRONG_LAYERS}
    found = {(p.name, c) for p in WRONG.glob("*.py")
             for c in re.findall(r"^class ([A-Z]\w*)", p.read_text(encoding="utf-8"), re.M)}
    assert listed == found
    kinds = {}
    for f, c, _, _ in WRONG_LAYERS:
        kinds.setdefault(infer_kind(load_target(f"{WRONG / f}:{c}")), []).append(c)
    # exercises 1 and 2 are both conv2d (forward mistakes and backward mistakes)
    assert set(kinds) == set(KINDS) and all(len(v) >= 2 for v in kinds.values())
    assert len(kinds["conv2d"]) >= 4


# -- (c) stubs: not implemented yet -------------------------------------------------------------
@needs_hypothesis
@pytest.mark.parametrize("exercise, name", STUBS)
def test_stubs_say_not_implemented_yet(exercise, name):
    cls = load_target(f"{EXERCISES / exercise}:{name}")
    result = check(cls, examples=EXAMPLES)
    assert not result.passed
    method = FIRST_MISSING.get((exercise, name)) or [m for f, c, m in FILLED
                                                      if (f, c) == (exercise, name)][0]
    assert str(result) == f"not implemented yet: {name}.{method}"


@needs_hypothesis
def test_cli_on_the_maxpool_stub_and_its_solution(tmp_path):
    """Must show: the stub prints the line; the filled-in solution passes (budget kept small)."""
    stub = run_cli("lessons/exercises/03_maxpool.py:MaxPool2D")
    assert stub.returncode == 1
    assert stub.stdout.strip() == "not implemented yet: MaxPool2D.forward"
    assert "Traceback" not in stub.stderr
    solution = filled_in(tmp_path, "03_maxpool.py")
    passed = run_cli(f"{solution}:MaxPool2D", "--examples", "15",
                     "--against", "torch,numeric" if HAVE_TORCH else "numeric")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert passed.stdout.startswith("PASS MaxPool2D (maxpool2d): output, dx agree with minicnn")
    assert len(passed.stdout.strip().splitlines()) == 1


@needs_hypothesis
def test_a_crash_is_reported_with_the_learners_line(tmp_path):
    path = learner_file(tmp_path, "class MaxPool2D(minicnn.MaxPool2D):\n"
                                  "    def backward(self, dy):\n"
                                  "        return dy[99]\n")
    result = check(load_target(f"{path}:MaxPool2D"), against=(), examples=5)
    text = str(result)
    assert text.startswith("FAIL MaxPool2D (maxpool2d): MaxPool2D.backward raised IndexError")
    assert "mine.py, line 6: return dy[99]" in text and "Traceback" not in text


# -- the command line's usage errors -----------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["nowhere.py:Conv2D"], "error: file not found: nowhere.py"),
    (["lessons/exercises/03_maxpool.py:MaxPool3D"], "error: no class 'MaxPool3D' in "),
    (["lessons/exercises/03_maxpool.py"], "error: expected FILE.py:CLASS"),
    (["lessons/exercises/03_maxpool.py:MaxPool2D", "--against", "jax"], "error: --against: unknown reference 'jax'"),
    (["lessons/exercises/03_maxpool.py:MaxPool2D", "--kind", "lstm"], "error: argument --kind: invalid choice"),
])
def test_usage_errors_exit_2_with_one_line(args, message, capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) if "--kind" in args else _nothing():
        code = main(args)
        assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


def test_a_kind_that_cannot_be_inferred_is_a_usage_error(tmp_path, capsys):
    path = learner_file(tmp_path, "class Thing:\n    pass\n")
    assert main([f"{path}:Thing"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot tell which layer Thing is") and "--kind" in err


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


# -- the pytest fixture -----------------------------------------------------------------------
@needs_hypothesis
def test_the_check_fixture(tmp_path):
    test = tmp_path / "test_mine.py"
    test.write_text(
        "import sys\nsys.path.insert(0, %r)\n" % str(WRONG)
        + "import minicnn\nfrom pool import MaxPool2DEveryTie\n\n\n"
        "class MaxPool2D(minicnn.MaxPool2D):\n    pass\n\n\n"
        "def test_right(check):\n    check(MaxPool2D, against=('numeric',), examples=5)\n\n\n"
        "def test_wrong(check):\n    check(MaxPool2DEveryTie, against=(), examples=10)\n",
        encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-p", "no:randomly", "-p", "no:minicnn_check", "-p",
                           "minicnn.check.plugin", "-n", "0", str(test)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
    assert "1 failed, 1 passed" in done.stdout, done.stdout + done.stderr
    assert "FAIL MaxPool2DEveryTie (maxpool2d): dx is wrong" in done.stdout
