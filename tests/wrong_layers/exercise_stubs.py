"""The exercises' stubs, loaded from lessons/exercises/ (their file names start with a digit):
a wrong solution subclasses the stub and writes the missing method, as a learner would."""
import pathlib

from minicnn.check.loading import load_target

FOLDER = pathlib.Path(__file__).resolve().parent.parent.parent / "lessons" / "exercises"


def stub(exercise, name):
    """The class ``name`` of lessons/exercises/``exercise``.py."""
    return load_target(f"{FOLDER / exercise}.py:{name}")
