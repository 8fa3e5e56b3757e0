"""Where a training or inference step spends its time: a TensorFlow profiler trace and its summary.

    .venv/bin/python benchmarks/profile_step.py --model=Performer --mode=train --jit_compile

Runs the benchmark's configuration (reference model, m = 110 by default),
warms it up, records `--steps` steps with `tf.profiler` into `--logdir` (open
it with TensorBoard's Profile tab: trace viewer, op profile) and prints the
time per category of kernel — GEMMs, reductions, fused element-wise loops,
copies and transposes, the optimizer — summed over the CPU's worker threads
per step, largest first. With `--output` the summary is also saved as JSON;
with `--record` it becomes the profiler section of docs/benchmarks.md.
"""

import glob
import json
import os
import resource
import sys
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

flags.DEFINE_string("model", "Performer", "A model of benchmarks.benchmarking.BENCH_MODELS.")
flags.DEFINE_enum("mode", "train", ["train", "infer"], "Training step or forward pass.")
flags.DEFINE_boolean("jit_compile", True, "XLA-compile the step.")
flags.DEFINE_integer("batch_size", None, "Batch (default: 16 train, 128 infer).")
flags.DEFINE_integer("nb_features", 110, "Random features m (the reference config's).")
flags.DEFINE_string("precision", "float32", "float32, mixed_bfloat16 or auto.")
flags.DEFINE_integer("steps", 3, "Steps recorded after 2 warm-up steps.")
flags.DEFINE_string("logdir", "/tmp/relperf_profile", "Where the trace goes (TensorBoard logdir).")
flags.DEFINE_string("output", None, "Also write the summary here (JSON).")
flags.DEFINE_boolean(
    "record",
    False,
    "Also store the summary in docs/benchmarks.json and re-render docs/benchmarks.md (its "
    "profiler section).",
)
FLAGS = flags.FLAGS


def _cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main(argv):
    import numpy as np
    import tensorflow as tf

    # The peer workload's threading: every core for one op, one op at a time.
    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from benchmarks import benchmarking
    from benchmarks.trace_summary import category, summarize

    batch = FLAGS.batch_size or (16 if FLAGS.mode == "train" else 128)
    model = benchmarking.build(
        FLAGS.model,
        32,
        batch,
        FLAGS.jit_compile,
        dim=128,
        depth=4,
        heads=4,
        nb_features=FLAGS.nb_features,
        precision=FLAGS.precision,
    )
    images = np.random.default_rng(0).random((batch, 32, 32, 1)).astype("float32")
    labels = np.arange(batch) % 10
    if FLAGS.mode == "train":
        train = benchmarking.manual_train_step(model, FLAGS.jit_compile)

        def step():
            return train(images, labels).numpy()
    else:
        forward = tf.function(
            lambda x: model(x, training=False), jit_compile=FLAGS.jit_compile, autograph=False
        )

        def step():
            return forward(images).numpy()

    for _ in range(2):
        step()
    tf.profiler.experimental.start(FLAGS.logdir)
    start, cpu_start = time.perf_counter(), _cpu_seconds()
    for _ in range(FLAGS.steps):
        step()
    wall = time.perf_counter() - start
    busy = (_cpu_seconds() - cpu_start) / (wall * os.cpu_count())
    wall_ms = 1e3 * wall / FLAGS.steps
    tf.profiler.experimental.stop()
    trace = max(glob.glob(os.path.join(FLAGS.logdir, "plugins", "profile", "*", "*.xplane.pb")))
    summary = dict(
        model=FLAGS.model,
        mode=FLAGS.mode,
        batch_size=batch,
        jit_compile=FLAGS.jit_compile,
        precision=FLAGS.precision,
        nb_features=FLAGS.nb_features,
        wall_ms_per_step=wall_ms,
        process_cpu_utilization=busy,
        trace=trace,
        cpu=benchmarking.cpu_label(),
        **summarize(trace, FLAGS.steps, wall_ms, os.cpu_count()),
    )
    total = os.cpu_count() * wall_ms
    print(f"{summary['cpu']}; wall {wall_ms:.0f} ms/step (profiled) × {os.cpu_count()} cores")
    print(
        f"the process used {100 * busy:.0f} % of the cores (user + system time, spinning included)"
    )
    for name, ms in summary["categories"].items():
        print(f"  {name:30s} {ms:8.1f} ms  {100 * ms / total:5.1f} % of the cores' time")
    print("largest kernels:")
    for name, ms in list(summary["kernels"].items())[:12]:
        print(f"  {name:40s} {ms:8.1f} ms  ({category(name)})")
    print(f"trace: {trace} (tensorboard --logdir {FLAGS.logdir})")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(summary, f, indent=2)
    if FLAGS.record:
        from benchmarks import report

        path = os.path.join(REPO, "docs", "benchmarks.json")
        with open(path) as f:
            results = json.load(f)
        label = f"{FLAGS.model} {FLAGS.mode}"
        results.setdefault("profile", {})[label] = summary
        with open(path + ".tmp", "w") as f:
            json.dump(results, f, indent=2)
        os.replace(path + ".tmp", path)
        report.render(results, os.path.join(REPO, "docs", "benchmarks.md"))
        print(f"recorded as '{label}' in {path} and docs/benchmarks.md")


if __name__ == "__main__":
    app.run(main)
