"""Entry points of the `relperf-*` commands: set the process up, then run the command.

Before TensorFlow loads, a command's process

1. restarts once with glibc malloc settings that suit TensorFlow on CPU.
   TensorFlow frees and reallocates blocks of tens of MB every training step;
   by default glibc serves blocks above a dynamic threshold with mmap and
   returns them with munmap, so every step faults the same pages in again:
   on the project's 2-core machines half of the CPU time went to the kernel.
   Keeping large blocks in the heap (`TUNABLES`: mmap and trim thresholds
   raised) made training steps 1.5–1.9× faster at the same peak memory
   (README, Benchmarks). glibc reads these settings only at start-up, hence
   the restart. Nothing happens when GLIBC_TUNABLES is already set, on a C
   library other than glibc, or with RELPERF_MALLOC_TUNING=0;
2. imports `relperf_tf` (which applies its CPU settings, relperf_tf/cpu_tuning.py,
   before Keras loads TensorFlow), with TensorFlow's start-up lines about absent
   CUDA drivers and CPU instructions kept off the terminal (RELPERF_STARTUP_LOGS=1
   shows them); any other line it prints then still reaches stderr.

This module lives outside the `relperf_tf` package because importing that
package loads Keras and TensorFlow. A script of your own that imports
`relperf_tf` before TensorFlow gets the same settings (`mallopt` in place of
the restart); `GLIBC_TUNABLES=<TUNABLES> python my_script.py` sets them from
the start (README).

Run a command as `relperf-<name> …` (installed console scripts),
`python scripts/<name>.py …` (a checkout) or `python -m relperf_cli <name> …`.
"""

import importlib
import os
import platform
import sys
import tempfile

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"
COMMANDS = (
    "train",
    "evaluate",
    "shift",
    "export",
    "predict",
    "tune",
    "sequence_shift",
    "inspect",
    "prepare",
)
# Commands whose module has another name (a module named `inspect` would shadow the standard
# library's for scripts run from its folder).
MODULES = {"inspect": "inspect_model"}
# TensorFlow's start-up lines that tell a CPU user nothing they can act on.
STARTUP_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "cudart_stub.cc",
    "cuda_platform.cc",
    "cuda_executor.cc",
    "cuda_dnn.cc",
    "cuda_fft.cc",
    "cuda_blas.cc",
    "cpu_feature_guard.cc",
    "To enable the following instructions",
    "oneDNN custom operations are on",
    "computation placer already registered",
)


def restart_with_tuned_malloc():
    """Re-executes this process with `TUNABLES` (see the module docstring for when not)."""
    if "GLIBC_TUNABLES" in os.environ or os.environ.get("RELPERF_MALLOC_TUNING") == "0":
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = TUNABLES
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable] + sys.argv)


def start_tensorflow_quietly():
    """Imports relperf_tf (so TensorFlow) and lists the devices with stderr captured; replays
    what is not `STARTUP_NOISE`."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")  # the application trains with tf.data
    if os.environ.get("RELPERF_STARTUP_LOGS") == "1":
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            # relperf_tf first, as in a user's script: its CPU settings precede TensorFlow.
            import relperf_tf  # noqa: F401, I001
            import tensorflow as tf

            tf.config.list_physical_devices()  # the CUDA probe
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not any(noise in line for noise in STARTUP_NOISE):
                    sys.stderr.write(line)
            sys.stderr.flush()


def set_up_process():
    """A command's process set-up, before anything imports TensorFlow."""
    restart_with_tuned_malloc()
    start_tensorflow_quietly()


def main(name):
    """Sets the process up and runs the command `name` (one of `COMMANDS`)."""
    set_up_process()
    importlib.import_module(f"relperf_tf.app.commands.{MODULES.get(name, name)}").run()


# Console scripts (setup.py): relperf-<name> → relperf_cli:<name>.
def train():
    main("train")


def evaluate():
    main("evaluate")


def shift():
    main("shift")


def export():
    main("export")


def predict():
    main("predict")


def tune():
    main("tune")


def sequence_shift():
    main("sequence_shift")


def inspect():
    main("inspect")


def prepare():
    main("prepare")


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        print(f"usage: python -m relperf_cli {{{','.join(COMMANDS)}}} [--flags]", file=sys.stderr)
        sys.exit(2)
    restart_with_tuned_malloc()  # with the command still in argv, which the restart re-runs
    main(sys.argv.pop(1))
