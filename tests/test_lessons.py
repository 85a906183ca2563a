"""Every Python code block of every lesson runs, in order, like the cells of a notebook.

A lesson is executed in a fresh namespace inside a temporary directory; a block that raises
fails the test with the lesson's name and the line where the block starts. Blocks fenced as
```python are executed; other fences (```text, ```bash) are shown, not run.
"""
import importlib.util
import pathlib
import re

import pytest

LESSONS = sorted((pathlib.Path(__file__).resolve().parent.parent / "lessons").glob("*.md"))
FENCE = re.compile(r"^```python[^\n]*\n(.*?)^```", re.S | re.M)


def python_blocks(text):
    """[(line number, code), ...] for each ```python block of a markdown text."""
    return [(text.count("\n", 0, m.start()) + 1, m.group(1)) for m in FENCE.finditer(text)]


def test_lessons_exist():
    assert LESSONS, "lessons/ holds no lesson"


@pytest.mark.parametrize("lesson", LESSONS, ids=[p.stem for p in LESSONS])
def test_lesson_runs(lesson, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    text = lesson.read_text()
    for framework, module in (("torch", "torch"), ("keras", "keras"), ("tensorflow", "tensorflow")):
        if re.search(rf"^\s*(import|from) {module}\b", text, re.M) and not importlib.util.find_spec(module):
            pytest.skip(f"{lesson.name} compares with {framework}, which is not installed "
                        f"(pip install -e .[reference])")
    blocks = python_blocks(text)
    assert blocks, f"{lesson.name} has no python block to execute"
    namespace = {"__name__": f"lesson_{lesson.stem}"}
    for line, code in blocks:
        try:
            exec(compile(code, f"{lesson.name}:{line}", "exec"), namespace)
        except Exception as err:  # noqa: BLE001 - re-raised with the lesson's location
            raise AssertionError(f"{lesson.name}, block at line {line} failed: "
                                 f"{type(err).__name__}: {err}") from err
