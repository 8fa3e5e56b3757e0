"""A user's own training script against `relperf-train`'s step, same model, same CPU.

    python benchmarks/user_script.py [--variants=command,user,...] [--steps=8] [--record]

The reference Performer (dim 128, depth 4, heads 4, m = 110, 32×32×1 images,
batch 16, Adam), trained by `model.fit` on NumPy arrays, each variant in a
fresh process:
- `command`: what `relperf-train` runs: the glibc malloc settings of
  `relperf_cli.TUNABLES` in the environment, the model compiled by the
  application (`training.build_compiled_model`: XLA, its direct steps);
- `user`: the documented call first (`relperf_cli.tune_process()`: the
  commands' malloc and oneDNN settings, before TensorFlow loads), then
  `import relperf_tf`, `relperf_tf.build_model(...)`,
  `model.compile(..., jit_compile=True)`, `model.fit(...)`: nothing set
  outside the script (no GLIBC_TUNABLES);
- `user-plain`: `user` without that call (importing the library changes
  nothing in the process);
- `user-default`: `user` with Keras' default `jit_compile="auto"`;
- `command-graph`: `command` with `--nojit_compile` (a TensorFlow graph);
- `user-default-eigen`: `user-default` with `TF_ENABLE_ONEDNN_OPTS=0`
  (TensorFlow's own matrix products instead of oneDNN's);
- `user-no-dropout`: `user` with `attn_dropout=0, ff_dropout=0` (every other
  row trains with the backbone's default dropout of 0.1, as the commands do).
A row is the median seconds between batch ends after two warm-up batches.
`--record` writes the rows to benchmarks/records/user_script.json (with the
command, date, commit and CPU); `docs/render.py` renders it into docs/benchmarks.md.
"""

import argparse
import json
import os
import re
import statistics
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
from benchmarks import child_process  # noqa: E402

VARIANTS = (
    "command",
    "command-graph",
    "user",
    "user-plain",
    "user-default",
    "user-default-eigen",
    "user-no-dropout",
)
MODEL = dict(dim=128, depth=4, heads=4, nb_features=110, feature_redraw_interval=0)
BATCH, IMAGE_SHAPE, WARMUP = 16, (32, 32, 1), 2
# relperf_cli.TUNABLES, read and not imported (the orchestrator stays free of TensorFlow).
TUNABLES = re.search(
    r'^TUNABLES = "(.*)"', open(os.path.join(REPO, "relperf_cli.py")).read(), re.M
).group(1)


def child(variant, steps):
    """Trains `steps` batches in this process; prints the seconds between batch ends."""
    if variant.startswith("user") and variant != "user-plain":
        import relperf_cli

        relperf_cli.tune_process()  # the documented call, before TensorFlow loads
    import keras
    import numpy as np

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (BATCH * (WARMUP + steps),) + IMAGE_SHAPE).astype("float32")
    labels = rng.integers(0, 10, (len(images),)).astype("int32")
    if variant.startswith("command"):
        import tensorflow as tf

        from relperf_tf.app import training

        jit = variant == "command"
        config = training.resolve_config(
            "Performer", "fashion_mnist", batch_size=BATCH, jit_compile=jit, seed=0, **MODEL
        )
        model = training.build_compiled_model(
            config, tf.distribute.get_strategy(), image_shape=IMAGE_SHAPE
        )
    else:
        import relperf_tf

        dropout = dict(attn_dropout=0.0, ff_dropout=0.0) if variant == "user-no-dropout" else {}
        model = relperf_tf.build_model(
            "Performer", image_shape=IMAGE_SHAPE, num_classes=10, **MODEL, **dropout
        )
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile="auto" if variant.startswith("user-default") else True,
        )
    stamps = []
    clock = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: stamps.append(time.perf_counter())
    )
    model.fit(
        images, labels, batch_size=BATCH, epochs=1, shuffle=False, verbose=0, callbacks=[clock]
    )
    gaps = [b - a for a, b in zip(stamps[WARMUP - 1 :], stamps[WARMUP:])]
    print("RESULT", json.dumps(dict(seconds=statistics.median(gaps), gaps=gaps)))


def environment(variant):
    env = {
        k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", "RELPERF_MALLOC_TUNING")
    }
    env.update(PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="2", KERAS_BACKEND="tensorflow")
    if variant.startswith("command"):
        env["GLIBC_TUNABLES"] = TUNABLES
    if variant == "user-default-eigen":
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return env


def measure(variant, steps, timeout):
    code = f"from benchmarks.user_script import child; child({variant!r}, {steps})"
    result, reason = child_process.run_python(code, environment(variant), timeout)
    if result is None:
        return dict(variant=variant, failed=reason)
    return dict(variant=variant, **result)


def section(rows, cpu):
    """The markdown lines of the section "A user's own script"."""
    base = next((r for r in rows if r["variant"] == "command" and "seconds" in r), None)
    lines = [
        "## A user's own script",
        "",
        f"`benchmarks/user_script.py --record` ({cpu}): the reference Performer (dim 128, depth 4,",
        "heads 4, m = 110), training batch 16 through `model.fit` on NumPy arrays, each row in a",
        "fresh process, median seconds between batch ends after two warm-up batches. `command`:",
        "what `relperf-train` runs (malloc settings in the environment, the application's",
        "compiled model, XLA); `command-graph`: the same without XLA; `user`:",
        "`relperf_cli.tune_process()` first, then `relperf_tf.build_model` +",
        "`model.compile(jit_compile=True)` + `model.fit`, nothing set outside the script;",
        "`user-plain`: `user` without that call; `user-default`: Keras' default",
        '`jit_compile="auto"` (no XLA on a CPU); `user-default-eigen`: that with',
        "`TF_ENABLE_ONEDNN_OPTS=0`; `user-no-dropout`: `user` without dropout (the other rows",
        "train with the default 0.1).",
        "",
        "| variant | ms/step | img/s | vs command |",
        "|---|---|---|---|",
    ]
    for r in rows:
        if "seconds" not in r:
            lines.append(f"| {r['variant']} | — | — | failed: {r['failed']} |")
            continue
        ratio = f"{base['seconds'] / r['seconds']:.2f}×" if base else ""
        lines.append(
            f"| {r['variant']} | {1000 * r['seconds']:.0f} | {BATCH / r['seconds']:.1f} | {ratio} |"
        )
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or args.steps < 2 or args.rounds < 1:
        parser.error(
            f"--variants must be among {','.join(VARIANTS)}, --steps >= 2, --rounds >= 1 "
            f"(got {args.variants}, {args.steps}, {args.rounds})"
        )
    rounds = {v: [] for v in variants}
    for _ in range(args.rounds):
        for variant in variants:
            row = measure(variant, args.steps, args.timeout)
            print(json.dumps({k: v for k, v in row.items() if k != "gaps"}), flush=True)
            rounds[variant].append(row)
    rows = []
    for variant, results in rounds.items():
        ok = [r for r in results if "seconds" in r]
        if ok:
            rows.append(dict(variant=variant, seconds=statistics.median(r["seconds"] for r in ok)))
        else:
            rows.append(results[-1])
    cpu = child_process.cpu_label(environment("user"))
    print("\n".join(section(rows, cpu)))
    if args.record:
        from benchmarks import records

        sitting = dict(records.provenance(), cpu=cpu)
        path = os.path.join(REPO, "benchmarks", "records", "user_script.json")
        records.write(path, dict(sittings=[sitting], rows=rows))
        print(f"recorded {os.path.relpath(path, REPO)}; render it with python docs/render.py")
    return rows


if __name__ == "__main__":
    main()
