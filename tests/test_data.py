"""minicnn.data: IDX files, dataset search order and downloads, scaling, DataLoader.

No test touches the network: every test runs with a private cache (MINICNN_CACHE) and a
downloader that fails the test if called, unless the test installs a fake one.

Real-data tests read MNIST from MINICNN_DATA (else <repo>/../shared/datasets) and
Fashion-MNIST from there or Debian's /usr/share/datasets; missing data skips them, except
under MINICNN_REQUIRE_DATA=1 (Makefile/CI), where it fails them.
"""
import gzip
import hashlib
import math
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicnn
from minicnn.data import (CLASSES, DataError, DataLoader, MNIST_MEAN, MNIST_STD, dataset_mean_std,
                          load, locate, mean_std, normalize, one_hot, read_idx, to_float, write_idx)
from minicnn.data import datasets
from minicnn.data.datasets import Dataset
from minicnn.data.idx import encode_idx

REPO = Path(__file__).resolve().parents[1]
REQUIRE_DATA = os.environ.get("MINICNN_REQUIRE_DATA") == "1"


def _data_root():
    if os.environ.get("MINICNN_DATA"):
        return Path(os.environ["MINICNN_DATA"])
    fallback = REPO.parent / "shared" / "datasets"
    return fallback if fallback.is_dir() else None


DATA_ROOT = _data_root()   # read before any test edits the environment
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

# md5 of the decompressed canonical MNIST IDX files, as listed in shared/datasets/README.md
# ("Checks: the decompressed MNIST files are byte-identical to the canonical ones").
MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


def _need(ok, reason):
    if not ok:
        if REQUIRE_DATA:
            pytest.fail(f"MINICNN_REQUIRE_DATA=1 but {reason}")
        pytest.skip(reason)


def _forbidden_downloader():
    raise AssertionError("a test tried to download: nothing should reach the network")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Every test: its own cache folder, and downloads forbidden unless the test fakes one."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("MINICNN_CACHE", str(cache))
    monkeypatch.setattr(datasets, "_downloader", _forbidden_downloader)
    return cache


def _files_under(folder):
    return sorted(p for p in Path(folder).rglob("*") if p.is_file()) if Path(folder).exists() else []


# ----------------------------------------------------------------------------- IDX


IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@given(dtype=st.sampled_from(IDX_DTYPES), gz=st.booleans(), data=st.data())
def test_idx_round_trip(tmp_path_factory, dtype, gz, data):
    shape = data.draw(hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5))
    elements = st.floats(allow_nan=False, width=32 if dtype == np.float32 else 64) \
        if np.dtype(dtype).kind == "f" else None
    array = data.draw(hnp.arrays(dtype, shape, elements=elements))
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable and back.dtype.isnative
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == gz


def test_idx_layout_follows_the_spec(tmp_path):
    # Header and data built by hand from the IDX description (LeCun's MNIST page).
    write_idx(tmp_path / "u8", np.array([[1, 2, 3], [4, 5, 255]], np.uint8))
    assert (tmp_path / "u8").read_bytes() == (b"\x00\x00\x08\x02" + struct.pack(">ii", 2, 3)
                                              + bytes([1, 2, 3, 4, 5, 255]))
    raw = b"\x00\x00\x0b\x01" + struct.pack(">i", 3) + struct.pack(">hhh", -2, 300, 7)
    (tmp_path / "i16").write_bytes(raw)
    np.testing.assert_array_equal(read_idx(tmp_path / "i16"), [-2, 300, 7])
    raw = b"\x00\x00\x0d\x01" + struct.pack(">i", 2) + struct.pack(">ff", 1.5, -0.25)
    (tmp_path / "f32.gz").write_bytes(gzip.compress(raw))
    got = read_idx(tmp_path / "f32.gz")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [1.5, -0.25])


def test_gzip_is_detected_by_content_not_name(tmp_path):
    a = np.arange(12, dtype=np.int32).reshape(3, 4)
    (tmp_path / "looks-compressed.gz").write_bytes(encode_idx(a))
    (tmp_path / "looks-raw").write_bytes(gzip.compress(encode_idx(a)))
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-compressed.gz"), a)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-raw"), a)


