"""Training and inference speed of the same models on each Keras backend, this CPU.

    python benchmarks/backend_speed.py [--record] [--steps=5] [--timeout=900]

Two models on 32×32×1 images (Fashion-MNIST as the models read it: 1 025
tokens with the class token): the reference `Performer` (dim 128, depth 4, heads 4, m = 110) and
the shipped circular `RelativePerformer` (the preset
`relative_performer_circular_fashion_mnist`, loaded from its `.keras` file:
dim 32, depth 3, heads 8, m = 4). Each (backend, setting) runs in its own
process, through `model.fit` / `model.predict_on_batch` on NumPy arrays, as
a user of the library would:
- `tensorflow-xla`: `jit_compile=True` with the application's direct XLA
  steps (`relperf_tf.app.direct_steps`, what `relperf-train` runs);
- `jax-jit`: Keras' JAX trainer (`jit_compile=True`, its default);
- `torch-eager`: Keras' PyTorch trainer, eager (its default);
- `torch-compile`: the same with `jit_compile=True` (`torch.compile`).
Training: Adam, batch 16, the median seconds between batch ends after two
warm-up batches; inference: batch 64, median of timed calls after a warm-up
one. `--record` writes benchmarks/records/backend_speed.json, which
`docs/render.py` renders into docs/benchmarks.md.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
SETTINGS = ("tensorflow-xla", "jax-jit", "torch-eager", "torch-compile")
MODELS = {
    "Performer (reference)": dict(
        name="Performer", dim=128, depth=4, heads=4, nb_features=110, feature_redraw_interval=0
    ),
    "RelativePerformer circular (shipped)": "relative_performer_circular_fashion_mnist",
}
TRAIN_BATCH, INFER_BATCH, IMAGE_SHAPE = 16, 64, (32, 32, 1)


def measure(setting, model_key, steps):
    """{mode: images/s} of one model under one setting, in this process."""
    backend = setting.split("-")[0]
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    from relperf_tf import ImageClassifier, build_model

    spec = MODELS[model_key]
    if isinstance(spec, str):
        model = ImageClassifier.from_preset(spec, compile=False)
    else:
        model = build_model(image_shape=IMAGE_SHAPE, num_classes=10, **spec)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=setting != "torch-eager",
    )
    if backend == "tensorflow":
        from relperf_tf.app import direct_steps

        direct_steps.install(model)
    rng = np.random.default_rng(0)
    images = rng.random((INFER_BATCH, *IMAGE_SHAPE)).astype("float32")
    labels = rng.integers(0, 10, INFER_BATCH)

    ends = []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            ends.append(time.perf_counter())

    warmup = 2
    count = (warmup + steps + 1) * TRAIN_BATCH
    repeat = -(-count // INFER_BATCH)
    model.fit(
        np.concatenate([images] * repeat)[:count],
        np.concatenate([labels] * repeat)[:count],
        batch_size=TRAIN_BATCH,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[Clock()],
    )
    train_step = statistics.median(np.diff(ends[warmup:]))
    model.predict_on_batch(images)  # compile
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        keras.ops.convert_to_numpy(model.predict_on_batch(images))
        times.append(time.perf_counter() - start)
    return dict(
        train=TRAIN_BATCH / train_step,
        infer=INFER_BATCH / statistics.median(times),
    )


def run_all(steps, timeout):
    """{(setting, model): {mode: images/s} or {"error": ...}}, each in a fresh process."""
    found = {}
    for model_key in MODELS:
        for setting in SETTINGS:
            command = [sys.executable, __file__, "--worker", setting, model_key, f"--steps={steps}"]
            env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
            try:
                result = subprocess.run(
                    command, capture_output=True, text=True, timeout=timeout, env=env
                )
                if result.returncode == 0:
                    found[setting, model_key] = json.loads(result.stdout.strip().splitlines()[-1])
                else:
                    found[setting, model_key] = {"error": result.stderr.strip().splitlines()[-1]}
            except subprocess.TimeoutExpired:
                found[setting, model_key] = {"error": f"over {timeout} s"}
            print(setting, model_key, found[setting, model_key], flush=True)
    return found


def table(record):
    """Markdown lines of a record: one row per (model, setting), images/s and the ratio to
    TensorFlow's in the same sitting."""
    rows = {(r["setting"], r["model"]): r for r in record["rows"]}
    lines = [
        "## Keras backends",
        "",
        f"`benchmarks/backend_speed.py --record`: train batch {TRAIN_BATCH}, inference batch "
        f"{INFER_BATCH}, 32×32 images, float32, one process per row; ratios are to TensorFlow "
        "(XLA) in the same sitting.",
        "",
        "| model | backend | train img/s | vs TF | inference img/s | vs TF |",
        "|---|---|---|---|---|---|",
    ]
    for model_key in MODELS:
        base = rows.get(("tensorflow-xla", model_key), {})
        for setting in SETTINGS:
            row = rows.get((setting, model_key))
            if row is None:
                continue
            if "error" in row:
                lines.append(f"| {model_key} | {setting} | failed: {row['error']} | | | |")
                continue
            cells = []
            for mode in ("train", "infer"):
                ratio = f"{row[mode] / base[mode]:.2f}×" if mode in base else ""
                cells += [f"{row[mode]:.1f}", ratio]
            lines.append(f"| {model_key} | {setting} | " + " | ".join(cells) + " |")
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=2, metavar=("SETTING", "MODEL"), help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=5, help="Timed steps per mode (median).")
    parser.add_argument("--timeout", type=int, default=900, help="Seconds allowed per row.")
    parser.add_argument("--record", action="store_true", help="Write the record.")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error(f"--steps={args.steps} is not allowed; use an integer >= 1.")
    if args.worker:
        setting, model_key = args.worker
        if setting not in SETTINGS or model_key not in MODELS:
            parser.error(f"--worker takes one of {SETTINGS} and one of {list(MODELS)}.")
        print(json.dumps(measure(setting, model_key, args.steps)))
        return 0
    sys.path.insert(0, REPO)
    from benchmarks import records

    found = run_all(args.steps, args.timeout)
    rows = [dict(model=model, setting=setting, **found[setting, model]) for setting, model in found]
    record = dict(sittings=[records.provenance()], rows=rows)
    print("\n".join(table(record)))
    if args.record:
        records.write(os.path.join(REPO, "benchmarks", "records", "backend_speed.json"), record)
        print("recorded benchmarks/records/backend_speed.json; render it with docs/render.py")
    return 0


if __name__ == "__main__":
    sys.exit(main())
