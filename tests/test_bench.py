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


@pytest.fixture(scope="module")
def result():
    load_or_skip("fashion-mnist", "train")
    load_or_skip("fashion-mnist", "test")
    env = {k: v for k, v in os.environ.items() if k != "MINICNN_BENCH_THREADS"}
    done = subprocess.run([sys.executable, "-m", "minicnn.bench", "--smoke", "--json",
                           "--models", "lenet5", "--threads", "1"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


def test_one_train_and_one_predict_row_per_framework(result):
    keys = [(r["model"], r["task"], r["framework"]) for r in result["rows"]]
    assert sorted(keys) == sorted((m, t, f) for m in ["lenet5"] for t in ("train", "predict")
                                  for f in bench.FRAMEWORKS)
    assert result["threads"] == 1 and result["batch_size"] == {"train": 64, "predict": 200}


def test_rows_are_computed_from_the_measured_times(result):
    flops = 2 * bench.macs_per_sample("lenet5")
    by_key = {(r["task"], r["framework"]): r for r in result["rows"]}
    for (task, fw), r in by_key.items():
        assert len(r["times_s"]) == result["repeat"] == 2
        assert r["min_s"] == min(r["times_s"]) and r["max_s"] == max(r["times_s"])
        assert r["median_s"] == pytest.approx(sum(r["times_s"]) / 2)
        assert r["images"] == (64 * 2 if task == "train" else 200)
        assert r["images_per_s"] == pytest.approx(r["images"] / r["median_s"])
        per_image = 3 * flops if task == "train" else flops
        assert r["gflops"] == pytest.approx(r["images"] * per_image / r["median_s"] / 1e9)
        assert r["first_call_s"] > 0
        mine = by_key[(task, "minicnn")]["median_s"]
        assert r["ratio_minicnn_over"] == pytest.approx(mine / r["median_s"])


def test_table_shows_every_row_and_the_thread_count(result):
    text = bench.table(result)
    assert "threads: 1" in text
    body = [line for line in text.splitlines() if line.startswith("lenet5")]
    assert len(body) == len(result["rows"])
    for line, r in zip(body, result["rows"]):
        assert line.split()[:3] == ["lenet5", r["task"], r["framework"]]
        if r["framework"] != "minicnn":
            assert f"{r['ratio_minicnn_over']:.2f}" in line


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


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        bench.main(["--repeat", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--smoke", "--frameworks", "minicnn,caffe"])
