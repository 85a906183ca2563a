"""Atomic writes: a file is either the old one or the complete new one, never half of either."""
import os
import tempfile

#: the name prefix of the temporary files (a killed process may leave one; see apps.runs)
TEMP_PREFIX = ".tmp-"


def atomic_write(path, write):
    """Call ``write(file_object)`` on a temporary file beside ``path``, then rename it over ``path``.

    The temporary file sits in the same folder (``os.replace`` is atomic only within one file
    system) and is removed if ``write`` fails, so an interrupted save leaves the previous file
    intact. Returns ``path``.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=TEMP_PREFIX, suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path
