"""minicnn.data.ImageFolder on class folders written here with Pillow, and on the real photos.

The class rule is torchvision's (DatasetFolder.find_classes): the sub-folders of root, sorted by
Python's ``sorted`` (code points: upper case before lower case), numbered from 0. torchvision is
not installed here, so that rule is checked directly, and the class indices, the file order and
the decoded pixels are checked against Keras' own DirectoryIterator and load_img, which follow the
same rules for a folder without hidden entries (Keras' default resize is "nearest").
"""
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from minicnn.data import IMG_EXTENSIONS, DataError, ImageFolder, ImageFolderError
from minicnn.data.folder import cover_size

#: the real photos: $MINICNN_DATA (make test sets it), else ../shared/datasets beside the repository
RPS = Path(os.environ.get("MINICNN_DATA", Path(__file__).resolve().parents[2] / "shared" / "datasets")
           ) / "rock-paper-scissors"


def photo(h, w, channels=3, seed=0):
    """A smooth random picture (H, W, C) uint8, so that resizing filters have something to do."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    waves = [np.sin(xx / rng.uniform(2, 6) + rng.uniform(0, 6)) * np.cos(yy / rng.uniform(2, 6))
             for _ in range(channels)]
    pixels = (127.5 + 120 * np.stack(waves, axis=-1) + rng.normal(0, 6, (h, w, channels)))
    pixels = np.clip(pixels, 0, 255).astype(np.uint8)
    return pixels[..., 0] if channels == 1 else pixels


def save(path, pixels, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, **options)
    return path


def build(root, broken=False, empty=False, hidden=False):
    """A class folder dataset; returns {relative path: class name} of its readable images."""
    images = {
        "Zebra/z1.png": photo(12, 16, seed=1),
        "apple/a1.jpg": photo(20, 30, seed=2),
        "apple/a2.png": photo(15, 15, channels=1, seed=3),          # grayscale PNG
        "apple/A3.PNG": photo(9, 21, seed=4),                        # upper-case extension
        "apple/nested/a4.bmp": photo(8, 8, seed=5),                  # a sub-folder of a class
        "banana/b1.jpeg": photo(33, 17, channels=1, seed=6),         # grayscale JPEG
        "banana/b2.png": photo(10, 40, seed=7),
        "banana/b3.png": np.dstack([photo(16, 16, seed=8), np.full((16, 16), 128, np.uint8)]),  # RGBA
    }
    for rel, pixels in images.items():
        save(root / rel, pixels, **({"quality": 95} if rel.endswith((".jpg", ".jpeg")) else {}))
    (root / "apple/README.md").write_text("not an image")
    (root / "apple/.DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "notes.txt").write_text("a file next to the classes")
    if broken:
        (root / "banana/corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
        good = (root / "Zebra/z1.png").read_bytes()
        (root / "Zebra/truncated.png").write_bytes(good[: len(good) // 2])
        (root / "apple/text.png").write_text("a text file named like a picture")
    if empty:
        (root / "empty").mkdir()
        (root / "empty/notes.txt").write_text("no images here")
    if hidden:
        save(root / ".ipynb_checkpoints/x.png", photo(8, 8))
        (root / "apple/._a1.jpg").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
        save(root / "banana/.cache/b9.png", photo(8, 8))
    return {rel: rel.split("/")[0] for rel in images}


def index_of(folder, rel):
    """The sample index of the file ``rel`` (relative to the folder's root)."""
    return [p for p, _ in folder.samples].index(str(folder.root / rel))


def pillow_stretch(path, h, w, mode="RGB", resample=Image.Resampling.BILINEAR):
    """What torchvision's Resize((h, w)) does to a PIL image: Pillow's resize((w, h), BILINEAR)."""
    with Image.open(path) as img:
        pixels = np.asarray(img.convert(mode).resize((w, h), resample))
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


# ----------------------------------------------------------------------------- classes and files

def test_classes_are_sorted_subfolders_like_torchvision(tmp_path):
    build(tmp_path, empty=True)
    folder = ImageFolder(tmp_path, 8, allow_empty=True)
    names = [e.name for e in os.scandir(tmp_path) if e.is_dir()]   # torchvision's find_classes
    assert folder.classes == sorted(names) == ["Zebra", "apple", "banana", "empty"]  # "Z" < "a"
    assert folder.class_to_idx == {name: i for i, name in enumerate(sorted(names))}
    assert folder.targets == [index for _, index in folder.samples]
    assert folder.class_to_idx["empty"] not in folder.targets


def test_samples_are_the_images_in_sorted_order(tmp_path):
    readable = build(tmp_path, hidden=True)
    folder = ImageFolder(tmp_path, 8)
    rel = [os.path.relpath(p, tmp_path).replace(os.sep, "/") for p, _ in folder.samples]
    assert sorted(rel) == sorted(readable)
    assert rel == ["Zebra/z1.png", "apple/A3.PNG", "apple/a1.jpg", "apple/a2.png", "apple/nested/a4.bmp",
                   "banana/b1.jpeg", "banana/b2.png", "banana/b3.png"]   # sorted per folder, then sub-folders
    assert [folder.classes[i] for _, i in folder.samples] == [readable[r] for r in rel]
    ignored = {os.path.relpath(p, tmp_path).replace(os.sep, "/") for p in folder.ignored}
    assert ignored == {".ipynb_checkpoints", "apple/README.md", "apple/.DS_Store", "apple/._a1.jpg",
                       "banana/.cache"}
    assert ".ipynb_checkpoints" not in folder.classes
    assert len(folder) == 8 and set(IMG_EXTENSIONS) >= {".jpg", ".jpeg", ".png", ".bmp"}


def test_class_indices_and_order_equal_keras_directory_iterator(tmp_path):
    keras_image = pytest.importorskip("keras.src.legacy.preprocessing.image")
    build(tmp_path)   # no hidden entries: Keras would make a class of .ipynb_checkpoints
    ours = ImageFolder(tmp_path, 8)
    theirs = keras_image.DirectoryIterator(str(tmp_path), keras_image.ImageDataGenerator(),
                                           target_size=(8, 8), shuffle=False)
    assert ours.class_to_idx == theirs.class_indices
    assert [os.path.normpath(p) for p, _ in ours.samples] == [os.path.normpath(p) for p in theirs.filepaths]
    assert ours.targets == list(theirs.classes)


# ----------------------------------------------------------------------------- pixels

def test_stretch_is_pillow_resize_pixel_for_pixel(tmp_path):
    build(tmp_path)
    folder = ImageFolder(tmp_path, (28, 20))
    images, labels = folder.load()
    assert images.shape == (8, 3, 28, 20) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and labels.tolist() == folder.targets
    for i, (path, _) in enumerate(folder.samples):
        np.testing.assert_array_equal(images[i], pillow_stretch(path, 28, 20))
        np.testing.assert_array_equal(images[i], folder[i][0])


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic"])
@pytest.mark.parametrize("color_mode", ["rgb", "grayscale"])
def test_stretch_equals_keras_load_img(tmp_path, interpolation, color_mode):
    image_utils = pytest.importorskip("keras.src.utils.image_utils")
    build(tmp_path)
    folder = ImageFolder(tmp_path, (11, 13), color_mode=color_mode, interpolation=interpolation)
    images, _ = folder.load()
    assert images.shape == (8, 3 if color_mode == "rgb" else 1, 11, 13)
    for image, (path, _) in zip(images, folder.samples):
        keras = image_utils.img_to_array(image_utils.load_img(
            path, color_mode=color_mode, target_size=(11, 13), interpolation=interpolation),
            data_format="channels_first")
        np.testing.assert_array_equal(image, keras)


def test_grayscale_files_get_three_equal_channels_in_rgb(tmp_path):
    build(tmp_path)
    folder = ImageFolder(tmp_path, 10)
    image, label = folder[index_of(folder, "apple/a2.png")]
    assert image.shape == (3, 10, 10) and folder.classes[label] == "apple"
    np.testing.assert_array_equal(image[0], image[1])
    np.testing.assert_array_equal(image[0], image[2])
    gray = ImageFolder(tmp_path, 10, color_mode="grayscale")
    single, _ = gray[index_of(gray, "apple/a2.png")]
    assert single.shape == (1, 10, 10)
    np.testing.assert_array_equal(single[0], image[0])


@pytest.mark.parametrize("w,h,size", [(20, 40, 10), (40, 20, 10), (17, 30, 8), (31, 12, 7), (16, 16, 5)])
def test_center_crop_is_torchvision_resize_then_center_crop(tmp_path, w, h, size):
    """torchvision's Resize(size) scales the short side to size and the long one to
    int(size * long / short); CenterCrop(size) starts at int(round((side - size) / 2))."""
    path = save(tmp_path / "c/x.png", photo(h, w, seed=w + h))
    short, long = min(w, h), max(w, h)
    new_long = int(size * long / short)
    new_w, new_h = (size, new_long) if w <= h else (new_long, size)
    left, top = int(round((new_w - size) / 2.0)), int(round((new_h - size) / 2.0))
    with Image.open(path) as img:
        expected = np.asarray(img.convert("RGB").resize((new_w, new_h), Image.Resampling.BILINEAR)
                              .crop((left, top, left + size, top + size))).transpose(2, 0, 1)
    got, _ = ImageFolder(tmp_path, size, resize="center_crop")[0]
    np.testing.assert_array_equal(got, expected)
    if w == h:
        np.testing.assert_array_equal(got, ImageFolder(tmp_path, size)[0][0])


def test_cover_size_covers_the_target_and_keeps_the_ratio():
    for w, h, tw, th in [(30, 20, 10, 10), (20, 30, 12, 6), (100, 10, 5, 20), (7, 7, 3, 9), (9, 3, 9, 3)]:
        cw, ch = cover_size(w, h, tw, th)
        scale = max(tw / w, th / h)          # the smallest scale at which the image covers the target
        assert cw >= tw and ch >= th and (cw == tw or ch == th)
        assert abs(cw - w * scale) < 1 and abs(ch - h * scale) < 1


# ----------------------------------------------------------------------------- errors

def test_corrupt_file_raises_naming_it(tmp_path):
    build(tmp_path, broken=True)
    folder = ImageFolder(tmp_path, 8)
    assert len(folder) == 11   # listed by extension; found unreadable only when decoded
    with pytest.raises(ImageFolderError, match=r"cannot read .*truncated\.png as an image") as err:
        folder.load()
    assert isinstance(err.value, DataError) and isinstance(err.value, ValueError)
    with pytest.raises(ImageFolderError, match=r"corrupt\.jpg as an image: OSError"):
        folder[index_of(folder, "banana/corrupt.jpg")]
    with pytest.raises(ImageFolderError, match=r"text\.png as an image: UnidentifiedImageError"):
        folder[index_of(folder, "apple/text.png")]


def test_skip_warns_once_counting_and_naming(tmp_path):
    build(tmp_path, broken=True)
    folder = ImageFolder(tmp_path, 8, on_error="skip")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = folder.load()
    messages = [str(w.message) for w in caught if "ImageFolder" in str(w.message)]
    assert len(messages) == 1
    assert "skipped 3 of 11 files" in messages[0]
    assert all(name in messages[0] for name in ("corrupt.jpg", "truncated.png", "text.png"))
    assert sorted(Path(p).name for p, _ in folder.skipped) == ["corrupt.jpg", "text.png", "truncated.png"]
    kept = [(p, i) for p, i in folder.samples if p not in {s for s, _ in folder.skipped}]
    assert images.shape == (8, 3, 8, 8) and labels.tolist() == [i for _, i in kept]
    for image, (path, _) in zip(images, kept):
        np.testing.assert_array_equal(image, pillow_stretch(path, 8, 8))


def test_skip_with_nothing_readable_raises(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/bad.png").write_bytes(b"nope")
    with pytest.raises(ImageFolderError, match=r"none of the 1 images.*bad\.png"):
        ImageFolder(tmp_path, 4, on_error="skip").load()


def test_empty_class_is_an_error_unless_allowed(tmp_path):
    build(tmp_path, empty=True)
    with pytest.raises(ImageFolderError, match=r"1 of the 4 class folders.*empty/ \(found notes\.txt\)"
                                               r".*allow_empty=True"):
        ImageFolder(tmp_path, 8)
    folder = ImageFolder(tmp_path, 8, allow_empty=True)
    assert folder.classes[-1] == "empty" and len(folder) == 8


def test_folder_without_classes_lists_what_it_found(tmp_path):
    save(tmp_path / "cat1.jpg", photo(8, 8))
    (tmp_path / "README.md").write_text("hi")
    with pytest.raises(ImageFolderError, match=r"has no class sub-folders.*Found: README\.md, cat1\.jpg"
                                               r".*put them in a sub-folder"):
        ImageFolder(tmp_path, 8)
    with pytest.raises(ImageFolderError, match="does not exist"):
        ImageFolder(tmp_path / "nowhere", 8)
    with pytest.raises(ImageFolderError, match="is a file"):
        ImageFolder(tmp_path / "cat1.jpg", 8)


def test_classes_without_any_image_are_named(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "b/x.txt").write_text("")
    with pytest.raises(ImageFolderError, match=r"2 of the 2 class folders.*a/ \(found nothing\); "
                                               r"b/ \(found x\.txt\)"):
        ImageFolder(tmp_path, 8, allow_empty=True)


@pytest.mark.parametrize("kwargs,match", [
    (dict(image_size=(8,)), "image_size"), (dict(image_size=0), "image_size"),
    (dict(image_size=8, color_mode="rgba"), "color_mode"), (dict(image_size=8, resize="fit"), "resize"),
    (dict(image_size=8, on_error="ignore"), "on_error"), (dict(image_size=8, interpolation="area"), "interpolation")])
def test_bad_arguments(tmp_path, kwargs, match):
    build(tmp_path)
    with pytest.raises(ValueError, match=match):
        ImageFolder(tmp_path, **kwargs)


def test_progress_bar_and_repr(tmp_path, capsys):
    build(tmp_path)
    folder = ImageFolder(tmp_path, 8)
    folder.load(progress=True)
    assert "loading" in capsys.readouterr().err
    folder.load()                                       # 8 images: below PROGRESS_FROM, no bar
    assert capsys.readouterr().err == ""
    text = repr(folder)
    assert "Number of datapoints: 8" in text and "'Zebra': 0" in text


# ----------------------------------------------------------------------------- the real photos

def test_rock_paper_scissors_classes_like_the_article():
    root = RPS / "training"
    if not root.is_dir():
        if os.environ.get("MINICNN_REQUIRE_DATA") == "1":
            raise AssertionError(f"rock-paper-scissors not found at {root}")
        pytest.skip(f"rock-paper-scissors not found at {root} (set MINICNN_DATA)")
    folder = ImageFolder(root, (28, 28))
    assert folder.class_to_idx == {"paper": 0, "rock": 1, "scissors": 2}   # what the article prints
    counts = np.bincount(folder.targets)
    assert counts.tolist() == [len([f for f in os.listdir(root / c) if f.lower().endswith(IMG_EXTENSIONS)])
                               for c in folder.classes]
    picks = [0, len(folder) // 2, len(folder) - 1]
    for i in picks:
        image, _ = folder[i]
        assert image.shape == (3, 28, 28)
        np.testing.assert_array_equal(image, pillow_stretch(folder.samples[i][0], 28, 28))
