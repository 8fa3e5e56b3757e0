"""Results records: every figure the docs show comes from one (JSON under benchmarks/records/
or docs/records/), which says how it was made: the command, the date, the commit and the CPU.

`docs/render.py` turns the records into the docs' tables; a test checks that the rendered
pages are what their records give.
"""

import datetime
import importlib.util
import json
import os
import shlex
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _standalone(name):
    """relperf_tf/app/<name>.py (standard library only) loaded without the package, whose
    import loads Keras and its backend: the benchmarks' orchestrators stay free of TensorFlow
    while their child processes measure."""
    path = os.path.join(REPO, "relperf_tf", "app", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"_relperf_records_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


atomic, machine = _standalone("atomic"), _standalone("machine")


def commit():
    """The checkout's commit, with `+changes` when the working tree differs from it."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout.strip()
    except OSError:
        return "unknown"
    return (head or "unknown") + ("+changes" if dirty else "")


def provenance(argv=None):
    """What a sitting of a record says about itself: command, UTC date, commit, CPU."""
    argv = sys.argv if argv is None else argv
    return dict(
        command=" ".join(shlex.quote(a) for a in ["python"] + list(argv)),
        date=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        commit=commit(),
        cpu=machine.cpu_label(),
    )


def name_of(path):
    """A record's name: its file's, without the folder and `.json`."""
    return os.path.splitext(os.path.basename(path))[0]


def write(path, record):
    """Writes a record (a dict with its `sittings`, each a `provenance`, and `rows` that name
    their sitting) as JSON, whole or not at all."""
    atomic.write_text(path, json.dumps(record, indent=1, sort_keys=False) + "\n")


def read(path):
    with open(path) as f:
        return json.load(f)
