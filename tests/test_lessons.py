"""Every page runs, and shows exactly what it prints: lessons/*.md and the repository's README.md.

Running. A page's ```python blocks run in order in one namespace, like the cells of a notebook,
with a fresh temporary folder as the working directory (it holds an empty ``figures/``). The
README's blocks also see the repository root on ``sys.path``, as from a checkout. Before each
page the global generators (``random``, NumPy's legacy one, minicnn's, torch's and Keras') are
reseeded from the operating system, so a page that draws from a generator it never seeded shows
other numbers on every run, and fails; NumPy's and torch's print options are the defaults, and
Keras' automatic layer names start again from "dense", "conv2d", ... A numbered lesson
(``NN-name.md``) must hold at least one ```python block; other pages (an index, a glossary) may
hold none.

Shown output. The output a page shows must be what its code prints:

- a ```text block right after a ```python block (only blank lines between them) is that block's
  output, and must equal the block's captured stdout (spaces at line ends are ignored);
- ```text varies marks output that changes from run to run (timings, thread counts, what
  Numba's cache held): compared line by line with every number masked;
- a ```python block with no text block after it must print nothing;
- other fences (```bash, a ```text block after prose) are shown and never compared.

Figures. A page that draws saves its PNGs as ``figures/NAME.png`` (relative to the working
directory) and embeds them with ``![...](figures/NAME.png)``. Each embedded figure must be in
lessons/figures/ and must have been written by this run of its page, and each figure the page
writes must be embedded.

``pytest --update-lessons`` rewrites the shown blocks from a real run (adding a ```text block
under a block that prints without one, dropping one under a block that no longer prints) and
copies the figures into lessons/figures/. Nothing is rewritten without the flag.
"""
import contextlib
import dataclasses
import difflib
import importlib.util
import io
import os
import random
import re
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

import minicnn as mc

ROOT = Path(__file__).resolve().parent.parent
FIGURES = ROOT / "lessons" / "figures"
LESSONS = sorted((ROOT / "lessons").glob("*.md"))
PAGES = LESSONS + [ROOT / "README.md"]
#: NumPy's print options as the process started: each page starts from them (a page may change them)
NUMPY_PRINT = np.get_printoptions()
#: the largest PNG a page may add to the repository
MAX_FIGURE_BYTES = 80_000

FENCE = re.compile(r"^```([\w+-]*)[ \t]*(.*?)\s*$")
NUMBER = re.compile(r"[-+]?(?:\d[\d,]*(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
EMBEDDED = re.compile(r"!\[[^\]]*\]\(([^)\s]+\.png)\)")


@dataclasses.dataclass
class Block:
    """One fenced block: ``start`` and ``end`` index the fence lines of the page (0-based)."""
    lang: str
    info: str
    start: int
    end: int

    @property
    def line(self):
        return self.start + 1

    @property
    def varies(self):
        return "varies" in self.info.split()


def blocks_of(lines):
    """Every fenced block of a page, in order."""
    blocks, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].rstrip() == "```"), None)
        assert end is not None, f"the fence at line {i + 1} is never closed"
        blocks.append(Block(m.group(1), m.group(2), i, end))
        i = end + 1
    return blocks


def cells(lines):
    """[(python block, its shown-output block or None), ...] in page order."""
    blocks = blocks_of(lines)
    pairs = []
    for k, block in enumerate(blocks):
        if block.lang != "python":
            continue
        shown = blocks[k + 1] if k + 1 < len(blocks) else None
        if shown is not None and not (shown.lang == "text"
                                      and all(not s.strip() for s in lines[block.end + 1:shown.start])):
            shown = None
        pairs.append((block, shown))
    return pairs


def as_lines(text):
    """Text as lines, without spaces at line ends or blank lines at the end."""
    lines = [line.rstrip() for line in text.split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def masked(lines):
    """Each line with every number replaced by '#' and runs of spaces by one (for ```text varies)."""
    return [" ".join(NUMBER.sub("#", line).split()) for line in lines]


def fresh_globals():
    """Reseed the global generators from the OS (a page must seed what it uses), default print options."""
    seed = int.from_bytes(os.urandom(4), "little")
    random.seed(seed)
    np.random.seed(seed)
    mc.manual_seed(seed)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)
        sys.modules["torch"].set_printoptions(profile="default")
    if "keras" in sys.modules:                   # also restarts Keras' automatic layer names
        sys.modules["keras"].backend.clear_session()
        sys.modules["keras"].utils.set_random_seed(seed)


def page_id(page):
    return str(page.relative_to(ROOT))


def test_pages_exist():
    assert LESSONS, "lessons/ holds no lesson"


def test_every_figure_is_embedded_and_small():
    """lessons/figures/ holds only figures a lesson embeds (one lesson each), each a small PNG."""
    owners = {}
    for lesson in LESSONS:
        for path in EMBEDDED.findall(lesson.read_text(encoding="utf-8")):
            if path.startswith("figures/"):
                owners.setdefault(path[len("figures/"):], []).append(lesson.name)
    shared = {name: pages for name, pages in owners.items() if len(pages) > 1}
    assert not shared, f"figures embedded by more than one lesson (each page draws its own): {shared}"
    for png in sorted(FIGURES.glob("*")) if FIGURES.is_dir() else []:
        assert png.name in owners, (f"lessons/figures/{png.name} is embedded by no lesson: "
                                    f"delete it, or embed it in the lesson that draws it")
        size = png.stat().st_size
        assert size <= MAX_FIGURE_BYTES, (f"lessons/figures/{png.name} is {size:,} bytes, more than "
                                          f"{MAX_FIGURE_BYTES:,}: draw it smaller (figsize, dpi)")


