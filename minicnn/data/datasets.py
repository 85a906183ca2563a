"""MNIST and Fashion-MNIST, found locally or downloaded once into a cache.

    images, labels = load("fashion-mnist", split="train")   # (60000, 28, 28) uint8, (60000,) int64

``load`` looks for the split's two files in this order and uses the first place that has both:

1. the ``root`` argument, then the ``MINICNN_DATA`` environment variable; each may hold
   ``<name>/<file>`` (e.g. ``mnist/train-images-idx3-ubyte.gz``) or the files directly;
2. the user cache, ``pooch.os_cache("minicnn")/<name>`` (``MINICNN_CACHE`` replaces
   ``pooch.os_cache("minicnn")``);
3. Debian's ``/usr/share/datasets/<name>/`` (``apt-get install dataset-fashion-mnist``);
4. a download from the canonical URL into the cache, checked against the published md5.
   pooch downloads to a temporary file and renames it only once the checksum matches, so a
   failed or partial download never stays in the cache.

Each file may be gzip-compressed (``<file>.gz``) or raw (``<file>`` without ``.gz``).
Local copies are checked by their content, not their gzip bytes (which legitimately differ
between mirrors): shapes, sample counts, label range, and for MNIST the md5 of the
decompressed bytes.
"""
import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .idx import DataError, decode_idx, read_bytes

SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

#: Where distributions install datasets (Debian: package dataset-fashion-mnist).
SYSTEM_DIRS = ("/usr/share/datasets",)


@dataclass(frozen=True)
class Dataset:
    """Everything ``load`` needs to know about one IDX dataset."""
    name: str
    title: str
    url: str                      # base URL; the .gz file names are appended
    md5: dict                     # "<file>.gz" -> md5 of the download (as published)
    classes: tuple
    sizes: dict = field(default_factory=lambda: {"train": 60000, "test": 10000})
    image_shape: tuple = (28, 28)
    raw_md5: dict = field(default_factory=dict)   # "<file>" -> md5 of the decompressed IDX
    debian_package: str = None


DATASETS = {
    "mnist": Dataset(
        name="mnist", title="MNIST",
        # The mirror torchvision uses, with torchvision's md5s of the .gz files.
        url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={"train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
             "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
             "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
             "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c"},
        # md5 of the canonical decompressed files, as listed in shared/datasets/README.md.
        raw_md5={"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                 "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                 "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                 "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"},
        classes=tuple(str(d) for d in range(10)),
    ),
    "fashion-mnist": Dataset(
        name="fashion-mnist", title="Fashion-MNIST",
        # URL and md5s as published in the Fashion-MNIST README (zalandoresearch/fashion-mnist).
        url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={"train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
             "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
             "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
             "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310"},
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                 "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        debian_package="dataset-fashion-mnist",
    ),
}

#: Class names by dataset: ``CLASSES["fashion-mnist"][9] == "Ankle boot"``.
CLASSES = {name: ds.classes for name, ds in DATASETS.items()}


def get_dataset(name):
    """The Dataset entry for ``name`` ("mnist", "fashion-mnist"; "fashion_mnist" also works)."""
    key = str(name).lower().replace("_", "-")
    if key not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}")
    return DATASETS[key]


def cache_dir(name=None):
    """The download cache: $MINICNN_CACHE, else pooch.os_cache("minicnn"); plus /<name> if given."""
    base = os.environ.get("MINICNN_CACHE")
    if not base:
        import pooch
        base = pooch.os_cache("minicnn")
    base = Path(base).expanduser()
    return base / name if name else base


def search_dirs(name, root=None):
    """The local folders ``load`` tries, in order, as (where, folder) pairs."""
    ds = get_dataset(name)
    dirs = []
    for where, base in (("root argument", root), ("MINICNN_DATA", os.environ.get("MINICNN_DATA"))):
        if base:
            base = Path(base).expanduser()
            dirs += [(where, base / ds.name), (where, base)]
    dirs.append(("cache", cache_dir(ds.name)))
    for system in SYSTEM_DIRS:
        dirs.append((f"system ({ds.debian_package or 'no Debian package'})", Path(system) / ds.name))
    return dirs


def _find(folder, stem):
    for fname in (stem + ".gz", stem):
        path = folder / fname
        if path.is_file():
            return path
    return None


def _split_files(ds, split):
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} for {ds.title}; use one of {', '.join(SPLITS)}")
    return SPLITS[split]


def _downloader():
    """The pooch downloader (tests replace this function to simulate failures offline)."""
    import pooch
    return pooch.HTTPDownloader(progressbar=True, timeout=60)


def fetch(name, split="train"):
    """Fetch the split's two .gz files into the cache (skipping any already there and intact).

    Returns (images_path, labels_path). pooch writes each download to a temporary file in the
    cache folder and renames it only after its md5 matches, deleting it otherwise; a file
    completed before a later one failed stays, since it is verified and reusable.
    """
    import pooch
    ds = get_dataset(name)
    folder = cache_dir(ds.name)
    paths = []
    for stem in _split_files(ds, split):
        fname = stem + ".gz"
        paths.append(Path(pooch.retrieve(ds.url + fname, known_hash="md5:" + ds.md5[fname],
                                         fname=fname, path=folder, downloader=_downloader())))
    return tuple(paths)


def locate(name, split="train", root=None, download=True):
    """Paths (images, labels) of the split, searched as the module docstring says.

    Raises DataError listing every place it looked, and how to fix it, if none has the files.
    """
    return _locate(name, split, root, download)[0]


