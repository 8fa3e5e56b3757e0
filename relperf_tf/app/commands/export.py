"""Export a run's best model: scripts/export.py RUN_DIR --export_dir saved_models/NAME"""

import inspect
import json
import os

from absl import flags

from relperf_tf.app import atomic, cli, export, precision, runs

flags.DEFINE_string(
    "export_dir",
    None,
    "Where to write: TF Serving's <export_dir>/<version>/ (or a .keras file with --format=keras).",
)
flags.DEFINE_string("format", "saved_model", f"Output format {{{','.join(export.FORMATS)}}}.")
flags.DEFINE_bool(
    "jit_compile",
    inspect.signature(export.export_saved_model).parameters["jit_compile"].default,
    "SavedModel only: run the model XLA-compiled inside the signatures (faster on CPU; TF "
    "Serving then needs --xla_cpu_compilation_enabled=true and compiles once per batch size).",
)
cli.define_precision_flag(
    None,
    "Default: the precision the run trained with. The export takes uint8 images and returns "
    "float32 whatever it computes in.",
)
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) != 2:
        cli.fail("usage: export.py RUN_DIR --export_dir=DIR [--format=saved_model|keras]")
    run_dir = argv[1]
    with cli.errors_to_exit_codes():
        cli.require("export_dir")
        if FLAGS.format not in export.FORMATS:
            raise ValueError(
                f"flag --format={FLAGS.format!r} is not allowed; use one of {export.FORMATS}."
            )
        if FLAGS.jit_compile and FLAGS.format != "saved_model":
            raise ValueError(
                f"flag --jit_compile applies to --format=saved_model only, not {FLAGS.format!r}."
            )
        if not os.path.exists(os.path.join(run_dir, "checkpoints", "best.keras")):
            raise ValueError(
                f"RUN_DIR {run_dir!r} has no checkpoints/best.keras; pass a finished run directory."
            )
        policy = None if FLAGS.precision is None else precision.dtype_policy(FLAGS.precision)
        hparams = runs.load_hparams(run_dir)
        model = runs.load_best_model(run_dir, hparams)
        if policy is not None:
            model = precision.with_policy(model, policy)
        if FLAGS.format == "keras":
            path = (
                FLAGS.export_dir
                if FLAGS.export_dir.endswith(".keras")
                else os.path.join(FLAGS.export_dir, "model.keras")
            )
            if os.path.exists(path):
                raise ValueError(f"flag --export_dir: {path!r} exists; choose another path.")
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            atomic.save_model(model, path)
        else:
            metadata = dict(
                model=hparams["model"],
                position_kernel=hparams.get("position_kernel", "favor"),
                run_dir=os.path.abspath(run_dir),
                dtype_policy=model.dtype_policy.name,
            )
            test_metrics = os.path.join(run_dir, "test_metrics.json")
            if os.path.exists(test_metrics):
                with open(test_metrics) as f:
                    metadata["test_accuracy"] = json.load(f)["test_accuracy"]
            path = export.export_saved_model(
                model,
                hparams["dataset"],
                hparams["embedding_type"],
                FLAGS.export_dir,
                metadata,
                jit_compile=FLAGS.jit_compile,
            )
    print(path)


def run():
    """Console entry point `relperf-export`."""
    cli.run(main)


if __name__ == "__main__":
    run()
