"""python -m minicnn.bench: the structure of its output (never the speed)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from realdata import load_or_skip

from minicnn.apps import bench

ROOT = Path(__file__).resolve().parents[1]
MODELS = ["lenet5", "resnet_small"]


@pytest.fixture(scope="module")
def result():
    load_or_skip("fashion-mnist", "train")
    load_or_skip("fashion-mnist", "test")
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_BENCH_THREADS"}
    done = subprocess.run([sys.executable, "-m", "minicnn.bench", "--smoke", "--json",
                           "--models", ",".join(MODELS), "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def _expected_keys():
    """Every (model, task, framework): each of MODELS has a twin in reference/torch and keras."""
    return sorted((m, t, f) for m in MODELS for t in ("train", "predict") for f in bench.FRAMEWORKS)


def test_one_train_and_one_predict_row_per_framework(result):
    keys = [(r["model"], r["task"], r["framework"]) for r in result["rows"]]
    assert sorted(keys) == _expected_keys()
    assert result["threads"] == 1
    assert result["batch_size"] == {"train": 64,
                                    "predict": {"lenet5": 1000, "resnet_small": 500}}
    assert result["missing"] == []


def test_rows_are_computed_from_the_measured_times(result):
    peak = result["sgemm_peak_gflops"]
    by_key = {(r["model"], r["task"], r["framework"]): r for r in result["rows"]}
    for (model, task, fw), r in by_key.items():
        flops = 2 * bench.macs_per_sample(model)
        assert len(r["times_s"]) == result["repeat"] == 2
        assert r["min_s"] == min(r["times_s"]) and r["max_s"] == max(r["times_s"])
        assert r["median_s"] == pytest.approx(sum(r["times_s"]) / 2)
        predict_images = 200                         # --smoke: 200 test images, 1 cnn batch
        assert r["images"] == ((64 * 2 if model == "lenet5" else 64) if task == "train"
                               else predict_images)
        assert r["images_per_s"] == pytest.approx(r["images"] / r["median_s"])
        per_image = 3 * flops if task == "train" else flops
        assert r["gflops"] == pytest.approx(r["images"] * per_image / r["median_s"] / 1e9)
        assert r["sgemm_share"] == pytest.approx(r["gflops"] / peak)
        assert r["first_call_s"] > 0
        mine = by_key[(model, task, "minicnn")]["median_s"]
        assert r["ratio_minicnn_over"] == pytest.approx(mine / r["median_s"])


def test_sgemm_peak_and_cpu_are_reported(result):
    assert result["sgemm_peak_gflops"] > 0 and result["cpu"]
    text = bench.table(result)
    assert f"sgemm peak: {result['sgemm_peak_gflops']:.0f} GFLOP/s" in text
    assert f"CPU: {result['cpu']}" in text


def test_peak_memory_is_measured_per_row(result):
    """Each framework runs in its own process: every row has its own peak RSS, at least the
    size of the row's data (the training images alone are float32 arrays)."""
    for r in result["rows"]:
        assert r["peak_rss_mb"] > 1
    lenet_data_mb = 60000 * 28 * 28 * 4 / 2 ** 20     # the Fashion-MNIST training images
    for r in result["rows"]:
        if r["model"] == "lenet5":
            assert r["peak_rss_mb"] > lenet_data_mb


def test_summary_has_both_ratios_and_the_faster(result):
    by_key = {(r["model"], r["task"], r["framework"]): r for r in result["rows"]}
    assert [(s["model"], s["task"]) for s in result["summary"]] == [
        (m, t) for m in MODELS for t in ("train", "predict")]
    for s in result["summary"]:
        torch_row = by_key[(s["model"], s["task"], "torch")]
        assert s["vs_torch"] == torch_row["ratio_minicnn_over"]
        keras_row = by_key.get((s["model"], s["task"], "keras"))
        assert s["vs_keras"] == (keras_row and keras_row["ratio_minicnn_over"])
        assert s["vs_fastest"] == max(x for x in (s["vs_torch"], s["vs_keras"]) if x)
        assert set(s["peak_rss_mb"]) == ({"minicnn", "torch", "keras"} if keras_row
                                         else {"minicnn", "torch"})


