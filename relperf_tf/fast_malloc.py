"""Restarts a relperf command with glibc malloc settings that suit TensorFlow on CPU.

TensorFlow frees and reallocates blocks of tens of MB every training step.
By default glibc serves blocks above a dynamic threshold with mmap and
returns them with munmap, so every step faults the same pages in again: on
the project's 2-core machines half of the CPU time went to the kernel.
Keeping large blocks in the heap (mmap and trim thresholds raised) made
training steps 1.5–1.9× faster at the same peak memory (README, Benchmarks).
glibc reads these settings only at start-up, hence the restart, which
`relperf_tf/__init__.py` makes before TensorFlow is imported, for the
project's commands only (`relperf-*` console scripts, `scripts/*.py`,
`python -m relperf_tf.commands.*`): never for a user's own interpreter.
Nothing happens when GLIBC_TUNABLES is already set, on a C library other than
glibc, or with RELPERF_MALLOC_TUNING=0. No TensorFlow import here.
"""

import os
import platform
import sys

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def is_command(argv):
    """Whether this process runs one of the project's commands."""
    program = os.path.abspath(argv[0]) if argv and argv[0] else ""
    return (
        os.path.basename(program).startswith("relperf-")
        or os.path.dirname(program) == os.path.join(os.path.dirname(_PACKAGE), "scripts")
        or os.path.dirname(program) == os.path.join(_PACKAGE, "commands")
    )


def restart_with_tuned_malloc():
    """Re-executes this process with `TUNABLES` (see the module docstring for when not)."""
    if "GLIBC_TUNABLES" in os.environ or os.environ.get("RELPERF_MALLOC_TUNING") == "0":
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = TUNABLES
    sys.stdout.flush()
    if os.path.dirname(os.path.abspath(sys.argv[0])) == os.path.join(_PACKAGE, "commands"):
        module = "relperf_tf.commands." + os.path.splitext(os.path.basename(sys.argv[0]))[0]
        os.execv(sys.executable, [sys.executable, "-m", module] + sys.argv[1:])
    os.execv(sys.executable, [sys.executable] + sys.argv)


def prepare_command():
    """For the project's commands: quiet TensorFlow's C++ start-up logs, then restart with tuned
    malloc."""
    if is_command(sys.argv):
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        restart_with_tuned_malloc()
