"""``python -m minicnn show``: one HTML page of what a network does with an image.

    python -m minicnn show --checkpoint runs/lenet5/checkpoint.npz --image shoe.png --out runs/show
    python -m minicnn show --checkpoint runs/lenet5/checkpoint.npz --dataset fashion-mnist \\
        --misclassified 16 --out runs/show
    python -m minicnn show lenet5 --dataset fashion-mnist          # a zoo model (untrained)
    python -m minicnn show net.py:Net --input-shape 1,28,28 --image shoe.png   # minicnn, torch, Keras

For each image the page shows the input as the model sees it (the checkpoint's preprocessing,
read as ``predict`` reads it), the output of every layer with the shape ``minicnn.trace``
reports (feature maps as a grid, vectors as bars), the first convolution's filters, the top 5
class probabilities, the saliency map and the Grad-CAM heat map (``minicnn.explain``);
``--misclassified N`` adds N test images the model gets wrong. It writes ``OUT/index.html``,
which holds every picture itself (data URIs, no network, no server), and the PNGs beside it.
A PyTorch or Keras model is brought in with ``minicnn.interop`` first.
"""
import html
import os
import sys
from dataclasses import dataclass

import numpy as np

from .. import data, explain, interop, zoo
from ..core.errors import ShapeError
from ..core.files import atomic_write
from ..layers import LogSoftmax, Softmax
from ..train import checkpoint as ckpt
from ..train import loop as training
from ..trace import framework_of
from ..trace import trace as trace_model
from ..trace.load import TargetError, load
from . import runs, show_page


class ShowError(ValueError):
    """A user error: printed as one ``error:`` line, exit status 2."""


@dataclass
class Subject:
    """The model on the page and how to feed it."""
    model: object
    title: str
    input_shape: tuple        # (C, H, W)
    preprocessing: dict
    classes: list
    loss: str                 # "cross_entropy", "nll" or "categorical": how to get probabilities
    dataset: str = ""         # a dataset name the images may come from
    note: str = ""


def add_options(p):
    """The ``show`` subcommand's options, on the parser the CLI made for it."""
    p.add_argument("target", nargs="?", help="a zoo name or file.py:NAME (a minicnn, PyTorch or "
                                             "Keras model); or use --checkpoint")
    p.add_argument("--checkpoint", help="runs/.../checkpoint.npz (metrics.json beside it)")
    p.add_argument("--image", action="append", default=[], help="an image file (repeatable)")
    p.add_argument("--invert", action="store_true", help="invert dark-on-light photos")
    p.add_argument("--dataset", help="mnist or fashion-mnist: the first test image when no "
                                     "--image is given, and the --misclassified gallery")
    p.add_argument("--misclassified", type=int, default=0, metavar="N",
                   help="add N test images the model gets wrong")
    p.add_argument("--limit", type=int, default=0, help="search only the first N test images")
    p.add_argument("--input-shape", help="C,H,W for a model that does not say (PyTorch)")
    p.add_argument("--data-dir", default=None, help="folder with the dataset files")
    p.add_argument("--out", default="runs/show", help="folder for index.html and its PNGs")


def _loss_of(model):
    last = model[-1] if hasattr(model, "layers") and len(model) else None
    return {Softmax: "categorical", LogSoftmax: "nll"}.get(type(last), "cross_entropy")