def test_table_shows_every_row_and_the_thread_count(result):
    text = bench.table(result)
    assert "threads: 1" in text
    body = [line for line in text.splitlines()
            if line.split()[:1] in (["lenet5"], ["resnet_small"])
            and line.split()[2] in bench.FRAMEWORKS]
    assert len(body) == len(result["rows"])
    for line, r in zip(body, result["rows"]):
        assert line.split()[:3] == [r["model"], r["task"], r["framework"]]
        assert f"{r['peak_rss_mb']:.0f}" in line
        if r["framework"] != "minicnn":
            assert f"{r['ratio_minicnn_over']:.2f}" in line
    assert "not measured" not in text


def test_cold_compile_is_measured_from_an_empty_cache(result):
    cold = result["cold_compile"]
    assert cold["model"] == "lenet5" and 0 < cold["first_batch_s"] <= cold["all_compiled_s"]
    # an empty cache: the kernels compiled in the background, in a child process; this process
    # ran its first batch meanwhile and then only loaded what the child wrote to the cache
    assert cold["background"] and cold["compiled"] == 0 and cold["loaded"] > 0
    text = bench.table(result)
    assert f"first training batch done after {cold['first_batch_s']:.1f} s" in text
    assert f"every kernel compiled after {cold['all_compiled_s']:.1f} s" in text


def test_first_run_is_reported_apart(result):
    """The Numba kernels' compile (or cache load) happens before the timings, and is shown."""
    first = result["minicnn_first_run"]
    assert result["kernels"] == "numba" and first["seconds"] > 0
    assert first["threads"] == result["threads"] == 1 and first["threading_layer"]
    # every kernel version the warm-up needed was compiled now or loaded from the cache
    assert first["compiled"] + first["loaded"] > 0
    text = bench.table(result)
    assert f"minicnn first run (not in the table): {first['seconds']:.1f} s" in text
    assert f"loaded {first['loaded']} from Numba's cache" in text


def test_median_of_odd_and_even_counts():
    assert bench._median([3.0, 1.0, 2.0]) == 2.0
    assert bench._median([4.0, 1.0, 2.0, 3.0]) == 2.5


def test_twins_are_read_from_the_reference_models():
    assert bench.has_twin("torch", "resnet_small") and bench.has_twin("keras", "resnet_small")
    assert bench.has_twin("keras", "resnet50_keras") and not bench.has_twin("torch", "resnet50_keras")


def test_a_framework_without_the_model_is_listed_not_measured(monkeypatch):
    """resnet50_keras (keras.applications.ResNet50) has no PyTorch twin: no row, one line."""
    monkeypatch.setattr(bench, "sgemm_peak", lambda: 1.0)  # what this test does not look at
    args = bench.parser().parse_args(["--frameworks", "torch", "--models", "resnet50_keras",
                                      "--no-cold"])
    result = bench.run(args, log=lambda line: None)
    assert result["rows"] == [] and result["missing"] == [
        {"model": "resnet50_keras", "framework": "torch",
         "why": "no resnet50_keras in reference/torch/models.py"}]
    assert ("not measured: resnet50_keras torch (no resnet50_keras in reference/torch/models.py)"
            in bench.table(result))


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--repeat", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--frameworks", "minicnn,caffe"])


def test_the_frameworks_take_turns(monkeypatch):
    """Every framework's process is prepared first; then each round runs train for each
    framework, then predict for each, the order turning by one framework every round."""
    asked = []

    class Fake:
        def __init__(self, spec, args):
            self.spec = spec
            asked.append((spec, "ready"))
            self.process = type("P", (), {"poll": staticmethod(lambda: 0)})

        def ask(self, command):
            asked.append((self.spec, command))
            return {command: 1.0}

        def finish(self):
            asked.append((self.spec, "done"))
            return {"spec": self.spec}

    monkeypatch.setattr(bench, "_Worker", Fake)
    monkeypatch.setattr(bench, "_PAUSE", 0)
    args = bench.parser().parse_args(["--repeat", "2"])
    got = bench.measure_interleaved("lenet5", ["minicnn", "torch", "keras"], args,
                                    log=lambda line: None)
    assert got == {fw: {"spec": f"{fw}:lenet5"} for fw in ("minicnn", "torch", "keras")}
    m, t, k = "minicnn:lenet5", "torch:lenet5", "keras:lenet5"
    assert asked == [(m, "ready"), (t, "ready"), (k, "ready"),
                     (m, "train"), (t, "train"), (k, "train"),
                     (m, "predict"), (t, "predict"), (k, "predict"),
                     (t, "train"), (k, "train"), (m, "train"),
                     (t, "predict"), (k, "predict"), (m, "predict"),
                     (m, "done"), (t, "done"), (k, "done")]