@pytest.mark.parametrize("page", PAGES, ids=[page_id(p) for p in PAGES])
def test_page_shows_what_it_prints(page, tmp_path, monkeypatch, request):
    update = request.config.getoption("--update-lessons")
    name = page_id(page)
    text = page.read_text(encoding="utf-8")
    for module in ("torch", "keras", "tensorflow"):
        if re.search(rf"^\s*(import|from) {module}\b", text, re.M) and not importlib.util.find_spec(module):
            pytest.skip(f"{name} compares with {module}, which is not installed "
                        f"(pip install -e .[reference])")
    lines = text.split("\n")
    pairs = cells(lines)
    assert pairs or not re.match(r"\d\d-", page.name), f"{name} has no python block to execute"

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("MINICNN_DATA", os.environ.get(
        "MINICNN_DATA", str(ROOT.parent / "shared" / "datasets")))
    if page.parent == ROOT:
        monkeypatch.syspath_prepend(str(ROOT))
    (tmp_path / "figures").mkdir()
    fresh_globals()
    with np.printoptions(**NUMPY_PRINT):
        outputs, problems = run_page(name, lines, pairs)

    if update:
        rewrite(page, lines, outputs)
    else:
        assert not problems, "\n\n".join(problems) + "\n\n(pytest --update-lessons rewrites the shown output)"
    figure_problems = check_figures(page, lines, tmp_path / "figures", update)
    assert not figure_problems, "\n".join(figure_problems)


def run_page(name, lines, pairs):
    """Run every python block; ([(block, text block to rewrite, printed lines)], [problems])."""
    namespace = {"__name__": f"page_{Path(name).stem.replace('-', '_')}"}
    problems, outputs = [], []
    for block, shown in pairs:
        where = f"{name}, python block at line {block.line}"
        stdout = io.StringIO()
        try:
            with contextlib.redirect_stdout(stdout):
                exec(compile("\n".join(lines[block.start + 1:block.end]), f"{name}:{block.line}",
                             "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - re-raised with the page's location
            raise AssertionError(f"{where} failed: {type(err).__name__}: {err}\n"
                                 f"it printed:\n{stdout.getvalue()}") from err
        printed = as_lines(stdout.getvalue())
        if shown is None:
            outputs.append((block, shown, printed))
            if printed:
                problems.append(f"{where} prints {len(printed)} lines that the page does not show "
                                f"(show them in a ```text block right after it, or print less):\n"
                                + "\n".join(printed[:10]))
            continue
        expected = as_lines("\n".join(lines[shown.start + 1:shown.end]))
        same = masked(printed) == masked(expected) if shown.varies else printed == expected
        outputs.append((block, None if same else shown, None if same else printed))
        if not same:
            kind = "```text varies block (numbers masked)" if shown.varies else "```text block"
            diff = "\n".join(difflib.unified_diff(expected, printed, "shown on the page", "printed now",
                                                  lineterm=""))
            problems.append(f"{where}: its output differs from the {kind} at line {shown.line}:\n{diff}")
    return outputs, problems


def check_figures(page, lines, written_dir, update):
    """Problems with the page's figures; with ``update``, copy them into lessons/figures/."""
    embedded = EMBEDDED.findall("\n".join(lines))
    problems = [f"{page_id(page)} embeds {path}, which does not exist"
                for path in embedded
                if not path.startswith("figures/") and not (page.parent / path).is_file()]
    if page.parent != FIGURES.parent:
        return problems
    wanted = {path[len("figures/"):] for path in embedded if path.startswith("figures/")}
    written = {png.name for png in written_dir.glob("*.png")}
    for missing in sorted(wanted - written):
        problems.append(f"{page_id(page)} embeds figures/{missing} but its code no longer writes it "
                        f"(savefig('figures/{missing}'))")
    for extra in sorted(written - wanted):
        problems.append(f"{page_id(page)} writes figures/{extra} but does not embed it "
                        f"(![...](figures/{extra}))")
    for name in sorted(wanted & written):
        target = FIGURES / name
        if update:
            FIGURES.mkdir(exist_ok=True)
            new = (written_dir / name).read_bytes()
            if not target.is_file() or target.read_bytes() != new:
                shutil.copyfile(written_dir / name, target)
        elif not target.is_file():
            problems.append(f"figures/{name} is missing from lessons/figures/ "
                            f"(pytest --update-lessons copies it there)")
    return problems


def rewrite(page, lines, outputs):
    """Write the printed output into the page's ```text blocks that differ (--update-lessons).

    ``outputs``: (python block, the text block to replace or None, printed lines or None); a
    block whose shown output already passes (a ```text varies one with other timings) is kept.
    """
    new = list(lines)
    for block, shown, printed in reversed(outputs):       # from the end: indices stay valid
        if printed is None:
            continue
        if shown is not None and printed:
            new[shown.start + 1:shown.end] = printed
        elif shown is not None:                           # prints nothing now: drop the block
            del new[block.end + 1:shown.end + 1]
        elif printed:
            new[block.end + 1:block.end + 1] = ["", "```text", *printed, "```"]
    if new != lines:
        page.write_text("\n".join(new), encoding="utf-8")
