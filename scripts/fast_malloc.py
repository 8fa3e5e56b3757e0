"""Restarts the calling script with glibc malloc settings that suit TensorFlow on CPU.

TensorFlow frees and reallocates blocks of tens of MB every training step.
By default glibc serves blocks above a dynamic threshold with mmap and
returns them with munmap, so every step faults the same pages in again: on
the project's 2-core machines half of the CPU time went to the kernel.
Keeping large blocks in the heap (mmap and trim thresholds raised) made
training steps 1.5–1.9× faster at the same peak memory (README, Benchmarks).
glibc reads these settings only at start-up, hence the restart (before
TensorFlow is imported). Nothing happens when GLIBC_TUNABLES is already set,
on a C library other than glibc, or with RELPERF_MALLOC_TUNING=0.
"""

import os
import platform
import sys

TUNABLES = "glibc.malloc.mmap_threshold=4294967296:glibc.malloc.trim_threshold=17179869184"


def restart_with_tuned_malloc():
    if "GLIBC_TUNABLES" in os.environ or os.environ.get("RELPERF_MALLOC_TUNING") == "0":
        return
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return
    os.environ["GLIBC_TUNABLES"] = TUNABLES
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable] + sys.argv)


restart_with_tuned_malloc()
