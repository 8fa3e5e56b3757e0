"""The one workload every implementation runs, and how it is timed.

Imported by each runner in its own virtualenv: it needs only the standard
library and NumPy, never TensorFlow or torch.

Workload (the speed issue's reference config): 32×32×1 images read as 1 024
pixel tokens + a class token; per-pixel linear embedding, learned absolute
positions, pre-LayerNorm blocks (FAVOR+ attention with m positive orthogonal
random features, feature-redraw interval 1 000, no dropout; Dense(4·dim) GELU
feed-forward), a linear head on the class token; cross-entropy, Adam.
Training: forward + backward + Adam update of one batch. Inference: the
forward pass of one batch.

Timing: `warmup` untimed steps, then `repeats` windows of `window_steps + 1`
consecutive steps, each step's end stamped; a window's time per step is the
mean gap between its stamps (its first step only opens the window); the
median window is reported. Each configuration runs in a fresh process.
"""

import json
import os
import platform
import statistics
import sys
import time

import numpy as np

WORKLOAD = dict(
    image_size=32,
    channels=1,
    num_classes=10,
    dim=128,
    depth=4,
    heads=4,
    nb_features=110,
    ff_multiplier=4,
    feature_redraw_interval=1000,
    learning_rate=1e-3,
)
BATCH = dict(train=16, infer=128)
TIMING = dict(warmup=2, repeats=5, window_steps=3)
# Threads every runner sets: two cores, one op at a time.
THREADS = dict(intra_op=2, inter_op=1)


def tokens():
    """Sequence length: pixels + the class token."""
    return WORKLOAD["image_size"] ** 2 + 1


def batch(mode):
    """The random batch of a mode, created once per process from seed 0: images `[b, H, W, C]` in
    [0, 1), labels `[b]`."""
    size, channels = WORKLOAD["image_size"], WORKLOAD["channels"]
    rng = np.random.default_rng(0)
    images = rng.random((BATCH[mode], size, size, channels), dtype=np.float32)
    labels = (np.arange(BATCH[mode]) % WORKLOAD["num_classes"]).astype(np.int64)
    return images, labels


def seconds_per_step(step, warmup=None, repeats=None, window_steps=None):
    """Median over windows of the mean seconds per step; `step()` must return when its result is
    computed."""
    warmup = TIMING["warmup"] if warmup is None else warmup
    repeats = TIMING["repeats"] if repeats is None else repeats
    window_steps = TIMING["window_steps"] if window_steps is None else window_steps
    for _ in range(warmup):
        step()
    windows = []
    for _ in range(repeats):
        stamps = []
        for _ in range(window_steps + 1):
            step()
            stamps.append(time.perf_counter())
        windows.append(float(np.diff(stamps).mean()))
    return statistics.median(windows), windows


def tf_step(tf, model, mode, jit_compile, images, labels, train_step):
    """The `step()` a TensorFlow runner times: `train_step(images, labels)` or the forward compiled
    alike, read back to the host.

    `tf` is the runner's TensorFlow module (this file imports none).
    """
    if mode == "train":
        return lambda: train_step(images, labels).numpy()
    predict = tf.function(lambda x: model(x, training=False), jit_compile=jit_compile)
    return lambda: predict(images).numpy()


def peak_rss_gb():
    """This process's peak resident memory."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def report(implementation, version, mode, setting, step_seconds, windows, **extra):
    """Prints the one result line the orchestrator reads."""
    row = dict(
        implementation=implementation,
        version=version,
        mode=mode,
        setting=setting,
        batch_size=BATCH[mode],
        tokens=tokens(),
        ms_per_step=1e3 * step_seconds,
        images_per_s=BATCH[mode] / step_seconds,
        window_ms=[1e3 * w for w in windows],
        peak_rss_gb=peak_rss_gb(),
        python=platform.python_version(),
        **extra,
    )
    print("RESULT " + json.dumps(row), flush=True)


def parse_args(settings):
    """`runner.py MODE SETTING`; exits 2 with one line on anything else."""
    if len(sys.argv) != 3 or sys.argv[1] not in BATCH or sys.argv[2] not in settings:
        print(
            f"usage: {os.path.basename(sys.argv[0])} {{{','.join(BATCH)}}} "
            f"{{{','.join(settings)}}}",
            file=sys.stderr,
        )
        sys.exit(2)
    return sys.argv[1], sys.argv[2]