def _good_idx():
    return encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


def _gz(data):
    return gzip.compress(data, mtime=0)


BAD_IDX = {   # name -> (file content, words the error must contain)
    "wrong-magic": (b"\x00\x01\x08\x01" + _good_idx()[4:], "magic number 0x00010801"),
    "unknown-dtype": (b"\x00\x00\x0a" + _good_idx()[3:], "magic number 0x00000A03"),
    "png": (b"\x89PNG\r\n\x1a\n" + bytes(20), "not an IDX file"),
    "too-short": (b"\x00\x00", "too short"),
    "truncated-header": (_good_idx()[:10], "truncated"),
    "truncated-data": (_good_idx()[:-5], "truncated"),
    "trailing": (_good_idx() + b"junk", "4 bytes of trailing data"),
    "corrupt-gzip-cut": (_gz(_good_idx())[:-10], "corrupt gzip"),
    "corrupt-gzip-crc": (_gz(_good_idx())[:-8] + b"\0\0\0\0" + _gz(_good_idx())[-4:], "corrupt gzip"),
    "corrupt-gzip-header": (b"\x1f\x8b\x07" + bytes(30), "corrupt gzip"),
}


@pytest.mark.parametrize("name", BAD_IDX)
def test_bad_idx_files_raise_data_error_naming_the_file(tmp_path, name):
    content, words = BAD_IDX[name]
    path = tmp_path / f"{name}-idx3-ubyte.gz"
    path.write_bytes(content)
    with pytest.raises(DataError) as info:
        read_idx(path)
    assert isinstance(info.value, ValueError)
    assert str(path) in str(info.value) and words in str(info.value)


