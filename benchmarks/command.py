"""Speed, memory and approximation benchmarks; renders docs/benchmarks.md.

python scripts/benchmark.py --models=Performer,exact --image_sizes=32 --modes=train,infer

A source checkout's command (benchmarks/ is not installed with the package).
"""

import json
import os
import re
import subprocess
import sys

import numpy as np
from absl import flags

from benchmarks import benchmarking
from relperf_tf import validation
from relperf_tf.app import cli, precision, training
from relperf_tf.layers import FavorKernel
from relperf_tf.layers.relative_attention import POSITION_KERNELS
from relperf_tf.models import display_name

# Benchmarks live in a source checkout, next to the package (they are not installed).
REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

flags.DEFINE_list(
    "models", list(benchmarking.BENCH_MODELS), f"Any of {','.join(benchmarking.BENCH_MODELS)}."
)
flags.DEFINE_list(
    "image_sizes", ["32"], "Image sizes to sweep (tokens = size² + 1), e.g. 16,32,64,128."
)
flags.DEFINE_list(
    "modes",
    ["train", "infer"],
    "Any of train (forward+backward+Adam), infer (the model's forward) and serve (the exported "
    "SavedModel's serving_default: batch-1 p50/p99 latency and batch throughput; 32 px only, "
    "never XLA).",
)
flags.DEFINE_string(
    "preset",
    "reference",
    "Model size preset {reference,paper,tiny}; --dim/--depth/--heads override.",
)
flags.DEFINE_integer("dim", None, "Token width.")
flags.DEFINE_integer("depth", None, "Blocks.")
flags.DEFINE_integer("heads", None, "Heads.")
flags.DEFINE_integer(
    "nb_features",
    None,
    "Random features m of every FAVOR+ model (default: each model's int(d·ln d) of its query "
    "width d; the issue's reference config uses 110).",
)
flags.DEFINE_integer(
    "batch_size", None, "Batch size (default: 16 train, 128 infer and serve; 4 at >= 128 px)."
)
flags.DEFINE_boolean(
    "jit_compile", False, "XLA-compile the steps (serve: export with export.py's --jit_compile)."
)
flags.DEFINE_string(
    "position_kernel",
    "favor",
    "RelativePerformer's positional logits {favor,exact,circular} (rows are labelled with it).",
)
flags.DEFINE_boolean(
    "remat", False, "Recompute activations in the backward pass (the models' remat option)."
)
cli.define_precision_flag("float32", "Rows record the policy it resolved to.")
flags.DEFINE_integer("window_steps", 3, "Steps per timed window.")
flags.DEFINE_integer("repeats", 5, "Timed windows (median reported).")
flags.DEFINE_integer("timeout", 900, "Seconds allowed per configuration.")
flags.DEFINE_boolean("approximation", True, "Also measure FAVOR+ error vs exact attention.")
flags.DEFINE_string("data_dir", None, "TFDS data directory for the real activations.")
flags.DEFINE_string(
    "output",
    os.path.join(REPO, "docs", "benchmarks.json"),
    "Results JSON (merged with earlier results).",
)
flags.DEFINE_string("child", None, "internal: run one configuration and print its result")
FLAGS = flags.FLAGS
MODES = ("train", "infer", "serve")


def run_child(spec):
    command = [sys.executable, "-m", "benchmarks.command", f"--child={json.dumps(spec)}"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=FLAGS.timeout, cwd=REPO
    )
    for line in result.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    tail = (result.stderr.strip().splitlines() or ["no output"])[-1]
    return dict(spec, error=tail[:300])


def _row_key(r):
    """What makes two result rows the same configuration (a rerun replaces the old row)."""
    return tuple(
        r.get(k)
        for k in (
            "model",
            "mode",
            "image_size",
            "batch_size",
            "jit_compile",
            "dim",
            "depth",
            "heads",
            "nb_features",
        )
    ) + (r.get("remat", False), r.get("precision", "float32"))


