"""Files that appear whole or not at all: write beside the target, then rename.

A kill, a full disk or an exception while writing leaves the previous file
(if any) intact and removes the temporary one; `os.replace` within one
directory is atomic on POSIX file systems.
"""

import contextlib
import errno
import json
import os


@contextlib.contextmanager
def replacing(path, suffix=""):
    """Yields a temporary path beside `path`; renames it onto `path` on success.

    Args:
        path: the file to (re)place.
        suffix: kept at the end of the temporary name (Keras wants `.keras`).
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp-{os.getpid()}-{name}{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def write_text(path, text):
    with replacing(path) as tmp:
        with open(tmp, "w", newline="") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())


def write_json(path, value):
    write_text(path, json.dumps(value, indent=2))


def save_model(model, path):
    """`model.save(path)` (a `.keras` file) through a temporary file."""
    with replacing(path, suffix=".keras") as tmp:
        model.save(tmp)


def is_disk_full(error):
    """Whether `error` (OSError, or a TensorFlow/HDF5 error from a file op) reports a full disk."""
    return getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error)
