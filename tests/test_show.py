"""``python -m minicnn show``: the page it writes, read as a file and opened in a real browser.

A LeNet-5 is trained here for two epochs on 6000 Fashion-MNIST images (a few seconds); a test
image is saved as a PNG; the command writes the page. The browser is Debian's chromium
driven headless by Playwright (``executable_path``, never a browser Playwright downloads).
Without chromium or playwright the browser tests skip with the reason, and under
MINICNN_REQUIRE_FRAMEWORKS=1 (``make test``, which installs chromium when root) a skip fails.

``pytest tests/test_show.py --update-golden`` also rewrites the README's screenshot,
docs/show-page.png, from the page the test opens.
"""
import base64
import io
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import minicnn as mc
from minicnn.apps.cli import main
from realdata import load_or_skip
from twins import requires_torch

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
SCREENSHOT = ROOT / "docs" / "show-page.png"
#: chromium in a container: no sandbox (no user namespaces), no GPU, nothing that calls home
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def run_show(*args):
    """``python -m minicnn show ...`` in a subprocess: (exit status, stdout, stderr)."""
    done = subprocess.run([sys.executable, "-m", "minicnn", "show", *map(str, args)], cwd=ROOT,
                          env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(run folder, a Fashion-MNIST test image saved as PNG, its label)."""
    from PIL import Image
    images, labels = load_or_skip("fashion-mnist", "test")
    tmp = tmp_path_factory.mktemp("show")
    assert main(["train", "--model", "lenet5", "--dataset", "fashion-mnist", "--epochs", "2",
                 "--limit", "6000", "--lr", "2e-3", "--seed", "0", "--out", str(tmp / "run")]) == 0
    Image.fromarray(images[0]).save(tmp / "boot.png")
    return tmp / "run", tmp / "boot.png", int(labels[0])


@pytest.fixture(scope="module")
def page(trained, tmp_path_factory):
    """The folder ``show --checkpoint ... --image ... --out`` wrote."""
    run, image, _ = trained
    out = tmp_path_factory.mktemp("page")
    code, stdout, stderr = run_show("--checkpoint", run / "checkpoint.npz", "--image", image,
                                    "--out", out)
    assert code == 0, stderr
    assert f"wrote {out / 'index.html'}" in stdout
    return out


def data_uris(text):
    return re.findall(r'<img class="map" src="data:image/png;base64,([^"]+)"', text)


def test_the_page_holds_every_picture_itself_and_the_pngs_lie_beside_it(page):
    text = (page / "index.html").read_text(encoding="utf-8")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "something is fetched"
    assert "<link" not in text and "@import" not in text and "url(" not in text
    pngs = {p.read_bytes() for p in page.glob("*.png")}
    inline = [base64.b64decode(d) for d in data_uris(text)]
    # the 12 layers of LeNet-5, the input, saliency, Grad-CAM and the filters
    assert len(inline) == 16 and set(inline) == pngs, "the inline pictures are the PNGs beside it"
    assert max(len(p) for p in pngs) < 20_000, "a picture is a few kB"
    assert "image-rendering: pixelated" in text


def test_the_page_shows_what_predict_and_trace_say(page, trained):
    run, image, label = trained
    text = (page / "index.html").read_text(encoding="utf-8")
    predicted = subprocess.run([sys.executable, "-m", "minicnn", "predict", "--checkpoint",
                                str(run / "checkpoint.npz"), str(image), "--top", "1"], cwd=ROOT,
                               env=os.environ | {"PYTHONPATH": str(ROOT)}, capture_output=True,
                               text=True, check=True).stdout
    top_class, top_prob = re.search(r": (.+) (\d\.\d{3})$", predicted.strip()).groups()
    assert f"→ {top_class} ({top_prob})" in text, "the page and predict disagree on the class"
    model, _ = mc.train.checkpoint.load(str(run / "checkpoint.npz"))
    for row in mc.trace.trace(model, (1, 28, 28), batch=1):
        if row.depth == 1:
            assert f"<td><code>{tuple(row.output_shapes[0])}</code></td>" in text, row.name


def test_misclassified_gallery_lists_images_the_model_gets_wrong(trained, tmp_path):
    run, _, _ = trained
    assert main(["show", "--checkpoint", str(run / "checkpoint.npz"), "--dataset", "fashion-mnist",
                 "--misclassified", "4", "--limit", "300", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "index.html").read_text(encoding="utf-8")
    shown = [int(i) for i in re.findall(r"<figcaption>#(\d+) true", text)]
    assert len(shown) == 4
    images, labels = mc.data.load("fashion-mnist", "test")
    model, _ = mc.train.checkpoint.load(str(run / "checkpoint.npz"))
    predicted = model.predict(mc.data.to_float(images[shown])).argmax(axis=1)
    assert np.all(predicted != labels[shown]), "the gallery shows an image the model gets right"
    for i in shown:
        assert f"#{i} true <b>{mc.data.CLASSES['fashion-mnist'][labels[i]]}</b>" in text


@requires_torch
def test_show_takes_a_pytorch_class_from_a_file(tmp_path, capsys):
    (tmp_path / "net.py").write_text(
        "import torch\nfrom torch import nn\nfrom torch.nn import functional as F\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.conv = nn.Conv2d(1, 4, 3)\n"
        "        self.fc = nn.Linear(4 * 13 * 13, 10)\n\n"
        "    def forward(self, x):\n"
        "        x = F.max_pool2d(F.relu(self.conv(x)), 2)\n"
        "        return self.fc(x.view(x.size(0), -1))\n")
    from PIL import Image
    Image.fromarray(np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)).save(tmp_path / "x.png")
    assert main(["show", f"{tmp_path / 'net.py'}:Net", "--input-shape", "1,28,28", "--image",
                 str(tmp_path / "x.png"), "--out", str(tmp_path / "page")]) == 0
    text = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "a torch model, brought into minicnn" in text and "(1, 4, 13, 13)" in text
    # an op minicnn lacks: one error line naming it and its line of forward
    source = (tmp_path / "net.py").read_text().replace("F.relu(", "F.gelu(")
    (tmp_path / "gelu.py").write_text(source)
    assert main(["show", f"{tmp_path / 'gelu.py'}:Net", "--input-shape", "1,28,28", "--image",
                 str(tmp_path / "x.png"), "--out", str(tmp_path / "page2")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: from_torch: minicnn has no layer for 'gelu' at line 12 of forward()")


def test_show_draws_an_rgb_zoo_model_with_colour_filters(tmp_path):
    from PIL import Image
    rgb = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    assert main(["show", "rps_cnn", "--image", str(tmp_path / "photo.png"), "--out",
                 str(tmp_path / "page")]) == 0
    text = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "filters of the first convolution (16, 3, 5, 5)" in text and "untrained" in text
    assert "input as the model sees it (1, 3, 28, 28)" in text  # resized to the model's input
    with Image.open(tmp_path / "page" / "filters.png") as img:
        # 16 colour cells of 5×5, 8 to a row, 1-pixel gaps
        assert img.mode == "RGB" and img.size == (8 * 6 - 1, 2 * 6 - 1)


def test_a_checkpoint_saved_from_python_is_read_with_its_zoo_spec(tmp_path):
    """No metrics.json beside it (model.fit(checkpoint_path=...), lesson 08): the spec says
    the input shape and the dataset's classes; pixels are scaled to [0, 1]."""
    from PIL import Image
    mc.train.checkpoint.save(str(tmp_path / "checkpoint.npz"), mc.zoo.lenet5(rng=0))
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(tmp_path / "grey.png")
    assert main(["show", "--checkpoint", str(tmp_path / "checkpoint.npz"), "--image",
                 str(tmp_path / "grey.png"), "--out", str(tmp_path / "page")]) == 0
    text = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert "no metrics.json beside the checkpoint" in text
    names = re.findall(r"<tr><td>([^<]+)</td><td class=\"bar\">", text)
    assert len(names) == 5 and set(names) <= set(mc.data.CLASSES["fashion-mnist"]), names


def test_user_errors_are_one_error_line_and_status_2(tmp_path, capsys):
    for args, message in [((), "give --checkpoint"),
                          (("lenet5", "--misclassified", "-1"), "--misclassified takes a count"),
                          (("--checkpoint", tmp_path / "none.npz"), "no such file"),
                          ((f"{tmp_path / 'none.py'}:Net",), "no such file"),
                          (("lenet5", "--dataset", "cifar10"), "give --image FILE, or --dataset")]:
        code = main(["show", *map(str, args), "--out", str(tmp_path / "out")])
        stderr = capsys.readouterr().err
        assert code == 2 and stderr.startswith("error: ") and len(stderr.strip().splitlines()) == 1, stderr
        assert message in stderr


# ----------------------------------------------------------------------------------------
# a real browser
# ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM}: make test installs it as root "
                    f"(apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e .[test]")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def test_the_page_in_chromium(browser, page, request):
    from PIL import Image
    tab = browser.new_page(viewport={"width": 1100, "height": 760})
    errors, requests = [], []
    tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    tab.on("pageerror", lambda err: errors.append(str(err)))
    tab.on("request", lambda r: requests.append(r.url))

    def only_local(route):
        if route.request.url.startswith(("file:", "data:")):
            route.continue_()
        else:
            route.abort()
    tab.route("**/*", only_local)
    tab.goto((page / "index.html").as_uri())
    tab.wait_for_load_state("load")

    assert errors == [], errors
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
    widths = tab.eval_on_selector_all("img[src]", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
    assert len(widths) == 16 and min(widths) > 0, f"an <img> did not decode: {widths}"

    shot = tab.screenshot()
    grey = np.asarray(Image.open(io.BytesIO(shot)).convert("L"), dtype=np.float64)
    assert grey.std() > 20, f"the screenshot is blank (grey-level std {grey.std():.1f})"
    if request.config.getoption("--update-golden"):
        small = Image.open(io.BytesIO(shot)).convert("RGB")
        small = small.resize((small.width * 3 // 4, small.height * 3 // 4), Image.LANCZOS)
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        small.quantize(colors=128).save(SCREENSHOT, optimize=True)

    # a click on the saliency map enlarges it, with its values' range
    thumb = tab.locator('img.map[alt^="saliency"]')
    before = thumb.bounding_box()
    thumb.click()
    big = tab.locator("#zoom img")
    assert big.is_visible()
    after = big.bounding_box()
    assert after["width"] > 2 * before["width"], (before, after)
    assert re.search(r"values min -?[\d.e+-]+, max -?[\d.e+-]+", tab.inner_text("#zoom p"))
    tab.keyboard.press("Escape")
    assert not big.is_visible()
    assert errors == [], errors


def test_the_readme_screenshot_is_committed():
    """The README shows the page as the browser test saw it (rewritten with --update-golden)."""
    from PIL import Image
    assert SCREENSHOT.exists(), f"{SCREENSHOT} is missing: pytest tests/test_show.py --update-golden"
    with Image.open(SCREENSHOT) as img:
        assert img.format == "PNG" and img.width >= 600
    assert SCREENSHOT.stat().st_size < 150_000, "keep the screenshot small"
    assert "docs/show-page.png" in (ROOT / "README.md").read_text(encoding="utf-8")
