"""Numeric precision of a run: a `--precision` name → the Keras dtype policy the model gets.

`float32` computes everything in fp32. `mixed_bfloat16` keeps the variables
in fp32 and runs the Dense layers' matrix products in bf16, while the FAVOR+
feature maps, their normaliser, the sinusoid encodings and the logits stay in
fp32 (the models pin those sublayers to the policy's variable dtype). `auto`
picks `mixed_bfloat16` only where the hardware multiplies bf16 natively — a
CPU with AMX or AVX512_BF16, a GPU of compute capability ≥ 8.0 — and
`float32` elsewhere, where bf16 would be emulated and slower.
"""

import tensorflow as tf

from relperf_tf import validation
from relperf_tf.app import machine

PRECISIONS = ("float32", "mixed_bfloat16", "auto")


def gpu_native_bf16():
    """Whether TensorFlow sees a GPU and every visible one has bf16 tensor cores (≥ sm_80)."""
    gpus = tf.config.list_physical_devices("GPU")
    capabilities = [
        tf.config.experimental.get_device_details(gpu).get("compute_capability") for gpu in gpus
    ]
    return bool(gpus) and all(c is not None and tuple(c) >= (8, 0) for c in capabilities)


def native_bf16(cpuinfo="/proc/cpuinfo"):
    """Whether the device that computes (the GPUs if any, else the CPU) has native bf16 matmuls."""
    if tf.config.list_physical_devices("GPU"):
        return gpu_native_bf16()
    return machine.cpu_info(cpuinfo)["native_bf16"]


def dtype_policy(precision, cpuinfo="/proc/cpuinfo"):
    """The Keras dtype policy name of `precision` (`auto` resolved on this machine).

    Raises `validation.InvalidSetting` for a name outside `PRECISIONS`.
    """
    validation.check_choice("precision", precision, PRECISIONS)
    if precision == "auto":
        return "mixed_bfloat16" if native_bf16(cpuinfo) else "float32"
    return precision


def with_policy(model, policy):
    """`model` rebuilt to compute under `policy` (a dtype policy name), holding the same weights.

    Variables are float32 under every policy this project uses, so the
    trained weights and the stored random features carry over unchanged;
    returns `model` itself when it already computes under `policy`.
    """
    if model.dtype_policy.name == policy:
        return model
    config = dict(model.get_config(), dtype=policy)
    if "backbone" in config:  # the backbone computes under the same policy
        backbone = dict(config["backbone"])
        backbone["config"] = dict(backbone["config"], dtype=policy)
        config["backbone"] = backbone
    rebuilt = model.__class__.from_config(config)
    rebuilt.set_weights(model.get_weights())
    return rebuilt