def _shape(text):
    try:
        shape = tuple(int(v) for v in text.split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ShowError(f"--input-shape takes C,H,W (e.g. 1,28,28), got {text!r}")
    return shape


def load_subject(args):
    """The Subject for --checkpoint, a zoo name or file.py:NAME."""
    if args.checkpoint:
        if args.target:
            raise ShowError(f"give --checkpoint or a target ({args.target}), not both")
        if not os.path.isfile(args.checkpoint):
            raise ShowError(f"--checkpoint {args.checkpoint}: no such file")
        model, _ = ckpt.load(args.checkpoint)
        title = os.path.join(os.path.basename(os.path.dirname(os.path.abspath(args.checkpoint))),
                             os.path.basename(args.checkpoint))  # the run's folder, not the whole path
        if not os.path.exists(os.path.join(os.path.dirname(args.checkpoint), "metrics.json")):
            # a checkpoint saved from Python (model.fit(checkpoint_path=...)): the zoo's spec
            spec = getattr(model, "spec", None)
            if spec is None and not args.input_shape:
                raise ShowError(f"{args.checkpoint} has no metrics.json beside it and no zoo spec: "
                                f"give --input-shape C,H,W")
            shape = _shape(args.input_shape) if args.input_shape else tuple(spec.input_shape)
            dataset = getattr(spec, "dataset", "") if getattr(spec, "dataset", "") in data.DATASETS else ""
            return Subject(model, title, shape, {"mean": None, "std": None},
                           list(data.CLASSES[dataset]) if dataset else [], _loss_of(model), dataset,
                           "no metrics.json beside the checkpoint: pixels scaled to [0, 1]")
        config = runs.run_config(args.checkpoint)
        pre = config["preprocessing"]
        return Subject(model, title, runs.input_shape(config, model), pre,
                       list(config["classes"]), config.get("loss") or _loss_of(model),
                       pre.get("dataset") if pre.get("dataset") in data.DATASETS else "")
    if not args.target:
        raise ShowError("give --checkpoint runs/.../checkpoint.npz, a zoo name or file.py:NAME")
    plain = {"mean": None, "std": None}
    if args.target in zoo.NAMES:
        spec = zoo.spec(args.target)
        model = zoo.get(args.target, rng=0)
        return Subject(model, args.target, tuple(spec.input_shape), plain, [], _loss_of(model),
                       spec.dataset if spec.dataset in data.DATASETS else "",
                       "untrained: the zoo's initial weights (seed 0); train it and pass --checkpoint")
    try:
        obj, name = load(args.target)
    except TargetError as err:
        raise ShowError(str(err)) from None
    framework = framework_of(obj)
    shape = _shape(args.input_shape) if args.input_shape else None
    try:  # a forward minicnn cannot read is the user's to change: its op and line, no traceback
        if framework == "torch":
            model = interop.from_torch(obj).eval()
        elif framework == "keras":
            model = interop.from_keras(obj).eval()
            if shape is None and obj.inputs:
                h, w, c = obj.inputs[0].shape[1:]
                shape = (c, h, w)
        else:
            model = obj
    except (TypeError, ShapeError) as err:
        raise ShowError(str(err)) from None
    spec = getattr(model, "spec", None)
    shape = shape or (tuple(spec.input_shape) if spec is not None else None)
    if shape is None:
        raise ShowError(f"{args.target}: give --input-shape C,H,W (e.g. 1,28,28)")
    return Subject(model, args.target, shape, plain, [], _loss_of(model), "",
                   f"a {framework} model, brought into minicnn with minicnn.interop"
                   if framework != "minicnn" else "")


def read_inputs(args, subject):
    """[(label, x (1, C, H, W))]: each --image, else the first test image of the dataset."""
    if args.image:
        return [(os.path.basename(path),
                 runs.read_image(path, subject.input_shape, subject.preprocessing, args.invert))
                for path in args.image]
    images, labels = _test_split(args, subject)
    names = data.CLASSES[args.dataset or subject.dataset]
    return [(f"test image 0 ({names[labels[0]]})", runs.prepare(images[:1], subject.preprocessing))]


def _test_split(args, subject):
    dataset = args.dataset or subject.dataset
    if dataset not in data.DATASETS:
        raise ShowError(f"give --image FILE, or --dataset {' or '.join(data.DATASETS)} "
                        f"(got {dataset or 'none'})")
    if subject.input_shape != (1, 28, 28):
        raise ShowError(f"{dataset} images are 1×28×28; the model takes {subject.input_shape}")
    try:
        images, labels = data.load(dataset, "test", root=args.data_dir)
    except (ValueError, data.DataError) as err:
        raise ShowError(str(err)) from None
    if args.limit:
        images, labels = images[:args.limit], labels[:args.limit]
    return images, labels


def _classes(subject, count):
    if len(subject.classes) == count:
        return subject.classes
    if subject.dataset and len(data.CLASSES[subject.dataset]) == count:
        return list(data.CLASSES[subject.dataset])
    return [f"class {i}" for i in range(count)]


def image_section(subject, shapes, label, x, index):
    """(HTML, [Picture]) for one image: input, probabilities, saliency, Grad-CAM, every layer."""
    model, p = subject.model, f"image{index}"
    outputs = explain.activations(model, x)
    scores = outputs[-1][1]
    pictures = [show_page.image(f"{p}_input.png", x[0], f"input as the model sees it {x.shape}")]
    cards = [("input", pictures[0], "")]
    title = html.escape(label)
    if scores.ndim == 2:
        probs = runs.probabilities(scores, subject.loss)[0]
        classes = _classes(subject, len(probs))
        top = int(np.argmax(probs))
        title += f" → {html.escape(str(classes[top]))} ({probs[top]:.3f})"
        grad = explain.saliency(model, x, target=top)[0]
        sal = show_page.heat(f"{p}_saliency.png", np.abs(grad).max(axis=0),
                             f"saliency of {classes[top]}: max over channels of |d logit / d x|")
        cards.append(("saliency", sal, "which pixels move the class's logit most"))
        pictures.append(sal)
        try:
            cam = explain.grad_cam(model, x, target=top)[0]
            gc = show_page.heat(f"{p}_gradcam.png", cam, f"Grad-CAM of {classes[top]}", under=x[0],
                                cmap="jet")
            cards.append(("Grad-CAM", gc, "where the last convolution's maps support the class"))
            pictures.append(gc)
        except ShapeError as err:
            cards.append(("Grad-CAM", None, f"none: {err}"))
        probs_html = show_page.probability_bars(classes, probs, 5)
    else:
        probs_html = (f"<p>the output is {scores.shape}, not class scores: no probabilities, "
                      f"saliency or Grad-CAM</p>")
    body = [f"<h2>{title}</h2>", '<div class="cards">']
    for name, pic, text in cards:
        body.append(f'<div class="card"><h3>{name}</h3>{pic.tag() if pic else ""}<p>{html.escape(text)}</p></div>')
    body.append(f'<div class="card"><h3>top 5</h3>{probs_html}</div></div>')
    body.append('<h3>every layer</h3><table class="layers">')
    for (name, out), layer in zip(outputs, model):
        shape = shapes.get(name, out.shape)
        caption = f"layer {name}: {type(layer).__name__} {shape}"
        pic = None
        if out.ndim == 4:
            pic = show_page.grid(f"{p}_layer{name}.png", out[0], caption)
        elif out.ndim == 2:
            pic = show_page.bars(f"{p}_layer{name}.png", out[0], caption)
        more = (f"<p>first {show_page.CHANNELS_MAX} of {out.shape[1]} channels</p>"
                if out.ndim == 4 and out.shape[1] > show_page.CHANNELS_MAX else "")
        body.append(f"<tr><td><b>{html.escape(name)}</b></td><td>{type(layer).__name__}</td>"
                    f"<td><code>{shape}</code></td><td>{pic.tag() if pic else ''}{more}</td></tr>")
        pictures += [pic] if pic else []
    body.append("</table>")
    return "\n".join(body), pictures


def filters_section(model):
    """(HTML, [Picture]) for the first convolution's kernels, red positive, blue negative."""
    try:
        w = explain.filters(model)
    except (ValueError, TypeError):
        return "", []
    out_c, in_c, kh, kw = w.shape
    caption = f"first convolution's filters {w.shape}"
    if in_c == 3:  # an RGB network: each filter a colour picture, grey is 0
        pic = show_page.grid("filters.png", w, caption, symmetric=True, limit=64)
        legend = "each filter as a colour picture: its weights on red, green, blue; grey is 0"
    else:
        maps = w.reshape(out_c * in_c, kh, kw)
        pic = show_page.grid("filters.png", maps, caption, cmap="RdBu_r", symmetric=True,
                             columns=in_c if in_c > 1 else 8, limit=64)
        legend = (("one row per filter, one column per input channel; " if in_c > 1 else "")
                  + "red positive, blue negative, white 0")
    shown = "" if out_c * (1 if in_c == 3 else in_c) <= 64 else " (the first 64)"
    return f"<h2>filters of the first convolution {w.shape}{shown}</h2>{pic.tag()}<p>{legend}</p>", [pic]


def misclassified_section(args, subject):
    """(HTML, [Picture]) for the first --misclassified test images the model gets wrong."""
    images, labels = _test_split(args, subject)
    x = runs.prepare(images, subject.preprocessing)
    probs = runs.probabilities(training.predict(subject.model, x), subject.loss)
    classes = _classes(subject, probs.shape[1])
    wrong = np.flatnonzero(probs.argmax(axis=1) != labels)
    body = [f"<h2>{args.misclassified} of the {len(wrong)} test images it gets wrong "
            f"(of {len(labels)}: accuracy {1 - len(wrong) / len(labels):.4f})</h2>",
            '<div class="gallery">']
    pictures = []
    for i in wrong[:args.misclassified]:
        pic = show_page.image(f"wrong{i}.png", x[i], f"test image {i}, true {classes[labels[i]]}")
        top = np.argsort(probs[i])[::-1][:3]
        guesses = "<br>".join(f"{html.escape(str(classes[j]))} {probs[i][j]:.2f}" for j in top)
        body.append(f"<figure>{pic.tag()}<figcaption>#{i} true <b>{html.escape(str(classes[labels[i]]))}"
                    f"</b><br>{guesses}</figcaption></figure>")
        pictures.append(pic)
    body.append("</div>")
    return "\n".join(body), pictures


def build(args):
    """(HTML text, [Picture]) of the whole page."""
    subject = load_subject(args)
    inputs = read_inputs(args, subject)
    trace = trace_model(subject.model, subject.input_shape, batch=1)
    shapes = {row.name: tuple(row.output_shapes[0]) for row in trace if row.depth == 1}
    body = [f"<h1>Inside {html.escape(subject.title)}</h1>",
            f"<p>input {subject.input_shape} (C, H, W); "
            f"{html.escape(subject.note) + '; ' if subject.note else ''}click a picture to enlarge "
            f"it and see its values' range.</p>"]
    pictures = []
    text, pics = filters_section(subject.model)
    body.append(text)
    pictures += pics
    for index, (label, x) in enumerate(inputs):
        text, pics = image_section(subject, shapes, label, x, index)
        body.append(text)
        pictures += pics
    if args.misclassified:
        text, pics = misclassified_section(args, subject)
        body.append(text)
        pictures += pics
    return show_page.document(f"Inside {subject.title}", "\n".join(body)), pictures


def run(args):
    """Write OUT/index.html and the PNGs; 0, or 2 after one ``error:`` line."""
    try:
        if args.misclassified < 0:
            raise ShowError(f"--misclassified takes a count >= 0, got {args.misclassified}")
        page, pictures = build(args)
    except ShowError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    os.makedirs(args.out, exist_ok=True)
    for pic in pictures:
        atomic_write(os.path.join(args.out, pic.name), lambda f, png=pic.png: f.write(png))
    atomic_write(os.path.join(args.out, "index.html"), lambda f: f.write(page.encode("utf-8")))
    print(f"wrote {os.path.join(args.out, 'index.html')} and {len(pictures)} PNGs beside it")
    return 0
