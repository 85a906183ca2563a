"""A lesson becomes a notebook that runs: tools/notebooks.py converts it, nbclient executes it.

The kernel is "python3", which jupyter_client resolves to the Python running the tests (the
project's venv, where ipykernel is installed): no network, no other interpreter.
"""
import importlib.util
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

jupytext = pytest.importorskip("jupytext", reason="pip install -e .[notebooks]")
nbclient = pytest.importorskip("nbclient", reason="pip install -e .[notebooks]")
pytest.importorskip("ipykernel", reason="pip install -e .[notebooks]")

import notebooks  # noqa: E402  (tools/notebooks.py)

#: a fast lesson: a few seconds of work once torch and Keras are imported
LESSON = ROOT / "lessons" / "00-tensors-and-shapes.md"
PYTHON = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
SHOWN = re.compile(r"^```python\n.*?^```\n\s*^```text\n(.*?)^```", re.S | re.M)


def test_a_lesson_converts_to_cells():
    text = LESSON.read_text(encoding="utf-8")
    nb = notebooks.to_notebook(LESSON)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert code[0].startswith("# Added by `make notebooks`")
    assert [c.strip() for c in code[1:]] == [b.strip() for b in PYTHON.findall(text)]
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for shown in SHOWN.findall(text):          # the page's shown output stays visible, as markdown
        assert shown.strip() in markdown
    assert nb.metadata["kernelspec"]["name"] == "python3"


@pytest.mark.skipif(importlib.util.find_spec("torch") is None or importlib.util.find_spec("keras") is None,
                    reason="lesson 00 runs torch and keras (pip install -e .[reference])")
def test_the_notebook_runs_and_prints_what_the_page_shows(tmp_path, monkeypatch):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    [path] = notebooks.convert([LESSON], tmp_path)
    assert (tmp_path / "figures" / "00-colormaps.png").is_file()   # copied: the page's image shows
    (tmp_path / "figures" / "00-colormaps.png").unlink()
    nb = jupytext.read(str(path))
    nbclient.NotebookClient(nb, kernel_name="python3", timeout=300,
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "figures" / "00-colormaps.png").is_file()   # and running it draws it again
    code = [c for c in nb.cells if c.cell_type == "code"][1:]
    printed = ["".join(o.get("text", "") for o in c.outputs if o.get("name") == "stdout") for c in code]
    shown = SHOWN.findall(LESSON.read_text(encoding="utf-8"))
    assert [p for p in printed if p] == shown, "the notebook printed other output than the page shows"
