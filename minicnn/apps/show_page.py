"""The pictures and the HTML of ``python -m minicnn show``: arrays in, PNG bytes and one page out.

Every picture is drawn with Pillow at its own resolution (one pixel per value, 1-pixel gaps
in a grid), so a PNG stays a few kB; the page scales it up with ``image-rendering:
pixelated`` (no smoothing: a 28×28 map stays 28×28 squares) to a size readable on screen. A
click on a picture shows it large with the range of the values it draws. The page holds
everything itself: pictures as base64 data URIs, its style and a few lines of script inline,
nothing fetched from anywhere.
"""
import base64
import html
import io
import math

import numpy as np

#: the size a map is shown at on the page, at least (CSS pixels, one side)
SHOWN = 96
#: the largest cell a grid keeps (a 224×224 map is shrunk to this side in a grid)
CELL_MAX = 112
#: how many channels of a layer a grid shows at most
CHANNELS_MAX = 32


class Picture:
    """One PNG on the page: its file name, bytes, caption, value range and display width."""

    def __init__(self, name, image, caption, lo, hi, cell):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG", optimize=True)
        self.name, self.png, self.caption = name, buffer.getvalue(), caption
        self.range = f"min {lo:.4g}, max {hi:.4g}"
        self.width = image.width * max(1, min(16, math.ceil(SHOWN / max(cell, 1))))

    def tag(self):
        data = base64.b64encode(self.png).decode("ascii")
        return (f'<img class="map" src="data:image/png;base64,{data}" alt="{html.escape(self.caption)}" '
                f'data-caption="{html.escape(self.caption)}" data-range="{self.range}" '
                f'style="width:{self.width}px">')


def _limits(values, symmetric=False):
    lo, hi = float(np.min(values)), float(np.max(values))
    if symmetric:
        hi = max(abs(lo), abs(hi))
        lo = -hi
    return lo, hi


def _scaled(values, lo, hi):
    """Values -> 0..1 over [lo, hi] (a constant array is 0)."""
    return np.clip((values - lo) / (hi - lo), 0, 1) if hi > lo else np.zeros_like(values, dtype=float)


def _colour(values01, cmap):
    """0..1 (h, w) -> uint8 (h, w, 3): grey, or a matplotlib colormap (no figure is made)."""
    if cmap is None:
        grey = np.round(values01 * 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    from matplotlib import colormaps
    return np.round(colormaps[cmap](values01)[..., :3] * 255).astype(np.uint8)


def _shrink(cell, side):
    """A cell (h, w, 3) made at most ``side`` pixels on its longer side (box filter)."""
    from PIL import Image
    h, w = cell.shape[:2]
    if max(h, w) <= side:
        return cell
    scale = side / max(h, w)
    img = Image.fromarray(cell).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                       Image.BOX)
    return np.asarray(img)