def check_flags():
    """The checked sweep: image sizes; each flag checked by the setting that owns it
    (`InvalidSetting` naming the flag)."""
    for model in FLAGS.models:
        validation.check_choice("models", model, benchmarking.BENCH_MODELS)
    for mode in FLAGS.modes:
        validation.check_choice("modes", mode, MODES)
    validation.check_int("window_steps", FLAGS.window_steps, 1)
    validation.check_int("repeats", FLAGS.repeats, 5, hint=" (the median of at least 5 windows)")
    FavorKernel.check_options(nb_features=FLAGS.nb_features)
    validation.check_choice("position_kernel", FLAGS.position_kernel, POSITION_KERNELS)
    precision.dtype_policy(FLAGS.precision)
    validation.check_choice("preset", FLAGS.preset, tuple(training.PRESETS))
    if not all(re.fullmatch(r"[1-9]\d*", size) for size in FLAGS.image_sizes):
        raise validation.InvalidSetting(
            f"image_sizes={','.join(FLAGS.image_sizes)} is not allowed; use positive integers "
            "like 16,32,64,128.",
            ["image_sizes"],
        )
    sizes = [int(size) for size in FLAGS.image_sizes]
    serving_size = benchmarking.serving_image_size()
    if "serve" in FLAGS.modes and sizes != [serving_size]:
        raise validation.InvalidSetting(
            f"image_sizes={','.join(FLAGS.image_sizes)} is not allowed with modes=serve; use "
            f"image_sizes={serving_size} (the exported {benchmarking.SERVING_DATASET} "
            "signature's size).",
            ["image_sizes", "modes"],
        )
    return sizes


def _spec(model, mode, size, dims):
    """The child's configuration of one row."""
    spec = dict(
        model_name=model,
        mode=mode,
        image_size=size,
        batch_size=FLAGS.batch_size or (4 if size >= 128 else 16 if mode == "train" else 128),
        jit_compile=FLAGS.jit_compile,
        repeats=FLAGS.repeats,
        window_steps=FLAGS.window_steps,
        remat=FLAGS.remat,
        **dims,
    )
    if FLAGS.precision != "float32":
        spec["precision"] = FLAGS.precision
    if FLAGS.nb_features and model != "exact":
        spec["nb_features"] = FLAGS.nb_features
    if model == "RelativePerformer" and FLAGS.position_kernel != "favor":
        spec["position_kernel"] = FLAGS.position_kernel
    return spec


def measure_row(model, mode, size, dims):
    """One configuration timed in a child process; the row as the results file keeps it."""
    from benchmarks import report

    spec = _spec(model, mode, size, dims)
    print(f"{model} {mode} {size}px batch {spec['batch_size']} ...", flush=True)
    try:
        row = run_child(spec)
    except subprocess.TimeoutExpired:
        row = dict(spec, error=f"timed out after {FLAGS.timeout} s")
    row.update(dims, remat=FLAGS.remat)
    report.print_progress(row, 3, hidden="step_times_ms")
    position_kernel = spec.get("position_kernel", "favor")
    row.setdefault(
        "nb_features",
        None
        if model == "exact"
        else benchmarking.resolved_nb_features(
            model, dims["dim"], dims["heads"], FLAGS.nb_features, position_kernel=position_kernel
        ),
    )
    return dict(row, model=display_name(model, position_kernel))


def approximation_results():
    """FAVOR+ error against exact attention, on random and on Fashion-MNIST activations."""
    rng = np.random.default_rng(0)
    q, k, v = (rng.normal(size=(2, 4, 1025, 32)).astype("float32") for _ in range(3))
    real = benchmarking.fashion_mnist_activations(FLAGS.data_dir)
    results = {}
    for suffix, policy in (("", "float32"), (", bf16 inputs", "mixed_bfloat16")):
        results["random" + suffix] = benchmarking.approximation_errors(q, k, v, precision=policy)
        results["fashion_mnist" + suffix] = benchmarking.approximation_errors(
            *real, precision=policy
        )
    return results


def main(argv):
    if FLAGS.child:
        benchmarking.main_child(FLAGS.child)
        return
    with cli.errors_to_exit_codes():
        sizes = check_flags()
    preset = training.PRESETS[FLAGS.preset]
    dims = {name: getattr(FLAGS, name) or preset[name] for name in ("dim", "depth", "heads")}
    results = (
        json.load(open(FLAGS.output))
        if os.path.exists(FLAGS.output)
        else dict(throughput=[], approximation={})
    )
    for size in sizes:
        for mode in FLAGS.modes:
            for model in FLAGS.models:
                row = measure_row(model, mode, size, dims)
                results["throughput"] = [
                    r for r in results["throughput"] if _row_key(r) != _row_key(row)
                ]
                results["throughput"].append(row)
    if FLAGS.approximation:
        results["approximation"].update(approximation_results())
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.output)), exist_ok=True)
    with open(FLAGS.output, "w") as f:
        json.dump(results, f, indent=2)
    print(f"recorded {FLAGS.output}; render it with python docs/render.py")


def run():
    """`python scripts/benchmark.py` (a source checkout: benchmarks/ is not installed)."""
    cli.run(main)


if __name__ == "__main__":
    run()