def test_truncated_message_gives_the_arithmetic(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(_good_idx()[:-5])
    with pytest.raises(DataError, match=r"shape \(2, 3, 4\) of uint8, i\.e\. 24·1 = 24 data bytes, but the file has 19"):
        read_idx(path)


def test_write_idx_rejects_types_idx_cannot_hold(tmp_path):
    for bad in (np.arange(3, dtype=np.int64), np.ones(2, bool), np.ones(2, np.uint16)):
        with pytest.raises(DataError, match="IDX cannot store dtype"):
            write_idx(tmp_path / "x", bad)
    assert _files_under(tmp_path) == []


def test_write_idx_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "labels.gz"
    write_idx(path, np.arange(5, dtype=np.uint8))
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("disk full (simulated)")
    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        write_idx(path, np.arange(7, dtype=np.uint8))
    assert path.read_bytes() == before             # old file untouched
    assert _files_under(tmp_path) == [path]       # and no temporary left behind


# ----------------------------------------------------------------------------- real data


def _raw_md5(path):
    with gzip.open(path, "rb") as f:   # independent of minicnn's reader on purpose
        return hashlib.md5(f.read()).hexdigest()


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_mnist(split, n):
    _need(DATA_ROOT is not None and (DATA_ROOT / "mnist").is_dir(),
          f"no MNIST: set MINICNN_DATA to a folder holding mnist/ (tried {DATA_ROOT or REPO.parent / 'shared/datasets'})")
    images, labels = load("mnist", split, root=DATA_ROOT, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    assert set(np.unique(labels)) == set(range(10))
    assert images.max() == 255 and images.min() == 0
    for path in locate("mnist", split, root=DATA_ROOT, download=False):
        assert _raw_md5(path) == MNIST_RAW_MD5[path.name.removesuffix(".gz")], path


def test_real_mnist_statistics_match_the_published_constants():
    _need(DATA_ROOT is not None and (DATA_ROOT / "mnist").is_dir(), "no MNIST under MINICNN_DATA")
    # 0.1307 / 0.3081 are the values PyTorch's examples/mnist publishes, to 4 decimals.
    mean, std = dataset_mean_std("mnist", root=DATA_ROOT, download=False)
    assert round(mean, 4) == MNIST_MEAN and round(std, 4) == MNIST_STD


def _fashion_dirs():
    dirs = [DEBIAN_FASHION]
    if DATA_ROOT is not None:
        dirs.insert(0, DATA_ROOT / "fashion-mnist")
    return dirs


@pytest.mark.parametrize("split, n", [("train", 60000), ("test", 10000)])
def test_real_fashion_mnist(split, n):
    _need(any(d.is_dir() for d in _fashion_dirs()),
          "no Fashion-MNIST: apt-get install dataset-fashion-mnist, or put fashion-mnist/ under "
          f"MINICNN_DATA (looked in {', '.join(map(str, _fashion_dirs()))})")
    images, labels = load("fashion-mnist", split, root=DATA_ROOT, download=False)
    assert images.shape == (n, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (n,) and labels.dtype == np.int64
    # Fashion-MNIST is balanced by construction: n/10 images per class (its README).
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [n // 10] * 10)
    assert len(CLASSES["fashion-mnist"]) == 10 and CLASSES["fashion-mnist"][9] == "Ankle boot"


def test_fashion_mnist_found_in_debian_folder(monkeypatch):
    _need(DEBIAN_FASHION.is_dir(), f"{DEBIAN_FASHION} missing: apt-get install dataset-fashion-mnist")
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    paths = locate("fashion-mnist", "test", download=False)
    assert [p.parent for p in paths] == [DEBIAN_FASHION] * 2


def test_mnist_files_are_refused_as_fashion_mnist():
    _need(DATA_ROOT is not None and (DATA_ROOT / "mnist").is_dir(), "no MNIST under MINICNN_DATA")
    with pytest.raises(DataError, match="this is the MNIST file, not Fashion-MNIST"):
        load("fashion-mnist", "test", root=DATA_ROOT / "mnist", download=False)


def test_load_returns_copies_the_cache_cannot_be_corrupted():
    _need(DATA_ROOT is not None and (DATA_ROOT / "mnist").is_dir(), "no MNIST under MINICNN_DATA")
    images, labels = load("mnist", "test", root=DATA_ROOT, download=False)
    first = images[0].copy()
    images[0] = 0
    labels[0] = -1
    again, labels_again = load("mnist", "test", root=DATA_ROOT, download=False)
    np.testing.assert_array_equal(again[0], first)
    assert labels_again[0] != -1


# ----------------------------------------------------------------------------- search order

TINY_SIZES = {"train": 6, "test": 4}


def _tiny_bytes(split, tag):
    """gz bytes of a tiny dataset's (images, labels); every pixel equals ``tag``."""
    n = TINY_SIZES[split]
    images = np.full((n, 2, 3), tag, np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 3
    return gzip.compress(encode_idx(images), mtime=0), gzip.compress(encode_idx(labels), mtime=0)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """A registered 3-class dataset "tiny" with 2x3 images, its own URL and published md5s."""
    md5 = {}
    for split, stems in datasets.SPLITS.items():
        for stem, blob in zip(stems, _tiny_bytes(split, tag=99)):
            md5[stem + ".gz"] = hashlib.md5(blob).hexdigest()
    ds = Dataset(name="tiny", title="Tiny", url="https://example.invalid/tiny/", md5=md5,
                 classes=("a", "b", "c"), sizes=dict(TINY_SIZES), image_shape=(2, 3),
                 debian_package="dataset-tiny")
    monkeypatch.setitem(datasets.DATASETS, "tiny", ds)
    monkeypatch.setattr(datasets, "SYSTEM_DIRS", (str(tmp_path / "system"),))
    monkeypatch.delenv("MINICNN_DATA", raising=False)
    return ds


def _put(folder, split, tag, raw=False, only=None):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (stem, blob) in enumerate(zip(datasets.SPLITS[split], _tiny_bytes(split, tag))):
        if only is None or only == i:
            if raw:
                (folder / stem).write_bytes(gzip.decompress(blob))
            else:
                (folder / (stem + ".gz")).write_bytes(blob)


def _tag(**kw):
    images, labels = load("tiny", "train", **kw)
    assert images.shape == (6, 2, 3) and labels.dtype == np.int64
    return int(images[0, 0, 0])


def test_search_order_root_then_env_then_cache_then_system(tiny, tmp_path, monkeypatch, private_cache):
    root, env = tmp_path / "root", tmp_path / "env"
    _put(root / "tiny", "train", tag=1)
    _put(env / "tiny", "train", tag=2)
    _put(private_cache / "tiny", "train", tag=3)
    _put(tmp_path / "system" / "tiny", "train", tag=4)
    monkeypatch.setenv("MINICNN_DATA", str(env))
    assert _tag(root=root) == 1
    assert _tag() == 2
    monkeypatch.delenv("MINICNN_DATA")
    assert _tag() == 3
    for f in _files_under(private_cache):
        f.unlink()
    assert _tag(download=False) == 4


def test_folder_may_hold_files_directly_or_raw(tiny, tmp_path):
    _put(tmp_path / "flat", "train", tag=5)
    assert _tag(root=tmp_path / "flat") == 5
    _put(tmp_path / "raw" / "tiny", "train", tag=6, raw=True)
    assert _tag(root=tmp_path / "raw") == 6


def test_incomplete_folder_is_skipped_and_reported(tiny, tmp_path):
    _put(tmp_path / "half" / "tiny", "train", tag=1, only=0)      # images, no labels
    _put(tmp_path / "system" / "tiny", "train", tag=4)
    assert _tag(root=tmp_path / "half") == 4
    (tmp_path / "system" / "tiny" / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=r"incomplete: has train-images-idx3-ubyte\.gz; "
                                        r"missing train-labels-idx1-ubyte\[\.gz\]"):
        load("tiny", root=tmp_path / "half", download=False)


def test_nothing_found_lists_every_place_and_the_fix(tiny, tmp_path, monkeypatch, private_cache):
    monkeypatch.setenv("MINICNN_DATA", str(tmp_path / "env"))
    (tmp_path / "root").mkdir()
    with pytest.raises(DataError) as info:
        load("tiny", "test", root=tmp_path / "root", download=False)
    msg = str(info.value)
    places = [tmp_path / "root" / "tiny", tmp_path / "root", tmp_path / "env" / "tiny",
              tmp_path / "env", private_cache / "tiny", tmp_path / "system" / "tiny"]
    for i, place in enumerate(places, 1):
        assert f"{i}. " in msg and f"{place}  (" in msg, (place, msg)
    assert "7. download: https://example.invalid/tiny/" in msg and "download=False" in msg
    assert "Fix: set MINICNN_DATA=/path/to/dir containing tiny/t10k-images-idx3-ubyte.gz" in msg
    assert "apt-get install dataset-tiny" in msg


def test_unknown_names_and_splits(tiny):
    with pytest.raises(DataError, match="unknown dataset 'cifar'.*fashion-mnist, mnist"):
        load("cifar")
    with pytest.raises(DataError, match="unknown split 'valid'.*train, test"):
        load("tiny", "valid")
    assert datasets.get_dataset("Fashion_MNIST").name == "fashion-mnist"


# ----------------------------------------------------------------------------- content checks


def test_length_mismatch_names_both_files(tiny, tmp_path):
    folder = tmp_path / "d"
    _put(folder, "train", tag=1)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(5, np.uint8))
    with pytest.raises(DataError) as info:
        load("tiny", root=folder, download=False)
    msg = str(info.value)
    assert str(folder / "train-images-idx3-ubyte.gz") in msg and "6 images" in msg
    assert str(folder / "train-labels-idx1-ubyte.gz") in msg and "5 labels" in msg


@pytest.mark.parametrize("which, array, words", [
    (0, np.zeros((6, 3, 2), np.uint8), r"expected Tiny images of shape \(N, 2, 3\) uint8, got shape \(6, 3, 2\)"),
    (0, np.zeros((6, 2, 3), np.float32), "got shape \\(6, 2, 3\\) float32"),
    (1, np.zeros((6, 1), np.uint8), r"expected Tiny labels of shape \(N,\) uint8"),
    (1, np.array([0, 1, 2, 3, 0, 1], np.uint8), "label 3 out of range 0..2"),
])
def test_wrong_content_is_refused(tiny, tmp_path, which, array, words):
    folder = tmp_path / "d"
    _put(folder, "train", tag=1)
    bad = folder / (datasets.SPLITS["train"][which] + ".gz")
    write_idx(bad, array)
    with pytest.raises(DataError, match=words) as info:
        load("tiny", root=folder, download=False)
    assert str(bad) in str(info.value)


def test_wrong_sample_count_is_refused(tiny, tmp_path):
    _put(tmp_path / "d", "test", tag=1)   # 4 samples, written where 6 train samples belong
    for stem_test, stem_train in zip(datasets.SPLITS["test"], datasets.SPLITS["train"]):
        (tmp_path / "d" / (stem_test + ".gz")).rename(tmp_path / "d" / (stem_train + ".gz"))
    with pytest.raises(DataError, match="4 samples, but Tiny train has 6"):
        load("tiny", root=tmp_path / "d", download=False)


def test_local_mnist_must_match_the_canonical_content(tmp_path):
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10000, 28, 28), np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(10000, np.uint8))
    with pytest.raises(DataError, match="content differs from the canonical MNIST t10k-images-idx3-ubyte"):
        load("mnist", "test", root=tmp_path, download=False)


# ----------------------------------------------------------------------------- downloads


def _fake_downloader(payloads, calls, fail_on=None, cut=False):
    """A pooch-style downloader serving ``payloads[url]``; it can die halfway or send half."""
    def download(url, output_file, pooch_obj):
        calls.append(url)
        blob = payloads[url]
        with open(output_file, "wb") as f:
            f.write(blob[:len(blob) // 2] if (cut or url == fail_on) else blob)
        if url == fail_on:
            raise requests.exceptions.ConnectionError("connection reset (simulated)")
    return lambda: download


def _payloads(ds, split):
    return {ds.url + stem + ".gz": blob
            for stem, blob in zip(datasets.SPLITS[split], _tiny_bytes(split, tag=99))}


def test_download_only_when_nothing_local(tiny, tmp_path, monkeypatch, private_cache):
    calls = []
    monkeypatch.setattr(datasets, "_downloader", _fake_downloader(_payloads(tiny, "train"), calls))
    _put(tmp_path / "system" / "tiny", "train", tag=4)
    assert _tag() == 4 and calls == []
    for f in _files_under(tmp_path / "system"):
        f.unlink()
    assert _tag() == 99 and len(calls) == 2            # downloaded into the cache ...
    assert [p.name for p in _files_under(private_cache)] == ["train-images-idx3-ubyte.gz",
                                                             "train-labels-idx1-ubyte.gz"]
    assert _tag() == 99 and len(calls) == 2            # ... and found there next time


@pytest.mark.parametrize("mode", ["connection-dies", "truncated-body"])
def test_failed_download_leaves_nothing(tiny, monkeypatch, private_cache, mode):
    calls = []
    payloads = _payloads(tiny, "train")
    first = next(iter(payloads))
    fake = (_fake_downloader(payloads, calls, fail_on=first) if mode == "connection-dies"
            else _fake_downloader(payloads, calls, cut=True))   # hash mismatch
    monkeypatch.setattr(datasets, "_downloader", fake)
    with pytest.raises(DataError) as info:
        load("tiny")
    assert calls == [first]
    assert "download: https://example.invalid/tiny/" in str(info.value) and "failed" in str(info.value)
    assert _files_under(private_cache) == []
    assert not private_cache.exists()                  # not even the empty folder stays


def test_partial_download_keeps_only_verified_files(tiny, monkeypatch, private_cache):
    calls = []
    payloads = _payloads(tiny, "train")
    images_url, labels_url = payloads
    monkeypatch.setattr(datasets, "_downloader", _fake_downloader(payloads, calls, fail_on=labels_url))
    with pytest.raises(DataError, match="connection reset"):
        load("tiny")
    kept = _files_under(private_cache)
    assert [p.name for p in kept] == ["train-images-idx3-ubyte.gz"]   # complete, checksum verified
    assert kept[0].read_bytes() == payloads[images_url]
    # The retry fetches only what is missing.
    calls.clear()
    monkeypatch.setattr(datasets, "_downloader", _fake_downloader(payloads, calls))
    assert _tag() == 99 and calls == [labels_url]


# ----------------------------------------------------------------------------- transforms


def test_to_float_is_totensor_scaling():
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    x = to_float(images)
    assert x.shape == (5, 1, 28, 28) and x.dtype == np.float32
    np.testing.assert_array_equal(x[:, 0], images.astype(np.float32) / np.float32(255))
    assert to_float(np.array([[[0, 255]]], np.uint8)).ravel().tolist() == [0.0, 1.0]
    x64 = to_float(images[:, None].repeat(3, axis=1), dtype=np.float64)
    assert x64.shape == (5, 3, 28, 28) and x64.dtype == np.float64
    np.testing.assert_allclose(x64[:, 2], images / 255.0, rtol=1e-15)


def test_to_float_refuses_scaling_twice_and_bad_ranks():
    with pytest.raises(ValueError, match="expects uint8.*dividing by 255 twice"):
        to_float(np.zeros((2, 28, 28), np.float32))
    with pytest.raises(ValueError, match=r"\(N, H, W\) or \(N, C, H, W\).*\(28, 28\)"):
        to_float(np.zeros((28, 28), np.uint8))


def test_normalize():
    rng = np.random.default_rng(1)
    x = rng.random((4, 3, 5, 5)).astype(np.float32)
    got = normalize(x, 0.5, 0.25)
    assert got.dtype == np.float32 and got.shape == x.shape
    np.testing.assert_allclose(got, (x.astype(np.float64) - 0.5) / 0.25, rtol=1e-5, atol=1e-6)
    mean, std = [0.1, 0.2, 0.3], [0.5, 1.0, 2.0]
    x64 = x.astype(np.float64)
    got = normalize(x64, mean, std)
    assert got.dtype == np.float64
    for c in range(3):
        np.testing.assert_allclose(got[:, c], (x64[:, c] - mean[c]) / std[c], rtol=1e-12)
    with pytest.raises(ValueError, match="call to_float first"):
        normalize(np.zeros((1, 1, 2, 2), np.uint8), 0.1307, 0.3081)
    with pytest.raises(ValueError, match=r"per-channel values need \(C,\).*\(4, 3, 5, 5\)"):
        normalize(x, [0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="std must be positive"):
        normalize(x, 0.0, 0.0)


def test_normalized_data_has_zero_mean_unit_std():
    x = to_float(np.random.default_rng(2).integers(0, 256, (50, 8, 8), dtype=np.uint8), np.float64)
    m, s = mean_std(x)
    z = normalize(x, m, s)
    assert abs(z.mean()) < 1e-12 and abs(z.std() - 1) < 1e-12


@given(hnp.arrays(st.sampled_from([np.uint8, np.float32, np.float64]),
                  hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
                  elements={"min_value": 0, "max_value": 200}))
def test_mean_std_matches_numpy(x):
    m, s = mean_std(x)
    ref = x.astype(np.float64)
    np.testing.assert_allclose([m, s], [ref.mean(), ref.std()], rtol=1e-10, atol=1e-12)


def test_mean_std_per_channel():
    x = np.random.default_rng(3).random((6, 3, 4, 4))
    m, s = mean_std(x, per_channel=True)
    np.testing.assert_allclose(m, x.mean(axis=(0, 2, 3)), rtol=1e-12)
    np.testing.assert_allclose(s, x.std(axis=(0, 2, 3)), rtol=1e-12)


def test_one_hot():
    labels = np.array([2, 0, 9, 9, 4])
    got = one_hot(labels, 10)
    assert got.shape == (5, 10) and got.dtype == np.float32
    np.testing.assert_array_equal(got, np.eye(10)[labels])
    assert one_hot(np.array([], np.int64), 3).shape == (0, 3)
    with pytest.raises(ValueError, match=r"0\.\.9, got range 0\.\.10"):
        one_hot(np.array([0, 10]), 10)
    with pytest.raises(ValueError, match="integer labels"):
        one_hot(np.array([0.0, 1.0]), 10)


# ----------------------------------------------------------------------------- DataLoader


def _loader_data(n):
    y = np.arange(n)
    x = np.stack([y * 10, y * 10 + 1], axis=1)   # row i can be traced back to label i
    return x, y


@given(n=st.integers(1, 70), batch_size=st.integers(1, 20), shuffle=st.booleans(),
       seed=st.integers(0, 2**32))
def test_every_sample_once_per_epoch(n, batch_size, shuffle, seed):
    x, y = _loader_data(n)
    loader = DataLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader) == math.ceil(n / batch_size)
        assert all(len(xb) == len(yb) == batch_size for xb, yb in batches[:-1])
        seen = np.concatenate([yb for _, yb in batches])
        np.testing.assert_array_equal(np.sort(seen), y)
        for xb, yb in batches:
            np.testing.assert_array_equal(xb[:, 0], yb * 10)
        if not shuffle:
            np.testing.assert_array_equal(seen, y)


@given(n=st.integers(1, 70), batch_size=st.integers(1, 20), seed=st.integers(0, 2**32))
def test_drop_last(n, batch_size, seed):
    x, y = _loader_data(n)
    loader = DataLoader(x, y, batch_size=batch_size, drop_last=True, seed=seed)
    batches = list(loader)
    assert len(batches) == len(loader) == n // batch_size
    assert all(len(yb) == batch_size for _, yb in batches)
    seen = np.concatenate([yb for _, yb in batches]) if batches else np.array([], int)
    assert len(np.unique(seen)) == len(seen) == (n // batch_size) * batch_size


def _epoch(loader):
    return np.concatenate([yb for _, yb in loader])


def test_seeded_orders_are_reproducible_and_resumable():
    x, y = _loader_data(100)
    a = DataLoader(x, y, batch_size=7, seed=123)
    b = DataLoader(x, y, batch_size=7, seed=123)
    epochs_a = [_epoch(a) for _ in range(3)]
    epochs_b = [_epoch(b) for _ in range(3)]
    for ea, eb in zip(epochs_a, epochs_b):
        np.testing.assert_array_equal(ea, eb)
    resumed = DataLoader(x, y, batch_size=7, seed=123)
    resumed.set_epoch(2)
    np.testing.assert_array_equal(_epoch(resumed), epochs_a[2])
    assert resumed.epoch == 3
    np.testing.assert_array_equal(resumed.order(1), epochs_a[1])


def test_each_epoch_and_each_seed_reshuffle():
    x, y = _loader_data(100)
    for seed in range(5):
        loader = DataLoader(x, y, batch_size=10, seed=seed)
        e0, e1 = _epoch(loader), _epoch(loader)
        assert not np.array_equal(e0, e1)
        assert not np.array_equal(e0, y)
        other = DataLoader(x, y, batch_size=10, seed=seed + 100)
        assert not np.array_equal(_epoch(other), e0)


def test_unseeded_loader_follows_manual_seed():
    x, y = _loader_data(50)
    minicnn.manual_seed(7)
    first = _epoch(DataLoader(x, y, batch_size=8))
    minicnn.manual_seed(7)
    np.testing.assert_array_equal(_epoch(DataLoader(x, y, batch_size=8)), first)


def test_loader_rejects_bad_arguments():
    x, y = _loader_data(10)
    with pytest.raises(ValueError, match=r"same first dimension.*\(10, 2\).*\(9,\)"):
        DataLoader(x, y[:9])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="batch_size must be a positive integer"):
            DataLoader(x, y, batch_size=bad)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        DataLoader(x, y).set_epoch(-1)
