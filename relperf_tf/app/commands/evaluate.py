"""Test metrics of finished runs: scripts/evaluate.py RUN_DIR [RUN_DIR ...] --output results.csv"""

from absl import flags

from relperf_tf.app import cli, evaluation

flags.DEFINE_string("output", "results.csv", "CSV to append one row per run to.")
flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the run's own).")
FLAGS = flags.FLAGS


def main(argv):
    if len(argv) < 2:
        cli.fail("usage: evaluate.py RUN_DIR [RUN_DIR ...] --output=results.csv")
    with cli.errors_to_exit_codes():
        rows = evaluation.evaluate_into_csv(argv[1:], FLAGS.output, FLAGS.data_dir)
    for row in rows:
        print(
            f"{row['run_dir']}: {row['model']} test_accuracy={row['test_accuracy']:.4f} "
            f"test_loss={row['test_loss']:.4f}"
        )
    print(f"{len(rows)} run(s) added to {FLAGS.output}")


def run():
    """Console entry point `relperf-evaluate`."""
    cli.run(main)


if __name__ == "__main__":
    run()