def grid(name, maps, caption, cmap=None, symmetric=False, columns=8, limit=CHANNELS_MAX):
    """(C, h, w) maps -> a Picture: a grid of C cells, one colour scale for all of them (so
    that a weak channel looks weak), at most ``limit`` cells. (C, 3, h, w) maps are drawn as
    colour pictures (the 3 channels as red, green, blue), as first-layer filters of RGB
    networks are."""
    from PIL import Image
    maps = np.asarray(maps, dtype=np.float64)[:limit]
    lo, hi = _limits(maps, symmetric)
    if maps.ndim == 4:
        cells = [_shrink(np.round(_scaled(m, lo, hi).transpose(1, 2, 0) * 255).astype(np.uint8),
                         CELL_MAX) for m in maps]
    else:
        cells = [_shrink(_colour(_scaled(m, lo, hi), cmap), CELL_MAX) for m in maps]
    ch, cw = cells[0].shape[:2]
    cols = min(columns, len(cells))
    rows = -(-len(cells) // cols)
    canvas = np.full((rows * (ch + 1) - 1, cols * (cw + 1) - 1, 3), 255, np.uint8)
    for i, cell in enumerate(cells):
        r, c = divmod(i, cols)
        canvas[r * (ch + 1):r * (ch + 1) + ch, c * (cw + 1):c * (cw + 1) + cw] = cell
    return Picture(name, Image.fromarray(canvas), caption, lo, hi, ch)


def image(name, x, caption):
    """One input (C, H, W), C = 1 or 3 -> a Picture, its own min..max stretched to black..white
    (a normalised input is not in [0, 1])."""
    from PIL import Image
    lo, hi = _limits(x)
    pixels = np.round(_scaled(np.asarray(x, np.float64), lo, hi) * 255).astype(np.uint8)
    img = Image.fromarray(pixels[0] if len(pixels) == 1 else pixels.transpose(1, 2, 0))
    return Picture(name, img, caption, lo, hi, max(img.size))


def heat(name, values, caption, under=None, cmap="inferno"):
    """A map (H, W) -> a Picture in a colormap; with ``under`` (C, H, W), blended 50/50 over
    the input in grey, so that the heat sits on the object it points at."""
    from PIL import Image
    lo, hi = _limits(values)
    rgb = _colour(_scaled(np.asarray(values, np.float64), lo, hi), cmap).astype(np.float64)
    if under is not None:
        base = _colour(_scaled(np.mean(under, axis=0), *_limits(under)), None)
        rgb = 0.5 * rgb + 0.5 * base
    img = Image.fromarray(np.round(rgb).astype(np.uint8))
    return Picture(name, img, caption, lo, hi, max(img.size))


def bars(name, vector, caption, height=48):
    """A vector (F,) -> a Picture: one bar per value (wider for short vectors), up for
    positive, down for negative, from a zero line; at most 512 values."""
    from PIL import Image
    v = np.asarray(vector, np.float64)[:512]
    lo, hi = min(float(v.min()), 0.0), max(float(v.max()), 0.0)
    span = hi - lo if hi > lo else 1.0
    zero = int(round(hi / span * (height - 1)))
    width = max(1, min(8, 120 // len(v)))  # ten classes get bars 8 pixels wide
    canvas = np.full((height, (width + 1) * len(v) + 1, 3), 255, np.uint8)
    canvas[zero, :] = (170, 170, 170)
    for i, value in enumerate(v):
        top = int(round((hi - value) / span * (height - 1)))
        a, b = sorted((top, zero))
        left = (width + 1) * i + 1
        canvas[a:b + 1, left:left + width] = (40, 90, 200) if value >= 0 else (200, 60, 40)
    lo_v, hi_v = float(v.min()), float(v.max())
    return Picture(name, Image.fromarray(canvas), caption, lo_v, hi_v, height)


def probability_bars(classes, probs, top):
    """Top-``top`` classes as HTML bars (text, so it stays sharp at any size)."""
    order = np.argsort(probs)[::-1][:top]
    rows = "".join(f'<tr><td>{html.escape(str(classes[i]))}</td><td class="bar"><span style="width:'
                   f'{100 * probs[i]:.1f}%"></span></td><td>{probs[i]:.3f}</td></tr>'
                   for i in order)
    return f'<table class="probs">{rows}</table>'


STYLE = """
body { font: 15px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1200px; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
img.map { image-rendering: pixelated; image-rendering: crisp-edges; max-width: 100%; height: auto;
          cursor: zoom-in; border: 1px solid #ddd; vertical-align: top; }
.cards { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
.card { max-width: 16em; } .card h3 { margin: 0 0 .4em; }
.card p, td p { margin: .2em 0; font-size: .9em; color: #555; }
table.layers td { padding: .4em .8em .4em 0; vertical-align: top; border-top: 1px solid #eee; }
table.probs td { padding: .1em .5em .1em 0; white-space: nowrap; }
td.bar { width: 8em; } td.bar span { display: block; height: .9em; background: #2a5ac8; }
.gallery { display: flex; flex-wrap: wrap; gap: 1em; }
.gallery figure { margin: 0; width: 10em; font-size: .85em; }
code { background: #f4f4f4; padding: 0 .2em; white-space: nowrap; }
#zoom { position: fixed; inset: 0; background: rgba(0,0,0,.85); display: flex; flex-direction: column;
        align-items: center; justify-content: center; color: #fff; cursor: zoom-out; }
#zoom[hidden] { display: none; }
#zoom img { image-rendering: pixelated; image-rendering: crisp-edges; background: #fff; }
"""

SCRIPT = """
const zoom = document.getElementById('zoom');
function enlarge(map) {
  const big = zoom.querySelector('img');
  big.src = map.src;
  const s = Math.min(0.95 * innerWidth / map.naturalWidth, 0.8 * innerHeight / map.naturalHeight);
  big.style.width = Math.round(map.naturalWidth * s) + 'px';
  zoom.querySelector('p').textContent = map.dataset.caption + ': values ' + map.dataset.range;
  zoom.hidden = false;
}
document.addEventListener('click', (e) => {
  if (e.target.classList.contains('map')) enlarge(e.target);
  else if (zoom.contains(e.target)) zoom.hidden = true;
});
document.addEventListener('keydown', (e) => { if (e.key === 'Escape') zoom.hidden = true; });
"""


def document(title, body):
    """The whole page: ``body`` (HTML) with the style, the zoom layer and the script inline."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>{html.escape(title)}</title><style>{STYLE}</style></head>\n<body>\n{body}\n'
            f'<div id="zoom" hidden><img alt="enlarged map"><p></p></div>\n'
            f'<script>{SCRIPT}</script>\n</body></html>\n')
