"""Process set-up for TensorFlow on CPU, and the entry points of the `relperf-*` commands.

Importing `relperf_tf` changes nothing in the process. The commands (and a
script that calls `tune_process()` first) tune it before TensorFlow loads:

1. glibc malloc thresholds. TensorFlow frees and reallocates blocks of tens
   of MB every training step; by default glibc serves blocks above a dynamic
   threshold with mmap and returns them with munmap, so every step faults the
   same pages in again: on the project's 2-core machines half of the CPU time
   went to the kernel. Keeping large blocks in the heap made training steps
   1.5–1.9× faster at the same peak memory (docs/benchmarks.md). A command
   restarts once with `TUNABLES` in `GLIBC_TUNABLES`, which glibc reads at
   start-up only; `tune_process()` sets the same by `mallopt` for every later
   allocation. Nothing happens when GLIBC_TUNABLES is already set, on a C
   library other than glibc, or with RELPERF_MALLOC_TUNING=0.
2. oneDNN for TensorFlow's own CPU kernels: `TF_ENABLE_ONEDNN_OPTS=1` unless
   the variable is set. TensorFlow turns oneDNN on by itself only on CPUs
   with AVX512_VNNI, AVX512_BF16 or AMX. On an AVX2 Zen 3 its default kernels
   ran the model's K = 128 products at about half the CPU's rate (67–73
   against OpenBLAS's 132 GFLOP/s, 110 with oneDNN); on a Zen 4 a Keras graph
   step took 1.3–1.5 s without oneDNN and 1.0–1.2 s with it. TensorFlow reads
   the variable once, when it loads.
3. (commands only) TensorFlow's start-up lines about absent CUDA drivers and
   CPU instructions are kept off the terminal (RELPERF_STARTUP_LOGS=1 shows
   them); any other line it prints still reaches stderr.

This module lives outside the `relperf_tf` package because importing that
package loads Keras and, with it, TensorFlow. It needs nothing beyond the
standard library, so a command run without the application's dependencies
says which extra to install.

Run a command as `relperf-<name> …` (installed console scripts),
`python scripts/<name>.py …` (a checkout) or `python -m relperf_cli <name> …`.
"""

import ctypes
import importlib
import importlib.util
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


# mallopt's parameter numbers (malloc.h) and the largest value its int argument holds:
# blocks below 2 GiB stay in the heap, and the heap's free top is returned to the system
# only beyond 2 GiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 2**31 - 1


def malloc_tuning_applies(environ=None):
    """Whether to tune glibc's malloc: on glibc, unless GLIBC_TUNABLES is set already or
    RELPERF_MALLOC_TUNING=0."""
    environ = os.environ if environ is None else environ
    if environ.get("RELPERF_MALLOC_TUNING") == "0" or "GLIBC_TUNABLES" in environ:
        return False
    return sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def tune_malloc(environ=None):
    """Raises glibc's mmap and trim thresholds in this process; returns whether it did."""
    if not malloc_tuning_applies(environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    done = libc.mallopt(M_MMAP_THRESHOLD, THRESHOLD) == 1
    return libc.mallopt(M_TRIM_THRESHOLD, THRESHOLD) == 1 and done


def enable_onednn(environ=None, modules=None):
    """Sets TF_ENABLE_ONEDNN_OPTS=1 when unset and TensorFlow is not loaded; returns whether it
    did."""
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    if "TF_ENABLE_ONEDNN_OPTS" in environ or "tensorflow" in modules:
        return False
    environ["TF_ENABLE_ONEDNN_OPTS"] = "1"
    return True


def tune_process():
    """The commands' CPU settings for a script of your own: call it before TensorFlow loads.

    glibc's malloc thresholds raised by `mallopt` (TensorFlow's per-step
    blocks stay in the heap) and `TF_ENABLE_ONEDNN_OPTS=1` when unset (module
    docstring). Importing relperf_tf changes nothing in the process; this
    call does, and only this one.

    Example:
        import relperf_cli
        relperf_cli.tune_process()  # first, before TensorFlow, Keras or relperf_tf
        import relperf_tf
    """
    tune_malloc()
    enable_onednn()


def restart_with_tuned_malloc():
    """Re-executes this process with `TUNABLES` (`malloc_tuning_applies`)."""
    if not malloc_tuning_applies():
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


# What every command imports beyond the library: the application's extra (pyproject.toml).
APPLICATION_EXTRA = "app"
APPLICATION_MODULES = ("tensorflow", "tensorflow_datasets", "keras_tuner", "absl", "matplotlib")


def check_application(name, find_spec=importlib.util.find_spec):
    """Exits with one line naming the extra to install when the application's dependencies are
    missing (the library alone needs only Keras and NumPy)."""
    missing = [module for module in APPLICATION_MODULES if find_spec(module) is None]
    if missing:
        print(
            f"error: relperf-{name.replace('_', '-')} needs the application's dependencies "
            f"({', '.join(missing)} not installed); install them with: "
            f"pip install 'relperf_tf[{APPLICATION_EXTRA}]' (from a checkout: "
            f"pip install '.[{APPLICATION_EXTRA}]')",
            file=sys.stderr,
        )
        sys.exit(2)


def set_up_process():
    """A command's process set-up, before anything imports TensorFlow."""
    restart_with_tuned_malloc()
    enable_onednn()
    start_tensorflow_quietly()


def main(name):
    """Sets the process up and runs the command `name` (one of `COMMANDS`)."""
    check_application(name)
    set_up_process()
    importlib.import_module(f"relperf_tf.app.commands.{MODULES.get(name, name)}").run()


# Console scripts (pyproject.toml): relperf-<name> → relperf_cli:<name>.
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
