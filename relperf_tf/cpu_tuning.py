"""Process settings for TensorFlow on CPU that `import relperf_tf` applies (before Keras loads).

1. glibc malloc thresholds (`tune_malloc`, by `mallopt`). TensorFlow frees
   and reallocates blocks of tens of MB every training step; by default glibc
   serves blocks above a dynamic threshold with `mmap` and returns them with
   `munmap`, so every step faults the same pages in again (on some of the
   project's 2-core machines half the CPU time went to the kernel). Raising
   the mmap and trim thresholds keeps those blocks in the heap. The
   `relperf-*` commands set the same through `GLIBC_TUNABLES`
   (relperf_cli.py), which glibc reads at start-up only; `mallopt` sets them
   for every later allocation of a running process, so a user's own script
   gets them too. Skipped with `RELPERF_MALLOC_TUNING=0`, when
   `GLIBC_TUNABLES` is set (its owner chose), or off glibc.
2. oneDNN for TensorFlow's own CPU kernels (`enable_onednn`):
   `TF_ENABLE_ONEDNN_OPTS=1` unless the variable is set. TensorFlow turns
   oneDNN on by itself only on CPUs with AVX512_VNNI, AVX512_BF16 or AMX. On
   an AVX2 Zen 3 its default kernels ran the model's K = 128 products at about
   half the CPU's rate (67–73 against OpenBLAS's 132 GFLOP/s, 110 with
   oneDNN); on a Zen 4 a Keras graph step took 1.3–1.5 s without oneDNN and
   1.0–1.2 s with it (docs/benchmarks.md: GEMM rates, notes). TensorFlow
   reads the variable once, when it loads: if it is already imported, nothing
   changes.
"""

import ctypes
import os
import platform
import sys

# mallopt's parameter numbers (malloc.h) and the largest value its int argument holds:
# blocks below 2 GiB stay in the heap, and the heap's free top is returned to the system
# only beyond 2 GiB.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
THRESHOLD = 2**31 - 1


def tune_malloc(environ=None):
    """Raises glibc's mmap and trim thresholds in this process; returns whether it did."""
    environ = os.environ if environ is None else environ
    if environ.get("RELPERF_MALLOC_TUNING") == "0" or "GLIBC_TUNABLES" in environ:
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
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
    """Both settings, as `import relperf_tf` applies them."""
    tune_malloc()
    enable_onednn()
