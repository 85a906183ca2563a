"""The lessons as Jupyter notebooks: ```python blocks become code cells, everything else markdown.

    python tools/notebooks.py                      # every lessons/*.md page -> notebooks/*.ipynb
    python tools/notebooks.py --out nb lessons/00-tensors-and-shapes.md

``make notebooks`` runs the first line. The notebooks are generated files, outside the tracked
ones (``notebooks/`` is in .gitignore): edit the lesson, not the notebook. jupytext reads the
markdown; a ```text block (the output the page shows) stays a markdown cell, so after running a
cell the learner sees what it printed next to what the page says it prints.

Each notebook starts with one added cell that puts the repository first on ``sys.path``, so that
``import minicnn`` and ``from reference...`` find this checkout's code wherever Jupyter runs. The
lessons save their figures under ``figures/`` relative to the working directory: the output folder
gets a copy of ``lessons/figures/``, so the pictures show before the cells run (and running them
draws them again, there, never in lessons/).

jupytext and nbformat are the ``notebooks`` extra (``pip install -e .[notebooks]``); minicnn itself
never imports them.
"""
import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LESSONS = ROOT / "lessons"

SETUP_CELL = """\
# Added by `make notebooks`: this checkout's minicnn and reference/ come first on the path.
import sys
sys.path.insert(0, {root!r})"""

KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def lesson_pages(folder=LESSONS):
    """The lesson pages that become notebooks: lessons/NN-*.md, in order (README, glossary excluded)."""
    return sorted(p for p in folder.glob("[0-9][0-9]-*.md"))


def to_notebook(page, root=ROOT):
    """One lesson page (a path to a .md file) -> an nbformat notebook (nbformat.NotebookNode).

    Code cells are the page's ```python blocks, in order; prose, ```text and ```bash blocks are
    markdown cells. A first code cell puts ``root`` on sys.path. The kernel is "python3": the
    Python that runs Jupyter (or nbclient), whose ipykernel is the project's venv's.
    """
    import jupytext
    import nbformat

    notebook = jupytext.read(str(page), fmt="md")
    notebook.cells.insert(0, nbformat.v4.new_code_cell(SETUP_CELL.format(root=str(root))))
    notebook.metadata["kernelspec"] = dict(KERNELSPEC)
    notebook.metadata["language_info"] = {"name": "python"}
    return notebook


def write_notebook(notebook, path):
    """Write ``notebook`` to ``path`` atomically (a temporary file beside it, then a rename)."""
    import nbformat

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            nbformat.write(notebook, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def convert(pages, out):
    """Write ``out/<page>.ipynb`` for each page and copy lessons/figures/ to ``out/figures``.

    Returns the list of notebook paths written.
    """
    out = Path(out)
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    for png in sorted((LESSONS / "figures").glob("*.png")):
        shutil.copyfile(png, figures / png.name)
    written = []
    for page in pages:
        path = out / (Path(page).stem + ".ipynb")
        write_notebook(to_notebook(Path(page)), path)
        written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description="Write the lessons as Jupyter notebooks.")
    parser.add_argument("pages", nargs="*", type=Path,
                        help="lesson .md files (default: every lessons/NN-*.md)")
    parser.add_argument("--out", type=Path, default=ROOT / "notebooks",
                        help="folder for the .ipynb files (default: notebooks/)")
    args = parser.parse_args(argv)
    for page in args.pages:
        if not page.is_file() or page.suffix != ".md":
            parser.error(f"{page}: not a lesson .md file")
    try:
        import jupytext  # noqa: F401
    except ImportError:
        parser.error("jupytext is not installed: pip install -e .[notebooks]")
    written = convert(args.pages or lesson_pages(), args.out)
    print(f"wrote {len(written)} notebooks to {args.out}/; open them in Jupyter "
          f"(jupyter lab {args.out}, after pip install jupyterlab)")


if __name__ == "__main__":
    sys.exit(main())
