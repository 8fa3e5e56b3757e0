"""Where a training or inference step spends its time: a TensorFlow profiler trace and its summary.

    .venv/bin/python benchmarks/profile_step.py --model=Performer --mode=train --jit_compile

Runs the benchmark's configuration (reference model, m = 110 by default),
warms it up, records `--steps` steps with `tf.profiler` into `--logdir` (open
it with TensorBoard's Profile tab: trace viewer, op profile) and prints the
time per category of kernel — GEMMs, reductions, fused element-wise loops,
copies and transposes, the optimizer — summed over the CPU's worker threads
per step, largest first. With `--output` the summary is also saved as JSON.
"""

import collections
import glob
import json
import os
import re
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
FLAGS = flags.FLAGS

# Kernel name (TF op type, or XLA thunk name without its number) → category; first match wins.
CATEGORIES = (
    ("GEMM", r"^(matmul|batchmatmul|dot|einsum|_mklmatmul|_fusedmatmul|ynn_fusion|xnn_fusion)"),
    ("reduction", r"(reduce|^sum$|^mean$|^max$|^min$|biasaddgrad|^prod$|argmax)"),
    ("copy/transpose", r"(transpose|^copy|reshape|concat|^slice|^pad|tile)"),
    ("optimizer", r"(resourceapply|assign|adam)"),
    (
        "element-wise",
        r"(fusion|mul|add|sub|exp|neg|square|sqrt|erf|tanh|select|div|cast|convert|gelu|"
        r"broadcast|relu|log|maximum|minimum|compare)",
    ),
)
# Events that only wrap others or wait: their own time is the runtime's, not a kernel's.
RUNTIME = re.compile(
    r"^(ThunkExecutor|ExecutorState|ThreadpoolListener|SlinkyThreadPool|end: |ParallelFor|"
    r"EagerExecute|EagerKernelExecute|EagerLocalExecute|TFE_|KernelAndDeviceFunc|"
    r"ExecuteAsyncOnStream|BlockUntilReady|step$|__inference|\s)"
)


def category(kernel):
    if kernel == "runtime":
        return "runtime (scheduling, waiting)"
    for name, pattern in CATEGORIES:
        if re.search(pattern, kernel.lower()):
            return name
    return "other"


def kernel_name(event_name):
    """'block_0/ff_hidden/MatMul:MatMul' → 'MatMul'; 'wrapped_reduce-window.87' →
    'wrapped_reduce-window'; wrappers and waits → 'runtime'."""
    if RUNTIME.match(event_name):
        return "runtime"
    name = event_name.rsplit(":", 1)[-1] if ":" in event_name else event_name
    return re.sub(r"([._]\d+)+$", "", name)


def _self_times(events, names):
    """(kernel, ms) per event of one thread: its own time, children excluded; a wrapper's child
    (e.g. a kernel's ParallelFor) counts for the kernel around it."""
    spans = sorted((e.offset_ps, e.offset_ps + e.duration_ps, names(e)) for e in events)
    stack, own = [], collections.Counter()  # stack: [end, kernel it counts for]
    for start, end, name in spans:
        while stack and stack[-1][0] <= start:
            stack.pop()
        owner = name if name != "runtime" or not stack else stack[-1][1]
        if stack:
            parent_kernel = stack[-1][1]
            own[parent_kernel] -= (min(end, stack[-1][0]) - start) / 1e9
        own[owner] += (end - start) / 1e9
        stack.append([end, owner])
    return own


def summarize(xplane_path, steps, wall_ms, cores):
    """Thread-milliseconds per step by category and by kernel over the CPU worker threads, and
    what the cores did not use (cores × wall time − the kernels' time)."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    space = xplane_pb2.XSpace()
    with open(xplane_path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    by_kernel = collections.Counter()
    for line in plane.lines:
        if not line.name.startswith("tf_"):  # the Python thread only waits for the step
            continue
        own = _self_times(
            line.events, lambda e: kernel_name(plane.event_metadata[e.metadata_id].name)
        )
        for kernel, ms in own.items():
            by_kernel[kernel] += ms / steps
    runtime = by_kernel.pop("runtime", 0.0)
    busy = sum(by_kernel.values())
    by_category = collections.Counter()
    for kernel, ms in by_kernel.items():
        by_category[category(kernel)] += ms
    by_category["runtime (scheduling, waiting)"] += runtime
    by_category["idle cores"] = max(cores * wall_ms - busy - runtime, 0.0)
    return dict(
        cores=cores,
        kernel_ms_per_step=busy,
        categories=dict(by_category.most_common()),
        kernels=dict(by_kernel.most_common(25)),
    )


def main(argv):
    import numpy as np
    import tensorflow as tf

    # The peer workload's threading: every core for one op, one op at a time.
    tf.config.threading.set_intra_op_parallelism_threads(os.cpu_count())
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from benchmarks import benchmarking

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
    start = time.perf_counter()
    for _ in range(FLAGS.steps):
        step()
    wall_ms = 1e3 * (time.perf_counter() - start) / FLAGS.steps
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
        trace=trace,
        cpu=benchmarking.cpu_label(),
        **summarize(trace, FLAGS.steps, wall_ms, os.cpu_count()),
    )
    total = os.cpu_count() * wall_ms
    print(f"{summary['cpu']}; wall {wall_ms:.0f} ms/step (profiled) × {os.cpu_count()} cores")
    for name, ms in summary["categories"].items():
        print(f"  {name:30s} {ms:8.1f} ms  {100 * ms / total:5.1f} % of the cores' time")
    print("largest kernels:")
    for name, ms in list(summary["kernels"].items())[:12]:
        print(f"  {name:40s} {ms:8.1f} ms  ({category(name)})")
    print(f"trace: {trace} (tensorboard --logdir {FLAGS.logdir})")
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(summary, f, indent=2)


if __name__ == "__main__":
    app.run(main)