def _locate(name, split, root, download):
    """((images, labels) paths, where they were found: "MINICNN_DATA", "cache", ...)."""
    ds = get_dataset(name)
    stems = _split_files(ds, split)
    looked = []
    for where, folder in search_dirs(ds.name, root):
        found = [_find(folder, stem) for stem in stems]
        if all(found):
            return tuple(found), where
        if not folder.is_dir():
            note = "no such folder"
        elif any(found):
            note = "incomplete: has " + ", ".join(p.name for p in found if p) + "; missing " + \
                   ", ".join(s + "[.gz]" for s, p in zip(stems, found) if not p)
        else:
            note = "folder exists but has neither file"
        looked.append(f"{where}: {folder}  ({note})")
    target = f"{ds.url}{{{stems[0]}.gz, {stems[1]}.gz}} -> {cache_dir(ds.name)}"
    cause = None
    if download:
        created = [p for p in (cache_dir(ds.name), cache_dir()) if not p.exists()]
        try:
            return fetch(ds.name, split), "download"
        except (OSError, ValueError, ImportError) as e:  # requests' errors are OSErrors
            cause = e
            for p in created:  # leave no empty folders behind a failed first download
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            looked.append(f"download: {target}  (failed: {type(e).__name__}: {e})")
    else:
        looked.append(f"download: {target}  (skipped: download=False)")
    fixes = [f"set MINICNN_DATA=/path/to/dir containing {ds.name}/{stems[0]}.gz and "
             f"{ds.name}/{stems[1]}.gz"]
    if ds.debian_package:
        fixes.append(f"apt-get install {ds.debian_package}")
    fixes.append("connect to the internet" if download else "allow the download (download=True)")
    lines = "\n".join(f"  {i}. {line}" for i, line in enumerate(looked, 1))
    raise DataError(f"{ds.title} {split} files ({stems[0]}[.gz], {stems[1]}[.gz]) not found. "
                    f"Looked in:\n{lines}\nFix: {', or '.join(fixes)}.") from cause


def _read_checked(ds, path, kind):
    """Decode one file and check that its content is what the dataset says it should be."""
    data = read_bytes(path)
    digest = hashlib.md5(data).hexdigest()
    stem = path.name[:-3] if path.name.endswith(".gz") else path.name
    want = ds.raw_md5.get(stem)
    if want and digest != want:
        raise DataError(f"{path}: content differs from the canonical {ds.title} {stem} (md5 of the "
                        f"decompressed bytes {digest}, expected {want}); delete it and fetch it again")
    for other in DATASETS.values():  # e.g. MNIST files sitting where Fashion-MNIST was expected
        if other is not ds and digest in other.raw_md5.values():
            raise DataError(f"{path}: this is the {other.title} file, not {ds.title}")
    arr = decode_idx(data, str(path))
    tail = tuple(ds.image_shape) if kind == "images" else ()
    if arr.dtype != np.uint8 or arr.shape[1:] != tail or arr.ndim != 1 + len(tail):
        expected = "(N" + "".join(f", {d}" for d in tail) + ("" if tail else ",") + ")"
        raise DataError(f"{path}: expected {ds.title} {kind} of shape {expected} uint8, "
                        f"got shape {arr.shape} {arr.dtype}")
    return arr


_reported = set()


def _report(ds, img_path, lbl_path, where, root):
    """Say on stderr, once per dataset and folder, which files ``load`` reads and why there.

    A dataset read from the cache or the system folder although MINICNN_DATA (or ``root``) is
    set is the surprise worth a line: the variable's folder did not hold it.
    """
    folder = img_path.parent
    if (ds.name, folder) in _reported:
        return
    _reported.add((ds.name, folder))
    skipped = [f"{label}={base} has no {ds.name} files" for label, base in
               (("root", root), ("MINICNN_DATA", os.environ.get("MINICNN_DATA")))
               if base and where not in ("root argument", label)]
    note = f"; {', '.join(skipped)}" if skipped else ""
    print(f"minicnn: {ds.title} from {folder}/ ({img_path.name}, {lbl_path.name}; {where}{note})",
          file=sys.stderr)


# (name, split, files' path/inode/size/mtime) -> (images, labels): decoding takes ~0.5 s, a copy ~10 ms
_memory = {}
_MEMORY_ENTRIES = 4


def load(name, split="train", root=None, download=True):
    """Load a dataset split as arrays.

    Args:
        name: "mnist" or "fashion-mnist".
        split: "train" (60000 samples) or "test" (10000).
        root: a folder to search first (holding ``<name>/<file>`` or the files directly).
        download: fetch into the cache if no local copy exists.
    Returns:
        images: (N, 28, 28) uint8, 0..255.
        labels: (N,) int64, 0..9 (names in ``CLASSES[name]``).
    """
    ds = get_dataset(name)
    (img_path, lbl_path), where = _locate(ds.name, split, root, download)
    _report(ds, img_path, lbl_path, where, root)
    stats = [(str(p), p.stat()) for p in (img_path, lbl_path)]
    key = (ds.name, split) + tuple((p, st.st_ino, st.st_size, st.st_mtime_ns) for p, st in stats)
    if key not in _memory:
        images = _read_checked(ds, img_path, "images")
        labels = _read_checked(ds, lbl_path, "labels")
        if len(images) != len(labels):
            raise DataError(f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} "
                            f"labels; they must come in pairs of the same length")
        if len(images) != ds.sizes[split]:
            raise DataError(f"{img_path} and {lbl_path}: {len(images)} samples, but {ds.title} {split} "
                            f"has {ds.sizes[split]}")
        if labels.max(initial=0) >= len(ds.classes):
            raise DataError(f"{lbl_path}: label {int(labels.max())} out of range 0..{len(ds.classes) - 1}")
        while len(_memory) >= _MEMORY_ENTRIES:
            _memory.pop(next(iter(_memory)))
        _memory[key] = (images, labels.astype(np.int64))
    images, labels = _memory[key]
    return images.copy(), labels.copy()  # copies: callers may modify them in place
