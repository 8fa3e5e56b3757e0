"""relperf_tf's Performer on the peer workload (runs in the project's .venv).

Settings: `plain` (tf.function) and `xla` (jit_compile), and with native bf16
matmuls `bf16` / `bf16-xla` (the same under `--precision=mixed_bfloat16`), all
through the model and optimizer `scripts/train.py` builds (Adam with its
schedule and global-norm clipping), dropout off as in the peers.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(
    1, os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
)  # the repo: benchmarks
import workload  # noqa: E402

SETTINGS = ("plain", "xla", "bf16", "bf16-xla")


def main():
    mode, setting = workload.parse_args(SETTINGS)
    # relperf_tf first, as in a user's script: its CPU settings (oneDNN) precede TensorFlow.
    import relperf_tf  # noqa: I001
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(workload.THREADS["intra_op"])
    tf.config.threading.set_inter_op_parallelism_threads(workload.THREADS["inter_op"])
    from benchmarks import benchmarking
    from relperf_tf.app import training

    w = workload.WORKLOAD
    jit = setting in ("xla", "bf16-xla")
    config = training.resolve_config(
        "Performer",
        "fashion_mnist",
        batch_size=workload.BATCH[mode],
        jit_compile=jit,
        precision="mixed_bfloat16" if setting.startswith("bf16") else "float32",
        attn_dropout=0.0,
        ff_dropout=0.0,
        seed=0,
        dim=w["dim"],
        depth=w["depth"],
        heads=w["heads"],
        nb_features=w["nb_features"],
        feature_redraw_interval=w["feature_redraw_interval"],
    )
    model = training.build_compiled_model(
        config,
        tf.distribute.get_strategy(),
        image_shape=(w["image_size"], w["image_size"], w["channels"]),
    )
    images, labels = workload.batch(mode)
    images, labels = tf.constant(images), tf.constant(labels)
    step = workload.tf_step(
        tf,
        model,
        mode,
        jit,
        images,
        labels,
        benchmarking.manual_train_step(model, jit) if mode == "train" else None,
    )
    seconds, windows = workload.seconds_per_step(step)
    workload.report(
        "relperf_tf Performer",
        f"relperf_tf {relperf_tf.__version__}, TF {tf.__version__}, Keras "
        f"{__import__('keras').__version__}",
        mode,
        setting,
        seconds,
        windows,
    )


if __name__ == "__main__":
    main()
