"""Keras Tuner search: scripts/tune.py --model=RelativePerformer --dataset=fashion_mnist
--tuner=random --max_trials=10"""

import os

from absl import flags

from relperf_tf.app import cli, training, tuning

cli.define_run_flags()
flags.DEFINE_string("tuner", "random", f"Search algorithm {{{','.join(tuning.TUNERS)}}}.")
flags.DEFINE_integer(
    "max_trials", 10, "Trials to run in total (random, bayesian); rerunning resumes."
)
flags.DEFINE_integer("max_epochs", 10, "Epochs per trial (hyperband: the largest budget).")
flags.DEFINE_string("tuner_dir", "tuning", "Directory of tuner projects.")
flags.DEFINE_string("project_name", None, "Project name (default: <model>_<dataset>_<tuner>).")
flags.DEFINE_boolean("overwrite", False, "Start the project afresh instead of resuming it.")
flags.DEFINE_list("dims", [str(d) for d in tuning.DIM_CHOICES], "dim values to search.")
flags.DEFINE_list(
    "head_counts",
    [str(h) for h in tuning.HEADS_CHOICES],
    "heads values to search (pairs where heads does not divide dim are skipped).",
)
flags.DEFINE_string("export_dir", None, "Also export the best model as a SavedModel here.")
flags.DEFINE_boolean("progress_bar", False, "Keras progress bars inside trials.")
FLAGS = flags.FLAGS


def main(argv):
    cli.reject_positional(argv)
    with cli.errors_to_exit_codes():
        cli.require("model", "dataset")
        try:
            dims, heads = [int(d) for d in FLAGS.dims], [int(h) for h in FLAGS.head_counts]
        except ValueError:
            raise ValueError(
                f"flags --dims={','.join(FLAGS.dims)} / "
                f"--head_counts={','.join(FLAGS.head_counts)} are not allowed; use integers."
            )
        base = training.resolve_config(
            FLAGS.model,
            FLAGS.dataset,
            FLAGS.preset,
            **{**cli.explicit_settings(), "verbose": 1 if FLAGS.progress_bar else 2},
        )
        training.split_cpu(base.cpu_replicas)
        project = FLAGS.project_name or f"{FLAGS.model}_{FLAGS.dataset}_{FLAGS.tuner}"
        result = tuning.search(
            base,
            FLAGS.tuner,
            FLAGS.max_trials,
            FLAGS.max_epochs,
            FLAGS.tuner_dir,
            project,
            FLAGS.overwrite,
            dims=dims,
            heads=heads,
            export_dir=FLAGS.export_dir,
        )
    rows = result["trials"]
    keys = ["trial_id", "status", "val_accuracy"] + sorted(
        {k for r in rows for k in r} - {"trial_id", "status", "val_accuracy"}
    )
    print("\t".join(keys))
    for row in rows:
        print(
            "\t".join(
                ""
                if row.get(k) is None
                else (f"{row[k]:.4f}" if isinstance(row[k], float) else str(row[k]))
                for k in keys
            )
        )
    print(f"best hyperparameters: {os.path.join(result['project'], 'best_hyperparameters.json')}")
    print(f"best model: {os.path.join(result['project'], 'best.keras')}")
    if result["exported"]:
        print(f"exported: {result['exported']}")


def run():
    """Console entry point `relperf-tune`."""
    cli.run(main)


if __name__ == "__main__":
    run()
