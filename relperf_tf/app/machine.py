"""The machine a run or a measurement happens on: CPU model and the flags that matter.

Reads /proc/cpuinfo only (no TensorFlow), so that benchmark processes of any
Keras backend label their records alike.
"""

import os

# CPU flags (as /proc/cpuinfo spells them) that decide which kernels exist.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")
NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")


def cpu_info(path="/proc/cpuinfo"):
    """Model name, vendor, family/model numbers, which of `CPU_FLAGS` the CPU has, and whether its
    bf16 matmuls are native (`native_bf16`). Unknown fields read 'unknown' / '?'."""
    fields = {}
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    return dict(
        model_name=fields.get("model name", "unknown"),
        vendor=fields.get("vendor_id", "unknown"),
        family=fields.get("cpu family", "?"),
        model=fields.get("model", "?"),
        cores=os.cpu_count(),
        flags=[f for f in CPU_FLAGS if f in flags],
        native_bf16=bool(flags & set(NATIVE_BF16_CPU_FLAGS)),
    )


def cpu_label(info=None, with_cores=True):
    """One line naming the CPU, e.g. 'AMD EPYC (family 25 model 1; avx2, avx512f), 2 cores'."""
    info = info or cpu_info()
    flags = ", ".join(info["flags"]) or "no " + "/".join(CPU_FLAGS)
    label = f"{info['model_name']} (family {info['family']} model {info['model']}; {flags})"
    return f"{label}, {info['cores']} cores" if with_cores else label
